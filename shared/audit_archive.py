"""Audit archives read and checked offline: format, records checksum and signature (pure).

An archive is gzip over one canonical JSON document. It names the chain head it continues
(`start`), holds the records and the signed checkpoints that cover them, a SHA-256 over the
records, and an Ed25519 signature (by the audit signing key) over everything else, so it
verifies offline: `strongroom audit verify --from-file ARCHIVE`. The audit service writes them.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.audit_chain import ChainHead
from shared.signatures import canonical_bytes, key_fingerprint

FORMAT = "strongroom-audit-archive/1"
# Domain separation: an archive signature is never valid as any other message of the audit key.
_CONTEXT = b"strongroom.audit.archive.v1\n"
_GZIP_MAGIC = b"\x1f\x8b"


def records_digest(records: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(canonical_bytes({"records": list(records)})).hexdigest()


def signed_message(body: Mapping[str, Any]) -> bytes:
    """The bytes an archive's signature covers: the document without its signature."""
    return _CONTEXT + canonical_bytes(body)


@dataclass(frozen=True)
class Archive:
    doc: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.doc["records"]

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        return self.doc.get("checkpoints") or []

    @property
    def start_head(self) -> ChainHead:
        return ChainHead(self.doc["tenant_id"], self.doc["start"]["seq"], self.doc["start"]["hash"])

    @property
    def public_key_pem(self) -> str:
        return self.doc.get("public_key_pem", "")


def is_archive(path: str | Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == _GZIP_MAGIC
    except OSError:
        return False


def read_archive(data: bytes) -> Archive:
    """Parse an archive; raises ValueError if it is not one or its records checksum fails."""
    try:
        doc = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"not a readable archive: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    for field in ("tenant_id", "start", "records", "records_sha256", "signature", "key_id"):
        if field not in doc:
            raise ValueError(f"archive lacks {field}")
    if not isinstance(doc["records"], list) or not hmac.compare_digest(
            records_digest(doc["records"]), str(doc["records_sha256"])):
        raise ValueError("archive records do not match their checksum")
    return Archive(doc)


def verify_archive_signature(archive: Archive, trusted_keys: Iterable[Ed25519PublicKey]) -> bool:
    """True if a trusted key signed the archive (the records via their checksum, and the rest)."""
    body = {k: v for k, v in archive.doc.items() if k != "signature"}
    try:
        signature = base64.b64decode(archive.doc["signature"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        return False
    for key in trusted_keys:
        if not hmac.compare_digest(key_fingerprint(key), str(archive.doc.get("key_id"))):
            continue
        try:
            key.verify(signature, signed_message(body))
            return True
        except InvalidSignature:
            return False
    return False
