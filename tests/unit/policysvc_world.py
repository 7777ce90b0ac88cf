"""A policysvc without I/O for unit tests: handlers bound to the in-memory store twin."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from services.policysvc import handlers_approvals, handlers_decide, handlers_policies, handlers_posture
from services.policysvc.cache import PolicyCache, TargetCache
from services.policysvc.store_memory import MemoryPolicyStore
from shared import commands_policy as c
from shared import events, rpc
from shared.commands import PutPolicy
from shared.events import Actor, KeyDecided

TENANT = "ten_1"
EPHEMERAL = base64.b64encode(bytes(32)).decode()
EU_FACTS = {"identity": {"region": "eu-west-1"}}
US_FACTS = {"identity": {"region": "us-east-1"}}


def eu_rule(effect: str = "allow", **approval: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"eu-{effect}", "effect": effect,
                            "when": {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}}
    if approval:
        rule["approval"] = approval
    return rule


def policy(name: str = "eu", *rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "rules": list(rules) or [eu_rule()]}


class World:
    def __init__(self, store: Any = None) -> None:
        """Over the in-memory store twin, or over ``store`` (a PolicyStore on the real store)."""
        self.store = MemoryPolicyStore() if store is None else store
        self.cache = PolicyCache(self.store)
        self.targets = TargetCache(self.store)
        self.decided: list[events.Event] = []
        self.wakes = 0
        self._requests = 0

    def wake(self, deadline: datetime | None = None) -> None:
        self.wakes += 1

    async def publish(self, event: events.Event) -> None:
        self.decided.append(event)

    @staticmethod
    def as_(person: str, kind: str = "user") -> rpc.RpcRequest:
        return rpc.RpcRequest(method="test", tenant_id=TENANT, actor=Actor(kind=kind, id=person))

    async def put_policy(self, document: dict[str, Any], policy_id: str | None = None) -> c.PolicyView:
        params = c.PutPolicyParams(policy_id=policy_id, policy=PutPolicy.model_validate(document))
        return await handlers_policies.put_policy(self.as_("admin"), params, store=self.store, cache=self.cache)

    async def enroll(self, device_id: str, groups: tuple[str, ...] = ()) -> None:
        enrolled = events.DeviceEnrolled(tenant_id=TENANT, device_id=device_id, enrollment_id="enr_1", name=device_id,
                                         public_key=EPHEMERAL, groups=groups)
        await handlers_decide.project_device(enrolled, store=self.store)
        await handlers_decide.refresh_targets(enrolled, targets=self.targets)

    async def ask(self, device_id: str, key_id: str = "key_1", facts: dict[str, Any] | None = None,
                  request_id: str | None = None) -> KeyDecided:
        self._requests += 1
        requested = events.KeyRequested(
            tenant_id=TENANT, actor=Actor(kind="device", id=device_id), request_id=request_id or f"req_{self._requests}",
            device_id=device_id, key_id=key_id, facts=EU_FACTS if facts is None else facts,
            ephemeral_public_key=EPHEMERAL,
        )
        await handlers_decide.dispatch(requested, store=self.store, cache=self.cache, targets=self.targets,
                                       publish=self.publish, wake=self.wake)
        outcome = self.decided[-1]
        assert isinstance(outcome, KeyDecided)
        return outcome

    async def vote(self, person: str, approval_id: str, verdict: str = "approve", comment: str | None = None):
        return await handlers_approvals.vote(self.as_(person), c.Vote(approval_id=approval_id, verdict=verdict,
                                                                      comment=comment),
                                             store=self.store, targets=self.targets)

    async def heartbeat(self, device_id: str, facts: dict[str, Any], provenance: dict[str, Any] | None = None
                        ) -> c.HeartbeatAnswer:
        params = c.Heartbeat(device_id=device_id, facts=facts, provenance=provenance)
        return await handlers_posture.heartbeat(self.as_(device_id, "device"), params,
                                                store=self.store, cache=self.cache, targets=self.targets, wake=self.wake)

    def published(self, kind: type[events.Event]) -> list[Any]:
        return [e for e in self.store.published if isinstance(e, kind)]

    def age_approvals(self, seconds: float) -> None:
        """Moves every approval's deadline back, as if ``seconds`` had passed."""
        for row in self.store.approvals:
            row["expires_at"] -= timedelta(seconds=seconds)


def now() -> datetime:
    return datetime.now(UTC)


def compiled(document: dict[str, Any], policy_id: str = "pol_1", version: int = 1):
    """A policy document as stored (defaults filled in) and compiled."""
    from services.policysvc.rules import parse_policy

    return parse_policy(PutPolicy.model_validate(document).model_dump(), policy_id=policy_id, version=version)
