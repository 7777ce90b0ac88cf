"""Key releases per second and their latency through the four services, driven the way agents use them.

Run: python bench/release_bench.py [--agents 1,8,32] [--seconds 10] [--rules 1|50] [--bus rabbitmq|memory] [--tpm]
     [--processes [--replicas N]] [--heartbeats] [--no-bare]
     python bench/release_bench.py --gateway-url URL --mail-folder DIR  (a running gateway: bench/load_driver.py)

This process runs gateway, policysvc, keysvc and auditsvc (as `Stack` does in tests: one bus
connection each) over RabbitMQ under a throwaway prefix, deleted at the end, or over the
in-memory bus, with the embedded MongoDB-compatible store in memory. Setup goes through the HTTP
API: bootstrap credential, tenant, key, one allow policy, enrolment tokens. The agents run in a
child process (so their crypto and HTTP client do not share the services' event loop): each
enrols with the agent SDK, then loops on signed key requests with a fresh X25519 key, and a
release counts only once its sealed key has opened. Prints figures; asserts nothing. The audit
backlog column is what auditsvc's queue still holds at the end of each level: a rate that leaves
a growing backlog is not one the system can sustain (the audit queue is bounded, and a full one
refuses releases).

After each level the bare three-hop pipeline (bare_pipeline.py: same broker, quorum queues,
confirms, separate processes) runs at the same concurrency, so `ratio` compares figures taken in
the same minute. `--processes` runs each service in its own process(es) (service_processes.py)
and reports CPU per service; store operations per release come from the store's serverStatus
counters and, with the services in this process, from PyMongo's command monitoring by collection.
`--heartbeats` measures signed heartbeats instead of releases (each agent is released the key
once first, so every heartbeat re-checks it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import secrets
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared import runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import load_driver  # --gateway-url: drive a gateway running elsewhere
import structlog
from procstat import cpu_seconds as cpu_seconds_of
from procstat import listening_pid
from pymongo import monitoring

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
KEY_REQUESTS_PATH = "/v1/agent/key-requests"
WARMUP_SECONDS = 1.5
IDLE_SECONDS = 3.0
LOAD_GENERATOR_FLAG = "--load-generator"
TPM_PCRS = (0, 7)


# --- where the time goes: timings taken at the bus and from the gateway's request log ----------


class Stages:
    """Sums of durations per stage, reset at the start of each concurrency level."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.requested_at: dict[str, float] = {}

    def add(self, stage: str, seconds: float, items: int = 1) -> None:
        self.total[stage] += seconds
        self.calls[stage] += 1
        self.items[stage] += items

    def mean_ms(self, stage: str, *, per_item: bool = False) -> float | None:
        count = self.items[stage] if per_item else self.calls[stage]
        return self.total[stage] / count * 1000 if count else None


class TimedBus:
    """One service's bus, with its publishes and handlers timed; everything else is delegated."""

    def __init__(self, service: str, inner: Any, stages: Stages, *, owns_inner: bool = True) -> None:
        self._service = service
        self._inner = inner
        self._stages = stages
        self._owns_inner = owns_inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()

    async def publish(self, event: Any) -> None:
        await self._timed(self._inner.publish, event)

    async def publish_audited(self, event: Any) -> None:
        # key.requested and key.released go this way (audit queue first, then everyone else).
        await self._timed(self._inner.publish_audited, event)

    async def _timed(self, publish: Any, event: Any) -> None:
        started = time.perf_counter()
        if event.type == "key.requested":
            self._stages.requested_at[event.request_id] = started
        await publish(event)
        self._stages.add(f"{self._service} publish {event.type}", time.perf_counter() - started)

    async def subscribe(self, service: str, handler: Any, **options: Any) -> None:
        async def timed(event: Any) -> None:
            started = time.perf_counter()
            await handler(event)
            self._stages.add(f"{self._service} handle {event.type}", time.perf_counter() - started)

        await self._inner.subscribe(service, timed, **options)

    async def subscribe_batch(self, service: str, handler: Any, **options: Any) -> None:
        await self._inner.subscribe_batch(service, TimedStages(handler, self._stages, self._service), **options)

    async def listen(self, patterns: Sequence[str], handler: Any) -> Any:
        async def timed(event: Any) -> None:
            if event.type == "key.released":
                requested = self._stages.requested_at.pop(event.request_id, None)
                if requested is not None:
                    self._stages.add("pipeline", time.perf_counter() - requested)
            await handler(event)

        return await self._inner.listen(patterns, timed)


class TimedStages:
    """A staged batch handler (auditsvc's) timed per event over both steps, staging kept intact."""

    def __init__(self, handler: Any, stages: Stages, service: str):
        self._handler = handler if hasattr(handler, "prepare") else None
        self._plain = handler
        self._stages = stages
        self._name = f"{service} ingest batch"

    async def prepare(self, batch: Sequence[Any]) -> Any:
        started = time.perf_counter()
        write = await self._handler.prepare(batch) if self._handler else None
        prepared = time.perf_counter() - started

        async def timed_write() -> None:
            begun = time.perf_counter()
            await (write() if write else self._plain(batch))
            self._stages.add(self._name, prepared + time.perf_counter() - begun, len(batch))

        return timed_write

    def abandon(self) -> None:
        if self._handler:
            self._handler.abandon()


def configure_logging(stages: Stages) -> None:
    """Warnings and errors to stderr; info lines are dropped, after the gateway's request line
    for key requests has given its duration (so log rendering is not part of the figures)."""

    def capture(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if event_dict.get("event") == "http_request" and event_dict.get("path") == KEY_REQUESTS_PATH:
            stages.add("gateway view", event_dict["ms"] / 1000)
        if method_name in ("warning", "error", "critical", "exception"):
            return event_dict
        raise structlog.DropEvent

    structlog.configure(
        processors=[
            capture,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


# --- the policy and the facts -------------------------------------------------------------------


def _count_leaves(doc: Any) -> int:
    if isinstance(doc, dict):
        return sum(_count_leaves(v) for v in doc.values())
    return 1


def full_facts() -> dict[str, Any]:
    """The ~40 facts of policy_eval_bench.py, as an agent reports them (observed ones are the gateway's)."""
    import policy_eval_bench

    facts = policy_eval_bench.facts()
    facts["identity"]["boot_time"] = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    facts.pop("observed")
    return facts


def policy_and_facts(rules: int, facts_kind: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bench policy and the facts agents send: minimal for 1 rule unless `facts_kind` is
    "full", which isolates what 50 rules cost from what 40 facts cost."""
    if rules == 1:
        policy = {
            "name": "bench-allow-eu",
            "rules": [{"id": "allow-eu", "effect": "allow",
                       "when": {"fact": "identity.region", "op": "in", "value": ["eu-west-1", "eu-central-1"]}}],
        }
        if facts_kind == "full":
            facts = full_facts()
            facts["identity"]["region"] = "eu-west-1"
            return policy, facts
        return policy, {"identity": {"region": "eu-west-1"}}
    # The same 50 rules over ~40 facts as policy_eval_bench.py, so the two figures compare.
    import policy_eval_bench

    policy = policy_eval_bench.policy_doc()
    for rule in policy["rules"]:
        when = rule["when"]
        if "not" in when and when["not"].get("op") == "within_time_window":
            # Every hour of every day: the bench must not turn into "approval required" at night.
            when["not"]["value"] = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                    "from": "00:00", "to": "24:00"}
    return policy, full_facts()


# --- the services' side -------------------------------------------------------------------------


class Operator:
    """Just enough of the operator API for setup."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session, self.url, self.token = session, url, token

    async def post(self, path: str, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.post(self.url + path, json=body, headers=headers) as resp:
            document = await resp.json(content_type=None)
            if resp.status != expect:
                raise SystemExit(f"setup failed: POST {path} -> {resp.status} {document}")
            return document


BENCH_PASSWORD = "bench-orchid-door-7291"


async def _signed_in(session, url: str, tenant: str, username: str) -> Operator:
    """A session for `username`, enrolling TOTP when the user's roles require it."""
    import pyotp

    login = await Operator(session, url, "").post(
        "/v1/auth/login", {"tenant": tenant, "username": username, "password": BENCH_PASSWORD})
    user = Operator(session, url, login["session_token"])
    if login["mfa_enrolment_required"]:
        enrol = await user.post("/v1/me/mfa", {})
        await user.post("/v1/me/mfa/confirm", {"code": pyotp.TOTP(enrol["secret"]).now()}, expect=200)
    return user


def _setup_token(mail_folder: Path, address: str) -> str:
    """The setup token of the invitation the gateway wrote to its mail folder for `address`."""
    import re

    for message in sorted(mail_folder.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True):
        text = message.read_text()
        if f"To: {address}" in text:
            return re.search(r"sr_setup_[A-Za-z0-9_-]+", text).group(0)  # type: ignore[union-attr]
    raise SystemExit(f"setup failed: no invitation for {address}")


async def _set_up_team(session, url: str, bootstrap: str, mail_folder: Path) -> tuple[Operator, Operator]:
    """Bootstrap -> provider admin -> tenant with two admins (invited by mail) -> a key custodian
    and a security officer (confirmed by the second admin), as separation of duties requires."""
    await Operator(session, url, bootstrap).post("/v1/auth/bootstrap", {"username": "root", "password": BENCH_PASSWORD})
    provider = await _signed_in(session, url, "provider", "root")
    tenant = await provider.post("/v1/tenants", {"name": "bench", "admin_email": "admin@bench.example",
                                                 "second_admin_username": "second-admin",
                                                 "second_admin_email": "second-admin@bench.example"})
    anon = Operator(session, url, "")
    people = {}
    for username in ("admin", "second-admin"):
        token = _setup_token(mail_folder, f"{username}@bench.example")
        await anon.post("/v1/auth/setup", {"setup_token": token, "password": BENCH_PASSWORD}, expect=200)
        people[username] = await _signed_in(session, url, tenant["tenant_id"], username)
    for username, roles in (("custodian", ["key_custodian"]), ("officer", ["security_officer"])):
        email = f"{username}@bench.example"
        user = await people["admin"].post("/v1/users", {"username": username, "roles": roles, "email": email})
        for pending in user["pending_roles"]:
            await people["second-admin"].post(f"/v1/users/{user['user_id']}/roles/{pending['role']}/confirm", {}, expect=200)
        await anon.post("/v1/auth/setup", {"setup_token": _setup_token(mail_folder, email), "password": BENCH_PASSWORD},
                        expect=200)
        people[username] = await _signed_in(session, url, tenant["tenant_id"], username)
    return people["custodian"], people["officer"]


async def set_up_tenant(url: str, bootstrap: str, agents: int, rules: int, groups: int = 0,
                        facts_kind: str | None = None, *, mail_folder: Path) -> dict[str, Any]:
    policy, facts = policy_and_facts(rules, facts_kind)
    async with aiohttp.ClientSession() as session:
        custodian, admin = await _set_up_team(session, url, bootstrap, mail_folder)
        key = await custodian.post("/v1/keys", {"name": "bench-volume", "volume": "vol-bench"})
        if groups:
            # Device groups by facts (each a condition evaluated per request) and a key group; the
            # policy targets them, so every release computes group membership from the cache.
            image = facts.setdefault("identity", {}).setdefault("image_id", "ami-bench")
            for i in range(groups):
                await admin.post("/v1/groups", {"name": f"images-{i}", "kind": "device", "match": {
                    "fact": "identity.image_id", "op": "in", "value": [f"ami-{i}", image if i == groups - 1 else "ami-x"]}})
            await admin.post("/v1/groups", {"name": "bench-keys", "kind": "key", "members": [key["key_id"]]})
            policy = {**policy, "targets": {"device_groups": [f"images-{groups - 1}"], "key_groups": ["bench-keys"]}}
        await admin.post("/v1/policies", policy)
        enrollments = [await admin.post("/v1/enrollment-tokens", {"name": f"bench-vm-{i}", "ttl_seconds": 3600})
                       for i in range(agents)]
    return {"url": url, "key_id": key["key_id"], "facts": facts,
            "enrollment_tokens": [e["token"] for e in enrollments], "policy_rules": len(policy["rules"]),
            "fact_count": _count_leaves(facts),
            "groups": groups}


class LoadGenerator:
    """The child process that plays the agents; one JSON line per command and per answer."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> LoadGenerator:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), LOAD_GENERATOR_FLAG,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise SystemExit(f"load generator exited with status {await self.process.wait()}")
        return json.loads(line)

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class StoreCommands(monitoring.CommandListener):
    """Every store command the services send, counted by database and command name (PyMongo's
    command monitoring): where the store's operations per release come from."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: Any) -> None:
        collection = event.command.get(event.command_name)
        where = f"{event.database_name.removeprefix(_PREFIX[0])}.{collection}" if isinstance(collection, str) \
            else event.database_name.removeprefix(_PREFIX[0])
        self.counts[f"{where} {event.command_name}"] += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


_PREFIX = [""]  # the bench's database prefix, cut from database names in the breakdown


async def store_opcounters(client: Any) -> Counter[str]:
    """The store's own operation counters (serverStatus): every client's operations, not only ours."""
    status = await client.admin.command("serverStatus")
    return Counter({k: int(v) for k, v in status.get("opcounters", {}).items()})


async def run_bench(args: argparse.Namespace) -> None:
    from bare_pipeline import BarePipeline
    from pymongo import AsyncMongoClient
    from service_processes import ServiceProcesses, make_stack

    from shared.bus import RabbitBus
    from shared.bus_memory import MemoryBus
    from shared.crypto import tokens
    from shared.embedded_mongo import EmbeddedMongo

    stages = Stages()
    configure_logging(stages)
    if args.tracemalloc:
        tracemalloc.start()
    levels = [int(n) for n in args.agents.split(",")]
    prefix = f"bench{uuid.uuid4().hex[:10]}_"
    bus_prefix = f"{prefix}."
    memory_bus = MemoryBus() if args.bus == "memory" else None

    async def bus_for(name: str) -> TimedBus:
        if memory_bus is not None:
            return TimedBus(name, memory_bus, stages, owns_inner=False)
        bus = RabbitBus(args.amqp_url, prefix=bus_prefix)
        await bus.start()
        return TimedBus(name, bus, stages)

    store = EmbeddedMongo(":memory:").start()  # fresh per run: the store's per-op cost grows with its writes
    commands = StoreCommands()
    _PREFIX[0] = prefix
    client = AsyncMongoClient(store.url, tz_aware=True, event_listeners=[commands])
    bootstrap = tokens.new_token("sr_boot")
    bench_dir = Path(tempfile.mkdtemp(prefix="strongroom-bench-"))
    root_key = secrets.token_bytes(32)
    stack = make_stack(client, bus_for, prefix=prefix, bootstrap=bootstrap, bench_dir=bench_dir, root_key=root_key)
    children = ServiceProcesses({"store_url": store.url, "amqp_url": args.amqp_url, "prefix": prefix,
                                 "bootstrap": bootstrap, "bench_dir": str(bench_dir), "root_key": root_key.hex()},
                                args.replicas) if args.processes else None
    monitor = RabbitBus(args.amqp_url, prefix=bus_prefix) if memory_bus is None else memory_bus
    bare = BarePipeline(args.amqp_url) if memory_bus is None and not args.no_bare else None
    load: LoadGenerator | None = None
    try:
        await monitor.start()
        if children is not None:
            urls = (await children.start()).urls
        else:
            await stack.start_all()
            urls = [stack.url]
        if bare is not None:
            await bare.start()
        setup = await set_up_tenant(urls[0], bootstrap, max(levels), args.rules, args.groups, args.facts,
                                    mail_folder=bench_dir / "mail")
        setup["tpm"], setup["urls"], setup["heartbeats"] = args.tpm, urls, args.heartbeats
        load = await LoadGenerator.start()
        enrolled = await load.ask({"setup": setup})
        if args.defer_audit:
            await (children.stop_service("auditsvc") if children is not None else stack.stop("auditsvc"))
        await load.ask({"agents": max(levels), "seconds": WARMUP_SECONDS})
        broker_pid = local_broker_pid(args.amqp_url) if args.bus == "rabbitmq" else None
        idle = await idle_cpu(children.pids() if children is not None else {"services": [os.getpid()]}, store.pid)
        results = []
        for agents in levels:
            stages.reset()
            pids = children.pids() if children is not None else {"services": [os.getpid()]}
            cpu_before, store_before = {s: sum(map(cpu_seconds_of, p)) for s, p in pids.items()}, \
                cpu_seconds_of(store.pid)
            ops_before, commands.counts = await store_opcounters(client), Counter()
            broker_before = cpu_seconds_of(broker_pid)
            result = await load.ask({"agents": agents, "seconds": args.seconds})
            result["broker_cpu"] = cpu_seconds_of(broker_pid) - broker_before if broker_pid else None
            result["store_ops"] = await store_opcounters(client) - ops_before
            result["store_commands"] = commands.counts
            result["cpu_by_service"] = {s: sum(map(cpu_seconds_of, p)) - cpu_before[s] for s, p in pids.items()}
            result["service_cpu"] = sum(result["cpu_by_service"].values())
            result["store_cpu"] = cpu_seconds_of(store.pid) - store_before
            result["stages"] = stage_means(stages, result)
            # Releases are only sustainable if auditing keeps up: what is still waiting for auditsvc.
            result["audit_backlog"] = await monitor.queue_depth("auditsvc")
            # The ceiling, in the same minute: the bare pipeline at the same concurrency.
            result["bare"] = await bare.measure(agents, min(args.seconds, 5.0)) if bare is not None else None
            results.append(result)
        load_rss = (await load.ask({"report": True}))["max_rss_kib"]
    finally:
        if load is not None:
            await load.stop()
        if bare is not None:
            await bare.stop()
        await (children.stop() if children is not None else stack.stop_all())
        if memory_bus is None:
            await monitor.destroy()
        await monitor.close()
        await client.close()
        store.stop()
    traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    print_report(args, setup, enrolled, results, load_rss, traced_peak)
    print("idle CPU, ms per second with no agent asking (background loops: schedulers, relays, polls): "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in idle.items()))


def local_broker_pid(amqp_url: str) -> int | None:
    """The broker's process when it runs on this machine (its CPU is read from /proc), else None."""
    from yarl import URL

    url = URL(amqp_url.split(",")[0].strip())
    return listening_pid(url.port or 5672) if url.host in ("127.0.0.1", "localhost", "::1") else None


async def idle_cpu(pids: dict[str, list[int]], store_pid: int | None, seconds: float = IDLE_SECONDS) -> dict[str, float]:
    """CPU each service (and the store) spends per second while nothing is asked of it."""
    await asyncio.sleep(0.5)  # the warm-up's last releases settle (audit batches, acks)
    before = {s: sum(map(cpu_seconds_of, p)) for s, p in pids.items()}
    store_before = cpu_seconds_of(store_pid)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    spent = {s: (sum(map(cpu_seconds_of, p)) - before[s]) * 1000 / elapsed for s, p in pids.items()}
    spent["store"] = (cpu_seconds_of(store_pid) - store_before) * 1000 / elapsed
    return spent


STAGE_ROWS = (
    ("agent round trip (sign, HTTP, open)", "agent"),
    ("gateway key-request view, total", "gateway view"),
    ("  gateway publish key.requested", "gateway publish key.requested"),
    ("  key.requested sent -> key.released back", "pipeline"),
    ("policysvc decide (handler)", "policysvc handle key.requested"),
    ("  policysvc publish key.decided", "policysvc publish key.decided"),
    ("keysvc release (handler)", "keysvc handle key.decided"),
    ("  keysvc publish key.released", "keysvc publish key.released"),
    ("auditsvc ingest, per event (batched)", "auditsvc ingest batch"),
)


def print_store_ops(results: list[dict[str, Any]]) -> None:
    """Store operations per release: the store's own counters, then the services' commands by database."""
    heading = "".join(f"{str(r['agents']) + ' agents':>11}" for r in results)
    print(f"{'store operations per release':<42}{heading}")
    names = sorted({k for r in results for k in r["store_ops"]})
    rows = [(f"serverStatus {n}", "store_ops", n) for n in names]
    rows += [(f"  {n}", "store_commands", n) for n in sorted({k for r in results for k in r["store_commands"]})]
    for label, source, name in [("serverStatus, all", "store_ops", None), *rows]:
        cells = "".join(format((sum(r[source].values()) if name is None else r[source][name]) / max(r["ok"], 1), ".2f")
                        .rjust(11) for r in results)
        print(f"{label[:41]:<42}{cells}")
    print()


def stage_means(stages: Stages, result: dict[str, Any]) -> dict[str, float | None]:
    means: dict[str, float | None] = {"agent": result["mean_ms"] if result["ok"] else None}
    for _, stage in STAGE_ROWS[1:]:
        means[stage] = stages.mean_ms(stage, per_item=stage == "auditsvc ingest batch")
    return means


def print_report(args, setup, enrolled, results, load_rss_kib, traced_peak) -> None:
    store = "embedded store (:memory:)"
    bus = "RabbitMQ 127.0.0.1 (RabbitBus, own prefix)" if args.bus == "rabbitmq" else "in-memory bus"
    mode = (f"services as separate processes, {args.replicas} of each" if args.processes
            else "services in one process")
    print(f"release bench ({mode}): {bus}, {store}; policy of {setup['policy_rules']} rule(s) over "
          f"{setup['fact_count']} reported facts, "
          f"{setup.get('groups', 0)} dynamic device group(s); "
          f"{enrolled['enrolled']} agents enrolled in a separate process"
          + ("; each with its own swtpm, a quote over PCRs 0 and 7 per request" if args.tpm else ""))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs; {args.seconds:g}s per level, "
          f"after {WARMUP_SECONDS:g}s warm-up")
    print()
    what = "heartbeats/s" if args.heartbeats else "releases/s"
    print(f"{'agents':>6} {what:>12} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'errors':>6} {'svc CPU ms/op':>13} {'store CPU ms/op':>15} {'agent CPU ms/op':>15} "
          f"{'audit backlog':>13} {'bare msg/s':>10} {'ratio':>6}")
    for r in results:
        per = 1000 / r["ok"] if r["ok"] else float("nan")
        rate = r["ok"] / r["elapsed"]
        bare = r.get("bare")
        print(f"{r['agents']:>6} {rate:>12.1f} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} "
              f"{r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {sum(r['errors'].values()):>6} "
              f"{r['service_cpu'] * per:>13.2f} {r['store_cpu'] * per:>15.2f} {r['cpu_s'] * per:>15.2f} "
              f"{'?' if r['audit_backlog'] is None else r['audit_backlog']:>13} "
              f"{'-' if bare is None else format(bare['rate'], '.0f'):>10} "
              f"{'-' if bare is None else format(rate / bare['rate'], '.3f'):>6}")
    bare_cpu = [(r["agents"], r["bare"]["cpu_ms_per_msg"]) for r in results if r.get("bare")]
    if bare_cpu:
        print("bare pipeline client CPU (driver + 2 hops, broker not counted), ms per message through 3 hops: "
              + ", ".join(f"{cpu:.2f} at {n}" for n, cpu in bare_cpu))
    if any(r.get("broker_cpu") is not None for r in results):
        print("broker CPU (RabbitMQ; counts every client it serves), ms per operation: "
              + ", ".join(f"{r['broker_cpu'] * 1000 / max(r['ok'], 1):.2f} at {r['agents']}" for r in results)
              + ("; per bare message through 3 hops: "
                 + ", ".join(f"{r['bare']['broker_cpu_ms_per_msg']:.2f} at {r['agents']}" for r in results
                             if r.get("bare") and r["bare"].get("broker_cpu_ms_per_msg") is not None)
                 if bare_cpu else ""))
    if args.processes:
        print()
        heading = "".join(f"{str(r['agents']) + ' agents':>11}" for r in results)
        print(f"{'CPU ms per operation, by service':<42}{heading}")
        for service in results[0]["cpu_by_service"]:
            cells = "".join(format(r["cpu_by_service"][service] * 1000 / max(r["ok"], 1), ".2f").rjust(11) for r in results)
            print(f"{f'  {service} ({args.replicas} process(es))':<42}{cells}")
    for r in results:
        for error, count in r["errors"].items():
            print(f"  {r['agents']} agents: {count} x {error}")
    print()
    print_store_ops(results)
    print()
    heading = "".join(f"{str(r['agents']) + ' agents':>11}" for r in results)
    if args.processes:  # the per-step timings come from the services' buses in this process
        print(f"{'mean ms per step':<42}{heading}")
        print(f"{'agent round trip (sign, HTTP, open)':<42}" + "".join(f"{r['mean_ms']:>11.2f}" for r in results))
        return _print_rss(traced_peak, load_rss_kib)
    print(f"{'mean ms per step':<42}{heading}")
    for label, stage in STAGE_ROWS:
        cells = "".join(f"{'-' if r['stages'][stage] is None else format(r['stages'][stage], '.2f'):>11}"
                        for r in results)
        print(f"{label:<42}{cells}")
    _print_rss(traced_peak, load_rss_kib)


def _print_rss(traced_peak: int | None, load_rss_kib: int) -> None:
    print()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    traced = f"; tracemalloc peak {traced_peak / 2**20:.1f} MiB" if traced_peak is not None else ""
    print(f"peak RSS: services process {own:.0f} MiB{traced}; agents process {load_rss_kib / 1024:.0f} MiB "
          "(the embedded store runs in its own process, not counted)")


# --- the agents' side (child process) -----------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def agents_run(agents: list[Any], key_id: str, facts: dict[str, Any], seconds: float,
                     heartbeats: bool = False) -> dict[str, Any]:
    from agent.client import AgentError

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    deadline = started + seconds

    async def agent_loop(agent: Any) -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                if heartbeats:
                    await agent.heartbeat(facts)
                else:
                    # request_key verifies the sealed key opens with this request's X25519 key.
                    await agent.request_key(key_id, facts=facts)
            except AgentError as exc:
                errors[f"{exc.status} {exc.title}"] += 1
                await asyncio.sleep(0.05)
                continue
            latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(agent_loop(a) for a in agents))
    elapsed = time.perf_counter() - started
    latencies.sort()
    ms = [v * 1000 for v in latencies]
    return {
        "agents": len(agents), "ok": len(ms), "elapsed": elapsed, "errors": dict(errors),
        "p50_ms": percentile(ms, 0.50), "p95_ms": percentile(ms, 0.95), "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1] if ms else float("nan"), "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
        "cpu_s": cpu_seconds() - cpu_before,
    }


async def load_generator() -> None:
    def answer(document: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()

    connector = aiohttp.TCPConnector(limit=0)
    tpms: list[Any] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        with tempfile.TemporaryDirectory(prefix="strongroom-bench-") as state:
            agents: list[Any] = []
            setup: dict[str, Any] = {}
            try:
                while line := await asyncio.to_thread(sys.stdin.readline):
                    command = json.loads(line)
                    if "setup" in command:
                        setup = command["setup"]
                        agents = await _enrolled_agents(session, setup, Path(state), tpms)
                        if setup.get("heartbeats"):  # a device heartbeats because it holds keys to re-check
                            await asyncio.gather(*(a.request_key(setup["key_id"], facts=setup["facts"]) for a in agents))
                        answer({"enrolled": len(agents)})
                    elif "report" in command:
                        answer({"max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
                    else:
                        answer(await agents_run(agents[: command["agents"]], setup["key_id"], setup["facts"],
                                                command["seconds"], setup.get("heartbeats", False)))
            finally:
                for software in tpms:
                    software.stop()


async def _enrolled_agents(session: aiohttp.ClientSession, setup: dict[str, Any], state: Path,
                           tpms: list[Any]) -> list[Any]:
    """An agent per enrolment token; with `--tpm` each has its own swtpm, registered, quoting every request."""
    from agent.client import AgentClient
    from agent.evidence import TpmEvidence, register_tpm
    from agent.tpm import Tpm

    tokens = setup["enrollment_tokens"]
    if setup.get("tpm"):
        from tests.swtpm import SoftwareTpm
        tpms.extend(SoftwareTpm(state / f"tpm{i}").start() for i in range(len(tokens)))
        agents = [AgentClient(session=session, evidence=TpmEvidence(Tpm(t.tcti), TPM_PCRS)) for t in tpms]
    else:
        agents = [AgentClient(session=session) for _ in tokens]
    urls = setup["urls"]  # agents spread over the gateways
    await asyncio.gather(*(agent.enroll(urls[i % len(urls)], token, f"bench-vm-{i}", state / f"vm{i}")
                           for i, (agent, token) in enumerate(zip(agents, tokens, strict=True))))
    if tpms:
        await asyncio.gather(*(register_tpm(agent, Tpm(t.tcti)) for agent, t in zip(agents, tpms, strict=True)))
    return agents


def main() -> None:
    if sys.argv[1:] == [LOAD_GENERATOR_FLAG]:
        runtime.run(load_generator())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,8,32", help="concurrency levels, comma-separated (default 1,8,32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level (default 10)")
    parser.add_argument("--rules", type=int, choices=(1, 50), default=1,
                        help="1: one region rule; 50: the 50-rule policy of policy_eval_bench.py over ~40 facts")
    parser.add_argument("--groups", type=int, default=0, metavar="N",
                        help="N dynamic device groups (by image id) and a key group; the policy targets them")
    parser.add_argument("--facts", choices=("minimal", "full"), default=None,
                        help="facts agents send: default minimal for 1 rule, full (~40) for 50; "
                             "--rules 1 --facts full separates the cost of rules from that of facts")
    parser.add_argument("--defer-audit", action="store_true",
                        help="stop auditsvc for the measured levels: its records wait in its queue, so the "
                             "store does no audit writes (a diagnostic, not a sustainable rate: the foundation's "
                             "auditsvc fell behind like this)")
    parser.add_argument("--tpm", action="store_true",
                        help="each agent has its own swtpm (registered by credential activation) and sends a quote "
                             "over PCRs 0 and 7 with every request: a challenge round trip, the quote, its verification")
    parser.add_argument("--processes", action="store_true",
                        help="run each service in its own process(es), CPU reported per service")
    parser.add_argument("--replicas", type=int, default=1, metavar="N", help="with --processes: N processes of each service")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare three-hop pipeline measured after each level (the ratio's denominator)")
    parser.add_argument("--heartbeats", action="store_true",
                        help="agents send signed heartbeats (gateway -> policysvc) instead of key requests")
    parser.add_argument("--bus", choices=("rabbitmq", "memory"), default="rabbitmq")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also report the tracemalloc peak (slows the services down noticeably)")
    load_driver.add_arguments(parser)
    args = parser.parse_args()
    if args.processes and args.bus == "memory":
        parser.error("--processes needs --bus rabbitmq (the in-memory bus lives in one process)")
    runtime.run(load_driver.run_external(args) if args.gateway_url else run_bench(args))


if __name__ == "__main__":
    main()
