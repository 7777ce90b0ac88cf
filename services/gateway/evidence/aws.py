"""AWS: the EC2 instance identity document, verified by its `rsa2048` CMS signature.

The agent fetches the document and its `rsa2048` signature through IMDSv2. The signature is a
CMS SignedData (SHA-256, RSA-2048) with the document embedded; it is verified against the
certificate pinned for the document's region in tenant settings (`region_certs`: region →
PEM). A region with no pinned certificate is refused, as is a document that differs from the
signed one by a single byte.

The document carries no nonce: it is the same for the life of the instance until it is stopped
and started (`pendingTime`). So it proves which instance the agent runs on but not that the
agent is fresh, and `check_first_use` lets an (account, instance) enrol once: a second
enrolment with the same document is refused and raised as an alert, and `pendingTime` may never
move backwards. Facts from it have provenance "cloud".
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography import x509

from . import cms
from .base import EvidenceError, Verified

MAX_DOCUMENT_BYTES = 16 * 1024
MAX_SIGNATURE_CHARS = 16 * 1024
CLOCK_SKEW = timedelta(minutes=5)
_FIELDS: dict[str, re.Pattern[str]] = {
    "accountId": re.compile(r"[0-9]{12}"),
    "instanceId": re.compile(r"i-[0-9a-f]{8,17}"),
    "region": re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}"),
    "availabilityZone": re.compile(r"[a-z]{2}(-[a-z0-9]+)+"),  # us-east-1a, also local zones: us-west-2-lax-1a
    "imageId": re.compile(r"ami-[0-9a-f]{8,17}"),
    "instanceType": re.compile(r"[a-z0-9-]{1,32}\.[a-z0-9-]{1,32}"),
    "pendingTime": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z"),
}


def verify_aws(document: bytes, rsa2048_b64: str, *, region_certs: Mapping[str, str], now: datetime) -> Verified:
    """Verify an instance identity document and its `rsa2048` signature; return the instance's identity."""
    if not isinstance(document, bytes) or not 0 < len(document) <= MAX_DOCUMENT_BYTES:
        raise EvidenceError("document missing or too large")
    signed = cms.parse(_der(rsa2048_b64))
    if not hmac.compare_digest(signed.content, document):
        raise EvidenceError("document does not match its signature")
    fields = _fields(document)
    pem = region_certs.get(fields["region"])
    if not isinstance(pem, str):
        raise EvidenceError("unknown region")
    certificate = _pinned(pem, now)
    cms.verify(signed, certificate.public_key())
    pending = pending_time(fields["pendingTime"])
    if pending > now + CLOCK_SKEW:
        raise EvidenceError("document pendingTime is in the future")
    identity = {
        "cloud": "aws", "account_id": fields["accountId"], "instance_id": fields["instanceId"],
        "region": fields["region"], "zone": fields["availabilityZone"],
        "image_id": fields["imageId"], "instance_type": fields["instanceType"], "pending_time": fields["pendingTime"],
    }
    return Verified(facts={"identity": identity}, provenance="cloud",
                    subject=f"aws:{fields['accountId']}/{fields['instanceId']}")


def _der(rsa2048_b64: str) -> bytes:
    if not isinstance(rsa2048_b64, str) or not 0 < len(rsa2048_b64) <= MAX_SIGNATURE_CHARS:
        raise EvidenceError("signature missing or too large")
    try:  # IMDS returns base64 folded over lines; nothing else may appear in it
        return base64.b64decode("".join(rsa2048_b64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError("signature is not base64") from None


def _fields(document: bytes) -> dict[str, str]:
    try:
        parsed = json.loads(document)
    except (UnicodeDecodeError, ValueError):
        raise EvidenceError("document is not JSON") from None
    if not isinstance(parsed, dict):
        raise EvidenceError("document is not a JSON object")
    for name, pattern in _FIELDS.items():
        value = parsed.get(name)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise EvidenceError(f"document field {name} missing or malformed")
    if not parsed["availabilityZone"].startswith(parsed["region"]):
        raise EvidenceError("document field availabilityZone is not in its region")
    return {name: parsed[name] for name in _FIELDS}


def _pinned(pem: str, now: datetime) -> x509.Certificate:
    try:
        certificate = _load_pinned(pem)
    except ValueError:
        raise EvidenceError("pinned certificate for the region is unreadable") from None
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise EvidenceError("pinned certificate for the region is not valid now")
    return certificate


@lru_cache(maxsize=64)
def _load_pinned(pem: str) -> x509.Certificate:
    """Region certificates change rarely: parse each distinct one once."""
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def pending_time(value: str) -> datetime:
    """`pendingTime` as an aware UTC datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


# --- trust on first use -------------------------------------------------------------------


@dataclass(frozen=True)
class FirstUse:
    """What the gateway keeps per (account, instance): when it was launched and which device holds it."""

    subject: str
    pending_time: str
    device_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "pending_time": self.pending_time, "device_id": self.device_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FirstUse:
        return cls(subject=data["subject"], pending_time=data["pending_time"], device_id=data.get("device_id"))


@dataclass(frozen=True)
class FirstUseDecision:
    """Whether to accept the document; the record to keep if so; whether a refusal is an alert."""

    allowed: bool
    reason: str
    record: FirstUse | None = None
    alert: bool = False


def check_first_use(seen: FirstUse | None, verified: Verified, *, device_id: str | None = None) -> FirstUseDecision:
    """Trust on first use of (account, instance id), `pendingTime` never moving backwards.

    `seen` is the record kept for `verified.subject`, or None. At enrolment pass no `device_id`
    (or the new one): the first enrolment is allowed, any later one refused with an alert, as a
    lifted or replayed document. Once enrolled, the device that holds the instance may present
    its document again (`device_id` = the holder's), including a newer one after a stop and
    start; an older one is refused with an alert.
    """
    identity = verified.facts["identity"]
    presented = identity["pending_time"]
    if seen is None:
        return FirstUseDecision(True, "first use of this instance", FirstUse(verified.subject or "", presented, device_id))
    if seen.subject != verified.subject:
        raise ValueError("the record kept is for another instance")
    if pending_time(presented) < pending_time(seen.pending_time):
        return FirstUseDecision(False, "instance launch time moved backwards", alert=True)
    if seen.device_id is None or device_id is None or not hmac.compare_digest(seen.device_id, device_id):
        return FirstUseDecision(False, "instance already enrolled", alert=True)
    newest = max(presented, seen.pending_time, key=pending_time)
    return FirstUseDecision(True, "instance held by this device", replace(seen, pending_time=newest))
