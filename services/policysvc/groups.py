"""Device and key groups: their documents, and which groups a request's device and key are in.

A device group has static members (device ids) and, optionally, a ``match`` condition over the
request's facts, written and evaluated exactly like a rule's ``when`` (so "all devices with image
id in a list" is ``{"fact": "identity.image_id", "op": "in", "value": [...]}``). A device is also
in the groups its enrollment token named. Key groups have static members only. Policies name
groups in ``targets.device_groups`` / ``targets.key_groups``.

Pure: no I/O. The caller computes the sets per request from a cached ``TenantGroups``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .policy import holds
from .rules import Condition, PolicyError, _validate, parse_condition

MAX_MEMBERS = 10_000
GroupKind = Literal["device", "key"]


class GroupDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    kind: GroupKind
    description: str = Field("", max_length=1024)
    members: list[str] = Field(default_factory=list, max_length=MAX_MEMBERS)
    match: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Group:
    group_id: str
    name: str
    kind: GroupKind
    members: frozenset[str]
    match: Condition | None


def parse_group(doc: Mapping[str, Any], *, group_id: str) -> Group:
    """Validate and compile a group document; raises PolicyError naming the offending field."""
    if not isinstance(doc, Mapping):
        raise PolicyError("", "a group must be a JSON object")
    parsed: GroupDoc = _validate(GroupDoc, doc, "")
    for index, member in enumerate(parsed.members):
        if not member or len(member) > 200:
            raise PolicyError(f"members[{index}]", "a member is a non-empty id of at most 200 characters")
    match = None
    if parsed.match is not None:
        if parsed.kind == "key":
            raise PolicyError("match", "match applies to device groups only; key groups list their members")
        match = parse_condition(parsed.match, path="match")
    if not parsed.members and match is None:
        raise PolicyError("members", "a group needs members, a match condition, or both")
    return Group(group_id, parsed.name, parsed.kind, frozenset(parsed.members), match)


@dataclass(frozen=True, slots=True)
class TenantGroups:
    """A tenant's compiled groups, split by kind, with key membership inverted for O(1) lookups."""

    device: tuple[Group, ...]
    key_members: Mapping[str, frozenset[str]]  # key id -> group names

    @classmethod
    def of(cls, groups: Iterable[Group]) -> TenantGroups:
        device: list[Group] = []
        keys: dict[str, set[str]] = {}
        for group in groups:
            if group.kind == "device":
                device.append(group)
            else:
                for key_id in group.members:
                    keys.setdefault(key_id, set()).add(group.name)
        return cls(tuple(device), {k: frozenset(v) for k, v in keys.items()})

    def device_groups(
        self, device_id: str, enrolled: Iterable[str], facts: Mapping[str, Any], *, now: datetime,
        provenance: Mapping[str, str] | None = None,
    ) -> set[str]:
        names = set(enrolled)
        for group in self.device:
            if group.name in names:
                continue
            if device_id in group.members or (
                    group.match is not None and holds(group.match, facts, now=now, provenance=provenance)):
                names.add(group.name)
        return names

    def key_groups(self, key_id: str) -> frozenset[str]:
        return self.key_members.get(key_id, frozenset())
