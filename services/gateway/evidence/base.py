"""The contract between the gateway and each evidence verifier, and how verified facts join the claimed ones.

An agent's request may carry one ``evidence`` object, ``{"kind": "<kind>", ...}``. The gateway
looks the kind up in its registry (``evidence/__init__.py``) and calls the verifier, a pure
function ``(evidence, context) -> Verified`` that raises ``EvidenceError`` when the evidence does
not prove what it says. Verified facts use the names policysvc documents
(``services/policysvc/facts.py``): ``identity.cloud_provider``, ``account``, ``region``, ``zone``,
``instance_id``, ``image_id``; ``cloud`` and ``account_id`` are accepted as their aliases.

Everything in the agent's own ``facts`` is claimed, whatever it says about itself: only the
gateway decides provenance, from the evidence it verified and what it observed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.provenance import GATEWAY_OBSERVED, PROVENANCES, RANK, Provenance, fact_path, leaves

__all__ = [
    "PROVENANCES", "RANK", "EvidenceContext", "EvidenceError", "Merged", "Provenance", "Verified", "Verifier",
    "merge",
]

# Names verifiers may use for identity facts, and the names policies test.
IDENTITY_ALIASES = {"cloud": "cloud_provider", "account_id": "account"}
_VERIFIABLE_ROOTS = ("identity", "integrity")  # observed.* is the gateway's alone


@dataclass(frozen=True)
class Verified:
    """What a verifier proved: a nested fact tree, its provenance and the stable subject it names."""

    facts: dict[str, Any]  # e.g. {"identity": {"cloud": "aws", "region": ..., "instance_id": ..., "image_id": ...}}
    provenance: Provenance  # "cloud" (signed, not fresh) or "attested" (signed and bound to our nonce)
    subject: str | None = None  # for trust on first use, e.g. "aws:<account>/<instance>"


class EvidenceError(Exception):
    """The evidence proves nothing. ``reason`` is short, safe and generic: it never echoes input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EvidenceContext:
    """What a verifier may check the evidence against, besides its own trust anchors."""

    tenant_id: str
    now: datetime
    device_id: str | None = None  # None at enrolment
    public_key: str | None = None  # the device's Ed25519 public key (base64) the evidence may be bound to
    challenge: str | None = None  # a server-issued nonce the evidence must carry, when one was issued
    request_public_key: str | None = None  # the key request's one-time X25519 key (base64) a TPM quote binds


Verifier = Callable[[Mapping[str, Any], EvidenceContext], Verified]


@dataclass(frozen=True)
class Merged:
    """An agent's facts with verified evidence applied: the facts, their provenance, and the claimed
    values the evidence contradicted (the verified value is the one kept)."""

    facts: dict[str, Any]
    provenance: dict[str, Provenance] = field(default_factory=dict)
    contradicted: tuple[str, ...] = ()


def merge(claimed: Mapping[str, Any], verified: Verified | None) -> Merged:
    """The claimed facts with every verified fact written over them, each marked with its provenance."""
    facts = copy.deepcopy(dict(claimed))
    provenance: dict[str, Provenance] = {}
    contradicted: list[str] = []
    if verified is not None:
        for keys, value in leaves(verified.facts):
            if keys[0] not in _VERIFIABLE_ROOTS:
                continue
            if keys[0] == "identity" and len(keys) == 2:
                keys = ("identity", IDENTITY_ALIASES.get(str(keys[1]), keys[1]))
            path = fact_path(keys)
            before = _put(facts, keys, value)
            if before is not None and before != value:
                contradicted.append(path)
            provenance[path] = verified.provenance
    return Merged(facts, provenance, tuple(contradicted))


def with_observed(merged: Merged, observed: Mapping[str, Any], device_id: str) -> Merged:
    """``merged`` with what the gateway observed, which replaces anything else at those paths."""
    # SECURITY: observed facts and the device id come from the gateway and the verified request
    # signature, replacing anything the agent claimed or any evidence said.
    facts = dict(merged.facts)
    facts["observed"] = dict(observed)
    if isinstance(facts.get("identity"), dict):
        facts["identity"] = {**facts["identity"], "device_id": device_id}
    provenance = {path: p for path, p in merged.provenance.items() if path != "identity.device_id"}
    return Merged(facts, {**provenance, **GATEWAY_OBSERVED}, merged.contradicted)


def _put(tree: dict[str, Any], keys: tuple[str | int, ...], value: Any) -> Any:
    """Set ``tree[keys...] = value``, making objects on the way; the value it replaced, if any."""
    node = tree
    for key in keys[:-1]:
        child = node.get(key)  # type: ignore[call-overload]
        if not isinstance(child, dict):
            child = node[key] = {}  # type: ignore[index]
        node = child
    before = node.get(keys[-1])  # type: ignore[call-overload]
    node[keys[-1]] = value  # type: ignore[index]
    return before
