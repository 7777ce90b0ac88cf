"""Unit tests for the root of trust: Shamir shares, sealed files and root key sources (services.keysvc.rootkey)."""

import base64
import itertools
import json
import os
import stat

import pytest
from pydantic import SecretStr

from services.keysvc.rootkey import (
    ROOT_KEY_BYTES,
    GeneratedRootKey,
    RootKeyError,
    RootKeySource,
    SealedFileRootKey,
    SealError,
    ShareError,
    Unsealer,
    UnsealProgress,
    combine_shares,
    fingerprint,
    seal_root_key,
    split_root_key,
    unseal_root_key,
)

ROOT = bytes(range(32))
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def shares_3_of_5() -> list[str]:
    return split_root_key(ROOT, threshold=3, shares=5)


def leaked_forms(secret: bytes) -> list[str]:
    return [secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]]


def corrupt(share: str, word_index: int = -5) -> str:
    words = share.split()
    words[word_index] = "academic" if words[word_index] != "academic" else "acid"
    return " ".join(words)


# --- split and combine -----------------------------------------------------------------------


def test_split_gives_distinct_mnemonics(shares_3_of_5):
    assert len(shares_3_of_5) == 5
    assert len(set(shares_3_of_5)) == 5
    assert all(len(s.split()) == 33 for s in shares_3_of_5)  # SLIP-39, 256-bit secret
    for share in shares_3_of_5:
        for form in leaked_forms(ROOT):
            assert form not in share


@pytest.mark.parametrize("combo", list(itertools.combinations(range(5), 3)), ids=str)
def test_any_3_of_5_recover(shares_3_of_5, combo):
    assert combine_shares([shares_3_of_5[i] for i in combo]) == ROOT


@pytest.mark.parametrize("combo", list(itertools.combinations(range(5), 4)), ids=str)
def test_more_than_threshold_also_recovers(shares_3_of_5, combo):
    assert combine_shares([shares_3_of_5[i] for i in combo]) == ROOT


def test_all_shares_in_any_order_recover(shares_3_of_5):
    assert combine_shares(list(reversed(shares_3_of_5))) == ROOT


@pytest.mark.parametrize("combo", list(itertools.combinations(range(5), 2)), ids=str)
def test_two_of_3_of_5_fail(shares_3_of_5, combo):
    with pytest.raises(ShareError, match="too few shares: 2 of 3 needed"):
        combine_shares([shares_3_of_5[i] for i in combo])


def test_identical_duplicates_do_not_count_twice(shares_3_of_5):
    with pytest.raises(ShareError, match="too few shares: 2 of 3"):
        combine_shares([shares_3_of_5[0], shares_3_of_5[0], shares_3_of_5[1]])
    # Whitespace and case do not make a share different.
    spaced = "  " + shares_3_of_5[0].upper().replace(" ", "   ") + "\n"
    assert combine_shares([shares_3_of_5[0], spaced, shares_3_of_5[1], shares_3_of_5[2]]) == ROOT


def test_empty_share_list_fails():
    with pytest.raises(ShareError, match="too few shares"):
        combine_shares([])


@pytest.mark.parametrize("word_index", [0, 4, 10, -1])
def test_corrupted_share_is_detected_by_checksum(shares_3_of_5, word_index):
    bad = corrupt(shares_3_of_5[1], word_index)
    with pytest.raises(ShareError, match="share 2 is invalid: its checksum does not match") as info:
        combine_shares([shares_3_of_5[0], bad, shares_3_of_5[2]])
    # The message names the share's position, never its words.
    assert not any(word in str(info.value).split() for word in bad.split()[:3])


def test_unknown_word_and_wrong_length(shares_3_of_5):
    words = shares_3_of_5[0].split()
    with pytest.raises(ShareError, match="word outside the SLIP-39 word list"):
        combine_shares([" ".join([*words[:-1], "notaword"])])
    with pytest.raises(ShareError, match="invalid"):
        combine_shares([" ".join(words[:10])])
    with pytest.raises(ShareError, match="share 1 is empty"):
        combine_shares(["   "])


def test_mixed_sets_are_refused(shares_3_of_5):
    other = split_root_key(ROOT, threshold=3, shares=5)
    with pytest.raises(ShareError, match="different split set"):
        combine_shares([shares_3_of_5[0], shares_3_of_5[1], other[2]])


def test_passphrase_protected_split():
    shares = split_root_key(ROOT, threshold=2, shares=3, passphrase=b"TREZOR")
    assert combine_shares(shares[:2], passphrase=b"TREZOR") == ROOT
    # SLIP-39 gives a different key for a wrong passphrase instead of failing: the fingerprint tells.
    wrong = combine_shares(shares[:2], passphrase=b"other")
    assert wrong != ROOT and fingerprint(wrong) != fingerprint(ROOT)


def test_one_of_one():
    (only,) = split_root_key(ROOT, threshold=1, shares=1)
    assert combine_shares([only]) == ROOT


@pytest.mark.parametrize(
    ("threshold", "shares"), [(0, 3), (4, 3), (1, 3), (2, 17), (2, 0)]
)
def test_split_refuses_bad_parameters(threshold, shares):
    with pytest.raises(ShareError):
        split_root_key(ROOT, threshold=threshold, shares=shares)


@pytest.mark.parametrize("secret", [b"", b"x" * 16, b"x" * 31, b"x" * 33, "x" * 32])
def test_split_needs_a_32_byte_root(secret):
    with pytest.raises(RootKeyError):
        split_root_key(secret, threshold=2, shares=3)


def test_fingerprint_is_stable_and_one_way():
    assert fingerprint(ROOT) == fingerprint(bytes(ROOT))
    assert len(fingerprint(ROOT)) == 16
    assert fingerprint(ROOT) != fingerprint(os.urandom(32))
    assert fingerprint(ROOT) not in ROOT.hex()


# --- Unsealer --------------------------------------------------------------------------------


def test_unsealer_progress_and_completion(shares_3_of_5):
    unsealer = Unsealer()
    assert unsealer.progress == UnsealProgress(submitted=0, needed=None)
    assert unsealer.submit(shares_3_of_5[4]) is None
    assert unsealer.progress == UnsealProgress(submitted=1, needed=3)
    assert unsealer.submit(shares_3_of_5[4]) is None  # identical share again: ignored
    assert unsealer.progress.submitted == 1
    assert unsealer.submit(shares_3_of_5[0]) is None
    assert unsealer.progress == UnsealProgress(submitted=2, needed=3)
    assert not unsealer.progress.complete
    assert unsealer.submit(shares_3_of_5[2]) == ROOT
    # Having produced the key it forgets every share.
    assert unsealer.progress == UnsealProgress(submitted=0, needed=None)


def test_unsealer_rejects_bad_share_and_keeps_good_ones(shares_3_of_5):
    unsealer = Unsealer()
    unsealer.submit(shares_3_of_5[0])
    with pytest.raises(ShareError, match="checksum"):
        unsealer.submit(corrupt(shares_3_of_5[1]))
    with pytest.raises(ShareError, match="different split set"):
        unsealer.submit(split_root_key(ROOT, threshold=3, shares=5)[1])
    assert unsealer.progress.submitted == 1
    unsealer.submit(shares_3_of_5[1])
    assert unsealer.submit(shares_3_of_5[3]) == ROOT


def test_unsealer_reset(shares_3_of_5):
    unsealer = Unsealer()
    unsealer.submit(shares_3_of_5[0])
    unsealer.submit(shares_3_of_5[1])
    unsealer.reset()
    assert unsealer.progress == UnsealProgress(submitted=0, needed=None)
    # A new set may be started after a reset.
    other = split_root_key(os.urandom(32), threshold=2, shares=2)
    unsealer.submit(other[0])
    assert unsealer.progress.needed == 2


def test_unsealer_checks_expected_fingerprint():
    shares = split_root_key(ROOT, threshold=2, shares=3, passphrase=b"pass")
    good = Unsealer(passphrase=b"pass", expected_fingerprint=fingerprint(ROOT))
    good.submit(shares[0])
    assert good.submit(shares[2]) == ROOT
    wrong = Unsealer(passphrase=b"wrong", expected_fingerprint=fingerprint(ROOT))
    wrong.submit(shares[0])
    with pytest.raises(ShareError, match="wrong fingerprint"):
        wrong.submit(shares[1])
    assert wrong.progress.submitted == 0


def test_unsealer_repr_shows_progress_only(shares_3_of_5):
    unsealer = Unsealer(passphrase=b"secret-pass")
    unsealer.submit(shares_3_of_5[0])
    text = repr(unsealer)
    assert text == "Unsealer(submitted=1, needed=3)"
    assert "secret-pass" not in text


# --- sealed file -----------------------------------------------------------------------------


def test_seal_round_trip():
    blob = seal_root_key(ROOT, PASSPHRASE)
    assert unseal_root_key(blob, PASSPHRASE) == ROOT


def test_sealed_file_format_and_no_plaintext():
    blob = seal_root_key(ROOT, PASSPHRASE)
    document = json.loads(blob)
    assert document["format"] == "strongroom.sealed-root-key" and document["version"] == 1
    assert document["kdf"]["name"] == "scrypt"
    assert (document["kdf"]["n"], document["kdf"]["r"], document["kdf"]["p"]) == (2**15, 8, 1)
    assert len(base64.b64decode(document["kdf"]["salt"])) == 16
    assert document["cipher"] == "AES-256-GCM"
    text = blob.decode()
    for form in [*leaked_forms(ROOT), PASSPHRASE]:
        assert form not in text
    assert seal_root_key(ROOT, PASSPHRASE) != blob  # fresh salt and nonce


def test_wrong_passphrase_fails():
    blob = seal_root_key(ROOT, PASSPHRASE)
    with pytest.raises(SealError, match="wrong passphrase") as info:
        unseal_root_key(blob, PASSPHRASE + "!")
    assert PASSPHRASE not in str(info.value)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["kdf"].update(n=2**14),
        lambda d: d["kdf"].update(r=4),
        lambda d: d["kdf"].update(salt=base64.b64encode(b"\x00" * 16).decode()),
        lambda d: d.update(ciphertext=base64.b64encode(b"\x01" + b"\x00" * 60).decode()),
    ],
    ids=["n", "r", "salt", "ciphertext"],
)
def test_edited_sealed_file_fails(edit):
    document = json.loads(seal_root_key(ROOT, PASSPHRASE))
    edit(document)
    with pytest.raises(SealError):
        unseal_root_key(json.dumps(document).encode(), PASSPHRASE)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["kdf"].update(n=2**30),
        lambda d: d["kdf"].update(n=1000),
        lambda d: d["kdf"].update(p=64),
        lambda d: d["kdf"].update(salt="AA=="),
    ],
    ids=["huge-n", "n-not-power-of-two", "huge-p", "short-salt"],
)
def test_hostile_kdf_parameters_are_refused(edit):
    document = json.loads(seal_root_key(ROOT, PASSPHRASE))
    edit(document)
    with pytest.raises(SealError, match="out of the accepted range"):
        unseal_root_key(json.dumps(document).encode(), PASSPHRASE)


@pytest.mark.parametrize(
    "blob",
    [b"", b"not json", b"[]", b'{"format": "other", "version": 1}', b'{"format": "strongroom.sealed-root-key"}'],
)
def test_malformed_sealed_file(blob):
    with pytest.raises(SealError):
        unseal_root_key(blob, PASSPHRASE)


def test_seal_refuses_empty_passphrase_and_bad_root():
    with pytest.raises(SealError):
        seal_root_key(ROOT, "")
    with pytest.raises(RootKeyError):
        seal_root_key(b"short", PASSPHRASE)


# --- sources ---------------------------------------------------------------------------------


def test_generated_root_key_is_created_once_with_0600(tmp_path):
    source = GeneratedRootKey(tmp_path / "data")
    assert isinstance(source, RootKeySource) and source.name == "generated"
    first = source.load()
    assert len(first) == ROOT_KEY_BYTES
    path = tmp_path / "data" / "root.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert GeneratedRootKey(tmp_path / "data").load() == first
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["root.key"]  # no temp files left
    for form in leaked_forms(first):
        assert form not in repr(source)


def test_generated_root_key_refuses_open_permissions_and_bad_length(tmp_path):
    source = GeneratedRootKey(tmp_path)
    source.load()
    os.chmod(source.path, 0o644)
    with pytest.raises(RootKeyError, match="chmod 600"):
        source.load()
    os.chmod(source.path, 0o600)
    source.path.write_bytes(b"short")
    with pytest.raises(RootKeyError, match="32-byte"):
        source.load()


@pytest.mark.parametrize("passphrase", [PASSPHRASE, SecretStr(PASSPHRASE)], ids=["str", "SecretStr"])
def test_sealed_file_source(tmp_path, passphrase):
    path = tmp_path / "root.sealed"
    source = SealedFileRootKey(path, passphrase)
    assert isinstance(source, RootKeySource) and source.name == "sealed-file"
    with pytest.raises(SealError, match="does not exist"):
        source.load()
    source.store(ROOT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert source.load() == ROOT
    with pytest.raises(SealError, match="already exists"):
        source.store(os.urandom(32))
    assert source.load() == ROOT
    assert PASSPHRASE not in repr(source)
    with pytest.raises(SealError, match="wrong passphrase"):
        SealedFileRootKey(path, "nope").load()
