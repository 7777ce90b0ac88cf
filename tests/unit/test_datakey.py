"""The gateway's data key: sealed secrets open only for their purpose, tenant and owner; values in
clear are never taken for sealed ones; the key file must exist, be private and hold 32 bytes."""

from __future__ import annotations

import os

import pytest

from services.gateway.datakey import DataKeyError, SecretSealer, ensure_data_key_file, load_data_key
from shared.crypto.envelope import UnwrapError


def test_sealed_secret_opens_only_where_it_was_sealed(tmp_path):
    sealer = SecretSealer(load_data_key(str(ensure_data_key_file(tmp_path / "k"))))
    sealed = sealer.seal("JBSWY3DPEHPK3PXP", purpose="totp", tenant_id="ten_a", owner="usr_1")
    assert "JBSWY3DPEHPK3PXP" not in sealed and sealed.startswith("sealed:v1:")
    assert sealer.open(sealed, purpose="totp", tenant_id="ten_a", owner="usr_1") == "JBSWY3DPEHPK3PXP"
    for other in ({"purpose": "oidc_client_secret", "tenant_id": "ten_a", "owner": "usr_1"},
                  {"purpose": "totp", "tenant_id": "ten_b", "owner": "usr_1"},
                  {"purpose": "totp", "tenant_id": "ten_a", "owner": "usr_2"}):
        with pytest.raises(UnwrapError):
            sealer.open(sealed, **other)
    with pytest.raises(UnwrapError, match="not sealed"):
        sealer.open("JBSWY3DPEHPK3PXP", purpose="totp", tenant_id="ten_a", owner="usr_1")
    another = SecretSealer(load_data_key(str(ensure_data_key_file(tmp_path / "other"))))
    with pytest.raises(UnwrapError):
        another.open(sealed, purpose="totp", tenant_id="ten_a", owner="usr_1")
    assert "key" in repr(sealer) and "JBSW" not in repr(sealer)


def test_key_file_is_required_private_and_32_bytes(tmp_path):
    with pytest.raises(DataKeyError, match="DATA_KEY_FILE is required"):
        load_data_key(None)
    with pytest.raises(DataKeyError, match="cannot read"):
        load_data_key(str(tmp_path / "missing"))
    path = ensure_data_key_file(tmp_path / "k")
    assert os.stat(path).st_mode & 0o777 == 0o600 and ensure_data_key_file(path).read_bytes() == path.read_bytes()
    os.chmod(path, 0o644)
    with pytest.raises(DataKeyError, match="chmod 600"):
        load_data_key(str(path))
    short = tmp_path / "short"
    short.write_bytes(b"x" * 16)
    os.chmod(short, 0o600)
    with pytest.raises(DataKeyError, match="32-byte"):
        load_data_key(str(short))
