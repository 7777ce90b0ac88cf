"""The console's live fan-out: N operators with the approvals inbox open (server-sent events), one
approval event published, and the time until every inbox has received its re-render (each viewer's
list is fetched and rendered for that viewer). Gateway over memory stores and the in-memory bus, a
stand-in policysvc answering `list_approvals` with `--approvals` pending items: what is measured
is the gateway's own work (notifier, one RPC and one template render per viewer, SSE writes).

Run: python bench/console_bench.py [--viewers 1 10 50] [--rounds 20] [--approvals 5]   (about 10 s)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.gateway.app import build_app
from services.gateway.datakey import ensure_data_key_file
from services.gateway.settings import GatewaySettings
from services.gateway.store_memory import MemoryGatewayStore
from shared import events, rpc
from shared.bus_memory import MemoryBus
from shared.crypto import tokens

TENANT = "ten_bench"
ACTOR = events.Actor(kind="user", id="bench")


def approvals(count: int) -> dict:
    now = datetime.now(UTC)
    return {"items": [{
        "approval_id": f"apr_{i}", "request_id": f"req_{i}", "device_id": f"dev_{i}", "key_id": f"key_{i}",
        "key_version": None, "status": "pending", "approvals_required": 2, "remember_for_seconds": None,
        "expires_at": (now + timedelta(hours=1)).isoformat(), "requested_at": now.isoformat(),
        "reasons": ["rule r matched (require_approval): identity.region 'eu-west-1' == 'eu-west-1'"],
        "decided_by": [{"policy": "pol_1", "version": 1, "rule": "r"}], "decided_at": None, "comment": None,
        "votes": [], "approvals_received": 0} for i in range(count)]}


async def seed(store: MemoryGatewayStore, viewers: int) -> list[str]:
    await store.accounts.insert_tenant(TENANT, {"name": "bench", "kind": "customer", "status": "active", "settings": {},
                                                "created_at": datetime.now(UTC)},
                                       events.TenantCreated(tenant_id=TENANT, actor=ACTOR, correlation_id="c", name="bench"))
    sessions = []
    for i in range(viewers):
        user_id, token, now = events.new_id("usr_"), tokens.new_token("sr_ses"), datetime.now(UTC)
        await store.accounts.insert_user(TENANT, {
            "user_id": user_id, "username": f"approver-{i}", "account": "person", "roles": ["approver"], "pending": [],
            "status": "active", "source": "local", "created_at": now, "rev": 0,
            "mfa": {"secret": None, "confirmed": True, "last_step": None}, "recovery": [], "password_hash": None,
        }, events.UserCreated(tenant_id=TENANT, actor=ACTOR, correlation_id="c", user_id=user_id,
                              username=f"approver-{i}", roles=("approver",)))
        await store.accounts.insert_session(TENANT, {
            "session_id": events.new_id("ses_"), "digest": tokens.digest(token), "user_id": user_id,
            "auth": "password+totp", "mfa": True, "created_at": now, "last_seen": now, "ended_at": None})
        sessions.append(token)
    return sessions


async def run(viewers: int, rounds: int, pending: int) -> list[float]:
    bus = MemoryBus()
    await bus.start()
    listed = approvals(pending)

    async def policysvc(request: rpc.RpcRequest) -> rpc.RpcReply:
        return rpc.RpcReply(result=listed)

    await bus.serve("policysvc", policysvc)
    store = MemoryGatewayStore(publish=bus.publish)
    with tempfile.TemporaryDirectory() as tmp:
        settings = GatewaySettings(bootstrap_token=tokens.new_token("sr_boot"),
                                   data_key_file=str(ensure_data_key_file(Path(tmp) / "data.key")))
        runner = web.AppRunner(build_app(settings, bus=bus, store=store), access_log=None, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sessions = await seed(store, viewers)
        timings = []
        async with aiohttp.ClientSession() as http:
            async def updated(stream: aiohttp.ClientResponse) -> None:
                while True:  # one message: "data:" lines up to a blank line
                    line = await stream.content.readline()
                    if line.startswith(b"data:"):
                        while (await stream.content.readline()).strip():
                            pass
                        return

            streams = [await http.get(f"{url}/console/approvals/live", headers={"Cookie": f"sr_console={s}"})
                       for s in sessions]
            for stream in streams:
                assert stream.status == 200, stream.status
                await updated(stream)  # the inbox as it stands, sent when the stream opens

            for i in range(rounds):
                started = time.perf_counter()
                waiting = [asyncio.create_task(updated(s)) for s in streams]
                await bus.publish(events.ApprovalVoted(tenant_id=TENANT, actor=ACTOR, correlation_id="c",
                                                       approval_id=f"apr_{i}", request_id=f"req_{i}",
                                                       approvals_received=1, approvals_required=2))
                await asyncio.gather(*waiting)
                timings.append((time.perf_counter() - started) * 1000)
            for stream in streams:
                stream.close()
        await runner.cleanup()
    await bus.close()
    return timings


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--approvals", type=int, default=5)
    args = parser.parse_args()
    print(f"approval event -> every open inbox re-rendered ({args.approvals} pending approvals each, {args.rounds} rounds)")
    for viewers in args.viewers:
        timings = sorted(await run(viewers, args.rounds, args.approvals))
        print(f"  {viewers:4d} viewers: median {statistics.median(timings):7.1f} ms, "
              f"max {timings[-1]:7.1f} ms, {statistics.median(timings) / viewers:5.2f} ms per viewer")


if __name__ == "__main__":
    asyncio.run(main())
