"""strongroom-agent encrypt/decrypt of directory trees and streams, on real files: relative paths and
modes kept, symlinks and special files never followed, all-or-nothing outputs, tamper detection.
The key release is stood in for (a different data key per version); the files are real."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from agent import cli
from agent.client import KeyNotActive, ReleasedKey
from agent.fileformat import ChunkSealer, decrypt_stream, encrypt_stream, read_header
from agent.filetree import scan, transform_tree
from agent.identity import AgentIdentity, generate_device_key

ROOT = Path(__file__).resolve().parents[2]


def data_key(version: int) -> bytes:
    return hashlib.sha256(b"test data key %d" % version).digest()


class VersionedClient:
    """Releases a distinct data key per version; `latest` is what a request without a version gets."""

    latest = 1
    refused_versions: ClassVar[set[int]] = set()
    requests: ClassVar[list[tuple[str, int | None]]] = []

    def __init__(self, identity=None, **_):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        return None

    async def request_key(self, key_id, *, facts, key_version=None):
        VersionedClient.requests.append((key_id, key_version))
        version = key_version or VersionedClient.latest
        if version in VersionedClient.refused_versions:
            raise KeyNotActive(409, "Key not active", f"version {version} is below min_decryption_version")
        return ReleasedKey(key_id=key_id, key_version=version, algorithm="AES-256-GCM", request_id=f"rq{version}",
                           key=data_key(version))


@pytest.fixture
def agent(tmp_path, monkeypatch):
    home = tmp_path / "home"
    AgentIdentity(gateway_url="https://gw.example", tenant_id="t1", device_id="d1", key_id="t1/d1",
                  private_key=generate_device_key()).save(home)
    VersionedClient.latest, VersionedClient.refused_versions, VersionedClient.requests = 1, set(), []
    monkeypatch.setattr(cli, "AgentClient", VersionedClient)
    return lambda *argv: cli.main(["--home", str(home), *map(str, argv)])


def make_tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha\n" * 100, "empty": b"", "sub/b.bin": os.urandom(300_000),
             "sub/deeper/c.csv": b"x,y\n1,2\n", "exec.sh": b"#!/bin/sh\necho hi\n"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "exec.sh").chmod(0o750)
    (root / "a.txt").chmod(0o640)
    (root / "sub" / "deeper").chmod(0o750)
    (root / "emptydir").mkdir()
    return files


def tree_of(root: Path) -> dict[str, tuple[str, int]]:
    """rel path -> (kind, mode) for everything under root, symlinks not followed."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"
        out[path.relative_to(root).as_posix()] = (kind, stat.S_IMODE(st.st_mode))
    return out


def test_a_tree_round_trips_with_paths_and_modes(agent, tmp_path, capsys):
    src, sealed, back = tmp_path / "src", tmp_path / "sealed", tmp_path / "back"
    src.mkdir()
    files = make_tree(src)

    assert agent("encrypt", "--key-id", "vol", src, sealed) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == len(files) and summary["directories"] == 3 and summary["skipped"] == []
    assert tree_of(sealed) == tree_of(src)
    for rel, data in files.items():
        sealed_bytes = (sealed / rel).read_bytes()
        assert read_header(io.BytesIO(sealed_bytes)).key_version == 1
        assert not data or data[:32] not in sealed_bytes

    assert agent("decrypt", sealed, back) == cli.EXIT_OK
    assert tree_of(back) == tree_of(src)
    assert {rel: (back / rel).read_bytes() for rel in files} == files
    assert VersionedClient.requests == [("vol", None), ("vol", 1)]  # one release per tree, one per version
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".strongroom-")]


def test_symlinks_refuse_the_tree_before_any_release_and_are_never_followed(agent, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"must not be read")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"fine")
    (src / "escape").symlink_to(outside)            # a directory link out of the tree
    (src / "leak").symlink_to(outside / "secret")   # a file link out of the tree
    os.mkfifo(src / "pipe")                         # reading it would block forever

    assert agent("encrypt", "--key-id", "vol", src, tmp_path / "out") == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "escape: symlink" in err and "leak: symlink" in err and "pipe: not a regular file" in err
    assert "--skip-special" in err
    assert VersionedClient.requests == [] and not (tmp_path / "out").exists()

    assert agent("encrypt", "--key-id", "vol", "--skip-special", src, tmp_path / "out") == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert sorted(s["path"] for s in summary["skipped"]) == ["escape", "leak", "pipe"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok.txt"]

    # A symlinked root is refused too: the user names the real directory.
    (tmp_path / "link-to-src").symlink_to(src)
    assert agent("encrypt", "--key-id", "vol", tmp_path / "link-to-src", tmp_path / "out2") == cli.EXIT_ERROR
    assert "is a symlink" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_output_must_be_new_and_outside_the_input(agent, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"1")
    (tmp_path / "taken").mkdir()
    assert agent("encrypt", "--key-id", "vol", src, tmp_path / "taken") == cli.EXIT_ERROR
    assert "already exists" in capsys.readouterr().err
    assert agent("encrypt", "--key-id", "vol", src, src / "inner") == cli.EXIT_ERROR
    assert "inside" in capsys.readouterr().err
    assert agent("encrypt", "--key-id", "vol", src, "-") == cli.EXIT_USAGE
    assert sorted(p.name for p in src.iterdir()) == ["f"] and list((tmp_path / "taken").iterdir()) == []


def test_a_tampered_file_leaves_no_decrypted_tree(agent, tmp_path, capsys):
    src, sealed, back = tmp_path / "src", tmp_path / "sealed", tmp_path / "back"
    src.mkdir()
    make_tree(src)
    assert agent("encrypt", "--key-id", "vol", src, sealed) == cli.EXIT_OK
    victim = sealed / "sub" / "b.bin"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(data)

    assert agent("decrypt", sealed, back) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "sub/b.bin" in err and "authentication failed" in err and "was not written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "sealed", "src"]  # no partial tree left


def test_a_plain_file_in_an_encrypted_tree_is_refused(agent, tmp_path, capsys):
    src, sealed = tmp_path / "src", tmp_path / "sealed"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    assert agent("encrypt", "--key-id", "vol", src, sealed) == cli.EXIT_OK
    (sealed / "stray.txt").write_bytes(b"plain")
    VersionedClient.requests = []
    assert agent("decrypt", sealed, tmp_path / "back") == cli.EXIT_ERROR
    assert "stray.txt" in capsys.readouterr().err
    assert VersionedClient.requests == [] and not (tmp_path / "back").exists()


def test_stdin_to_stdout_round_trip_in_a_subprocess(tmp_path):
    """Streams as a shell pipeline uses them; the summary goes to stderr so stdout is only data."""
    home = tmp_path / "home"
    AgentIdentity(gateway_url="https://gw.example", tenant_id="t1", device_id="d1", key_id="t1/d1",
                  private_key=generate_device_key()).save(home)
    runner = (
        "import sys, tests.unit.test_agent_files as t; from agent import cli; "
        "cli.AgentClient = t.VersionedClient; sys.exit(cli.main(sys.argv[1:]))"
    )
    plaintext = os.urandom(3 * 1024 * 1024 + 17)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def agent(*argv, data):
        return subprocess.run([sys.executable, "-c", runner, "--home", str(home), *argv], input=data,
                              capture_output=True, env=env, cwd=ROOT, check=False)

    sealed = agent("encrypt", "--key-id", "vol", "-", "-", data=plaintext)
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(sealed.stderr)["key_version"] == 1
    assert read_header(io.BytesIO(sealed.stdout)).key_id == "vol"
    opened = agent("decrypt", "-", "-", data=sealed.stdout)
    assert opened.returncode == 0 and opened.stdout == plaintext

    tampered = bytearray(sealed.stdout)
    tampered[-5] ^= 1
    refused = agent("decrypt", "-", "-", data=bytes(tampered))
    assert refused.returncode == cli.EXIT_ERROR
    assert b"not authentic" in refused.stderr and len(refused.stdout) < len(plaintext)


def test_files_with_the_former_64k_chunks_still_decrypt_and_match_push_encryption():
    key, plaintext = data_key(1), os.urandom(200_000)
    old = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), old, key=key, key_id="vol", key_version=1, chunk_size=64 * 1024)
    assert read_header(io.BytesIO(old.getvalue())).chunk_size == 64 * 1024
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(old.getvalue()), out, key=key)
    assert out.getvalue() == plaintext

    for size in (0, 1, 1024, 4096, 4097, 10_000):  # the push encryptor agrees with the pull one
        pushed = io.BytesIO()
        sealer = ChunkSealer(pushed, key=key, key_id="vol", key_version=1, chunk_size=1024)
        data = os.urandom(size)
        for i in range(0, size, 700):
            sealer.write(data[i : i + 700])
        sealer.finish()
        back = io.BytesIO()
        decrypt_stream(io.BytesIO(pushed.getvalue()), back, key=key)
        assert back.getvalue() == data
        assert len(pushed.getvalue()) == len(sealer.header.raw) + size + 16 * max(1, -(-size // 1024))


class FullDisk(io.RawIOBase):
    """An output that fails like a full disk once `room` bytes are written."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return len(data)


@pytest.mark.parametrize("room", [10, 3 * 1024 * 1024])
def test_a_failing_write_surfaces_and_leaves_no_thread_behind(room):
    before = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        encrypt_stream(io.BytesIO(os.urandom(8 * 1024 * 1024)), FullDisk(room), key=data_key(1), key_id="vol",
                       key_version=1)
    sealed = io.BytesIO()
    encrypt_stream(io.BytesIO(os.urandom(8 * 1024 * 1024)), sealed, key=data_key(1), key_id="vol", key_version=1)
    with pytest.raises(OSError, match="No space left"):
        decrypt_stream(io.BytesIO(sealed.getvalue()), FullDisk(room), key=data_key(1))
    assert threading.active_count() == before


def test_a_directory_swapped_for_a_symlink_after_the_walk_is_not_followed(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"inside")
    outside.mkdir()
    (outside / "f").write_bytes(b"outside secret")
    plan = scan(src)
    (src / "sub" / "f").unlink()
    (src / "sub").rmdir()
    (src / "sub").symlink_to(outside)  # the race a hostile local user could win
    read = []

    def copy(rel, s, d):
        read.append(s.read())
        d.write(read[-1])

    with pytest.raises(OSError):
        transform_tree(src, tmp_path / "out", plan, copy)
    assert read == [] and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "src"]
