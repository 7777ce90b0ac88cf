"""Destruction as crypto-shredding (pure): scheduling with a waiting period, dual control, and
the signed certificates that prove what was destroyed (a key, or a whole offboarded tenant),
when, and on whose approval."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.certificates import sign_certificate
from shared.signatures import key_fingerprint as public_key_id  # keysvc's name for the signing key's id

from .keys import IllegalTransition, Key, KeyDomainError, destroyable

__all__ = [
    "CERTIFICATE_FORMAT",
    "DependencyError",
    "Destruction",
    "DestructionError",
    "DualControlError",
    "approve",
    "cancel",
    "certificate",
    "dependency_report",
    "destroy_reason",
    "due",
    "from_doc",
    "public_key_id",
    "runnable",
    "schedule",
    "sign_certificate",
    "tenant_certificate",
    "to_doc",
]

CERTIFICATE_FORMAT = "strongroom.destruction-certificate/1"
TENANT_CERTIFICATE_FORMAT = "strongroom.tenant-destruction-certificate/1"


class DestructionError(KeyDomainError):
    """A destruction request cannot be scheduled, approved or cancelled as asked."""


class DualControlError(DestructionError):
    """The same person tried to act twice where two different custodians are required."""


class DependencyError(DestructionError):
    """Devices still hold releases of the key; destruction needs `force` to go ahead."""


@dataclass(frozen=True)
class Destruction:
    """A scheduled destruction of one key; it runs once approved and past `not_before`."""

    tenant_id: str
    key_id: str
    destruction_id: str
    scheduled_by: str
    scheduled_at: datetime
    not_before: datetime
    reason: str
    status: str = "scheduled"  # scheduled -> cancelled | destroying -> destroyed
    approvals: tuple[str, ...] = ()
    forced: bool = False
    dependent_releases: int = 0
    cancelled_by: str | None = None
    destroyed_at: datetime | None = None


def schedule(
    key: Key, *, destruction_id: str, actor: str, reason: str, wait: timedelta, now: datetime,
    min_wait: timedelta, max_wait: timedelta, dependent_releases: int, force: bool,
) -> Destruction:
    """Schedule a key's destruction after `wait`; refused for a live key or, without force, a key still in use."""
    if not actor or not reason:
        raise DestructionError("scheduling a destruction needs an actor and a reason for the audit trail")
    ok, why = destroyable(key)
    if not ok:
        raise IllegalTransition(why, state=key.state, action="destroy")
    if not min_wait <= wait <= max_wait:
        raise DestructionError(
            f"the waiting period must be between {_human(min_wait)} and {_human(max_wait)}; got {_human(wait)}"
        )
    if dependent_releases and not force:
        raise DependencyError(
            f"devices received this key {dependent_releases} time(s) within the dependency window; "
            "re-encrypt their data first, or schedule with force=true to destroy anyway"
        )
    return Destruction(
        tenant_id=key.tenant_id, key_id=key.key_id, destruction_id=destruction_id, scheduled_by=actor,
        scheduled_at=now, not_before=now + wait, reason=reason, forced=bool(force and dependent_releases),
        dependent_releases=dependent_releases,
    )


def approve(d: Destruction, *, actor: str) -> Destruction:
    """The second custodian's approval; the scheduler cannot approve their own request (dual control)."""
    if d.status != "scheduled":
        raise DestructionError(f"destruction {d.destruction_id} is {d.status}; only a scheduled one can be approved")
    if actor == d.scheduled_by:
        raise DualControlError("dual control: the custodian who scheduled a destruction cannot also approve it")
    if actor in d.approvals:
        raise DualControlError("this custodian has already approved the destruction")
    return dataclasses.replace(d, approvals=(*d.approvals, actor))


def cancel(d: Destruction, *, actor: str) -> Destruction:
    """Cancel a destruction at any time before it has run."""
    if d.status != "scheduled":
        raise DestructionError(f"destruction {d.destruction_id} is {d.status}; it can no longer be cancelled")
    return dataclasses.replace(d, status="cancelled", cancelled_by=actor)


def due(d: Destruction, *, now: datetime) -> tuple[bool, str]:
    """Whether the destruction may run now, and why not otherwise."""
    if d.status != "scheduled":
        return False, f"destruction is {d.status}"
    if not d.approvals:
        return False, "waiting for a second key custodian's approval"
    if now < d.not_before:
        return False, f"waiting period ends at {d.not_before.isoformat()}"
    return True, "approved and the waiting period is over"


def from_doc(doc: dict[str, Any]) -> Destruction:
    """A destruction from its stored document (extra stored fields, such as the certificate, ignored)."""
    values = {k: doc[k] for k in Destruction.__dataclass_fields__ if k in doc}
    values["approvals"] = tuple(doc.get("approvals", ()))
    return Destruction(**values)


def to_doc(d: Destruction) -> dict[str, Any]:
    """The stored document of a destruction (its tenant id is added by the store)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.__dict__.items() if k != "tenant_id"}


def runnable(doc: dict[str, Any], *, now: datetime) -> bool:
    """Whether the scheduler runs it now: approved and past its waiting period, or cut short while destroying."""
    if doc["status"] == "destroying":
        return True
    return doc["status"] == "scheduled" and due(from_doc(doc), now=now)[0]


def destroy_reason(d: Destruction) -> str:
    """The reason the lifecycle transition records: who scheduled it and who approved it."""
    return f"scheduled destruction {d.destruction_id} by {d.scheduled_by}, approved by {', '.join(d.approvals)}"


def dependency_report(key_id: str, releases: list[dict[str, Any]], *, window_days: int) -> dict[str, Any]:
    """Which devices received the key (its released versions, newest first) within the window."""
    devices: dict[str, dict[str, Any]] = {}
    for r in releases:
        entry = devices.setdefault(r["device_id"], {"device_id": r["device_id"], "releases": 0,
                                                    "last_release_at": r["at"].isoformat(), "versions": set()})
        entry["releases"] += 1
        entry["versions"].add(r.get("key_version"))
    return {
        "key_id": key_id,
        "window_days": window_days,
        "releases": len(releases),
        "devices": [{**v, "versions": sorted(x for x in v["versions"] if x is not None)} for v in devices.values()],
    }


# --- certificate --------------------------------------------------------------------------


def certificate(
    d: Destruction, *, key: Key, wrapped_by_version: dict[int, bytes | None], destroyed_at: datetime,
    signing_key_id: str,
) -> dict[str, Any]:
    """What was destroyed: key, versions with the SHA-256 of each wrapped blob, time and approvers."""
    digests = {
        v: (hashlib.sha256(blob).hexdigest() if blob is not None else None)
        for v, blob in sorted(wrapped_by_version.items())
    }
    last = digests.get(key.latest_version)
    return {
        "format": CERTIFICATE_FORMAT,
        "tenant_id": key.tenant_id,
        "key_id": key.key_id,
        "destruction_id": d.destruction_id,
        "versions": [{"version": v, "wrapped_sha256": h} for v, h in digests.items()],
        "last_wrapped_sha256": last,
        "destroyed_at": destroyed_at.isoformat(),
        "scheduled_by": d.scheduled_by,
        "scheduled_at": d.scheduled_at.isoformat(),
        "approvers": list(d.approvals),
        "reason": d.reason,
        "forced": d.forced,
        "signing_key_id": signing_key_id,
    }


def tenant_certificate(
    *, tenant_id: str, certificate_id: str, offboarding_id: str, requested_by: str, requested_at: datetime,
    keks: dict[int, bytes], keys: int, wrapped_blobs: int, issued_at: datetime, signing_key_id: str,
) -> dict[str, Any]:
    """What offboarding destroys, taken before the shredding: each KEK version with the SHA-256 of its
    wrapped blob (without a KEK no data key of the tenant can be unwrapped), and the counts of keys
    and wrapped data-key blobs shredded with them."""
    return {
        "format": TENANT_CERTIFICATE_FORMAT,
        "certificate_id": certificate_id,
        "tenant_id": tenant_id,
        "offboarding_id": offboarding_id,
        "requested_by": requested_by,
        "requested_at": requested_at.isoformat(),
        "keks": [{"kek_version": v, "wrapped_sha256": hashlib.sha256(blob).hexdigest()} for v, blob in sorted(keks.items())],
        "keys": keys,
        "wrapped_blobs": wrapped_blobs,
        "issued_at": issued_at.isoformat(),
        "signing_key_id": signing_key_id,
    }


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    return f"{seconds} seconds"
