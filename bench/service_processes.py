"""The release bench's services as separate processes, N replicas of each (`--processes`).

Each child is this file run with one JSON line on stdin naming its service and the run's
settings (store URL, prefixes, root key, bootstrap token, bench folder); it starts that one
service as `strongroom serve` would, answers with its URL (gateways listen on a port of their
own), and stops when its stdin closes. CPU is read per child from /proc, so the bench can say
what each service costs per release.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SERVICES = ("auditsvc", "keysvc", "policysvc", "gateway")  # consumers first, the gateway last


def make_stack(client: Any, bus_for: Callable[[str], Awaitable[Any]], *, prefix: str, bootstrap: str,
               bench_dir: Path, root_key: bytes) -> Any:
    """The bench's stack: every service's settings, the same in one process and in several."""
    from launch.stack import Stack
    from services.auditsvc.settings import AuditSettings
    from services.gateway.datakey import ensure_data_key_file
    from services.gateway.settings import GatewaySettings
    from services.keysvc.settings import KeySettings
    from services.policysvc.settings import PolicySettings

    common = {"db_prefix": prefix, "bus_prefix": f"{prefix}."}
    return Stack(
        client=client,
        bus_for=bus_for,
        gateway_settings=GatewaySettings(**common, host="127.0.0.1", port=0, bootstrap_token=bootstrap,
                                         release_timeout_seconds=15.0, mail_folder=str(bench_dir / "mail"),
                                         # Every load agent sits on one loopback address and asks far
                                         # faster than a real one: the agent throttles (sized for
                                         # real agents) are lifted so they measure the pipeline.
                                         agent_rate_burst_per_address=1_000_000, agent_rate_per_second_per_address=1e6,
                                         agent_rate_burst_per_device=1_000_000, agent_rate_per_second_per_device=1e6,
                                         data_key_file=str(ensure_data_key_file(bench_dir / "gateway-data.key"))),
        policy_settings=PolicySettings(**common),
        key_settings=KeySettings(**common),
        audit_settings=AuditSettings(**common),
        root_key=root_key,
    )


class ServiceProcesses:
    """`replicas` processes of each service; `urls` are the gateways'."""

    def __init__(self, config: dict[str, Any], replicas: int) -> None:
        self._config = config
        self._replicas = replicas
        self.children: dict[str, list[asyncio.subprocess.Process]] = {s: [] for s in SERVICES}
        self.urls: list[str] = []

    async def start(self) -> ServiceProcesses:
        for service in SERVICES:
            started = [self._spawn(service) for _ in range(self._replicas)]
            for process in await asyncio.gather(*started):
                assert process.stdout is not None
                line = await process.stdout.readline()
                if not line:
                    raise SystemExit(f"{service} process exited with status {await process.wait()}")
                self.children[service].append(process)
                if service == "gateway":
                    self.urls.append(json.loads(line)["url"])
        return self

    async def _spawn(self, service: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert process.stdin is not None
        process.stdin.write(json.dumps({**self._config, "service": service}).encode() + b"\n")
        await process.stdin.drain()
        return process

    def pids(self) -> dict[str, list[int]]:
        return {service: [p.pid for p in processes] for service, processes in self.children.items()}

    async def stop_service(self, service: str) -> None:
        for process in self.children.pop(service, []):
            await _stop(process)

    async def stop(self) -> None:
        for service in reversed(SERVICES):
            await self.stop_service(service)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _child() -> None:
    from pymongo import AsyncMongoClient

    from shared.bus import RabbitBus

    config = json.loads(await asyncio.to_thread(sys.stdin.readline))
    client = AsyncMongoClient(config["store_url"], tz_aware=True)

    async def bus_for(name: str) -> RabbitBus:
        bus = RabbitBus(config["amqp_url"], prefix=f"{config['prefix']}.")
        await bus.start()
        return bus

    stack = make_stack(client, bus_for, prefix=config["prefix"], bootstrap=config["bootstrap"],
                       bench_dir=Path(config["bench_dir"]), root_key=bytes.fromhex(config["root_key"]))
    await stack.start(config["service"])
    sys.stdout.write(json.dumps({"url": stack.url}) + "\n")
    sys.stdout.flush()
    await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
    await stack.stop(config["service"])
    await client.close()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import release_bench

    from shared import runtime

    release_bench.configure_logging(release_bench.Stages())
    runtime.run(_child())


if __name__ == "__main__":
    main()
