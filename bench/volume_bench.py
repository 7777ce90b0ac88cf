"""Volume figures: keyslot rotation time per volume, and reencryption throughput of
`strongroom-agent volume reencrypt` against `cryptsetup reencrypt` given the key directly.

Run: python bench/volume_bench.py [--volumes 4] [--rotations 3] [--size-mib 128] [--rounds 3]

This process runs the four services (as release_bench.py does: RabbitMQ under a throwaway
prefix, the embedded store in memory) and sets up a tenant, a key and an allow policy over the
HTTP API. The agent is the real CLI in a child process (`python -m agent.cli`), enrolled once.
Rotation: the key is rotated on the server, then `volume rotate` runs on each volume; the time
is the whole command (Python start, two key releases, add slot, test, token, kill slot).
Reencryption: two images of the same size, formatted alike; in each round the agent's command
and a bare `cryptsetup reencrypt` (passphrase on a pipe, same resilience) take turns. Throughput
counts the data area (image size less the 16 MiB LUKS2 header area). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
import release_bench as rb  # noqa: E402

HEADER_MIB = 16


async def agent(home: Path, facts: Path, *argv: str) -> tuple[float, dict]:
    """Run the agent CLI; (seconds, its last JSON answer). Fails loudly on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "--home", str(home), *argv, *(["--facts-file", str(facts)] if facts else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    out, err = await process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"agent {' '.join(argv)} exited {process.returncode}: {err.decode()[-500:]}")
    text = out.decode()
    return seconds, json.loads(text[text.index("{"):]) if "{" in text else {}


def image(path: Path, size_mib: int) -> str:
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(path)], check=True)
    return str(path)


async def run_bench(args: argparse.Namespace) -> None:
    from agent import luks
    from launch.stack import Stack
    from services.auditsvc.settings import AuditSettings
    from services.gateway.datakey import ensure_data_key_file
    from services.gateway.settings import GatewaySettings
    from services.keysvc.settings import KeySettings
    from services.policysvc.settings import PolicySettings
    from shared.bus import RabbitBus
    from shared.crypto import tokens
    from shared.embedded_mongo import EmbeddedMongo
    from shared.store import connect

    rb.configure_logging(rb.Stages())
    prefix = f"vbench{uuid.uuid4().hex[:10]}_"
    bus_prefix = f"{prefix}."
    buses: list[RabbitBus] = []

    async def bus_for(name: str) -> RabbitBus:
        bus = RabbitBus(args.amqp_url, prefix=bus_prefix)
        await bus.start()
        buses.append(bus)
        return bus

    work = Path(tempfile.mkdtemp(prefix="strongroom-volume-bench-"))
    store = EmbeddedMongo(":memory:").start()
    client = connect(store.url)
    bootstrap = tokens.new_token("sr_boot")
    common = {"db_prefix": prefix, "bus_prefix": bus_prefix}
    stack = Stack(
        client=client, bus_for=bus_for,  # type: ignore[arg-type]
        gateway_settings=GatewaySettings(**common, host="127.0.0.1", port=0, bootstrap_token=bootstrap,
                                         mail_folder=str(work / "mail"),
                                         data_key_file=str(ensure_data_key_file(work / "gateway-data.key"))),
        policy_settings=PolicySettings(**common), key_settings=KeySettings(**common),
        audit_settings=AuditSettings(**common), root_key=secrets.token_bytes(32),
    )
    try:
        await stack.start_all()
        policy, facts = rb.policy_and_facts(1)
        async with aiohttp.ClientSession() as session:
            custodian, admin = await rb._set_up_team(session, stack.url, bootstrap, work / "mail")
            key = await custodian.post("/v1/keys", {"name": "bench-volume"})
            await admin.post("/v1/policies", policy)
            enrollment = await admin.post("/v1/enrollment-tokens", {"name": "bench-vm", "ttl_seconds": 3600})
            facts_file = work / "facts.json"
            facts_file.write_text(json.dumps(facts))
            home = work / "agent"
            await agent(home, None, "enroll", "--gateway", stack.url, "--token", enrollment["token"])

            # Keyslot rotation, per volume.
            volumes = [image(work / f"vol{i}.img", 32) for i in range(args.volumes)]
            for device in volumes:
                await agent(home, facts_file, "volume", "format", device, "--key-id", key["key_id"], "--recovery")
            rotate_times: list[float] = []
            for _ in range(args.rotations):
                await custodian.post(f"/v1/keys/{key['key_id']}/rotate", {"reason": "bench"}, expect=200)
                for device in volumes:
                    seconds, answer = await agent(home, facts_file, "volume", "rotate", device)
                    assert answer.get("rotated"), answer
                    rotate_times.append(seconds)

            # Reencryption: the agent's command and bare cryptsetup take turns on same-size images.
            via_agent = image(work / "agent.img", args.size_mib)
            await agent(home, facts_file, "volume", "format", via_agent, "--key-id", key["key_id"])
            bare = image(work / "bare.img", args.size_mib)
            passphrase = secrets.token_urlsafe(32).encode()
            await asyncio.to_thread(luks.format_volume, bare, uuid=str(uuid.uuid4()), passphrase=passphrase)
            agent_times, bare_times, startup_times = [], [], []
            for _ in range(args.rounds):
                started = time.perf_counter()  # what every agent command pays before its work
                await (await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "agent.cli", "--help", stdout=asyncio.subprocess.DEVNULL, cwd=str(ROOT),
                    env={**os.environ, "PYTHONPATH": str(ROOT)})).wait()
                startup_times.append(time.perf_counter() - started)
                seconds, _answer = await agent(home, facts_file, "volume", "reencrypt", via_agent, "--yes")
                agent_times.append(seconds)
                (slot,) = luks.keyslots(luks.dump(bare))  # cryptsetup renumbers the kept slot
                started = time.perf_counter()
                await asyncio.to_thread(luks.reencrypt, bare, passphrase, keyslot=slot)
                bare_times.append(time.perf_counter() - started)
    finally:
        await stack.stop_all()
        cleanup = RabbitBus(args.amqp_url, prefix=bus_prefix)
        await cleanup.start()
        await cleanup.destroy()
        await cleanup.close()
        await client.close()
        store.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)

    data_mib = args.size_mib - HEADER_MIB
    print(f"volume bench  cryptsetup {luks.run(['--version']).stdout.split()[1]}, {os.cpu_count()} CPUs")
    print(f"keyslot rotation ({args.volumes} volumes x {args.rotations} rotations, whole `volume rotate` command):")
    print(f"  per volume  median {statistics.median(rotate_times):.2f} s   "
          f"min {min(rotate_times):.2f} s   max {max(rotate_times):.2f} s")
    print(f"reencryption ({args.size_mib} MiB images, {data_mib} MiB of data, resilience checksum, "
          f"{args.rounds} rounds taking turns):")
    for name, times in (("strongroom-agent volume reencrypt", agent_times), ("cryptsetup reencrypt (key given)", bare_times)):
        best = min(times)
        print(f"  {name:35s} median {statistics.median(times):.2f} s   best {best:.2f} s   "
              f"{data_mib / statistics.median(times):7.1f} MiB/s (median)")
    agent_median, bare_median = statistics.median(agent_times), statistics.median(bare_times)
    print(f"  agent / bare (median time)          {agent_median / bare_median:.2f}x")
    print(f"  agent's fixed cost per command      {agent_median - bare_median:.2f} s "
          f"(of which Python start of agent.cli {statistics.median(startup_times):.2f} s; the rest is the key "
          "release, header reads and the slot test)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--amqp-url", default=rb.DEFAULT_AMQP_URL)
    asyncio.run(run_bench(parser.parse_args()))


if __name__ == "__main__":
    main()
