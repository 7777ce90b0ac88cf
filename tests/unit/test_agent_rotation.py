"""strongroom-agent rotate on real files: files move to the latest key version, a crash (SIGKILL) at
every step leaves each file complete under its old or new version and a re-run finishes the job,
a second run changes nothing, and tampered files or unreleasable versions fail without harm."""

from __future__ import annotations

import fcntl
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli
from agent.fileformat import decrypt_stream, encrypt_stream, read_header
from agent.filetree import TreeError
from agent.rotation import JOURNAL_NAME, STEPS, find_encrypted, rotate

from .test_agent_files import VersionedClient, agent, data_key  # noqa: F401 - `agent` is a fixture

ROOT = Path(__file__).resolve().parents[2]
PLAIN = {"one.txt": b"first\n" * 50_000, "two.bin": os.urandom(2_500_000), "sub/three": b"", "sub/four": b"4" * 9}


def seal_tree(root: Path, version: int = 1) -> None:
    for rel, data in PLAIN.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as dst:
            encrypt_stream(io.BytesIO(data), dst, key=data_key(version), key_id="vol", key_version=version)
        path.chmod(0o640)


def opened(path: Path) -> tuple[int, bytes]:
    """(key version, plaintext) of an encrypted file, with the key its header names."""
    with open(path, "rb") as src:
        header = read_header(src)
        out = io.BytesIO()
        decrypt_stream(src, out, key=data_key(header.key_version), header=header)
    return header.key_version, out.getvalue()


def leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".strongroom-*"))


def test_rotate_moves_a_tree_to_the_latest_version_once(agent, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "data"
    seal_tree(root)
    (root / "notes.md").write_bytes(b"not encrypted")
    VersionedClient.latest = 3

    assert agent("rotate", root) == cli.EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["rotated"]) == sorted(PLAIN) and report["failed"] == []
    assert report["key_versions"] == {"vol": 3}
    assert report["skipped"] == [{"path": "notes.md", "reason": "not a Strongroom encrypted file"}]
    assert {rel: opened(root / rel) for rel in PLAIN} == {rel: (3, data) for rel, data in PLAIN.items()}
    assert {stat.S_IMODE((root / rel).stat().st_mode) for rel in PLAIN} == {0o640}
    assert VersionedClient.requests == [("vol", None), ("vol", 1)]
    assert leftovers(root) == []

    VersionedClient.requests = []
    before = {rel: (root / rel).read_bytes() for rel in PLAIN}
    assert agent("rotate", root) == cli.EXIT_OK  # idempotent: only the latest version is asked for
    report = json.loads(capsys.readouterr().out)
    assert report["rotated"] == [] and sorted(report["already_current"]) == sorted(PLAIN)
    assert VersionedClient.requests == [("vol", None)]
    assert {rel: (root / rel).read_bytes() for rel in PLAIN} == before

    VersionedClient.latest = 4  # a single file rotates alone; its neighbours stay as they are
    assert agent("rotate", root / "sub" / "four") == cli.EXIT_OK
    assert opened(root / "sub" / "four") == (4, PLAIN["sub/four"]) and opened(root / "one.txt")[0] == 3


def test_unreleasable_versions_and_tampered_files_fail_alone(agent, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "data"
    seal_tree(root)
    with open(root / "old.txt", "wb") as dst:  # under version 2, which is fine to read
        encrypt_stream(io.BytesIO(b"v2 data"), dst, key=data_key(2), key_id="vol", key_version=2)
    victim = root / "two.bin"
    data = bytearray(victim.read_bytes())
    data[-100] ^= 1
    victim.write_bytes(data)
    tampered = bytes(data)

    VersionedClient.latest = 3
    VersionedClient.refused_versions = {1}  # retired: below min_decryption_version
    assert agent("rotate", root) == cli.EXIT_ERROR
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["rotated"] == ["old.txt"] and opened(root / "old.txt") == (3, b"v2 data")
    failed = {f["path"]: f["reason"] for f in report["failed"]}
    assert set(failed) == set(PLAIN) and "min_decryption_version" in failed["one.txt"]
    assert "could not be rotated" in out.err
    assert opened(root / "one.txt") == (1, PLAIN["one.txt"]) and victim.read_bytes() == tampered

    VersionedClient.refused_versions = set()
    assert agent("rotate", root) == cli.EXIT_ERROR  # now only the tampered file fails, unchanged
    report = json.loads(capsys.readouterr().out)
    assert [f["path"] for f in report["failed"]] == ["two.bin"]
    assert "authentication failed" in report["failed"][0]["reason"]
    assert victim.read_bytes() == tampered and opened(root / "one.txt") == (3, PLAIN["one.txt"])
    assert leftovers(root) == []


KILLER = """
import hashlib, os, signal, sys
from agent.rotation import find_encrypted, rotate
step, root = sys.argv[1], sys.argv[2]
key = lambda v: hashlib.sha256(b"test data key %d" % v).digest()
seen = []
def hook(name):
    seen.append(name)
    if seen.count(step) == 2:  # the second file, so one file is already done
        os.kill(os.getpid(), signal.SIGKILL)
rotate(find_encrypted(root), targets={"vol": 2}, keys={("vol", 1): key(1), ("vol", 2): key(2)}, hook=hook)
"""


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_leaves_complete_files_and_a_rerun_finishes(tmp_path, step):
    root = tmp_path / "data"
    seal_tree(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLER, step, str(root)], env=env, capture_output=True, check=False)
    assert killed.returncode == -9, killed.stderr

    # Every file is whole, under the old or the new version; at most the in-flight temporary is extra.
    states = {rel: opened(root / rel) for rel in PLAIN}
    assert {rel: data for rel, (_, data) in states.items()} == PLAIN
    versions = [states[rel][0] for rel in sorted(PLAIN)]
    assert versions[0] == 2 and set(versions) <= {1, 2}
    temps = [p for p in leftovers(root) if p != JOURNAL_NAME]
    assert len(temps) <= 1 and (root / JOURNAL_NAME).exists()

    target = find_encrypted(root)
    assert {rel for rel, _ in target.files} == set(PLAIN)
    assert {s.rel for s in target.skipped} == {JOURNAL_NAME, *temps}  # working files are never taken as data
    report = rotate(target, targets={"vol": 2}, keys={("vol", 1): data_key(1), ("vol", 2): data_key(2)})
    assert report.failed == []
    assert len(report.recovered) == (0 if step == "done" else 1)
    assert {rel: opened(root / rel) for rel in PLAIN} == {rel: (2, data) for rel, data in PLAIN.items()}
    assert leftovers(root) == []


def test_a_second_rotation_of_the_same_tree_waits_its_turn(tmp_path):
    root = tmp_path / "data"
    seal_tree(root)
    fd = os.open(root / JOURNAL_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(TreeError, match="another rotation is running"):
            rotate(find_encrypted(root), targets={"vol": 2}, keys={("vol", 1): data_key(1), ("vol", 2): data_key(2)})
    finally:
        os.close(fd)
    assert {opened(root / rel)[0] for rel in PLAIN} == {1}


def test_a_journal_cannot_delete_what_rotation_did_not_create(tmp_path):
    root = tmp_path / "data"
    seal_tree(root)
    (tmp_path / "precious").write_bytes(b"keep")
    records = [{"op": "begin", "path": "one.txt", "temp": "../precious"},
               {"op": "begin", "path": "two.bin", "temp": "two.bin"}]
    (root / JOURNAL_NAME).write_text("".join(json.dumps(r) + "\n" for r in records) + '[1, 2]\n{"op": "beg')
    report = rotate(find_encrypted(root), targets={"vol": 2}, keys={("vol", 1): data_key(1), ("vol", 2): data_key(2)})
    assert report.recovered == [] and report.failed == []
    assert (tmp_path / "precious").read_bytes() == b"keep"
    assert {rel: opened(root / rel) for rel in PLAIN} == {rel: (2, data) for rel, data in PLAIN.items()}
