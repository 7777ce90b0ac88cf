"""Audit query latency on a large chain: `GET /v1/audit` filters against one tenant's records.

Run: python bench/audit_query_bench.py [--records 1000000] [--batch 1000]

Loads --records synthetic records (1 in 20 actors, 50 keys, one rare key, a correlation id each,
one second apart) into one tenant's chain through auditsvc's own ingest path and store, on the
embedded MongoDB-compatible store in a scratch directory (or MONGODB_URL), then times each
query shape (best of three, first page of 100). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.auditsvc import handlers
from services.auditsvc.search import criteria
from services.auditsvc.store import AuditStore
from shared import events, runtime
from shared.commands_audit import AuditQuery
from shared.store import connect

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _event(i: int, n: int) -> events.Event:
    return events.KeyCreated(
        tenant_id="ten_q", key_id="key_rare" if i == n // 2 else f"key_{i % 50}", name="v", algorithm="AES-256",
        occurred_at=T0 + timedelta(seconds=i), correlation_id=f"corr_{i}",
        actor={"kind": "user", "id": f"usr_{i % 20}", "auth": "password"})


async def run(args: argparse.Namespace) -> None:
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    server = None
    url = os.environ.get("MONGODB_URL")
    if url is None:
        from shared.embedded_mongo import EmbeddedMongo

        # On disk: a million records overflow the in-memory store's 1 GB cache.
        scratch = tempfile.TemporaryDirectory(prefix="audit-query-bench-")
        server = EmbeddedMongo(Path(scratch.name) / "store").start()
        url = server.url
    client = connect(url)
    db_name = f"bench{uuid.uuid4().hex[:8]}_auditsvc"
    try:
        store = AuditStore(client[db_name])
        await store.create_indexes()
        heads = handlers.ChainHeads(store)
        n = args.records
        started = time.perf_counter()
        for start in range(0, n, args.batch):
            await handlers.ingest([_event(i, n) for i in range(start, min(n, start + args.batch))],
                                  store=store, heads=heads)
        print(f"loaded {n:,} records in {time.perf_counter() - started:.0f} s")
        since = T0 + timedelta(seconds=int(n * 0.6))
        cases = {
            "first page": {},
            "last page (after = N - 100)": {"after": n - 100},
            "action (every record)": {"action": "key.created"},
            "actor (1 in 20)": {"actor": "usr_3"},
            "key (1 record)": {"key": "key_rare"},
            "correlation id (1 record)": {"correlation_id": f"corr_{n - 5}"},
            "time range, 1 hour at 60%": {"since": _rfc3339(since), "until": _rfc3339(since + timedelta(hours=1))},
            "key (1 in 50) since 60%": {"key": "key_7", "since": _rfc3339(since)},
            "no match": {"actor": "usr_none"},
        }
        for name, params in cases.items():
            q = AuditQuery.model_validate({"limit": 100, **params})
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                items = await store.query("ten_q", criteria(q), after_seq=q.after, limit=q.limit)
                best = min(best, time.perf_counter() - started)
            print(f"{name:30} {best * 1000:8.1f} ms  ({len(items)} records)")
    finally:
        await client.drop_database(db_name)
        await client.close()
        if server is not None:
            server.stop()
            scratch.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    runtime.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
