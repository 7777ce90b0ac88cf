"""CMS SignedData (RFC 5652) with embedded content, checked against a key the caller trusts.

cryptography signs and serialises PKCS#7 but does not verify it, so the structure is parsed with
asn1crypto and the signature checked with cryptography: the `messageDigest` signed attribute must
equal the digest of the embedded content, and the signer's signature must cover the DER of the
signed attributes (as a SET OF, RFC 5652 §5.4), or the content itself when there are none.
Certificates in the structure are returned for the caller to chain, never trusted by themselves.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from asn1crypto import cms, core
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .base import EvidenceError

MAX_DER_BYTES = 64 * 1024
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_NEEDED_ATTRIBUTES = {"1.2.840.113549.1.9.3": "content_type", "1.2.840.113549.1.9.4": "message_digest"}
_RSA_SIGNATURES = {"rsassa_pkcs1v15", "sha256_rsa", "sha384_rsa", "sha512_rsa"}


@dataclass(frozen=True)
class SignedData:
    """The parts of a SignedData needed to verify it: embedded content, signature and certificates."""

    content: bytes
    digest: str
    message_digest: bytes | None
    signed_attrs: bytes | None
    signature: bytes
    certificates: tuple[bytes, ...]


def parse(der: bytes) -> SignedData:
    """Parse a SignedData with exactly one RSA signer and embedded `data` content."""
    if len(der) > MAX_DER_BYTES:
        raise EvidenceError("signature too large")
    try:
        return _parse(der)
    except EvidenceError:
        raise
    except Exception:  # asn1crypto parses lazily: any malformed field surfaces here (its message may quote input)
        raise EvidenceError("malformed signature") from None


def _parse(der: bytes) -> SignedData:
    info = cms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != "signed_data":
        raise EvidenceError("malformed signature")
    signed = info["content"]
    encapsulated = signed["encap_content_info"]
    content = encapsulated["content"].native
    if encapsulated["content_type"].native != "data" or not isinstance(content, bytes):
        raise EvidenceError("signature carries no document")
    if len(signed["signer_infos"]) != 1:
        raise EvidenceError("signature must have exactly one signer")
    signer = signed["signer_infos"][0]
    digest = signer["digest_algorithm"]["algorithm"].native
    if digest not in _DIGESTS or signer["signature_algorithm"]["algorithm"].native not in _RSA_SIGNATURES:
        raise EvidenceError("unsupported signature algorithm")
    signed_attrs, message_digest = _signed_attributes(signer["signed_attrs"])
    certificates = tuple(c.chosen.dump() for c in signed["certificates"] or () if c.name == "certificate")
    return SignedData(content=content, digest=digest, message_digest=message_digest, signed_attrs=signed_attrs,
                      signature=signer["signature"].native, certificates=certificates)


def _signed_attributes(attrs: cms.CMSAttributes | core.Void) -> tuple[bytes | None, bytes | None]:
    """(DER of the signed attributes as signed, their messageDigest), or (None, None) when there are none."""
    if isinstance(attrs, core.Void):
        return None, None
    values, seen = {}, set()
    for attr in attrs:
        name = attr["type"].dotted
        if name in seen:
            raise EvidenceError("malformed signed attributes")
        seen.add(name)
        if name in _NEEDED_ATTRIBUTES:  # others (signing time, capabilities) are signed but not read
            if len(attr["values"]) != 1:
                raise EvidenceError("malformed signed attributes")
            values[_NEEDED_ATTRIBUTES[name]] = attr["values"][0].native
    if values.get("content_type") != "data" or not isinstance(values.get("message_digest"), bytes):
        raise EvidenceError("malformed signed attributes")
    return attrs.untag().dump(), values["message_digest"]


def verify(signed: SignedData, public_key: PublicKeyTypes) -> None:
    """`public_key` signed the signed attributes and their digest is the content's; or, without
    signed attributes, `public_key` signed the content itself (RFC 5652 §5.4)."""
    algorithm = _DIGESTS[signed.digest]()
    if signed.signed_attrs is not None:
        digest = hashes.Hash(algorithm)
        digest.update(signed.content)
        if not hmac.compare_digest(digest.finalize(), signed.message_digest or b""):
            raise EvidenceError("document does not match its signature")
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < 2048:
        raise EvidenceError("signer key is not RSA-2048 or stronger")
    covered = signed.content if signed.signed_attrs is None else signed.signed_attrs
    try:
        public_key.verify(signed.signature, covered, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise EvidenceError("signature does not verify") from None
