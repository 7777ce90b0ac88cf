"""Unit tests for the key model: lifecycle states, versions and algorithm policy (services.keysvc.keys)."""

import base64
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from services.keysvc.keys import (
    ACTIONS,
    IllegalTransition,
    Key,
    KeyPolicyError,
    KeyState,
    KeyVersion,
    KeyVersions,
    UnknownAction,
    VersionError,
    check_algorithm,
    new_key,
    releasable,
    rotate,
    rotation_due,
    set_min_decryption_version,
    transition,
    version_for_decrypt,
    version_for_release,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
WRAPPED = [bytes([i]) * 60 for i in range(1, 10)]

PA, AC, SU, DE, CO, DS, DC = (
    "pre_activation",
    "active",
    "suspended",
    "deactivated",
    "compromised",
    "destroyed",
    "destroyed_compromised",
)

# Written out by hand (not derived from the module) so the test states the intended lifecycle.
# Every (state, action) pair not listed must be refused.
ALLOWED = {
    (PA, "activate"): AC,
    (PA, "mark_compromised"): CO,
    (PA, "destroy"): DS,
    (AC, "suspend"): SU,
    (AC, "deactivate"): DE,
    (AC, "mark_compromised"): CO,
    (SU, "resume"): AC,
    (SU, "reactivate"): AC,
    (SU, "deactivate"): DE,
    (SU, "mark_compromised"): CO,
    (DE, "mark_compromised"): CO,
    (DE, "destroy"): DS,
    (CO, "destroy"): DC,
    (DS, "mark_compromised"): DC,
}
ALL_STATES = [PA, AC, SU, DE, CO, DS, DC]
ALL_ACTIONS = ["activate", "suspend", "resume", "reactivate", "deactivate", "mark_compromised", "destroy"]
PAIRS = list(itertools.product(ALL_STATES, ALL_ACTIONS))
REFUSED = [pair for pair in PAIRS if pair not in ALLOWED]


def make_key(state: str = PA, versions: int = 1, **overrides) -> Key:
    key = new_key(
        tenant_id="tenant-a",
        key_id="key-1",
        name="volume key",
        algorithm="AES-256",
        wrapped=WRAPPED[0],
        kek_version=1,
        now=T0,
        volume="vol-9",
    )
    for i in range(2, versions + 1):
        key = rotate(key, wrapped_new=WRAPPED[i - 1], kek_version=1, now=T0 + timedelta(days=i))
    return dataclasses.replace(key, state=KeyState(state), **overrides)


def test_vocabulary_is_complete():
    assert {s.value for s in KeyState} == set(ALL_STATES)
    assert set(ACTIONS) == set(ALL_ACTIONS)
    assert len(PAIRS) == 49 and len(REFUSED) == 49 - len(ALLOWED)


@pytest.mark.parametrize(("state", "action"), sorted(ALLOWED), ids=lambda v: str(v))
def test_allowed_transition(state, action):
    key = make_key(state)
    new, described = transition(key, action, actor="alice", reason="ticket 42", now=T1)
    assert new.state == ALLOWED[(state, action)]
    assert new.updated_at == T1
    assert key.state == state  # the input is untouched
    assert described == {
        "tenant_id": "tenant-a",
        "key_id": "key-1",
        "from": state,
        "to": ALLOWED[(state, action)],
        "action": action,
        "actor": "alice",
        "reason": "ticket 42",
        "at": T1,
    }


@pytest.mark.parametrize(("state", "action"), REFUSED, ids=lambda v: str(v))
def test_refused_transition(state, action):
    key = make_key(state)
    with pytest.raises(IllegalTransition) as info:
        transition(key, action, actor="alice", reason="ticket 42", now=T1)
    assert info.value.state == state
    assert info.value.action == action
    assert state in str(info.value)


def test_refusal_names_the_allowed_actions_or_terminality():
    with pytest.raises(IllegalTransition, match="allowed from active: deactivate, mark_compromised, suspend"):
        transition(make_key(AC), "destroy", actor="a", reason="r", now=T1)
    with pytest.raises(IllegalTransition, match="terminal"):
        transition(make_key(DC), "destroy", actor="a", reason="r", now=T1)


def test_unknown_action():
    with pytest.raises(UnknownAction):
        transition(make_key(AC), "explode", actor="a", reason="r", now=T1)


@pytest.mark.parametrize(("actor", "reason"), [("", "r"), ("a", "")])
def test_actor_and_reason_are_required(actor, reason):
    with pytest.raises(KeyPolicyError):
        transition(make_key(PA), "activate", actor=actor, reason=reason, now=T1)


@pytest.mark.parametrize(("state", "action"), [(PA, "destroy"), (DE, "destroy"), (CO, "destroy")])
def test_destroy_erases_every_version_but_keeps_metadata(state, action):
    key = make_key(state, versions=3)
    new, _ = transition(key, action, actor="a", reason="r", now=T1)
    assert new.destroyed_at == T1
    assert len(new.versions) == 3 and new.latest_version == 3
    assert all(kv.wrapped is None and kv.destroyed for kv in new.versions.values())
    assert [kv.kek_version for kv in new.versions.values()] == [1, 1, 1]
    # The snapshot before destruction still holds its material: keys are values.
    assert all(kv.wrapped is not None for kv in key.versions.values())
    for v in (1, 2, 3):
        with pytest.raises(VersionError, match="destroyed"):
            version_for_decrypt(new, v)


def test_lifecycle_dates():
    key = make_key(PA)
    key, _ = transition(key, "activate", actor="a", reason="r", now=T0 + timedelta(1))
    key, _ = transition(key, "suspend", actor="a", reason="r", now=T0 + timedelta(2))
    key, _ = transition(key, "reactivate", actor="a", reason="r", now=T0 + timedelta(3))
    assert key.activated_at == T0 + timedelta(1)  # first activation is kept
    key, _ = transition(key, "deactivate", actor="a", reason="r", now=T0 + timedelta(4))
    key, _ = transition(key, "mark_compromised", actor="a", reason="r", now=T0 + timedelta(5))
    key, _ = transition(key, "destroy", actor="a", reason="r", now=T0 + timedelta(6))
    assert key.state == DC
    assert key.deactivated_at == T0 + timedelta(4)
    assert key.compromised_at == T0 + timedelta(5)
    assert key.destroyed_at == T0 + timedelta(6)


def test_destroyed_then_found_compromised_keeps_destruction_date():
    key, _ = transition(make_key(DE), "destroy", actor="a", reason="r", now=T1)
    later = T1 + timedelta(days=1)
    key, _ = transition(key, "mark_compromised", actor="a", reason="r", now=later)
    assert key.state == DC and key.destroyed_at == T1 and key.compromised_at == later


@pytest.mark.parametrize("state", ALL_STATES)
def test_only_an_active_key_is_releasable(state):
    ok, reason = releasable(make_key(state))
    assert ok is (state == AC)
    assert reason
    if state != AC:
        assert state.split("_")[0] in reason


def test_release_reasons_are_actionable():
    assert releasable(make_key(SU)) == (False, "key is suspended; resume it before release")
    assert releasable(make_key(PA))[1] == "key is in pre_activation; activate it before release"


def test_new_key_defaults():
    key = make_key(PA)
    assert key.state is KeyState.PRE_ACTIVATION
    assert key.latest_version == 1 and key.min_decryption_version == 1
    assert key.versions[1] == KeyVersion(version=1, created_at=T0, wrapped=WRAPPED[0], kek_version=1)
    assert key.exportable is False and key.rotation_period_seconds is None
    assert key.created_at == key.updated_at == T0
    assert key.activated_at is None


def test_new_key_may_start_active():
    key = new_key(
        tenant_id="t", key_id="k", name="n", algorithm="aes-128", wrapped=b"w", kek_version=2, now=T0,
        initial_state=KeyState.ACTIVE,
    )
    assert key.state is KeyState.ACTIVE and key.activated_at == T0 and key.algorithm == "AES-128"


@pytest.mark.parametrize(
    "bad",
    [
        {"initial_state": KeyState.DESTROYED},
        {"algorithm": "DES"},
        {"tenant_id": ""},
        {"key_id": ""},
        {"rotation_period_seconds": 0},
    ],
)
def test_new_key_refusals(bad):
    args = dict(tenant_id="t", key_id="k", name="n", algorithm="AES-256", wrapped=b"w", kek_version=1, now=T0)
    args.update(bad)
    with pytest.raises(KeyPolicyError):
        new_key(**args)


def test_plain_values_from_a_store_are_coerced():
    stored = make_key(PA, versions=2)
    plain_versions = {2: stored.versions[2], 1: stored.versions[1]}
    key = dataclasses.replace(stored, state="active", versions=plain_versions)
    assert key.state is KeyState.ACTIVE
    assert isinstance(key.versions, KeyVersions) and list(key.versions) == [1, 2]
    assert key == dataclasses.replace(stored, state=KeyState.ACTIVE)
    assert releasable(key)[0] is True


# --- rotation and versions -------------------------------------------------------------------


def test_rotate_appends_and_keeps_old_versions():
    key = make_key(AC)
    rotated = rotate(key, wrapped_new=WRAPPED[1], kek_version=2, now=T1)
    assert rotated.latest_version == 2
    assert rotated.min_decryption_version == 1
    assert rotated.versions[1] == key.versions[1]
    assert rotated.versions[2] == KeyVersion(version=2, created_at=T1, wrapped=WRAPPED[1], kek_version=2)
    assert rotated.updated_at == T1
    assert version_for_release(rotated).version == 2
    assert version_for_decrypt(rotated, 1).wrapped == WRAPPED[0]
    # The original snapshot is unchanged.
    assert key.latest_version == 1 and len(key.versions) == 1 and list(key.versions) == [1]


def test_rotating_an_old_snapshot_does_not_leak_into_a_newer_one():
    base = make_key(AC, versions=2)
    a = rotate(base, wrapped_new=WRAPPED[2], kek_version=1, now=T1)
    b = rotate(base, wrapped_new=WRAPPED[3], kek_version=1, now=T1)  # a branch from the same snapshot
    assert a.versions[3].wrapped == WRAPPED[2]
    assert b.versions[3].wrapped == WRAPPED[3]
    assert len(base.versions) == 2 and 3 not in base.versions
    a4 = rotate(a, wrapped_new=WRAPPED[4], kek_version=1, now=T1)
    b4 = rotate(b, wrapped_new=WRAPPED[5], kek_version=1, now=T1)
    assert [kv.wrapped for kv in a4.versions.values()] == [WRAPPED[0], WRAPPED[1], WRAPPED[2], WRAPPED[4]]
    assert [kv.wrapped for kv in b4.versions.values()] == [WRAPPED[0], WRAPPED[1], WRAPPED[3], WRAPPED[5]]


def test_rotation_shares_storage_instead_of_copying():
    key = make_key(AC)
    for _ in range(2, 2001):
        key = rotate(key, wrapped_new=b"w", kek_version=1, now=T1)
    assert key.latest_version == 2000
    # All linear snapshots share one backing list: each rotate appended once, copied nothing.
    first = make_key(AC)
    chained = rotate(rotate(first, wrapped_new=b"x", kek_version=1, now=T1), wrapped_new=b"y", kek_version=1, now=T1)
    assert chained.versions._items is first.versions._items


@pytest.mark.parametrize("state", [PA, AC, SU])
def test_rotate_allowed_states(state):
    assert rotate(make_key(state), wrapped_new=b"w", kek_version=1, now=T1).latest_version == 2


@pytest.mark.parametrize("state", [DE, CO, DS, DC])
def test_rotate_refused_states(state):
    with pytest.raises(IllegalTransition):
        rotate(make_key(state), wrapped_new=b"w", kek_version=1, now=T1)


def test_min_decryption_version_semantics():
    key = make_key(AC, versions=4)
    key = set_min_decryption_version(key, 3, now=T1)
    assert key.min_decryption_version == 3 and key.updated_at == T1
    for v in (1, 2):
        with pytest.raises(VersionError, match="below min_decryption_version 3"):
            version_for_decrypt(key, v)
    assert version_for_decrypt(key, 3).version == 3
    assert version_for_decrypt(key, 4).version == 4
    assert version_for_release(key).version == 4
    # Lowering it again re-enables old versions (as in Vault).
    assert version_for_decrypt(set_min_decryption_version(key, 1), 1).version == 1
    # Rotation does not move it.
    assert rotate(key, wrapped_new=b"w", kek_version=1, now=T1).min_decryption_version == 3


@pytest.mark.parametrize("bad", [0, -1, 5, True, "2", None])
def test_min_decryption_version_validation(bad):
    with pytest.raises(VersionError):
        set_min_decryption_version(make_key(AC, versions=4), bad)


@pytest.mark.parametrize("missing", [5, 99])
def test_decrypt_missing_version(missing):
    with pytest.raises(VersionError, match="no version"):
        version_for_decrypt(make_key(AC, versions=4), missing)


def test_key_invariants_are_checked():
    key = make_key(AC, versions=2)
    with pytest.raises(VersionError):
        dataclasses.replace(key, latest_version=3)
    with pytest.raises(VersionError):
        dataclasses.replace(key, min_decryption_version=3)
    with pytest.raises(VersionError):
        KeyVersions([KeyVersion(2, T0, b"w", 1)])


def test_rotation_due():
    key = dataclasses.replace(make_key(AC), rotation_period_seconds=3600)
    assert not rotation_due(key, now=T0 + timedelta(minutes=59))
    assert rotation_due(key, now=T0 + timedelta(hours=1))
    rotated = rotate(key, wrapped_new=b"w", kek_version=1, now=T0 + timedelta(hours=1))
    assert not rotation_due(rotated, now=T0 + timedelta(hours=1, minutes=30))
    assert not rotation_due(make_key(AC), now=T0 + timedelta(days=999))
    assert not rotation_due(dataclasses.replace(key, state=KeyState.DEACTIVATED), now=T0 + timedelta(days=9))


# --- algorithms ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "bits"), [("AES-128", 128), ("AES-192", 192), ("AES-256", 256), ("aes-256", 256)])
def test_check_algorithm_sizes(name, bits):
    assert check_algorithm(name, min_bits=128) == bits


@pytest.mark.parametrize(
    ("name", "min_bits", "ok"),
    [
        ("AES-128", 192, False),
        ("AES-128", 256, False),
        ("AES-192", 192, True),
        ("AES-192", 256, False),
        ("AES-256", 256, True),
    ],
)
def test_check_algorithm_tenant_minimum(name, min_bits, ok):
    if ok:
        assert check_algorithm(name, min_bits=min_bits) >= min_bits
    else:
        with pytest.raises(KeyPolicyError, match=f"at least {min_bits}"):
            check_algorithm(name, min_bits=min_bits)


@pytest.mark.parametrize("name", ["DES", "AES-512", "", "RSA-2048", "AES256"])
def test_check_algorithm_unknown(name):
    with pytest.raises(KeyPolicyError, match="supported: AES-128, AES-192, AES-256"):
        check_algorithm(name, min_bits=0)


# --- reprs -----------------------------------------------------------------------------------


def test_reprs_never_show_wrapped_material():
    secretish = bytes(range(200, 232))
    key = new_key(
        tenant_id="t", key_id="k", name="n", algorithm="AES-256", wrapped=secretish, kek_version=1, now=T0
    )
    key = rotate(key, wrapped_new=secretish[::-1], kek_version=1, now=T1)
    texts = [repr(key), str(key), repr(key.versions), repr(key.versions[1]), repr(list(key.versions.values()))]
    for material in (secretish, secretish[::-1]):
        for form in (material.hex(), base64.b64encode(material).decode(), repr(material)[2:-1]):
            for text in texts:
                assert form not in text
    assert "<32 bytes>" in repr(key.versions[1])
