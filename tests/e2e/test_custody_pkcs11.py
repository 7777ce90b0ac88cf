"""PKCS#11 root-key source against a real SoftHSM2 token: the HSM's non-extractable AES key
wraps the root key; keysvc starts from it and releases; a tampered file, a wrong PIN or a
missing HSM key are refused."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from services.keysvc.app import root_key_from_settings
from services.keysvc.rootkey import RootKeyError
from services.keysvc.settings import KeySettings

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246810"


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory):
    """One SoftHSM2 token for this module (the PKCS#11 library is initialised once per process)."""
    assert shutil.which("softhsm2-util"), "softhsm2 is required (.ci/run installs it)"
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "strongroom", "--pin", PIN, "--so-pin", "13579"],
                   check=True, capture_output=True)
    yield base
    mp.undo()


def _settings(path, **overrides) -> KeySettings:
    values = {"pkcs11_module": MODULE, "pkcs11_token_label": "strongroom", "pkcs11_pin": PIN,
              "pkcs11_wrapped_root_file": str(path)}
    values.update(overrides)
    return KeySettings(**values)


def test_hsm_wraps_the_root_key_and_gives_it_back(softhsm, tmp_path):
    from services.keysvc.pkcs11 import Pkcs11RootKey

    source = Pkcs11RootKey.from_settings(_settings(tmp_path / "root.json"))
    root = source.create()
    stored = (tmp_path / "root.json").read_text()
    assert root.hex() not in stored and len(root) == 32
    assert root_key_from_settings(_settings(tmp_path / "root.json")) == root
    with pytest.raises(RootKeyError):
        source.create()  # never replaces a root key

    doc = json.loads(stored)
    doc["ciphertext"] = doc["ciphertext"][:-4] + ("AAAA" if not doc["ciphertext"].endswith("AAAA") else "BBBB")
    (tmp_path / "tampered.json").write_text(json.dumps(doc))
    with pytest.raises(RootKeyError, match="refused"):
        root_key_from_settings(_settings(tmp_path / "tampered.json"))
    with pytest.raises(RootKeyError) as wrong_pin:
        root_key_from_settings(_settings(tmp_path / "root.json", pkcs11_pin="000000"))
    assert "000000" not in str(wrong_pin.value)
    with pytest.raises(RootKeyError, match="no AES key"):
        root_key_from_settings(_settings(tmp_path / "root.json", pkcs11_key_label="other"))


async def test_keysvc_runs_on_the_hsm_root(softhsm, tmp_path, api, stack):
    from services.keysvc.pkcs11 import Pkcs11RootKey

    from .helpers import EU_FACTS, BareAgent, make_tenant

    Pkcs11RootKey.from_settings(_settings(tmp_path / "root.json", pkcs11_key_label="e2e")).create()
    await stack.stop("keysvc")
    stack.root_key = root_key_from_settings(_settings(tmp_path / "root.json", pkcs11_key_label="e2e"))
    await stack.start("keysvc")
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, out, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and len(key) == 32, out
    # Restarted from the HSM again: the same KEK hierarchy opens, so the same key comes back.
    await stack.stop("keysvc")
    stack.root_key = root_key_from_settings(_settings(tmp_path / "root.json", pkcs11_key_label="e2e"))
    await stack.start("keysvc")
    status, _, again = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and again == key
