"""The stored form of keys (pure): head and version documents, the key read back from them, the
release view read off a head, and what operators see of a key."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from shared.key_states import ROTATABLE_STATES

from .keys import Key, KeyState, KeyVersion, KeyVersions, ReleaseView

__all__ = ["head_doc", "key_from", "public_view", "release_view_from", "version_doc"]

_HEAD_FIELDS = [
    f.name for f in dataclasses.fields(Key) if f.name not in ("versions", "tenant_id", "key_id")
]


def release_view_from(tenant_id: str, key_id: str, head: dict[str, Any]) -> ReleaseView | None:
    """What releasing the latest version needs, from the head alone; None when the head predates
    the latest-material copy (load the whole key then)."""
    if "latest_material" not in head:
        return None
    m = head["latest_material"]
    latest = KeyVersion(version=m["version"], created_at=m["created_at"], kek_version=m["kek_version"],
                        wrapped=bytes(m["wrapped"]) if m.get("wrapped") is not None else None)
    return ReleaseView(tenant_id=tenant_id, key_id=key_id, algorithm=head["algorithm"], state=KeyState(head["state"]),
                       latest_version=head["latest_version"], min_decryption_version=head["min_decryption_version"],
                       versions={latest.version: latest})


def head_doc(key: Key) -> dict[str, Any]:
    doc = {name: getattr(key, name) for name in _HEAD_FIELDS}
    doc["state"] = str(key.state)
    # Indexed, so the rotation scheduler finds due keys without scanning.
    doc["next_rotation_at"] = None
    if key.rotation_period_seconds and key.state in ROTATABLE_STATES:
        latest = key.versions[key.latest_version].created_at
        doc["next_rotation_at"] = latest + timedelta(seconds=key.rotation_period_seconds)
    # A copy of the latest version's material, so a release reads one document (load_release_view).
    latest = key.versions[key.latest_version]
    doc["latest_material"] = {"version": latest.version, "created_at": latest.created_at, "wrapped": latest.wrapped,
                              "kek_version": latest.kek_version}
    return {"key_id": key.key_id, **doc}


def version_doc(key: Key, kv: KeyVersion) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "version": kv.version,
        "created_at": kv.created_at,
        "wrapped": kv.wrapped,
        "kek_version": kv.kek_version,
    }


def key_from(head: dict[str, Any], version_docs: list[dict[str, Any]]) -> Key:
    versions = KeyVersions(
        [
            KeyVersion(
                version=d["version"],
                created_at=d["created_at"],
                wrapped=bytes(d["wrapped"]) if d.get("wrapped") is not None else None,
                kek_version=d["kek_version"],
            )
            for d in version_docs[: head["latest_version"]]
        ]
    )
    fields = {name: head.get(name) for name in _HEAD_FIELDS}
    fields["state"] = KeyState(head["state"])
    return Key(tenant_id=head["tenant_id"], key_id=head["key_id"], versions=versions, **fields)


def public_view(head: dict[str, Any] | Key) -> dict[str, Any]:
    """What operators see of a key: metadata, never material."""
    if isinstance(head, Key):
        head = head_doc(head)
    out = {k: v for k, v in head.items()
           if k not in ("_id", "tenant_id", "_outbox", "latest_material", "changed_by_request")}
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    return out
