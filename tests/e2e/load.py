"""Load for the fault tests: agents asking for keys through the SDK (which retries 503 and 429)
while a test breaks something, every outcome timed; and the checks each fault test ends with:
every release completed or cleanly refused, every audit record there exactly once, every chain
verifying. Figures (confirmed, refused, lost, duplicates, longest stall) are printed, not asserted."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from agent.client import AgentClient, ServiceUnavailable, TooManyRequests
from agent.identity import AgentIdentity
from services.gateway.auth import PROVIDER_TENANT
from shared.audit_chain import ChainHead, verify_chain

from .helpers import EU_FACTS, BareAgent, Tenant, audit_records, audit_records_until, make_tenant, provider_admin

RELEASE_ACTIONS = ("key.requested", "key.decided", "key.released")


@dataclass
class Outcome:
    started: float
    ended: float
    request_id: str | None = None  # set when the key was released (and opened)
    refused: str | None = None  # a clean refusal: the SDK's error after its bounded retries


@dataclass
class Load:
    tenant: Tenant
    identities: list[AgentIdentity]
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    @classmethod
    async def prepare(cls, api, agents: int = 5) -> Load:
        tenant = await make_tenant(api)
        identities = []
        for i in range(agents):
            bare = await BareAgent.enroll(tenant, api, f"vm-{i}")
            identities.append(AgentIdentity(gateway_url=api.url, tenant_id=bare.tenant_id, device_id=bare.device_id,
                                            key_id=bare.key_id, private_key=bare.signing_key))
        return cls(tenant, identities)

    @property
    def confirmed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.request_id is not None]

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.refused is not None]

    async def run(self, stop: asyncio.Event) -> None:
        """Every agent asks for its key, again and again, until `stop`; unexpected errors propagate."""
        self.started = time.monotonic()
        # Timeouts generous enough for a broker failover, retries enough for an outage of seconds.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            await asyncio.gather(*(self._agent(AgentClient(i, session=session, retries=8, max_retry_wait_seconds=6.0),
                                               stop) for i in self.identities))
        self.stopped = time.monotonic()

    async def _agent(self, client: AgentClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                released = await client.request_key(self.tenant.key_id, facts=EU_FACTS)
            except (ServiceUnavailable, TooManyRequests) as exc:
                self.outcomes.append(Outcome(started, time.monotonic(), refused=f"{exc.status} {exc.title}"))
                await asyncio.sleep(0.2)
            else:
                assert released.key_id == self.tenant.key_id and len(released.key) == 32
                self.outcomes.append(Outcome(started, time.monotonic(), request_id=released.request_id))

    async def until_confirmed(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` more releases than now have completed."""
        target = len(self.confirmed) + count
        deadline = time.monotonic() + timeout
        while len(self.confirmed) < target:
            assert time.monotonic() < deadline, f"only {len(self.confirmed)} of {target} releases completed"
            await asyncio.sleep(0.05)

    def longest_stall(self) -> float:
        """The longest time, while the load ran, in which no release completed."""
        ends = sorted(o.ended for o in self.confirmed)
        marks = [self.started, *ends, self.stopped]
        return max(b - a for a, b in itertools.pairwise(marks))

    async def check_audit(self, api, stack, label: str) -> dict[str, float | int]:
        """Asserts what every fault test ends with, and prints (and returns) the run's figures. A
        dead letter (an event a service gave up on) counts as lost."""
        confirmed = {o.request_id for o in self.confirmed}
        admin = self.tenant.admin

        def all_released(records: list[dict]) -> bool:
            return confirmed <= {r["details"].get("request_id") for r in records if r["action"] == "key.released"}

        records = await audit_records_until(admin, all_released, timeout=60)
        per_request = Counter((r["details"].get("request_id"), r["action"]) for r in records
                              if r["action"] in RELEASE_ACTIONS)
        dead = await stack.buses["gateway"].dead_letters()
        lost = sum(per_request[(rid, action)] == 0 for rid in confirmed for action in RELEASE_ACTIONS) + len(dead)
        duplicates = sum(n - 1 for n in per_request.values() if n > 1)
        duplicate_ids = len(records) - len({r["event_id"] for r in records})
        figures = {"confirmed": len(confirmed), "refused": len(self.refused), "lost": lost,
                   "duplicates": duplicates + duplicate_ids, "longest_stall_s": round(self.longest_stall(), 2),
                   "slowest_request_s": round(max(o.ended - o.started for o in self.outcomes), 2)}
        print(f"{label}: {figures}; refusals: {Counter(o.refused for o in self.refused)}")
        assert len(self.outcomes) == len(self.confirmed) + len(self.refused)
        assert lost == 0 and duplicates == 0 and duplicate_ids == 0, figures
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        assert verify_chain(records, start=ChainHead.genesis(self.tenant.tenant_id)).ok
        provider = await provider_admin(api)
        provider_records = await audit_records(provider)
        assert verify_chain(provider_records, start=ChainHead.genesis(PROVIDER_TENANT)).ok
        return figures
