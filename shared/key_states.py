"""NIST SP 800-57 key states and lifecycle actions, each declared once with what it allows (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ACTIONS",
    "DESTROYED_STATES",
    "OPERATOR_ACTIONS",
    "ROTATABLE_STATES",
    "STATES",
    "ActionRule",
    "KeyState",
    "StateRule",
]


class KeyState(StrEnum):
    """NIST SP 800-57 Part 1 key states."""

    PRE_ACTIVATION = "pre_activation"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DEACTIVATED = "deactivated"
    COMPROMISED = "compromised"
    DESTROYED = "destroyed"
    DESTROYED_COMPROMISED = "destroyed_compromised"


@dataclass(frozen=True)
class StateRule:
    """Everything a state allows. `transitions` is the whole lifecycle out of it: anything not listed is refused."""

    releasable: bool  # its latest version may be released to devices
    rotatable: bool  # a new version may be added (by hand or by the rotation period)
    decrypts: bool  # its versions may still open data already protected (export for re-encryption)
    destroyed: bool  # its material no longer exists
    refusal: str  # why a release is refused in this state ("" when releasable)
    transitions: Mapping[str, KeyState] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionRule:
    """A lifecycle action: what it does, whether operators ask for it by name, and whose alias it is."""

    summary: str
    operator: bool  # requested through change_key_state; destroy goes through scheduled destruction instead
    alias_of: str | None = None


_S = KeyState
# Decisions beyond the NIST figure:
# - destroy is allowed from pre_activation (never used), deactivated and compromised only.
#   An active or suspended key must be deactivated first, so destruction is always a
#   deliberate second step (as Vault's deletion_allowed) and a suspended key -- whose
#   suspension is by definition temporary -- is never destroyed on the way.
# - deactivated is final for use: no path leads back to active (NIST: deactivated keys
#   may only process already-protected data).
# - a destroyed key later found compromised moves to destroyed_compromised, which is terminal.
STATES: Mapping[KeyState, StateRule] = {
    _S.PRE_ACTIVATION: StateRule(
        releasable=False, rotatable=True, decrypts=False, destroyed=False,
        refusal="key is in pre_activation; activate it before release",
        transitions={"activate": _S.ACTIVE, "mark_compromised": _S.COMPROMISED, "destroy": _S.DESTROYED},
    ),
    _S.ACTIVE: StateRule(
        releasable=True, rotatable=True, decrypts=True, destroyed=False, refusal="",
        transitions={"suspend": _S.SUSPENDED, "deactivate": _S.DEACTIVATED, "mark_compromised": _S.COMPROMISED},
    ),
    _S.SUSPENDED: StateRule(
        releasable=False, rotatable=True, decrypts=False, destroyed=False,
        refusal="key is suspended; resume it before release",
        transitions={"resume": _S.ACTIVE, "deactivate": _S.DEACTIVATED, "mark_compromised": _S.COMPROMISED},
    ),
    _S.DEACTIVATED: StateRule(
        releasable=False, rotatable=False, decrypts=True, destroyed=False,
        refusal="key is deactivated; it may no longer be released (rotate into a new key)",
        transitions={"mark_compromised": _S.COMPROMISED, "destroy": _S.DESTROYED},
    ),
    _S.COMPROMISED: StateRule(
        releasable=False, rotatable=False, decrypts=True, destroyed=False,
        refusal="key is compromised; it must not be released",
        transitions={"destroy": _S.DESTROYED_COMPROMISED},
    ),
    _S.DESTROYED: StateRule(
        releasable=False, rotatable=False, decrypts=False, destroyed=True,
        refusal="key is destroyed; its material no longer exists",
        transitions={"mark_compromised": _S.DESTROYED_COMPROMISED},
    ),
    _S.DESTROYED_COMPROMISED: StateRule(
        releasable=False, rotatable=False, decrypts=False, destroyed=True,
        refusal="key is destroyed and was compromised; its material no longer exists",
    ),
}

ACTIONS: Mapping[str, ActionRule] = {
    "activate": ActionRule("put a pre-activation key into service", operator=True),
    "suspend": ActionRule("stop releases for a while", operator=True),
    "resume": ActionRule("return a suspended key to service", operator=True),
    "reactivate": ActionRule("return a suspended key to service", operator=False, alias_of="resume"),
    "deactivate": ActionRule("retire the key for good: it only processes data already protected", operator=True),
    "mark_compromised": ActionRule("record that the key's material may be known to others", operator=True),
    "destroy": ActionRule("crypto-shred every version's material", operator=False),
}

# What change_key_state accepts (shared.commands.ChangeKeyState), in declaration order.
OPERATOR_ACTIONS: tuple[str, ...] = tuple(name for name, rule in ACTIONS.items() if rule.operator)
ROTATABLE_STATES = frozenset(s for s, rule in STATES.items() if rule.rotatable)
DESTROYED_STATES = frozenset(s for s, rule in STATES.items() if rule.destroyed)
