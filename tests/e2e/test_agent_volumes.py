"""`strongroom-agent volume` against the real stack and the real cryptsetup on a file image:
format (registered, recovery escrowed) → unlock --check → the key rotated on the server →
status sees the newer version → rotate → status up to date → erase. A policy denial, a
destroyed-looking gateway and an unbound device leave the LUKS header exactly as it was."""

from __future__ import annotations

import json
import subprocess

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


async def test_volume_lifecycle_through_the_agent_cli(api, tmp_path, capsys):
    tenant = await make_tenant(api, policy=POLICY)
    _status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-vol"})
    home = tmp_path / "agent-home"
    async with AgentClient() as client:
        await client.enroll(api.url, enr["token"], "vm-vol", home)
    eu, us, central = tmp_path / "eu.json", tmp_path / "us.json", tmp_path / "central.json"
    eu.write_text(json.dumps(EU))
    us.write_text(json.dumps(US))
    central.write_text(json.dumps(CENTRAL))
    device = str(tmp_path / "vol.img")
    subprocess.run(["truncate", "-s", "32M", device], check=True)

    async def agent(*argv: str, home=home) -> int:
        return await cli.run(cli.build_parser().parse_args(["--home", str(home), "volume", *argv]), environ={})

    # Denied before anything is written: the image stays a blank file.
    assert await agent("format", device, "--key-id", tenant.key_id, "--facts-file", str(us)) == 3
    assert not luks.is_luks(device)
    capsys.readouterr()
    assert await agent("format", device, "--key-id", tenant.key_id, "--recovery", "--facts-file", str(eu)) == 0
    formatted = last_json(capsys.readouterr().out)
    metadata = luks.dump(device)
    token = v.VolumeToken.from_json(v.find_token(metadata)[1])
    assert (token.key_id, token.key_version, token.keyslot, token.volume_id) == (
        tenant.key_id, 1, 1, formatted["volume_id"])
    assert token.gateway_url == api.url.rstrip("/") and v.recovery_keyslot(metadata) == 0
    status, record, _ = await tenant.admin.call("GET", f"/v1/volumes/{token.volume_id}")
    assert status == 200, record
    assert record["luks_uuid"] == luks.luks_uuid(device) and record["recovery_escrowed"]

    assert await agent("unlock", device, "--check", "--facts-file", str(eu)) == 0
    # Unlocked as the registered volume: the server saw this device attach it.
    status, record, _ = await tenant.admin.call("GET", f"/v1/volumes/{token.volume_id}")
    assert status == 200 and record["last_unlock"], record

    status, rotated, _ = await tenant.admin.call("POST", f"/v1/keys/{tenant.key_id}/rotate", json={"reason": "yearly"})
    assert status == 200 and rotated["latest_version"] == 2
    capsys.readouterr()
    assert await agent("status", device, "--output", "json", "--facts-file", str(eu)) == 0
    seen = last_json(capsys.readouterr().out)
    assert seen["key_version"] == 1 and seen["server"] == {
        "reachable": True, "latest_version": 2, "newer_version_available": True}
    assert [(s["keyslot"], s["role"]) for s in seen["keyslots"]] == [(0, "recovery"), (1, "strongroom")]

    # A denied rotation, and a denied unlock, leave the header byte for byte as it was.
    before = header(device)
    assert await agent("rotate", device, "--facts-file", str(us)) == 3
    assert await agent("unlock", device, "--check", "--facts-file", str(us)) == 3
    assert await agent("unlock", device, "--check", "--facts-file", str(central)) == 4  # approval pending
    assert header(device) == before

    # The gateway unreachable: status still shows the local state; unlock exits 8, nothing changed.
    offline = tmp_path / "offline-home"
    offline.mkdir()
    for name in ("device.key", "identity.json"):
        (offline / name).write_bytes((home / name).read_bytes())
        (offline / name).chmod(0o600)
    identity = json.loads((offline / "identity.json").read_text())
    (offline / "identity.json").write_text(json.dumps({**identity, "gateway_url": "http://127.0.0.1:9"}))
    capsys.readouterr()
    assert await agent("status", device, "--output", "json", "--facts-file", str(eu), home=offline) == 0
    unreachable = last_json(capsys.readouterr().out)
    assert unreachable["server"]["reachable"] is False and unreachable["key_version"] == 1
    assert await agent("unlock", device, "--check", "--facts-file", str(eu), home=offline) == 8
    assert await agent("rotate", device, "--facts-file", str(eu), home=offline) == 8
    assert header(device) == before

    capsys.readouterr()
    assert await agent("rotate", device, "--facts-file", str(eu)) == 0
    assert last_json(capsys.readouterr().out)["key_version"] == 2
    metadata = luks.dump(device)
    token = v.VolumeToken.from_json(v.find_token(metadata)[1])
    assert token.key_version == 2 and luks.keyslots(metadata) == {0, token.keyslot} and token.keyslot != 1
    assert await agent("unlock", device, "--check", "--facts-file", str(eu)) == 0
    capsys.readouterr()
    assert await agent("status", device, "--output", "json", "--facts-file", str(eu)) == 0
    assert last_json(capsys.readouterr().out)["server"]["newer_version_available"] is False

    # A new volume key: the data re-encrypted, the Strongroom slot kept, a new recovery passphrase escrowed.
    digests = luks.dump(device)["digests"]
    _, before_record, _ = await tenant.admin.call("GET", f"/v1/volumes/{token.volume_id}")
    capsys.readouterr()
    assert await agent("reencrypt", device, "--yes", "--facts-file", str(eu)) == 0
    out = capsys.readouterr()
    done = last_json(out.out)
    assert done["recovery_reescrowed"] and not done["resumed"] and "100%" in out.err
    metadata = luks.dump(device)
    assert metadata["digests"] != digests and not luks.reencrypt_interrupted(metadata)
    assert luks.keyslots(metadata) == {done["keyslot"], done["recovery_keyslot"]}
    _, after_record, _ = await tenant.admin.call("GET", f"/v1/volumes/{token.volume_id}")
    assert after_record["recovery_escrowed"] > before_record["recovery_escrowed"]
    assert await agent("unlock", device, "--check", "--facts-file", str(eu)) == 0

    # Not a volume, no such device, not bound: their own exit codes, nothing written.
    plain = tmp_path / "plain.img"
    subprocess.run(["truncate", "-s", "1M", str(plain)], check=True)
    assert await agent("unlock", str(plain), "--check", "--facts-file", str(eu)) == 6
    assert await agent("unlock", str(tmp_path / "missing.img"), "--check") == 5
    assert plain.read_bytes() == bytes(1 << 20)

    # An existing volume: a wrong passphrase changes nothing (exit 7), the right one binds it.
    existing = str(tmp_path / "existing.img")
    subprocess.run(["truncate", "-s", "32M", existing], check=True)
    luks.run(["luksFormat", "--type", "luks2", "--batch-mode", *luks.FAST_PBKDF, "--key-file", "{k}", existing],
             secrets={"k": b"old passphrase"})
    wrong, right = tmp_path / "wrong.pass", tmp_path / "right.pass"
    wrong.write_bytes(b"not it")
    right.write_bytes(b"old passphrase")
    unbound = header(existing)
    assert await agent("unlock", existing, "--check", "--facts-file", str(eu)) == 9  # not bound yet
    assert await agent("bind", existing, "--key-id", tenant.key_id, "--passphrase-file", str(wrong),
                       "--facts-file", str(eu)) == 7
    assert header(existing) == unbound
    assert await agent("bind", existing, "--key-id", tenant.key_id, "--passphrase-file", str(right),
                       "--facts-file", str(eu)) == 0
    assert await agent("unlock", existing, "--check", "--facts-file", str(eu)) == 0
    bound = v.VolumeToken.from_json(v.find_token(luks.dump(existing))[1])
    assert bound.key_version == 2 and bound.volume_id != token.volume_id and luks.opens(existing, b"old passphrase", 0)

    assert await agent("erase", device, "--yes") == 0
    assert luks.keyslots(luks.dump(device)) == set()
    assert await agent("unlock", device, "--check", "--facts-file", str(eu)) == 9
