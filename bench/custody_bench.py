"""Key custody at scale: keysvc release throughput with 1, 1,000 and 1,000,000 keys in a tenant,
KEK-rotation re-wrap rate, and keysvc's peak memory.

Run: python bench/custody_bench.py [--sizes 1,1000,1000000] [--seconds 8] [--concurrency 32]
                                   [--rewrap-sizes 1000,100000] [--populate-budget 300]

What is measured, honestly:
- Keys are NOT created through the API (1M API calls would take hours here). They are inserted
  in bulk straight into keysvc's collections, each with its own random data key correctly
  wrapped (AES-256-GCM, tenant/key/version associated data) under the tenant's KEK, exactly
  the documents `create_key` writes. Insert rate is printed too.
- Release throughput is keysvc's release handler alone (`handlers.release_key`: key lookup
  through the bounded cache -> store on a miss, state check, KEK unwrap of the data key,
  HPKE seal, ledger write), driven in a child process that is a fresh keysvc: no gateway,
  policysvc or bus hops (see bench/release_bench.py for the end-to-end figure). Each request
  asks for a uniformly random key of the tenant, so with many keys almost every lookup misses
  the cache (the worst case); a "hot key" figure is printed alongside.
- Peak memory is the child keysvc process's max RSS (ru_maxrss) after the run; the store is
  a separate process (embedded SecantusDB, or MONGODB_URL).
- If a size cannot be populated within --populate-budget seconds, the largest size reached
  is used and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog  # noqa: E402


def _quiet() -> None:
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def key_id(i: int) -> str:
    return f"key_{i:08d}"


async def populate(url: str, prefix: str, tenant: str, root: bytes, n: int, budget: float) -> tuple[int, float]:
    """Bulk-insert n keys (head + version 1) with correct wraps; returns (inserted, seconds)."""
    from datetime import UTC, datetime

    from services.keysvc import keys as domain
    from services.keysvc.hierarchy import KeyHierarchy, data_key_aad
    from services.keysvc.store import KeyStore, _head_doc, _version_doc
    from shared.crypto.envelope import generate_key, wrap
    from shared.store import connect, service_database

    client = connect(url)
    store = KeyStore(service_database(client, "keysvc", prefix=prefix))
    await store.create_indexes()
    hierarchy = KeyHierarchy(store, root_key=root)
    kek_version, kek = await hierarchy.current_kek(tenant)
    now = datetime.now(UTC)
    started = time.perf_counter()
    chunk = 5000
    done = 0
    while done < n:
        heads, versions = [], []
        for i in range(done, min(n, done + chunk)):
            kid = key_id(i)
            wrapped = wrap(kek, generate_key(256), aad=data_key_aad(tenant, kid, 1))
            key = domain.new_key(tenant_id=tenant, key_id=kid, name=f"vol-{i}", algorithm="AES-256", wrapped=wrapped,
                                 kek_version=kek_version, now=now, initial_state=domain.KeyState.ACTIVE)
            heads.append({"tenant_id": tenant, **_head_doc(key)})
            versions.append({"tenant_id": tenant, **_version_doc(key, key.versions[1])})
        await store.versions.raw.insert_many(versions, ordered=False)
        await store.keys.raw.insert_many(heads, ordered=False)
        done += len(heads)
        elapsed = time.perf_counter() - started
        if done < n and elapsed > budget:
            break
    await client.close()
    return done, time.perf_counter() - started


async def child(args: argparse.Namespace) -> None:
    """A fresh keysvc (store, hierarchy, bounded cache) releasing random keys of the tenant."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from services.keysvc import handlers
    from services.keysvc.hierarchy import KeyHierarchy
    from services.keysvc.store import KeyStore
    from shared.config import KeySettings
    from shared.events import KeyDecided, KeyReleased
    from shared.store import connect, service_database

    _quiet()
    root = bytes.fromhex(sys.stdin.readline().strip())
    client = connect(args.url)
    store = KeyStore(service_database(client, "keysvc", prefix=args.prefix))
    hierarchy = KeyHierarchy(store, root_key=root)
    cache = handlers.KeyCache(store, KeySettings().key_cache_size)
    publics = [base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode() for _ in range(64)]
    released = 0
    latencies: list[float] = []

    async def publish(event) -> None:
        nonlocal released
        if isinstance(event, KeyReleased):
            released += 1

    async def worker(deadline: float, hot: bool) -> None:
        while time.perf_counter() < deadline:
            kid = key_id(0 if hot else random.randrange(args.n))
            event = KeyDecided(tenant_id=args.tenant, request_id=secrets.token_hex(12), device_id="dev_bench", key_id=kid,
                               effect="allow", ephemeral_public_key=random.choice(publics))
            t0 = time.perf_counter()
            await handlers.release_key(event, store=store, hierarchy=hierarchy, cache=cache, publish=publish)
            latencies.append(time.perf_counter() - t0)

    results = {}
    for label, hot in (("random", False), ("hot", True)):
        await asyncio.gather(*(worker(time.perf_counter() + 1.0, hot) for _ in range(args.concurrency)))  # warm-up
        released, latencies = 0, []
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + args.seconds, hot) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
        latencies.sort()
        results[label] = {"releases_per_s": released / elapsed, "p50_ms": latencies[len(latencies) // 2] * 1000,
                          "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "releases": released}
    results["cache_entries"] = len(cache)
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    await client.close()
    print(json.dumps(results), flush=True)


def run_child(url: str, prefix: str, tenant: str, root: bytes, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--url", url, "--prefix", prefix, "--tenant", tenant, "--n", str(n),
           "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
    out = subprocess.run(cmd, input=root.hex() + "\n", capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


async def rewrap_rate(url: str, prefix: str, tenant: str, root: bytes, batch: int) -> tuple[int, float]:
    """Rotate the tenant KEK and re-wrap every data key with keysvc's own job; returns (keys, seconds)."""
    from services.keysvc import custody_handlers as custody
    from services.keysvc import handlers
    from services.keysvc.hierarchy import KeyHierarchy
    from services.keysvc.store import KeyStore
    from shared.events import Actor
    from shared.outbox import Outbox
    from shared.rpc import RpcRequest
    from shared.store import connect, service_database

    client = connect(url)
    store = KeyStore(service_database(client, "keysvc", prefix=prefix))
    hierarchy = KeyHierarchy(store, root_key=root)
    cache = handlers.KeyCache(store, 10_000)

    async def publish(event) -> None:
        return None

    outbox = Outbox(publish, store.outbox_collections)
    request = RpcRequest(method="rotate_kek", tenant_id=tenant, actor=Actor(kind="user", id="bench"))
    started = await custody.rotate_kek(request, {}, store=store, hierarchy=hierarchy, outbox=outbox)
    t0 = time.perf_counter()
    while True:
        done = await custody.rewrap_step(store=store, hierarchy=hierarchy, cache=cache, outbox=outbox, batch=batch)
        if not done:
            status = await store.kek_rotations.find_one(tenant, {"rotation_id": {"$exists": True}, "to_version": started["to_version"]})
            if status["status"] == "done":
                break
    elapsed = time.perf_counter() - t0
    await client.close()
    return started["total"], elapsed


async def main(args: argparse.Namespace) -> None:
    from shared.embedded_mongo import EmbeddedMongo

    _quiet()
    server = None
    url = os.environ.get("MONGODB_URL")
    if url is None:
        server = EmbeddedMongo(":memory:").start()
        url = server.url
    root = secrets.token_bytes(32)
    prefix = f"bench{secrets.token_hex(4)}_"
    print(f"store: {'MONGODB_URL' if server is None else 'embedded SecantusDB (in memory, separate process)'}; "
          f"concurrency {args.concurrency}; {args.seconds}s per measurement; key cache bound 10,000 entries")
    try:
        rows = []
        for n in [int(s) for s in args.sizes.split(",")]:
            tenant = f"ten_bench_{n}"
            inserted, seconds = await populate(url, prefix, tenant, root, n, args.populate_budget)
            note = "" if inserted == n else f" (stopped at {inserted:,} of {n:,}: populate budget {args.populate_budget:.0f}s)"
            print(f"\n{inserted:,} keys bulk-inserted in {seconds:.1f}s ({inserted / max(seconds, 1e-9):,.0f} keys/s){note}", flush=True)
            r = run_child(url, prefix, tenant, root, inserted, args)
            rows.append((inserted, r))
            print(f"  release, random key: {r['random']['releases_per_s']:,.0f}/s  p50 {r['random']['p50_ms']:.2f} ms  "
                  f"p99 {r['random']['p99_ms']:.2f} ms", flush=True)
            print(f"  release, hot key:    {r['hot']['releases_per_s']:,.0f}/s  p50 {r['hot']['p50_ms']:.2f} ms  "
                  f"p99 {r['hot']['p99_ms']:.2f} ms")
            print(f"  keysvc peak RSS {r['max_rss_mb']:.0f} MB; key cache entries {r['cache_entries']:,}")
        base = rows[0][1]["random"]["releases_per_s"]
        print("\nrandom-key release throughput relative to the smallest tenant:")
        for n, r in rows:
            print(f"  {n:>9,} keys: {r['random']['releases_per_s'] / base * 100:.0f}%")
        for n in [int(s) for s in args.rewrap_sizes.split(",") if s]:
            tenant = f"ten_rewrap_{n}"
            inserted, _ = await populate(url, prefix, tenant, root, n, args.populate_budget)
            keys, seconds = await rewrap_rate(url, prefix, tenant, root, batch=500)
            print(f"\nKEK rotation: {keys:,} data keys re-wrapped in {seconds:.1f}s = {keys / seconds:,.0f} keys/s "
                  f"(batches of 500, one compare-and-swap update per key)")
    finally:
        if server is not None:
            server.stop()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1,1000,1000000")
    p.add_argument("--rewrap-sizes", default="1000,20000")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--populate-budget", type=float, default=300.0)
    p.add_argument("--child", action="store_true")
    p.add_argument("--url")
    p.add_argument("--prefix")
    p.add_argument("--tenant")
    p.add_argument("--n", type=int)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    asyncio.run(child(arguments) if arguments.child else main(arguments))
