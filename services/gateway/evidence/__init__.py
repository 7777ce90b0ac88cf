"""Evidence an agent sends to prove facts about its VM: the verifiers the gateway knows, by kind.

``registry(settings)`` is the one place a verifier is registered (``kind -> Verifier``, each
bound to its trust anchors from the settings); ``check`` runs the one an ``evidence`` object names.
The contract every verifier keeps is in ``base.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from ..settings import GatewaySettings
from . import signed
from .base import EvidenceContext, EvidenceError, Verified, Verifier

Registry = Mapping[str, Verifier]


def registry(settings: GatewaySettings) -> dict[str, Verifier]:
    """Every evidence kind this gateway verifies; a kind without configured trust anchors is absent."""
    verifiers: dict[str, Verifier] = {}
    if settings.evidence_signers:
        verifiers["signed"] = partial(signed.verify, signers=signed.trusted_signers(settings.evidence_signers))
    return verifiers


def check(evidence: Mapping[str, Any], verifiers: Registry, context: EvidenceContext) -> Verified:
    """What ``evidence`` proves, by the verifier its ``kind`` names; raises EvidenceError."""
    kind = evidence.get("kind")
    verifier = verifiers.get(kind) if isinstance(kind, str) else None
    if verifier is None:
        raise EvidenceError("unknown evidence kind")
    try:
        verified = verifier(evidence, context)
    except EvidenceError:
        raise
    except Exception:  # a verifier's parser choking on hostile input proves nothing
        raise EvidenceError("malformed evidence") from None
    if verified.provenance not in ("cloud", "attested") or not isinstance(verified.facts, dict):
        raise EvidenceError("evidence proves nothing")
    return verified
