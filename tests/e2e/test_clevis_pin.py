"""The Clevis pin `strongroom` driven by Debian's own Clevis: bind a LUKS2 image to a Strongroom
key, unlock it while policy allows, and see unlock fail cleanly (the header untouched) once the
gateway is unreachable, policy denies or the device is revoked.

There is no device-mapper here, so `clevis luks unlock` cannot map the volume; `clevis luks pass`
piped into `cryptsetup open --test-passphrase` proves the recovered passphrase opens the slot."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import agent
from agent import cli
from agent.client import AgentClient

from .helpers import ALLOW_EU, make_tenant

REPO = Path(agent.__file__).resolve().parents[1]
PASSPHRASE = b"correct horse battery staple 42"


async def run(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> tuple[int, bytes, str]:
    """A real process, awaited without blocking the loop the in-process stack serves on."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin)
    return proc.returncode, out, err.decode(errors="replace")


def header(compact: str) -> dict:
    part = compact.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Host:
    """A VM with an enrolled agent and the pins on PATH: runs Clevis and cryptsetup as processes."""

    def __init__(self, tmp_path: Path, env: dict[str, str], config: str):
        self.tmp, self.env, self.config = tmp_path, env, config
        self.image, self.keyfile = tmp_path / "vol.img", tmp_path / "passphrase"
        self.stderrs: list[str] = []

    async def run(self, *argv: str, stdin: bytes = b"", env: dict | None = None) -> tuple[int, bytes, str]:
        rc, out, err = await run(list(argv), env or self.env, stdin)
        self.stderrs.append(err)
        return rc, out, err

    async def clevis(self, *args: str, stdin: bytes = b"", env: dict | None = None) -> tuple[int, bytes, str]:
        return await self.run("clevis", *args, stdin=stdin, env=env)

    async def unlocks(self) -> tuple[int, str]:
        """`clevis luks pass` piped into cryptsetup: (cryptsetup's exit code, Clevis's stderr)."""
        rc, passphrase, err = await self.clevis("luks", "pass", "-d", str(self.image), "-s", "1")
        if rc != 0:
            return rc, err
        assert passphrase and passphrase not in PASSPHRASE
        return await self.opens_slot_1(passphrase)

    async def opens_slot_1(self, passphrase: bytes) -> tuple[int, str]:
        rc, _, err = await self.run("cryptsetup", "open", "--test-passphrase", "--key-slot", "1", "--key-file", "-",
                                    str(self.image), stdin=passphrase)
        return rc, err


async def enrolled_host(api, tenant, tmp_path: Path) -> tuple[Host, object]:
    """Enrol an agent (facts: eu-west-1, firewall on) and install the pins as an operator does."""
    _status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "db-1"})
    home = tmp_path / "agent-home"
    async with AgentClient() as client:
        identity = await client.enroll(api.url, enr["token"], "db-1", home)
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": True}}))
    bin_dir = tmp_path / "bin"
    agent_exe = Path(sys.executable).parent / "strongroom-agent"
    install = cli.build_parser().parse_args(["clevis", "install", "--bin-dir", str(bin_dir), "--agent", str(agent_exe)])
    assert await cli.run(install, environ={}) == 0
    assert {p.name: p.stat().st_mode & 0o777 for p in bin_dir.iterdir()} == {
        "clevis-encrypt-strongroom": 0o755, "clevis-decrypt-strongroom": 0o755}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"PATH": f"{bin_dir}:{agent_exe.parent}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
           "STRONGROOM_AGENT_HOME": str(home), "STRONGROOM_AGENT_FACTS_FILE": str(facts), "TMPDIR": str(scratch),
           "LC_ALL": "C.UTF-8"}
    return Host(tmp_path, env, json.dumps({"url": api.url, "key_id": tenant.key_id})), identity


async def pin_follows_clevis_conventions(host: Host, api, tenant) -> None:
    # The round trip the Clevis manual shows (tee shows the JWE passing between the two).
    rc, out, jwe = await host.run("sh", "-c", 'echo hi | clevis encrypt strongroom "$CFG" | tee /dev/stderr | clevis decrypt',
                                  env={**host.env, "CFG": host.config})
    assert (rc, out) == (0, b"hi\n"), jwe
    protected = header(jwe)
    assert protected["alg"] == "dir" and protected["enc"] == "A256GCM"
    bound = protected["clevis"]["strongroom"]
    assert protected["clevis"]["pin"] == "strongroom" and bound["key_id"] == tenant.key_id
    assert bound["key_version"] == 1 and bound["url"] == api.url and set(bound) == {"url", "key_id", "key_version", "salt"}

    # A bad config is refused the way Clevis's pins refuse one, before any key is asked for.
    rc, _, err = await host.clevis("encrypt", "strongroom", json.dumps({"url": api.url}), stdin=b"x")
    assert rc == 1 and "Missing the required 'key_id' property!" in err
    # A JWE altered in transit does not open, although the key is released.
    parts = jwe.split(".")
    parts[3] = ("A" if parts[3][0] != "A" else "B") + parts[3][1:]
    rc, out, err = await host.clevis("decrypt", stdin=".".join(parts).encode())
    assert rc == 1 and out == b"" and "does not decrypt" in err


async def bind_and_unlock(host: Host, tenant) -> tuple[bytes, bytes]:
    """A LUKS2 image with a known passphrase in slot 0, bound with Debian's `clevis luks bind`,
    unlocked with `clevis luks pass`; returns the token's JWE in compact form and the slot key."""
    host.keyfile.write_bytes(PASSPHRASE)
    with host.image.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    rc, _, err = await host.run("cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
                                "--pbkdf-force-iterations", "1000", "--key-file", str(host.keyfile), "--key-slot", "0",
                                str(host.image))
    assert rc == 0, err
    rc, _, err = await host.clevis("luks", "bind", "-y", "-d", str(host.image), "-k", str(host.keyfile), "strongroom",
                                   host.config)
    assert rc == 0, err
    assert list((host.tmp / "tmp").iterdir()) == []  # Clevis's header backup is gone; no key was left behind
    rc, out, err = await host.clevis("luks", "list", "-d", str(host.image))
    assert rc == 0 and out.decode().startswith("1: ") and "strongroom" in out.decode(), (out, err)
    assert await host.unlocks() == (0, "")

    # The token's JWE, as Clevis stores it, decrypts with the plain `clevis decrypt` too.
    rc, token, err = await host.run("cryptsetup", "token", "export", "--token-id", "0", str(host.image))
    assert rc == 0, err
    token = json.loads(token)
    assert token["type"] == "clevis" and token["keyslots"] == ["1"]
    rc, compact, err = await host.run("jose", "jwe", "fmt", "-i-", "-c", stdin=json.dumps(token["jwe"]).encode())
    assert rc == 0 and header(compact.decode())["clevis"]["strongroom"]["key_id"] == tenant.key_id, err
    rc, slot_key, err = await host.clevis("decrypt", stdin=compact)
    assert rc == 0 and slot_key, err
    assert await host.opens_slot_1(slot_key) == (0, "")
    return compact, slot_key


async def unlock_fails_cleanly_without_a_release(host: Host, tenant, identity, compact: bytes) -> None:
    # The gateway unreachable: the same agent identity pointed at a closed port.
    away = host.tmp / "agent-away"
    shutil.copytree(host.env["STRONGROOM_AGENT_HOME"], away)
    doc = json.loads((away / "identity.json").read_text())
    (away / "identity.json").write_text(json.dumps({**doc, "gateway_url": f"http://127.0.0.1:{closed_port()}"}))
    rc, out, err = await host.clevis("decrypt", stdin=compact, env={**host.env, "STRONGROOM_AGENT_HOME": str(away)})
    assert rc == 1 and out == b"" and "gateway unreachable" in err and "Traceback" not in err

    # Policy now denies this VM's region: unlock fails, naming the fact that failed.
    status, out, _ = await tenant.admin.call("PUT", f"/v1/policies/{tenant.policy_id}", json={
        "name": "eu-volumes", "disclose": "reasons", "rules": [
            {"id": "central-only", "effect": "allow",
             "when": {"fact": "identity.region", "op": "equals", "value": "eu-central-1"}}]})
    assert status == 200, out
    rc, err = await host.unlocks()
    assert rc != 0 and "key denied by policy" in err and "identity.region" in err and "Traceback" not in err, err

    # Allowed again, it unlocks again; then the device is revoked and it never does.
    status, out, _ = await tenant.admin.call("PUT", f"/v1/policies/{tenant.policy_id}", json=ALLOW_EU)
    assert status == 200, out
    assert await host.unlocks() == (0, "")
    status, out, _ = await tenant.admin.call("POST", f"/v1/devices/{identity.device_id}/revoke",
                                             json={"reason": "decommissioned"})
    assert status == 200, out
    rc, err = await host.unlocks()
    assert rc != 0 and "strongroom-agent:" in err and "Traceback" not in err, err


async def test_clevis_binds_and_unlocks_a_luks2_image_only_while_strongroom_releases_the_key(api, tmp_path):
    tenant = await make_tenant(api)
    host, identity = await enrolled_host(api, tenant, tmp_path)
    await pin_follows_clevis_conventions(host, api, tenant)
    compact, slot_key = await bind_and_unlock(host, tenant)

    # A new key version does not disturb the binding: unlock asks for the version it was bound to.
    status, rotated, _ = await tenant.admin.call("POST", f"/v1/keys/{tenant.key_id}/rotate", json={})
    assert status == 200, rotated
    assert await host.unlocks() == (0, "")

    rc, dump_before, _ = await host.run("cryptsetup", "luksDump", str(host.image))
    assert rc == 0
    await unlock_fails_cleanly_without_a_release(host, tenant, identity, compact)
    rc, dump_after, _ = await host.run("cryptsetup", "luksDump", str(host.image))
    assert rc == 0 and dump_after == dump_before
    # The slot key and the passphrase never surfaced in a message.
    assert not any(slot_key.decode() in e or PASSPHRASE.decode() in e for e in host.stderrs)
