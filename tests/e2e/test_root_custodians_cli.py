"""`strongroom operator enrol-key|init|my-share|unseal|custodians` against the stack, as root
custodians run them: each keeps their private key in their own 0600 file, fetches and opens only
their own share, and submits it sealed."""

from __future__ import annotations

import re

from .helpers import keysvc_key_id, provider_admin, root_custodian
from .test_policy_cli import run


async def test_custodians_enrol_init_fetch_their_own_shares_and_unseal_with_the_cli(api, stack, capsys, tmp_path):
    await stack.stop("keysvc")
    stack.root_key = None
    await stack.start("keysvc")
    people = [await root_custodian(api, f"cli-custodian-{n}", enrol=False) for n in (1, 2)]
    pin = ["--keysvc-key-id", keysvc_key_id(stack)]

    def base(person) -> list[str]:
        return ["--url", api.url, "--token", getattr(person, "person", person).token]

    key_ids = []
    for n, person in enumerate(people):
        key_file = tmp_path / f"custodian-{n}" / "key.pem"
        code, out, _ = await run(capsys, *base(person), "operator", "enrol-key", "--key-file", str(key_file))
        assert code == 0 and str(key_file) in out, out
        assert key_file.stat().st_mode & 0o777 == 0o600
        key_ids.append(re.search(r"enrolled key (\w+)", out).group(1))
    code, out, _ = await run(capsys, *base(await provider_admin(api)), "--json", "operator", "custodians")
    assert code == 0 and all(k in out for k in key_ids), out

    code, out, _ = await run(capsys, *base(people[0]), "operator", "init", "--threshold", "2")
    assert code == 0 and "any 2 of 2 shares" in out and all(p.user_id in out for p in people), out
    shares = []
    for n, person in enumerate(people):
        key_file = tmp_path / f"custodian-{n}" / "key.pem"
        code, out, _ = await run(capsys, *base(person), "operator", "my-share", "--key-file", str(key_file), *pin)
        assert code == 0, out
        shares.append(re.search(r"\(init\): (.+)$", out.strip().splitlines()[-1]).group(1))
        code, _, err = await run(capsys, *base(person), "operator", "my-share", "--key-file", str(key_file), *pin)
        assert code == 1 and "404" in err  # shown once
    assert len(set(shares)) == 2 and all(len(s.split()) >= 20 for s in shares)

    for n, person in enumerate(people):
        share_file = tmp_path / f"custodian-{n}" / "share.txt"
        share_file.write_text(shares[n] + "\n")
        code, out, _ = await run(capsys, *base(person), "operator", "unseal", "--share-file", str(share_file), *pin)
        assert code == 0, out
    assert "custody is unsealed" in out
    assert not stack.running["keysvc"].hierarchy.sealed
