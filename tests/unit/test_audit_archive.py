"""Unit tests for audit archives: auditsvc writes them, shared/audit_archive.py reads and checks them offline."""

from __future__ import annotations

import gzip
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auditsvc.archive import build_archive
from shared.audit_archive import is_archive, read_archive, verify_archive_signature
from shared.audit_chain import ChainHead, verify_chain
from shared.signatures import load_public_pem

TENANT = "t-acme"


def _records(n: int) -> list[dict]:
    head, records = ChainHead.genesis(TENANT), []
    for i in range(1, n + 1):
        record, head = head.append({"tenant_id": TENANT, "event_id": f"evt-{i}", "action": "key.created"})
        records.append(record)
    return records


def _archive(key: Ed25519PrivateKey, records: list[dict]) -> bytes:
    return build_archive(tenant_id=TENANT, archive_id="arc_1", created_at="2026-01-01T00:00:00Z",
                         start=ChainHead.genesis(TENANT), records=records, checkpoints=[], signing_key=key)


def test_an_archive_reads_back_verifies_and_continues_its_chain(tmp_path):
    key = Ed25519PrivateKey.generate()
    data = _archive(key, _records(3))
    path = tmp_path / "a.json.gz"
    path.write_bytes(data)
    assert is_archive(path) and data == _archive(key, _records(3))  # deterministic

    archive = read_archive(data)
    assert verify_archive_signature(archive, [load_public_pem(archive.public_key_pem)])
    assert not verify_archive_signature(archive, [Ed25519PrivateKey.generate().public_key()])
    result = verify_chain(archive.records, start=archive.start_head)
    assert result.ok and result.checked == 3


def test_an_edited_archive_is_refused():
    key = Ed25519PrivateKey.generate()
    doc = json.loads(gzip.decompress(_archive(key, _records(2))))
    doc["records"][0]["action"] = "key.destroyed"
    with pytest.raises(ValueError, match="checksum"):
        read_archive(gzip.compress(json.dumps(doc).encode()))
    doc = json.loads(gzip.decompress(_archive(key, _records(2))))
    doc["created_at"] = "2020-01-01T00:00:00Z"
    assert not verify_archive_signature(read_archive(gzip.compress(json.dumps(doc).encode())), [key.public_key()])


def test_what_is_not_an_archive(tmp_path):
    plain = tmp_path / "records.jsonl"
    plain.write_text("{}\n")
    assert not is_archive(plain) and not is_archive(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a readable archive"):
        read_archive(b"not gzip")
    with pytest.raises(ValueError, match="not a strongroom-audit-archive/1 document"):
        read_archive(gzip.compress(b'{"format": "other"}'))
