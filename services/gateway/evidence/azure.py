"""Azure: the attested data document, a PKCS#7 SignedData chained to the configured roots.

The agent asks the Instance Metadata Service for `/metadata/attested/document` with a nonce
derived from the server's challenge and its enrolment key (`azure_nonce`). The reply's
`signature` is a PKCS#7 SignedData (base64) whose embedded content is a JSON document holding
that nonce, `vmId`, `subscriptionId` and a validity window. The signer certificate travels in
the structure; it must chain, at `now`, to a root pinned in tenant settings (intermediates from
the settings or the structure, Microsoft's from their CA Issuers URL), and name
`metadata.azure.com` (or a subdomain) in its subjectAltName. Facts have provenance "attested".
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.x509 import verification

from shared.crypto.cloud_binding import azure_nonce

from . import cms
from .base import EvidenceError, Verified

__all__ = ["SIGNER_DOMAIN", "azure_nonce", "verify_azure"]

SIGNER_DOMAIN = "metadata.azure.com"
MAX_SIGNATURE_CHARS = 64 * 1024
CLOCK_SKEW = timedelta(minutes=5)
_TIMESTAMP = "%m/%d/%y %H:%M:%S %z"
_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def verify_azure(signature_b64: str, *, roots: Sequence[str], nonce: str, now: datetime,
                 intermediates: Sequence[str] = (), signer_domain: str = SIGNER_DOMAIN) -> Verified:
    """Verify an attested document signed for `nonce`; return the VM's identity."""
    if not isinstance(signature_b64, str) or not 0 < len(signature_b64) <= MAX_SIGNATURE_CHARS:
        raise EvidenceError("signature missing or too large")
    try:
        der = base64.b64decode("".join(signature_b64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError("signature is not base64") from None
    signed = cms.parse(der)
    leaf = _chained_signer(signed, roots, intermediates, now, signer_domain)
    cms.verify(signed, leaf.public_key())
    document = _document(signed.content)
    if not isinstance(document.get("nonce"), str) or not hmac.compare_digest(document["nonce"].encode(), nonce.encode()):
        raise EvidenceError("document nonce does not match the challenge")
    created, expires = _window(document)
    if not created - CLOCK_SKEW <= now <= expires:
        raise EvidenceError("document is not valid now")
    vm_id, subscription = document.get("vmId"), document.get("subscriptionId")
    if not all(isinstance(v, str) and _ID.fullmatch(v) for v in (vm_id, subscription)):
        raise EvidenceError("document lacks vmId or subscriptionId")
    identity = {"cloud": "azure", "account_id": subscription.lower(), "instance_id": vm_id.lower(),
                "sku": _short(document.get("sku")), "created_on": created.isoformat()}
    return Verified(facts={"identity": identity}, provenance="attested",
                    subject=f"azure:{identity['account_id']}/{identity['instance_id']}")


def _chained_signer(signed: cms.SignedData, roots: Sequence[str], intermediates: Sequence[str],
                    now: datetime, domain: str) -> x509.Certificate:
    if not signed.certificates:
        raise EvidenceError("signature carries no signer certificate")
    try:
        anchors = [x509.load_pem_x509_certificate(p.encode("ascii")) for p in roots]
        pool = [x509.load_pem_x509_certificate(p.encode("ascii")) for p in intermediates]
        carried = [x509.load_der_x509_certificate(d) for d in signed.certificates]
    except ValueError:
        raise EvidenceError("certificate unreadable") from None
    if not anchors:
        raise EvidenceError("no trusted roots configured")
    verifier = (verification.PolicyBuilder().store(verification.Store(anchors)).time(now)
                .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=verification.ExtensionPolicy.permit_all())
                .build_client_verifier())
    for leaf in carried:  # the signer is whichever carried certificate names the metadata service
        if not _names_domain(leaf, domain):
            continue
        try:
            verifier.verify(leaf, [c for c in pool + carried if c is not leaf])
        except verification.VerificationError:
            raise EvidenceError("signer does not chain to a trusted root") from None
        return leaf
    raise EvidenceError("signer is not the metadata service")


def _names_domain(certificate: x509.Certificate, domain: str) -> bool:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = names.get_values_for_type(x509.DNSName)
    return any(n == domain or n.endswith("." + domain) for n in dns)


def _document(content: bytes) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        raise EvidenceError("document is not JSON") from None
    if not isinstance(document, dict):
        raise EvidenceError("document is not a JSON object")
    return document


def _window(document: dict[str, Any]) -> tuple[datetime, datetime]:
    stamp = document.get("timeStamp")
    try:
        created = datetime.strptime(stamp["createdOn"], _TIMESTAMP).astimezone(UTC)
        expires = datetime.strptime(stamp["expiresOn"], _TIMESTAMP).astimezone(UTC)
    except (TypeError, KeyError, ValueError):
        raise EvidenceError("document timeStamp missing or malformed") from None
    return created, expires


def _short(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= 128 else ""
