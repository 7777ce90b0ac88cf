"""release_bench.py --gateway-url URL: the same agents and setup, against a gateway already running
anywhere (a compose or Kubernetes deployment, `strongroom serve` processes, `strongroom dev`).

Nothing is started here: the services, the store and the broker are whatever the gateway uses, so
only what an agent sees is measured (releases per second, latency, errors) plus this process's
and the agents' CPU. Setup goes through the HTTP API with the deployment's bootstrap credential
(`--bootstrap-token` or STRONGROOM_BOOTSTRAP_TOKEN) and reads the invitations' setup tokens from
the gateway's mail folder (`--mail-folder`, its STRONGROOM_GATEWAY_MAIL_FOLDER; `strongroom dev`:
<data dir>/mail), so the gateway must write mail to a folder this process can read. Agents all
come from one address: raise the gateway's STRONGROOM_GATEWAY_AGENT_RATE_* limits (README) or the
throttle, not the pipeline, is what gets measured. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway-url", metavar="URL",
                        help="drive this running gateway instead of starting the services here (see bench/load_driver.py)")
    parser.add_argument("--bootstrap-token", default=None,
                        help="with --gateway-url: the deployment's bootstrap credential "
                             "(default: env STRONGROOM_BOOTSTRAP_TOKEN)")
    parser.add_argument("--mail-folder", default=None,
                        help="with --gateway-url: the folder the gateway writes invitations to")


async def run_external(args: argparse.Namespace) -> None:
    """Setup, warm-up, then each concurrency level against `args.gateway_url`; prints a table."""
    import release_bench as rb  # the agents, the setup and the load generator are release_bench's

    bootstrap = args.bootstrap_token or os.environ.get("STRONGROOM_BOOTSTRAP_TOKEN")
    if not bootstrap or not args.mail_folder:
        raise SystemExit("--gateway-url needs --bootstrap-token (or STRONGROOM_BOOTSTRAP_TOKEN) and --mail-folder")
    levels = [int(n) for n in args.agents.split(",")]
    url = args.gateway_url.rstrip("/")
    setup = await rb.set_up_tenant(url, bootstrap, max(levels), args.rules, args.groups, args.facts,
                                   mail_folder=Path(args.mail_folder))
    setup["tpm"] = args.tpm
    load = await rb.LoadGenerator.start()
    try:
        enrolled = await load.ask({"setup": setup})
        await load.ask({"agents": max(levels), "seconds": rb.WARMUP_SECONDS})
        results = [await load.ask({"agents": agents, "seconds": args.seconds}) for agents in levels]
    finally:
        await load.stop()
    print_external(url, setup, enrolled, results, args.seconds)


def print_external(url: str, setup: dict[str, Any], enrolled: dict[str, Any], results: list[dict[str, Any]],
                   seconds: float) -> None:
    print(f"release bench against {url}: policy of {setup['policy_rules']} rule(s) over {setup['fact_count']} facts; "
          f"{enrolled['enrolled']} agents enrolled; {seconds:g}s per level; python {platform.python_version()}")
    print(f"{'agents':>6} {'releases/s':>10} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'errors':>6} {'agent CPU ms/rel':>16}")
    for r in results:
        per = 1000 / r["ok"] if r["ok"] else float("nan")
        print(f"{r['agents']:>6} {r['ok'] / r['elapsed']:>10.1f} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} "
              f"{r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {sum(r['errors'].values()):>6} {r['cpu_s'] * per:>16.2f}")
        for error, count in r["errors"].items():
            print(f"  {count} x {error}", file=sys.stdout)
