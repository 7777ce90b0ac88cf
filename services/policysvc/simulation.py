"""Simulation, pure: requests decided under the current policies and a candidate, and the difference.

The difference names the device and key pairs that gain or lose their key under the candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import provenance as trust
from shared.commands_policy import KeyPair, SimulatedRequest, Simulation

from .decision import DeviceState, judge
from .groups import TenantGroups
from .rules import Policy

MAX_SIMULATED_REQUESTS = 5000


class CaseError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True, slots=True)
class Case:
    request_id: str
    device_id: str
    key_id: str
    facts: Mapping[str, Any]
    at: datetime
    provenance: Mapping[str, str] | None = None  # None: only the gateway's observed facts are observed


def given_cases(given: Any, *, now: datetime) -> list[Case]:
    """The operator's own requests, checked item by item; raises CaseError naming the field."""
    if not isinstance(given, list) or not 1 <= len(given) <= MAX_SIMULATED_REQUESTS:
        raise CaseError("requests", f"give requests (1 to {MAX_SIMULATED_REQUESTS}) or recorded_days")
    cases = []
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise CaseError(f"requests[{i}]", f"requests[{i}]: must be an object")
        for name in ("device_id", "key_id"):
            if not isinstance(item.get(name), str) or not item[name]:
                raise CaseError(f"requests[{i}].{name}", f"requests[{i}].{name}: required string")
        facts = item.get("facts", {})
        if not isinstance(facts, dict):
            raise CaseError(f"requests[{i}].facts", f"requests[{i}].facts: must be an object")
        # What-if: the operator may say what each fact would be worth (else all but observed are claimed).
        provenance = item.get("provenance")
        if provenance is not None and not trust.valid_map(provenance):
            raise CaseError(f"requests[{i}].provenance",
                            f"requests[{i}].provenance: must map fact paths to one of {', '.join(trust.PROVENANCES)}")
        cases.append(Case(f"sim_{i}", item["device_id"], item["key_id"], facts, now, provenance))
    return cases


def recorded_cases(docs: Iterable[Mapping[str, Any]]) -> list[Case]:
    return [Case(d["request_id"], d["device_id"], d["key_id"], d["facts"], d["decided_at"], d.get("provenance"))
            for d in docs]


def gains_and_losses(latest: Mapping[tuple[str, str], tuple[str, str]]) -> tuple[list[KeyPair], list[KeyPair]]:
    """From (device, key) -> (current effect, candidate effect): the pairs the candidate allows
    that were not allowed, and those allowed that it no longer allows."""
    gained = [KeyPair(device_id=d, key_id=k) for (d, k), (b, a) in latest.items() if b != "allow" and a == "allow"]
    lost = [KeyPair(device_id=d, key_id=k) for (d, k), (b, a) in latest.items() if b == "allow" and a != "allow"]
    return gained, lost


def simulate(
    cases: Sequence[Case], current: Sequence[Policy], candidates: Sequence[Policy], *,
    devices: Mapping[str, DeviceState], groups: TenantGroups, remembered: Mapping[tuple[str, str], datetime],
    now: datetime,
) -> Simulation:
    """Each case decided twice, with the device's standing as it is now (as a real request would be)."""
    items: list[SimulatedRequest] = []
    latest: dict[tuple[str, str], tuple[str, str]] = {}  # (device, key) -> (current, candidate), newest request
    for case in cases:
        outcomes = []
        for policies in (current, candidates):
            judged = judge(policies, case.device_id, case.key_id, case.facts, device=devices[case.device_id],
                           groups=groups, remembered_until=remembered.get((case.device_id, case.key_id)), at=case.at,
                           now=now, provenance=case.provenance)
            reasons = (judged.standing,) if judged.standing else judged.decision.reasons  # type: ignore[union-attr]
            outcomes.append((judged.effect, reasons, judged.decision.fact_provenance if judged.decision else {}))
        (before, _, _), (after, after_reasons, used) = outcomes
        items.append(SimulatedRequest(
            request_id=case.request_id, device_id=case.device_id, key_id=case.key_id, current=before, candidate=after,
            changed=before != after, candidate_reasons=list(after_reasons) if before != after else [],
            provenance=used,
        ))
        latest.setdefault((case.device_id, case.key_id), (before, after))
    gained, lost = gains_and_losses(latest)
    return Simulation(requests=len(items), changed=sum(1 for i in items if i.changed), gained=gained, lost=lost,
                      items=items)
