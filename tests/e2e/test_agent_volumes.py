"""`strongroom-agent volume` against the real stack and the real cryptsetup on a file image:
format (registered, recovery escrowed) → unlock --check → the key rotated on the server →
status sees the newer version → rotate → status up to date → erase. A policy denial, a
destroyed-looking gateway and an unbound device leave the LUKS header exactly as it was."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import cli, luks
from agent import volumes as v
from agent.client import AgentClient

from .helpers import ALLOW_EU, make_tenant

EU = {"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": True}}
US = {"identity": {"region": "us-east-1"}, "integrity": {"firewall_enabled": True}}
CENTRAL = {"identity": {"region": "eu-central-1"}, "integrity": {"firewall_enabled": True}}
POLICY = {**ALLOW_EU, "rules": [
    {"id": "eu-west", "effect": "allow", "when": {"all": [
        {"fact": "identity.region", "op": "equals", "value": "eu-west-1"},
        {"fact": "integrity.firewall_enabled", "op": "equals", "value": True}]}},
    {"id": "eu-central-needs-approval", "effect": "require_approval",
     "when": {"fact": "identity.region", "op": "equals", "value": "eu-central-1"}},
]}


def header(device: str) -> str:
    return luks.run(["luksDump", device]).stdout


def last_json(out: str) -> dict:
    """The last top-level JSON object the CLI printed (the in-process services may log around it)."""
    lines = out.splitlines()
    end = max(i for i, line in enumerate(lines) if line == "}")
    start = max(i for i, line in enumerate(lines[:end]) if line == "{")
    return json.loads("\n".join(lines[start:end + 1]))


@dataclass
class World:
    """One enrolled agent on the stack, its facts files and the image it formats."""

    api: Any
    tenant: Any
    home: Path
    tmp: Path
    capsys: Any
    device: str

    def facts(self, name: str) -> str:
        return str(self.tmp / f"{name}.json")

    async def agent(self, *argv: str, home: Path | None = None) -> int:
        args = cli.build_parser().parse_args(["--home", str(home or self.home), "volume", *argv])
        return await cli.run(args, environ={})

    async def answer(self, *argv: str) -> dict:
        """Run a command that must succeed; its JSON answer."""
        self.capsys.readouterr()
        assert await self.agent(*argv) == 0
        return last_json(self.capsys.readouterr().out)

    def token(self, device: str | None = None) -> v.VolumeToken:
        return v.VolumeToken.from_json(v.find_token(luks.dump(device or self.device))[1])

    async def volume_record(self, volume_id: str) -> dict:
        status, record, _ = await self.tenant.admin.call("GET", f"/v1/volumes/{volume_id}")
        assert status == 200, record
        return record


async def test_volume_lifecycle_through_the_agent_cli(api, tmp_path, capsys):
    tenant = await make_tenant(api, policy=POLICY)
    _status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-vol"})
    home = tmp_path / "agent-home"
    async with AgentClient() as client:
        await client.enroll(api.url, enr["token"], "vm-vol", home)
    for name, facts in (("eu", EU), ("us", US), ("central", CENTRAL)):
        (tmp_path / f"{name}.json").write_text(json.dumps(facts))
    device = str(tmp_path / "vol.img")
    subprocess.run(["truncate", "-s", "32M", device], check=True)
    w = World(api, tenant, home, tmp_path, capsys, device)
    await format_and_unlock(w)
    await refusals_leave_the_header_unchanged(w)
    await rotate_then_reencrypt(w)
    await bad_devices_and_bind(w)
    assert await w.agent("erase", device, "--yes") == 0
    assert luks.keyslots(luks.dump(device)) == set()
    assert await w.agent("unlock", device, "--check", "--facts-file", w.facts("eu")) == 9


async def format_and_unlock(w: World) -> None:
    # Denied before anything is written: the image stays a blank file.
    assert await w.agent("format", w.device, "--key-id", w.tenant.key_id, "--facts-file", w.facts("us")) == 3
    assert not luks.is_luks(w.device)
    formatted = await w.answer("format", w.device, "--key-id", w.tenant.key_id, "--recovery",
                               "--facts-file", w.facts("eu"))
    token = w.token()
    assert (token.key_id, token.key_version, token.keyslot, token.volume_id) == (
        w.tenant.key_id, 1, 1, formatted["volume_id"])
    assert token.gateway_url == w.api.url.rstrip("/") and v.recovery_keyslot(luks.dump(w.device)) == 0
    record = await w.volume_record(token.volume_id)
    assert record["luks_uuid"] == luks.luks_uuid(w.device) and record["recovery_escrowed"]
    assert await w.agent("unlock", w.device, "--check", "--facts-file", w.facts("eu")) == 0
    # Unlocked as the registered volume: the server saw this device attach it.
    assert (await w.volume_record(token.volume_id))["last_unlock"]

    status, rotated, _ = await w.tenant.admin.call("POST", f"/v1/keys/{w.tenant.key_id}/rotate",
                                                   json={"reason": "yearly"})
    assert status == 200 and rotated["latest_version"] == 2
    seen = await w.answer("status", w.device, "--output", "json", "--facts-file", w.facts("eu"))
    assert seen["key_version"] == 1 and seen["server"] == {
        "reachable": True, "latest_version": 2, "newer_version_available": True}
    assert [(s["keyslot"], s["role"]) for s in seen["keyslots"]] == [(0, "recovery"), (1, "strongroom")]


async def refusals_leave_the_header_unchanged(w: World) -> None:
    """Denied, pending approval, gateway unreachable: the header byte for byte as it was."""
    before = header(w.device)
    assert await w.agent("rotate", w.device, "--facts-file", w.facts("us")) == 3
    assert await w.agent("unlock", w.device, "--check", "--facts-file", w.facts("us")) == 3
    assert await w.agent("unlock", w.device, "--check", "--facts-file", w.facts("central")) == 4
    assert header(w.device) == before

    offline = w.tmp / "offline-home"
    offline.mkdir()
    for name in ("device.key", "identity.json"):
        (offline / name).write_bytes((w.home / name).read_bytes())
        (offline / name).chmod(0o600)
    identity = json.loads((offline / "identity.json").read_text())
    (offline / "identity.json").write_text(json.dumps({**identity, "gateway_url": "http://127.0.0.1:9"}))
    w.capsys.readouterr()
    # Status still shows the local state; unlock and rotate exit 8.
    assert await w.agent("status", w.device, "--output", "json", "--facts-file", w.facts("eu"), home=offline) == 0
    unreachable = last_json(w.capsys.readouterr().out)
    assert unreachable["server"]["reachable"] is False and unreachable["key_version"] == 1
    assert await w.agent("unlock", w.device, "--check", "--facts-file", w.facts("eu"), home=offline) == 8
    assert await w.agent("rotate", w.device, "--facts-file", w.facts("eu"), home=offline) == 8
    assert header(w.device) == before


async def rotate_then_reencrypt(w: World) -> None:
    assert (await w.answer("rotate", w.device, "--facts-file", w.facts("eu")))["key_version"] == 2
    token = w.token()
    assert token.key_version == 2 and luks.keyslots(luks.dump(w.device)) == {0, token.keyslot} != {0, 1}
    assert await w.agent("unlock", w.device, "--check", "--facts-file", w.facts("eu")) == 0
    seen = await w.answer("status", w.device, "--output", "json", "--facts-file", w.facts("eu"))
    assert seen["server"]["newer_version_available"] is False

    # A new volume key: the data re-encrypted, the Strongroom slot kept, a new recovery passphrase escrowed.
    digests = luks.dump(w.device)["digests"]
    escrowed_before = (await w.volume_record(token.volume_id))["recovery_escrowed"]
    w.capsys.readouterr()
    assert await w.agent("reencrypt", w.device, "--yes", "--facts-file", w.facts("eu")) == 0
    out = w.capsys.readouterr()
    done = last_json(out.out)
    assert done["recovery_reescrowed"] and not done["resumed"] and "100%" in out.err
    metadata = luks.dump(w.device)
    assert metadata["digests"] != digests and not luks.reencrypt_interrupted(metadata)
    assert luks.keyslots(metadata) == {done["keyslot"], done["recovery_keyslot"]}
    assert (await w.volume_record(token.volume_id))["recovery_escrowed"] > escrowed_before
    assert await w.agent("unlock", w.device, "--check", "--facts-file", w.facts("eu")) == 0


async def bad_devices_and_bind(w: World) -> None:
    # Not a volume, no such device: their own exit codes, nothing written.
    plain = w.tmp / "plain.img"
    subprocess.run(["truncate", "-s", "1M", str(plain)], check=True)
    assert await w.agent("unlock", str(plain), "--check", "--facts-file", w.facts("eu")) == 6
    assert await w.agent("unlock", str(w.tmp / "missing.img"), "--check") == 5
    assert plain.read_bytes() == bytes(1 << 20)

    # An existing volume: not bound yet (9); a wrong passphrase changes nothing (7); the right one binds it.
    existing = str(w.tmp / "existing.img")
    subprocess.run(["truncate", "-s", "32M", existing], check=True)
    luks.run(["luksFormat", "--type", "luks2", "--batch-mode", *luks.FAST_PBKDF, "--key-file", "{k}", existing],
             secrets={"k": b"old passphrase"})
    wrong, right = w.tmp / "wrong.pass", w.tmp / "right.pass"
    wrong.write_bytes(b"not it")
    right.write_bytes(b"old passphrase")
    unbound = header(existing)
    assert await w.agent("unlock", existing, "--check", "--facts-file", w.facts("eu")) == 9
    bind = ("bind", existing, "--key-id", w.tenant.key_id, "--facts-file", w.facts("eu"), "--passphrase-file")
    assert await w.agent(*bind, str(wrong)) == 7
    assert header(existing) == unbound
    assert await w.agent(*bind, str(right)) == 0
    assert await w.agent("unlock", existing, "--check", "--facts-file", w.facts("eu")) == 0
    bound = w.token(existing)
    assert bound.key_version == 2 and bound.volume_id != w.token().volume_id
    assert luks.opens(existing, b"old passphrase", 0)
