"""The agent's file commands against the real stack: encrypt a directory tree, rotate the key on
the server, `strongroom-agent rotate` moves every file to the new version (and a second run does
nothing), v1 is retired, and the tree still decrypts; a straggler left on v1 can no longer move."""

from __future__ import annotations

import io
import json
import os
import shutil

from agent import cli
from agent.client import AgentClient
from agent.fileformat import read_header

from .helpers import make_tenant


def versions(root) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): read_header(io.BytesIO(p.read_bytes())).key_version
            for p in sorted(root.rglob("*")) if p.is_file()}


async def test_a_directory_is_encrypted_rotated_to_the_new_key_version_and_decrypted(api, tmp_path, capsys):
    tenant = await make_tenant(api)
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-files"})
    assert status == 201, enr
    home = tmp_path / "agent-home"
    async with AgentClient() as client:
        await client.enroll(api.url, enr["token"], "vm-files", home)
    facts = tmp_path / "eu.json"
    facts.write_text(json.dumps({"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": True}}))

    async def agent(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        args = cli.build_parser().parse_args(["--home", str(home), *argv[:1], "--facts-file", str(facts),
                                              *map(str, argv[1:])])
        code = await cli.run(args, environ={})
        out = capsys.readouterr()
        return code, out.out, out.err

    def summary(out: str) -> dict:  # the services share this process and may log to stdout too
        return json.loads(out[out.index("{\n"):])

    src = tmp_path / "reports"
    (src / "2026" / "q4").mkdir(parents=True)
    plain = {"index.md": b"# reports\n", "2026/q4/ledger.csv": os.urandom(3_000_000), "2026/empty": b""}
    for rel, data in plain.items():
        (src / rel).write_bytes(data)
    (src / "2026" / "q4" / "ledger.csv").chmod(0o600)
    (src / "latest").symlink_to(src / "2026")  # left out, never followed

    sealed = tmp_path / "reports.sealed"
    code, out, err = await agent("encrypt", "--key-id", tenant.key_id, "--skip-special", src, sealed)
    assert code == 0, err
    assert summary(out)["files"] == 3 and summary(out)["skipped"] == [{"path": "latest", "reason": "symlink (not followed)"}]
    assert versions(sealed) == dict.fromkeys(plain, 1)
    assert (sealed / "2026" / "q4" / "ledger.csv").stat().st_mode & 0o777 == 0o600
    straggler = tmp_path / "straggler.sr"
    shutil.copyfile(sealed / "index.md", straggler)

    status, rotated, _ = await tenant.admin.call("POST", f"/v1/keys/{tenant.key_id}/rotate", json={"reason": "yearly"})
    assert status == 200 and rotated["latest_version"] == 2, rotated

    code, out, err = await agent("rotate", sealed)
    assert code == 0, err
    report = summary(out)
    assert sorted(report["rotated"]) == sorted(plain) and report["key_versions"] == {tenant.key_id: 2}
    assert versions(sealed) == dict.fromkeys(plain, 2)
    assert not [p for p in sealed.rglob(".strongroom-*")]
    code, out, err = await agent("rotate", sealed)
    assert code == 0 and summary(out)["rotated"] == [] and sorted(summary(out)["already_current"]) == sorted(plain)

    # Every file is on v2, so v1 can be retired; the tree still opens, with its paths and modes.
    status, out_key, _ = await tenant.admin.call("POST", f"/v1/keys/{tenant.key_id}/min-decryption-version",
                                                 json={"min_decryption_version": 2, "reason": "v1 retired"})
    assert status == 200, out_key
    restored = tmp_path / "restored"
    code, out, err = await agent("decrypt", sealed, restored)
    assert code == 0, err
    assert {rel: (restored / rel).read_bytes() for rel in plain} == plain
    assert (restored / "2026" / "q4" / "ledger.csv").stat().st_mode & 0o777 == 0o600
    assert not (restored / "latest").exists()

    # A file nobody rotated before v1 was retired stays as it was, and the agent says why.
    before = straggler.read_bytes()
    code, out, err = await agent("rotate", straggler)
    assert code == cli.EXIT_ERROR and "could not be rotated" in err
    assert "min_decryption_version" in summary(out)["failed"][0]["reason"]
    assert straggler.read_bytes() == before
