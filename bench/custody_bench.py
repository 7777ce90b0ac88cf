"""Key custody at scale: keysvc key creation and release throughput with 1, 1,000 and 1,000,000 keys
in a tenant, KEK-rotation re-wrap rate, and keysvc's peak memory.

Run: python bench/custody_bench.py [--sizes 1,1000,1000000] [--seconds 8] [--concurrency 32]
                                   [--working-set 1000] [--creates 1000] [--rounds 3] [--side-by-side]
                                   [--rewrap-sizes 1000,20000] [--populate-budget 900]

What is measured, honestly:
- The tenants are seeded, not created through the API (1M API calls would take hours here):
  each size gets its own fresh database; key documents, each with its own random data key
  correctly wrapped (AES-256-GCM, tenant/key/version associated data) under the tenant's KEK by
  the real hierarchy code, exactly the documents `create_key` writes, are bulk-inserted in
  large batches before the indexes are built (insert rate and index build time are printed).
  Creation through keysvc's own `create_key` handler is measured separately, on top of each
  seeded tenant (--creates keys), to show it does not slow down with the tenant's size.
- Release throughput is keysvc's release handler alone (`handlers_release.release_key`: key lookup
  through the bounded caches -> one indexed read of the key's head on a miss, state check, KEK
  unwrap of the data key, HPKE seal, ledger write), driven in a child process that is a fresh
  keysvc: no gateway, policysvc or bus hops (bench/release_bench.py gives the end-to-end
  figure). Three workloads per size:
    working set   each of --working-set agents releases its own volume key again and again
                  (keys spread over the whole tenant): the realistic case;
    uniform       a uniformly random key of all N per request: with N far above the cache
                  bound almost every lookup misses (the worst case);
    hot           one key.
  Store reads per release (find commands counted by a command listener) are printed.
- Peak memory is the child keysvc process's own peak RSS (VmHWM; ru_maxrss would carry over the
  seeding parent's, which Linux keeps across exec) after all its runs; the store
  is a separate process (MONGODB_URL, else an embedded SecantusDB on disk in a temporary
  directory: its in-memory engine cannot hold a million keys), given the cache mongod would take
  on this machine by default (--cache-size).
- If a size cannot be seeded within --populate-budget seconds, the largest size reached is used
  and the output says so.
- Every size is seeded (and the store checkpointed) before any is measured; then the sizes take
  turns for --rounds rounds and the medians are compared, so a slow minute on a shared box does
  not land on one size only. With --side-by-side the sizes run at once instead, one keysvc child
  each, every workload started in the same instant in all of them: each then gets about a third of
  the box, but the box's drift hits them alike, and the per-round ratios compare sizes directly.
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
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog


def _quiet() -> None:
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


async def _no_publish(event) -> None:
    return None


def key_id(i: int) -> str:
    return f"key_{i:08d}"


async def populate(url: str, prefix: str, tenant: str, root: bytes, n: int, budget: float) -> tuple[int, float, float, float]:
    """Seed n keys (head + version 1, correctly wrapped) into a fresh database, then build the
    indexes; returns (inserted, insert seconds, index build seconds, checkpoint seconds)."""
    from datetime import UTC, datetime

    from services.keysvc import keys as domain
    from services.keysvc.hierarchy import KeyHierarchy, data_key_aad
    from services.keysvc.key_docs import head_doc, version_doc
    from services.keysvc.store import KeyStore
    from shared.crypto.envelope import generate_key, wrap
    from shared.outbox import Outbox
    from shared.store import connect, service_database

    client = connect(url)
    store = KeyStore(service_database(client, "keysvc", prefix=prefix))
    hierarchy = KeyHierarchy(store, root_key=root)
    kek_version, kek = await hierarchy.current_kek(tenant)
    now = datetime.now(UTC)
    started = time.perf_counter()
    chunk = 20_000
    done = 0
    pending: asyncio.Task | None = None
    while done < n:
        heads, versions = [], []
        for i in range(done, min(n, done + chunk)):
            kid = key_id(i)
            wrapped = wrap(kek, generate_key(256), aad=data_key_aad(tenant, kid, 1))
            key = domain.new_key(tenant_id=tenant, key_id=kid, name=f"vol-{i}", algorithm="AES-256", wrapped=wrapped,
                                 kek_version=kek_version, now=now, initial_state=domain.KeyState.ACTIVE)
            heads.append({"tenant_id": tenant, **head_doc(key)})
            versions.append({"tenant_id": tenant, **version_doc(key, key.versions[1])})
        if pending is not None:
            await pending  # the next chunk was generated while the store inserted this one

        async def insert(heads=heads, versions=versions) -> None:
            await store.versions.raw.insert_many(versions, ordered=False)
            await store.keys.raw.insert_many(heads, ordered=False)

        pending = asyncio.create_task(insert())
        done += len(heads)
        if done < n and time.perf_counter() - started > budget:
            break
    if pending is not None:
        await pending
    inserted_in = time.perf_counter() - started
    t0 = time.perf_counter()
    await store.create_indexes()
    await Outbox(_no_publish, store.outbox_collections).create_indexes()  # as keysvc's app does
    indexed_in = time.perf_counter() - t0
    # A bulk load leaves the store's cache full of dirty pages, and flushing them would slow the
    # first measurements down for minutes: a store that has held these keys for a while has long
    # since written them out, so force that checkpoint now (fsync), and say how long it took.
    t0 = time.perf_counter()
    await client.admin.command("fsync")
    flushed_in = time.perf_counter() - t0
    await client.close()
    return done, inserted_in, indexed_in, flushed_in


async def child(args: argparse.Namespace) -> None:
    """A fresh keysvc (store, hierarchy, bounded caches): creates keys, then releases keys of the tenant."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from pymongo import AsyncMongoClient, monitoring

    from services.keysvc.cache import KeyCache
    from services.keysvc.handlers_keys import create_key
    from services.keysvc.handlers_release import release_key
    from services.keysvc.hierarchy import KeyHierarchy
    from services.keysvc.settings import KeySettings
    from services.keysvc.store import KeyStore
    from shared import commands, rpc
    from shared.events import Actor, KeyDecided, KeyReleased
    from shared.outbox import Outbox
    from shared.store import service_database

    class Finds(monitoring.CommandListener):
        count = 0

        def started(self, event) -> None:
            if event.command_name == "find":
                Finds.count += 1

        def succeeded(self, event) -> None:
            pass

        def failed(self, event) -> None:
            pass

    _quiet()
    root = bytes.fromhex(sys.stdin.readline().strip())
    client = AsyncMongoClient(args.url, tz_aware=True, event_listeners=[Finds()])
    store = KeyStore(service_database(client, "keysvc", prefix=args.prefix))
    hierarchy = KeyHierarchy(store, root_key=root)
    cache = KeyCache(store, KeySettings().key_cache_size)
    results: dict = {}

    # Creation through keysvc's own handler, on top of the seeded tenant.
    async def no_publish(event) -> None:
        return None

    outbox = Outbox(no_publish, store.outbox_collections)
    names = iter(range(args.creates))

    async def creator() -> None:
        for i in names:  # one request each, as the gateway sends them (a request's key id derives from it)
            request = rpc.RpcRequest(method="create_key", tenant_id=args.tenant, actor=Actor(kind="user", id="bench"))
            await create_key(request, commands.CreateKey(name=f"created-{i}"), store=store, hierarchy=hierarchy,
                                      cache=cache, outbox=outbox)

    t0 = time.perf_counter()
    await asyncio.gather(*(creator() for _ in range(8)))
    results["create_per_s"] = args.creates / (time.perf_counter() - t0)  # 0 when asked for none (later rounds)
    cache.drop_tenant(args.tenant)  # releases below start from a cold cache

    publics = [base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode() for _ in range(64)]
    rng = random.Random(7)
    working_set = [key_id(i) for i in rng.sample(range(args.n), min(args.n, args.working_set))]
    released = 0
    latencies: list[float] = []

    async def publish(event) -> None:
        nonlocal released
        if isinstance(event, KeyReleased):
            released += 1

    # keysvc's release handler as app.py binds it (here every outcome goes to the counting publisher).
    release = partial(release_key, store=store, hierarchy=hierarchy, cache=cache, publish=publish, notify=publish)

    async def worker(deadline: float, pick) -> None:
        while time.perf_counter() < deadline:
            event = KeyDecided(tenant_id=args.tenant, request_id=secrets.token_hex(12), device_id="dev_bench", key_id=pick(),
                               effect="allow", ephemeral_public_key=random.choice(publics))
            t0 = time.perf_counter()
            await release(event)
            latencies.append(time.perf_counter() - t0)

    async def touch(keys: list[str]) -> None:
        for kid in keys:
            event = KeyDecided(tenant_id=args.tenant, request_id=secrets.token_hex(12), device_id="dev_bench", key_id=kid,
                               effect="allow", ephemeral_public_key=publics[0])
            await release(event)

    # Uniform last: at a million keys it reads all over the collection, which slows the store down
    # for a while (for every tenant alike), so the other two are measured before it.
    workloads = (("working_set", lambda: random.choice(working_set)), ("hot", lambda: key_id(0)),
                 ("uniform", lambda: key_id(random.randrange(args.n))))
    for label, pick in workloads:
        if label == "working_set":  # every agent has asked once before the clock starts
            await asyncio.gather(*(touch(working_set[i::args.concurrency]) for i in range(args.concurrency)))
        if args.lockstep:  # side by side: every size starts this workload at the same moment
            print(f"ready {label}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.gather(*(worker(time.perf_counter() + 2.0, pick) for _ in range(args.concurrency)))  # warm-up
        released, latencies = 0, []
        finds = Finds.count
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + args.seconds, pick) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
        latencies.sort()
        results[label] = {"releases_per_s": released / elapsed, "p50_ms": latencies[len(latencies) // 2] * 1000,
                          "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "releases": released,
                          "finds_per_release": (Finds.count - finds) / max(released, 1)}
    results["cache_entries"] = len(cache)
    results["max_rss_mb"] = _peak_rss_mb()
    await client.close()
    print(json.dumps(results), flush=True)


WORKLOADS = ("working_set", "uniform", "hot")


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), which starts afresh at exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mongod_cache_size() -> str:
    """mongod's default WiredTiger cache, 50% of (RAM - 1 GB), at least 256 MB: a million keys fit in
    what a production store would have, while the embedded server's own default is only 1 GB."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(256, (ram - 2**30) // 2 // 2**20)}M"


def _child_command(url: str, prefix: str, tenant: str, n: int, args: argparse.Namespace, *, creates: int,
                   lockstep: bool = False) -> list[str]:
    return [sys.executable, __file__, "--child", "--url", url, "--prefix", prefix, "--tenant", tenant, "--n", str(n),
            "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
            "--working-set", str(args.working_set), "--creates", str(creates)] + (["--lockstep"] if lockstep else [])


def run_child(url: str, prefix: str, tenant: str, root: bytes, n: int, args: argparse.Namespace, *, creates: int) -> dict:
    cmd = _child_command(url, prefix, tenant, n, args, creates=creates)
    out = subprocess.run(cmd, input=root.hex() + "\n", capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"the keysvc child failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_side_by_side(url: str, seeded: list[tuple[int, str, str]], root: bytes, args: argparse.Namespace, *,
                     creates: int) -> dict[int, dict]:
    """One keysvc child per size, all at once, each workload started in the same instant in all of
    them: a slower minute on a shared box then slows every size alike, and their ratios show what
    the number of keys costs. Each child has its own --concurrency releases in flight."""
    children = {
        n: subprocess.Popen(_child_command(url, prefix, tenant, n, args, creates=creates, lockstep=True),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n, tenant, prefix in seeded
    }
    try:
        for child in children.values():
            child.stdin.write(root.hex() + "\n")
            child.stdin.flush()
        for label in ("working_set", "hot", "uniform"):  # the child's order
            for n, child in children.items():
                line = child.stdout.readline()
                if line.strip() != f"ready {label}":
                    raise SystemExit(f"the keysvc child for {n:,} keys failed:\n{line}{child.stderr.read()[-4000:]}")
            for child in children.values():
                child.stdin.write("go\n")
                child.stdin.flush()
        return {n: json.loads(child.stdout.read().strip().splitlines()[-1]) for n, child in children.items()}
    finally:
        for child in children.values():
            if child.poll() is None:
                child.wait(timeout=600)


async def rewrap_rate(url: str, prefix: str, tenant: str, root: bytes, batch: int) -> tuple[int, float]:
    """Rotate the tenant KEK and re-wrap every data key with keysvc's own job; returns (keys, seconds)."""
    from services.keysvc.cache import KeyCache
    from services.keysvc.handlers_kek import rewrap_step, rotate_kek
    from services.keysvc.hierarchy import KeyHierarchy
    from services.keysvc.store import KeyStore
    from shared.commands import NoParams
    from shared.events import Actor
    from shared.outbox import Outbox
    from shared.rpc import RpcRequest
    from shared.store import connect, service_database

    client = connect(url)
    store = KeyStore(service_database(client, "keysvc", prefix=prefix))
    hierarchy = KeyHierarchy(store, root_key=root)
    cache = KeyCache(store, 10_000)

    async def publish(event) -> None:
        return None

    outbox = Outbox(publish, store.outbox_collections)
    request = RpcRequest(method="rotate_kek", tenant_id=tenant, actor=Actor(kind="user", id="bench"))
    started = await rotate_kek(request, NoParams(), store=store, hierarchy=hierarchy, outbox=outbox)
    t0 = time.perf_counter()
    while True:
        done = await rewrap_step(store=store, hierarchy=hierarchy, cache=cache, outbox=outbox, batch=batch)
        if not done:
            latest = await store.latest_kek_rotation(tenant)
            if latest is not None and latest["to_version"] == started.to_version and latest["status"] == "done":
                break
    elapsed = time.perf_counter() - t0
    await client.close()
    return started.total, elapsed


async def main(args: argparse.Namespace) -> None:
    from shared.embedded_mongo import EmbeddedMongo

    _quiet()
    server = None
    url = os.environ.get("MONGODB_URL")
    scratch = None
    if url is None:
        # On disk, not in memory: the in-memory engine's cache cannot hold a million keys.
        scratch = tempfile.TemporaryDirectory(prefix="custody-bench-")
        server = EmbeddedMongo(args.store_dir or scratch.name, cache_size=args.cache_size).start()
        url = server.url
    root = secrets.token_bytes(32)
    prefix = f"bench{secrets.token_hex(4)}_"
    store = "MONGODB_URL" if server is None else f"embedded SecantusDB (on disk, separate process, cache {args.cache_size})"
    print(f"store: {store}; "
          f"concurrency {args.concurrency}; {args.seconds}s per measurement (after 2 s warm-up); "
          f"key cache bound 10,000 keys + 10,000 release views")
    try:
        seeded = []
        for n in [int(s) for s in args.sizes.split(",")]:
            tenant, size_prefix = f"ten_bench_{n}", f"{prefix}{n}_"
            inserted, seconds, indexed, flushed = await populate(url, size_prefix, tenant, root, n,
                                                                 args.populate_budget)
            note = "" if inserted == n else f" (stopped at {inserted:,} of {n:,}: populate budget {args.populate_budget:.0f}s)"
            print(f"{inserted:,} keys seeded in {seconds:.1f}s ({inserted / max(seconds, 1e-9):,.0f} keys/s), "
                  f"indexes built in {indexed:.1f}s, store checkpointed in {flushed:.1f}s{note}", flush=True)
            seeded.append((inserted, tenant, size_prefix))
        # Sizes take turns, round after round, so a slower minute on a shared box hits them all alike.
        runs: dict[int, list[dict]] = {n: [] for n, _, _ in seeded}
        for round_no in range(1, args.rounds + 1):
            creates = args.creates if round_no == 1 else 0
            print(f"\nround {round_no} of {args.rounds}" + (", all sizes side by side" if args.side_by_side else ""))
            if args.side_by_side:
                results = run_side_by_side(url, seeded, root, args, creates=creates)
            else:
                results = {n: run_child(url, p, tenant, root, n, args, creates=creates) for n, tenant, p in seeded}
            for inserted, r in results.items():
                runs[inserted].append(r)
                print(f"  {inserted:>9,} keys:" + "".join(
                    f"  {label.replace('_', ' ')} {r[label]['releases_per_s']:>6,.0f}/s" for label in WORKLOADS), flush=True)
        print(f"\nmedians over {args.rounds} round(s), {args.seconds:g}s each after a 2 s warm-up:")
        medians = {n: {label: statistics.median(r[label]["releases_per_s"] for r in rs) for label in WORKLOADS}
                   for n, rs in runs.items()}
        for n, rs in runs.items():
            first = rs[0]
            print(f"\n{n:,} keys")
            print(f"  create_key handler on top: {first['create_per_s']:,.0f} keys/s ({args.creates:,} keys, 8 at a time)")
            for label, text in (("working_set", f"working set ({min(n, args.working_set):,} agents' keys)"),
                                ("uniform", "uniform random key"), ("hot", "one hot key")):
                w = first[label]
                print(f"  release, {text + ':':<36} {medians[n][label]:>7,.0f}/s  p50 {w['p50_ms']:.2f} ms  "
                      f"p99 {w['p99_ms']:.2f} ms  store reads/release {w['finds_per_release']:.2f}")
            print(f"  keysvc peak RSS {max(r['max_rss_mb'] for r in rs):.0f} MB; cache entries "
                  f"{first['cache_entries']:,} (bound 10,000 keys + 10,000 release views)")
        smallest = seeded[0][0]
        for label in WORKLOADS:
            base = medians[smallest][label]
            print(f"\n{label.replace('_', ' ')} release throughput relative to the smallest tenant "
                  f"(ratio of medians; median and range of the per-round ratios):")
            for n in medians:
                ratios = [r[label]["releases_per_s"] / b[label]["releases_per_s"]
                          for r, b in zip(runs[n], runs[smallest], strict=True)]
                print(f"  {n:>9,} keys: {medians[n][label] / base * 100:.0f}%; per round {statistics.median(ratios) * 100:.0f}% "
                      f"({min(ratios) * 100:.0f}-{max(ratios) * 100:.0f}%)")
        for n in [int(s) for s in args.rewrap_sizes.split(",") if s]:
            tenant, size_prefix = f"ten_rewrap_{n}", f"{prefix}rw{n}_"
            inserted, _, _, _ = await populate(url, size_prefix, tenant, root, n, args.populate_budget)
            keys, seconds = await rewrap_rate(url, size_prefix, tenant, root, batch=500)
            print(f"\nKEK rotation: {keys:,} data keys re-wrapped in {seconds:.1f}s = {keys / seconds:,.0f} keys/s "
                  f"(batches of 500; per key a compare-and-swap on the version and on the head's copy)")
    except Exception:
        if server is not None:
            print(f"embedded store output (tail):\n{server._output()[-2000:]}", file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        if scratch is not None:
            scratch.cleanup()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1,1000,1000000")
    p.add_argument("--rewrap-sizes", default="1000,20000")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--populate-budget", type=float, default=900.0)
    p.add_argument("--working-set", type=int, default=1000)
    p.add_argument("--store-dir", help="data directory of the embedded store (default: a temporary one)")
    p.add_argument("--creates", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3, help="measurement rounds; sizes take turns in each")
    p.add_argument("--side-by-side", action="store_true",
                   help="in each round run every size at once, workloads started together (drift-free ratios)")
    p.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)  # a side-by-side child
    p.add_argument("--cache-size", default=_mongod_cache_size(),
                   help="the embedded store's cache (default: what mongod would take on this machine)")
    p.add_argument("--child", action="store_true")
    p.add_argument("--url")
    p.add_argument("--prefix")
    p.add_argument("--tenant")
    p.add_argument("--n", type=int)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    asyncio.run(child(arguments) if arguments.child else main(arguments))
