"""`strongroom-agent`: enrol this VM, show its facts, encrypt, decrypt or rotate files under policy,
send the heartbeats that keep its posture checked (`run`, the service mode systemd starts), and
serve as the Clevis pin `strongroom`.

Exit codes: 0 success, 1 error, 2 usage, 3 key denied by policy (or, for `heartbeat --once`, the
device is quarantined), 4 approval pending; `volume` adds 5-9 (agent/cli_volume.py).
This is the one agent module that reads the environment; it passes what it finds down.
Security invariant: no code path prints, logs or includes key bytes in an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from agent import cli_volume
from agent.cli_clevis import add_clevis_commands
from agent.cli_files import FileUsageError, add_file_commands
from agent.cli_files import metadata as _metadata
from agent.client import (
    DEFAULT_TIMEOUT_SECONDS,
    AgentClient,
    AgentError,
    ApprovalPending,
    KeyDenied,
    ReleasedKey,
)
from agent.collectors import IntegritySettings, integrity_collector
from agent.collectors.firewall import chain_list
from agent.evidence import EvidenceUnavailableError, TpmEvidence, register_tpm
from agent.facts import FactsError, collect_facts
from agent.facts_text import render_facts
from agent.fileformat import FileFormatError
from agent.identity import AgentIdentity, IdentityError, default_state_dir
from agent.service import Beat, run_service
from agent.tpm import Tpm
from shared.argtypes import positive_float as _positive_float
from shared.argtypes import positive_int as _positive_int

PROG = "strongroom-agent"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DENIED, EXIT_PENDING = 0, 1, 2, 3, 4
ENV_HOME = "STRONGROOM_AGENT_HOME"
ENV_TOKEN = "STRONGROOM_AGENT_ENROLLMENT_TOKEN"
ENV_FACTS_FILE = "STRONGROOM_AGENT_FACTS_FILE"
ENV_HASH_PATHS = "STRONGROOM_AGENT_HASH_PATHS"
ENV_CLOUD = "STRONGROOM_AGENT_CLOUD"
ENV_METADATA_URL = "STRONGROOM_AGENT_METADATA_URL"
ENV_TPM = "STRONGROOM_AGENT_TPM"
ENV_REQUIRED_CHAINS = "STRONGROOM_AGENT_REQUIRED_CHAINS"
ENV_FIREWALL_NETNS = "STRONGROOM_AGENT_FIREWALL_NETNS"
ENV_CLAMAV_DATABASE = "STRONGROOM_AGENT_CLAMAV_DATABASE"


class UsageError(Exception):
    """Arguments that parse but cannot be used together; exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Strongroom agent: policy-based key release for this VM.")
    parser.add_argument(
        "--home", metavar="DIR", help=f"state directory (default ${ENV_HOME} or {default_state_dir()})"
    )
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=_positive_float, default=DEFAULT_TIMEOUT_SECONDS,
        help="per-request timeout (default %(default)s)",
    )
    parser.add_argument(
        "--cloud", choices=("aws", "gcp", "azure"),
        help=f"send this VM's cloud identity evidence with enrolment, key requests and heartbeats (default ${ENV_CLOUD})",
    )
    parser.add_argument(
        "--metadata-url", metavar="URL", help=f"the cloud metadata service's base URL (default ${ENV_METADATA_URL} "
        "or the cloud's own address)",
    )
    parser.add_argument(
        "--tpm", metavar="TCTI", help=f"quote PCRs 0-7 from this TPM with every key request and heartbeat, e.g. "
        f"device:/dev/tpmrm0 (default ${ENV_TPM}; register it first with tpm-register)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    facts_options = _facts_options()

    enroll = commands.add_parser("enroll", help="register this VM with a gateway using a one-time token")
    enroll.add_argument("--gateway", metavar="URL", required=True, help="gateway base URL, e.g. https://gw.example")
    enroll.add_argument(
        "--token", metavar="T", help=f"enrollment token, '-' to read it from stdin (default ${ENV_TOKEN})"
    )
    enroll.add_argument("--name", metavar="N", help="device name (default: the hostname)")
    enroll.set_defaults(handler=_enroll)

    tpm = commands.add_parser("tpm-register", help="register this VM's TPM (EK and AK) with the gateway; needs --tpm")
    tpm.set_defaults(handler=_tpm_register)

    facts = commands.add_parser("facts", parents=[facts_options], help="print the facts a key request would present")
    facts.add_argument("--output", choices=("text", "json"), default="text",
                       help="text: one fact a line with its provenance (default); json: the document sent")
    facts.set_defaults(handler=_facts)

    request = commands.add_parser(
        "request-key", parents=[facts_options], help="request a key under policy and print its metadata (never the key)"
    )
    request.add_argument("key_id", metavar="KEY_ID")
    request.add_argument("--key-version", metavar="N", type=_positive_int, help="version to request (default: latest)")
    request.set_defaults(handler=_request_key)

    add_file_commands(commands, [facts_options], _release, _write_atomically)

    _add_posture_commands(commands, facts_options)
    add_clevis_commands(commands, facts_options, release=_release, state_dir=state_dir)
    cli_volume.register(commands, facts_options)
    return parser


def _facts_options() -> argparse.ArgumentParser:
    """Options of every command that collects facts."""
    facts_options = argparse.ArgumentParser(add_help=False)
    facts_options.add_argument(
        "--facts-file", metavar="FILE",
        help=f"operator facts JSON merged over collected facts (default ${ENV_FACTS_FILE})",
    )
    facts_options.add_argument(
        "--hash-path", metavar="PATH", action="append", default=None,
        help=f"report the SHA-256 of this file in integrity.file_hashes; repeatable (default ${ENV_HASH_PATHS})",
    )
    facts_options.add_argument(
        "--required-chain", metavar="'FAMILY TABLE CHAIN'", action="append", default=None,
        help=f"a firewall chain that must exist, e.g. 'inet filter input'; repeatable (default ${ENV_REQUIRED_CHAINS}, "
        "comma-separated)",
    )
    facts_options.add_argument(
        "--firewall-netns", metavar="PATH",
        help=f"read the firewall of this network namespace, e.g. /proc/1/ns/net (default ${ENV_FIREWALL_NETNS})",
    )
    facts_options.add_argument(
        "--clamav-database", metavar="DIR",
        help=f"ClamAV's database directory (default ${ENV_CLAMAV_DATABASE} or freshclam.conf's)",
    )
    return facts_options


def _add_posture_commands(commands: Any, facts_options: argparse.ArgumentParser) -> None:
    """`heartbeat` and `run`: the commands that keep the device's posture checked."""
    heartbeat = commands.add_parser(
        "heartbeat", parents=[facts_options],
        help="send one signed heartbeat with fresh facts (--once); without --once, the same as run",
    )
    heartbeat.add_argument(
        "--interval", metavar="S", type=_positive_float,
        help="seconds between heartbeats (default: the interval the gateway answers with)",
    )
    heartbeat.add_argument("--once", action="store_true", help="send one heartbeat; exit 3 if the device is quarantined")
    heartbeat.set_defaults(handler=_heartbeat)

    service = commands.add_parser(
        "run", parents=[facts_options],
        help="run as a service: heartbeats with fresh facts at the gateway's interval, one JSON line each, "
        "backing off on errors, until SIGTERM or SIGINT (exit 0)",
    )
    service.add_argument("--interval", metavar="S", type=_positive_float,
                         help="seconds between heartbeats (default: the interval the gateway answers with)")
    service.set_defaults(handler=_run, once=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return asyncio.run(run(args, environ=os.environ))
    except KeyboardInterrupt:
        return 130


async def run(args: argparse.Namespace, *, environ: Mapping[str, str]) -> int:
    """Execute parsed arguments and map the outcome to an exit code; messages go to stderr."""
    try:
        code = await args.handler(args, environ)  # a handler may answer its own exit code (Clevis usage, `volume`)
        return EXIT_OK if code is None else code
    except (UsageError, FileUsageError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyDenied as exc:
        _error(f"key denied by policy: {exc}")
        for reason in exc.reasons:
            print(f"  - {reason}", file=sys.stderr)
        if exc.disclosed is not None:
            print(f"  disclosed: {json.dumps(exc.disclosed, sort_keys=True)}", file=sys.stderr)
        return EXIT_DENIED
    except DeviceQuarantined as exc:
        _error(str(exc))
        return EXIT_DENIED
    except ApprovalPending as exc:
        _error(f"approval required: key request {exc.request_id} is pending; run the command again once approved")
        _print_json({"request_id": exc.request_id, "status": "pending"})
        return EXIT_PENDING
    except (AgentError, IdentityError, FactsError, FileFormatError, EvidenceUnavailableError, ValueError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    except OSError as exc:
        _error(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
        return EXIT_ERROR


def _cloud(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The evidence source the options name: a TPM's quotes, or the cloud's identity."""
    tcti = args.tpm or environ.get(ENV_TPM) or None
    if tcti is not None:
        return {"evidence": TpmEvidence(Tpm(tcti))}
    cloud = args.cloud or environ.get(ENV_CLOUD) or None
    if cloud not in (None, "aws", "gcp", "azure"):
        raise UsageError(f"${ENV_CLOUD} must be aws, gcp or azure")
    return {"cloud": cloud, "metadata_url": args.metadata_url or environ.get(ENV_METADATA_URL) or None}


async def _tpm_register(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    tcti = args.tpm or environ.get(ENV_TPM) or None
    if tcti is None:
        raise UsageError(f"tpm-register needs --tpm TCTI or ${ENV_TPM}")
    identity = AgentIdentity.load(state_dir(args, environ))
    async with AgentClient(identity, timeout_seconds=args.timeout) as client:
        _print_json(await register_tpm(client, Tpm(tcti)))


def state_dir(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    home = args.home or environ.get(ENV_HOME)
    return Path(home).expanduser() if home else default_state_dir()


async def _enroll(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    token = args.token if args.token is not None else environ.get(ENV_TOKEN)
    if token == "-":
        token = sys.stdin.readline().strip()
    if not token:
        raise UsageError(f"an enrollment token is required: pass --token T, --token - (stdin) or set ${ENV_TOKEN}")
    if not args.gateway.startswith(("https://", "http://")):
        raise UsageError(f"--gateway must be an http(s) URL, got {args.gateway!r}")
    home = state_dir(args, environ)
    async with AgentClient(timeout_seconds=args.timeout, **_cloud(args, environ)) as client:
        identity = await client.enroll(args.gateway, token, args.name or socket.gethostname(), home)
    _print_json(
        {"device_id": identity.device_id, "tenant_id": identity.tenant_id, "key_id": identity.key_id, "home": str(home)}
    )


async def _facts(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    home = state_dir(args, environ)
    try:
        device_id: str | None = AgentIdentity.load(home).device_id
    except IdentityError:
        device_id = None  # Facts are still worth showing before enrolment.
    facts = await _gather_facts(args, environ, device_id)
    if args.output == "json":
        _print_json(facts)
        return
    source = _cloud(args, environ)
    evidence = "tpm" if "evidence" in source else source.get("cloud")
    print(render_facts(facts, device_id=device_id, evidence=evidence))


async def _request_key(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    released = await _release(args, environ, args.key_id, args.key_version)
    _print_json(_metadata(released))


class DeviceQuarantined(Exception):
    """`heartbeat --once` found the device quarantined; exit code 3."""


async def _heartbeat(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """One heartbeat (``--once``), or the service loop of `_run`: fresh facts every interval, so
    policysvc can re-check them against the policies that released this device's keys."""
    if not args.once:
        return await _run(args, environ)
    identity = AgentIdentity.load(state_dir(args, environ))
    async with AgentClient(identity, timeout_seconds=args.timeout, **_cloud(args, environ)) as client:
        answer = await client.heartbeat(await _gather_facts(args, environ, identity.device_id))
    print(json.dumps({"device_id": answer.get("device_id"), "status": answer.get("status"),
                      "next_heartbeat_within_seconds": answer.get("next_heartbeat_within_seconds")},
                     sort_keys=True), flush=True)
    if answer.get("status") == "quarantined":
        raise DeviceQuarantined("the device is quarantined: key requests are denied until its facts "
                                "pass again or an operator clears it")


async def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """The agent as a service (``agent/service.py``): SIGTERM and SIGINT end it cleanly, exit 0.
    A gateway that cannot be reached is retried with backoff, not fatal: a missed beat is what the
    grace period is for."""
    identity = AgentIdentity.load(state_dir(args, environ))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []

    def on_signal(name: str) -> None:
        stopped_by.append(name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        async with AgentClient(identity, timeout_seconds=args.timeout, **_cloud(args, environ)) as client:
            async def beat() -> Beat:
                facts = await _gather_facts(args, environ, identity.device_id)
                return Beat(answer=await client.heartbeat(facts), facts=facts)

            _emit({"event": "agent_started", "device_id": identity.device_id, "gateway": identity.gateway_url,
                   "interval_seconds": args.interval})
            delivered = await run_service(beat, stop=stop, emit=_emit, interval=args.interval)
        _emit({"event": "agent_stopped", "signal": stopped_by[0] if stopped_by else None,
               "heartbeats_delivered": delivered})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _release(
    args: argparse.Namespace, environ: Mapping[str, str], key_id: str, key_version: int | None
) -> ReleasedKey:
    identity = AgentIdentity.load(state_dir(args, environ))
    facts = await _gather_facts(args, environ, identity.device_id)
    async with AgentClient(identity, timeout_seconds=args.timeout, **_cloud(args, environ)) as client:
        return await client.request_key(key_id, facts=facts, key_version=key_version)


async def _gather_facts(args: argparse.Namespace, environ: Mapping[str, str], device_id: str | None) -> dict[str, Any]:
    facts_file = args.facts_file or environ.get(ENV_FACTS_FILE) or None
    hash_paths = args.hash_path
    if hash_paths is None:
        hash_paths = [path for path in environ.get(ENV_HASH_PATHS, "").split(os.pathsep) if path]
    chains = tuple(args.required_chain) if args.required_chain is not None else chain_list(
        environ.get(ENV_REQUIRED_CHAINS))
    settings = IntegritySettings(
        required_chains=tuple(" ".join(chain.split()) for chain in chains),
        firewall_netns=args.firewall_netns or environ.get(ENV_FIREWALL_NETNS) or None,
        clamav_database=args.clamav_database or environ.get(ENV_CLAMAV_DATABASE) or None,
    )
    return await asyncio.to_thread(
        collect_facts, device_id=device_id, hash_paths=hash_paths, facts_file=facts_file, environ=environ,
        collectors=[integrity_collector(settings)],
    )


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write via a 0600 temporary file beside `path`, renamed into place only if `write` succeeds."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=0) as dst:
            write(dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _print_json(document: Mapping[str, Any]) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _emit(line: Mapping[str, Any]) -> None:
    """One JSON line on stdout (the journal, under systemd); `run_service` and `_run` say nothing secret."""
    print(json.dumps(line, sort_keys=True), flush=True)






if __name__ == "__main__":
    sys.exit(main())
