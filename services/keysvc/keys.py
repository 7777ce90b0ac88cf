"""Key custody domain: key versions, NIST SP 800-57 lifecycle states and their transitions (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.key_states import ACTIONS as ACTION_RULES
from shared.key_states import DESTROYED_STATES, ROTATABLE_STATES, STATES, KeyState

__all__ = [
    "ACTIONS",
    "ALGORITHMS",
    "TRANSITIONS",
    "CustodySettings",
    "IllegalTransition",
    "Key",
    "KeyDomainError",
    "KeyPolicyError",
    "KeyState",
    "KeyVersion",
    "KeyVersions",
    "ReleaseView",
    "UnknownAction",
    "VersionError",
    "check_algorithm",
    "destroyable",
    "exportable_now",
    "new_key",
    "releasable",
    "rotate",
    "rotation_due",
    "set_min_decryption_version",
    "transition",
    "version_for_decrypt",
    "version_for_release",
]


class KeyDomainError(Exception):
    """Base of key-custody refusals; messages say what to do and never carry key material."""


class IllegalTransition(KeyDomainError):
    """The lifecycle refuses this action in the key's current state."""

    def __init__(self, message: str, *, state: str, action: str) -> None:
        super().__init__(message)
        self.state = state
        self.action = action


class UnknownAction(KeyDomainError, ValueError):
    """The action is not part of the lifecycle vocabulary."""


class KeyPolicyError(KeyDomainError, ValueError):
    """An algorithm, size or setting breaks the tenant's key policy."""


class VersionError(KeyDomainError):
    """A key version is missing, below min_decryption_version, or its material is destroyed."""


# The lifecycle is declared once, in shared/key_states.py; these views of it serve the checks below.
ACTIONS: tuple[str, ...] = tuple(ACTION_RULES)
_ALIASES = {name: rule.alias_of for name, rule in ACTION_RULES.items() if rule.alias_of}
TRANSITIONS: Mapping[tuple[KeyState, str], KeyState] = {
    (state, action): target for state, rule in STATES.items() for action, target in rule.transitions.items()
}

ALGORITHMS: Mapping[str, int] = {"AES-128": 128, "AES-192": 192, "AES-256": 256}


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One generation of a key: its data key wrapped under the tenant KEK (None once destroyed)."""

    version: int
    created_at: datetime
    wrapped: bytes | None
    kek_version: int

    @property
    def destroyed(self) -> bool:
        return self.wrapped is None

    def __repr__(self) -> str:
        # Wrapped material is ciphertext, but it stays out of reprs and logs all the same.
        material = "destroyed" if self.wrapped is None else f"<{len(self.wrapped)} bytes>"
        return (
            f"KeyVersion(version={self.version}, created_at={self.created_at.isoformat()}, "
            f"kek_version={self.kek_version}, wrapped={material})"
        )


class KeyVersions(Mapping[int, KeyVersion]):
    """Immutable mapping version -> KeyVersion for versions 1..n.

    Snapshots share one append-only list and differ only by length, so adding a version is
    O(1); appending to an older snapshot copies first, so no snapshot ever sees another change.
    """

    __slots__ = ("_count", "_items")

    def __init__(self, items: tuple[KeyVersion, ...] | list[KeyVersion] = ()) -> None:
        items = list(items)
        for index, kv in enumerate(items, start=1):
            if kv.version != index:
                raise VersionError(f"versions must run 1..n without gaps; found {kv.version} at {index}")
        self._items: list[KeyVersion] = items
        self._count = len(items)

    @classmethod
    def _view(cls, items: list[KeyVersion], count: int) -> KeyVersions:
        view = cls.__new__(cls)
        view._items = items
        view._count = count
        return view

    def appended(self, kv: KeyVersion) -> KeyVersions:
        if kv.version != self._count + 1:
            raise VersionError(f"next version must be {self._count + 1}; got {kv.version}")
        items = self._items
        if len(items) == self._count:
            items.append(kv)
            # Another snapshot of the same length may have appended first: then copy.
            if items[self._count] is kv:
                return KeyVersions._view(items, self._count + 1)
        return KeyVersions._view([*self._items[: self._count], kv], self._count + 1)

    def __getitem__(self, version: int) -> KeyVersion:
        if isinstance(version, int) and 1 <= version <= self._count:
            return self._items[version - 1]
        raise KeyError(version)

    def __iter__(self) -> Iterator[int]:
        return iter(range(1, self._count + 1))

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"KeyVersions(1..{self._count})" if self._count else "KeyVersions()"


@dataclass(frozen=True)
class Key:
    """A named key of a tenant: versions, Vault-style version pointers and its lifecycle state."""

    tenant_id: str
    key_id: str
    name: str
    algorithm: str
    state: KeyState
    latest_version: int
    min_decryption_version: int
    versions: KeyVersions
    created_at: datetime
    updated_at: datetime
    volume: str | None = None
    exportable: bool = False
    rotation_period_seconds: int | None = None
    # NIST SP 800-57 asks for the dates of state changes to be kept with the key.
    activated_at: datetime | None = None
    deactivated_at: datetime | None = None
    compromised_at: datetime | None = None
    destroyed_at: datetime | None = None
    # The operator request that made the latest change: its redelivery finds the change made.
    changed_by_request: str | None = None

    def __post_init__(self) -> None:
        # Accept the plain string a store hands back; identity checks elsewhere rely on the enum.
        object.__setattr__(self, "state", KeyState(self.state))
        if not isinstance(self.versions, KeyVersions):
            versions = self.versions
            object.__setattr__(self, "versions", KeyVersions([versions[v] for v in sorted(versions)]))
        if self.latest_version < 1:
            raise VersionError("a key has at least one version")
        if self.latest_version != len(self.versions):
            raise VersionError(
                f"latest_version {self.latest_version} does not match {len(self.versions)} stored versions"
            )
        if not 1 <= self.min_decryption_version <= self.latest_version:
            raise VersionError(
                f"min_decryption_version {self.min_decryption_version} outside 1..{self.latest_version}"
            )


@dataclass(frozen=True, slots=True)
class ReleaseView:
    """What a release of the latest version needs, read in one indexed lookup of the key's head
    (which carries a copy of its latest version's wrapped material). `versions` holds that
    version only, so releasable() and version_for_release() apply as to a Key."""

    tenant_id: str
    key_id: str
    algorithm: str
    state: KeyState
    latest_version: int
    min_decryption_version: int
    versions: Mapping[int, KeyVersion]


def check_algorithm(name: str, *, min_bits: int) -> int:
    """The key size in bits of a supported algorithm, refusing one smaller than the tenant minimum."""
    bits = ALGORITHMS.get(name.upper() if isinstance(name, str) else name)
    if bits is None:
        raise KeyPolicyError(f"unknown algorithm {name!r}; supported: {', '.join(ALGORITHMS)}")
    if bits < min_bits:
        raise KeyPolicyError(
            f"{name.upper()} is {bits} bits but the tenant requires at least {min_bits}-bit keys"
        )
    return bits


def new_key(
    *,
    tenant_id: str,
    key_id: str,
    name: str,
    algorithm: str,
    wrapped: bytes,
    kek_version: int,
    now: datetime,
    volume: str | None = None,
    exportable: bool = False,
    rotation_period_seconds: int | None = None,
    initial_state: KeyState = KeyState.PRE_ACTIVATION,
) -> Key:
    """A new key whose version 1 is the given wrapped data key; it starts in pre_activation or active."""
    for label, value in (("tenant_id", tenant_id), ("key_id", key_id), ("name", name)):
        if not value:
            raise KeyPolicyError(f"{label} must not be empty")
    check_algorithm(algorithm, min_bits=0)
    if rotation_period_seconds is not None and rotation_period_seconds <= 0:
        raise KeyPolicyError("rotation_period_seconds must be positive when set")
    initial_state = KeyState(initial_state)
    if initial_state not in (KeyState.PRE_ACTIVATION, KeyState.ACTIVE):
        raise KeyPolicyError("a new key starts in pre_activation or active")
    first = KeyVersion(version=1, created_at=now, wrapped=bytes(wrapped), kek_version=kek_version)
    return Key(
        tenant_id=tenant_id,
        key_id=key_id,
        name=name,
        algorithm=algorithm.upper(),
        state=initial_state,
        latest_version=1,
        min_decryption_version=1,
        versions=KeyVersions([first]),
        created_at=now,
        updated_at=now,
        volume=volume,
        exportable=exportable,
        rotation_period_seconds=rotation_period_seconds,
        activated_at=now if initial_state is KeyState.ACTIVE else None,
    )


def transition(
    key: Key, action: str, *, actor: str, reason: str, now: datetime
) -> tuple[Key, dict[str, Any]]:
    """Apply a lifecycle action; returns the new key and a description for the audit trail."""
    if action not in ACTIONS:
        raise UnknownAction(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if not actor or not reason:
        raise KeyPolicyError("a lifecycle action needs an actor and a reason for the audit trail")
    target = TRANSITIONS.get((key.state, _ALIASES.get(action, action)))
    if target is None:
        allowed = sorted(a for (s, a) in TRANSITIONS if s == key.state)
        hint = f"allowed from {key.state}: {', '.join(allowed)}" if allowed else f"{key.state} is terminal"
        raise IllegalTransition(
            f"cannot {action} a key in state {key.state}; {hint}", state=key.state, action=action
        )

    changes: dict[str, Any] = {"state": target, "updated_at": now}
    if target is KeyState.ACTIVE and key.activated_at is None:
        changes["activated_at"] = now
    elif target is KeyState.DEACTIVATED:
        changes["deactivated_at"] = now
    elif target in (KeyState.COMPROMISED, KeyState.DESTROYED_COMPROMISED) and key.compromised_at is None:
        changes["compromised_at"] = now
    if target in DESTROYED_STATES and key.state not in DESTROYED_STATES:
        # Security invariant: destruction erases every version's material; metadata stays for audit.
        changes["destroyed_at"] = now
        changes["versions"] = KeyVersions(
            [dataclasses.replace(kv, wrapped=None) for kv in key.versions.values()]
        )

    description = {
        "tenant_id": key.tenant_id,
        "key_id": key.key_id,
        "from": str(key.state),
        "to": str(target),
        "action": action,
        "actor": actor,
        "reason": reason,
        "at": now,
    }
    return dataclasses.replace(key, **changes), description


def releasable(key: Key | ReleaseView) -> tuple[bool, str]:
    """Whether the key's data key may be released now, with the reason either way."""
    rule = STATES[key.state]
    if not rule.releasable:
        return False, rule.refusal
    latest = key.versions.get(key.latest_version)
    if latest is None or latest.destroyed:
        return False, f"latest version {key.latest_version} has no key material"
    return True, "key is active"


def rotate(key: Key, *, wrapped_new: bytes, kek_version: int, now: datetime) -> Key:
    """Add a new latest version; older versions stay for decryption down to min_decryption_version."""
    if key.state not in ROTATABLE_STATES:
        raise IllegalTransition(
            f"cannot rotate a key in state {key.state}; only pre_activation, active or suspended keys rotate",
            state=key.state,
            action="rotate",
        )
    version = key.latest_version + 1
    kv = KeyVersion(version=version, created_at=now, wrapped=bytes(wrapped_new), kek_version=kek_version)
    return dataclasses.replace(
        key, versions=key.versions.appended(kv), latest_version=version, updated_at=now
    )


def rotation_due(key: Key, *, now: datetime) -> bool:
    """Whether the key has a rotation period and its latest version is at least that old."""
    if key.rotation_period_seconds is None or key.state not in ROTATABLE_STATES:
        return False
    latest = key.versions[key.latest_version]
    return now - latest.created_at >= timedelta(seconds=key.rotation_period_seconds)


def set_min_decryption_version(key: Key, version: int, *, now: datetime | None = None) -> Key:
    """Move min_decryption_version within 1..latest_version; versions below it no longer decrypt."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise VersionError(f"min_decryption_version must be an integer; got {version!r}")
    if not 1 <= version <= key.latest_version:
        raise VersionError(
            f"min_decryption_version must be between 1 and latest_version {key.latest_version}; got {version}"
        )
    changes: dict[str, Any] = {"min_decryption_version": version}
    if now is not None:
        changes["updated_at"] = now
    return dataclasses.replace(key, **changes)


def version_for_release(key: Key | ReleaseView) -> KeyVersion:
    """The latest version, which is the one released; gate the call with releasable()."""
    return _usable(key, key.latest_version)


def version_for_decrypt(key: Key, version: int) -> KeyVersion:
    """A version that may decrypt: present, at least min_decryption_version, material intact."""
    if version < key.min_decryption_version:
        raise VersionError(
            f"version {version} is below min_decryption_version {key.min_decryption_version}; "
            "re-encrypt the data under a newer version"
        )
    return _usable(key, version)


def _usable(key: Key | ReleaseView, version: int) -> KeyVersion:
    kv = key.versions.get(version)
    if kv is None:
        raise VersionError(f"key {key.key_id} has no version {version} (latest is {key.latest_version})")
    if kv.destroyed:
        raise VersionError(f"version {version} of key {key.key_id} is destroyed")
    return kv


# --- tenant custody settings ---------------------------------------------------------

DESTRUCTION_WAIT_DAYS = (7, 30)  # NIST-style soft deletion: never shorter than a week in production
DEFAULT_DEPENDENCY_WINDOW_DAYS = 30


@dataclass(frozen=True)
class CustodySettings:
    """A tenant's key policy: minimum key size, destruction waiting period, dependency window."""

    min_key_bits: int = 128
    destruction_wait_days: int = 7
    dependency_window_days: int = DEFAULT_DEPENDENCY_WINDOW_DAYS
    export_deactivated: bool = False  # deactivated/compromised keys may be exported (wrapped) for re-encryption

    def __post_init__(self) -> None:
        if self.min_key_bits not in ALGORITHMS.values():
            raise KeyPolicyError(f"min_key_bits must be one of {sorted(set(ALGORITHMS.values()))}; got {self.min_key_bits}")
        low, high = DESTRUCTION_WAIT_DAYS
        if not low <= self.destruction_wait_days <= high:
            raise KeyPolicyError(f"destruction_wait_days must be between {low} and {high}; got {self.destruction_wait_days}")
        if not 1 <= self.dependency_window_days <= 365:
            raise KeyPolicyError(f"dependency_window_days must be between 1 and 365; got {self.dependency_window_days}")


def destroyable(key: Key) -> tuple[bool, str]:
    """Whether the lifecycle allows destroying the key now (checked when destruction is scheduled)."""
    if (key.state, "destroy") in TRANSITIONS:
        return True, f"{key.state} keys may be destroyed"
    allowed = ", ".join(sorted(str(s) for (s, a) in TRANSITIONS if a == "destroy"))
    return False, f"a key in state {key.state} cannot be destroyed; only {allowed} keys can (deactivate it first)"


def exportable_now(key: Key, settings: CustodySettings) -> tuple[bool, str]:
    """Export (always wrapped to a caller's public key) needs an exportable key in an allowed state."""
    if not key.exportable:
        return False, "key was not created exportable; export is off for it"
    rule = STATES[key.state]
    if rule.releasable:
        return True, "key is active and exportable"
    if rule.decrypts and settings.export_deactivated:
        return True, f"key is {key.state}; the tenant allows export for re-encryption"
    return False, f"key is {key.state}; export is not allowed in this state"
