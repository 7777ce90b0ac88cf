"""Unit tests for destruction (services.keysvc.destruction): scheduling rules, dual control,
cancellation, readiness, and certificate signing and verification."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.keysvc import destruction as d
from services.keysvc.keys import CustodySettings, IllegalTransition, KeyPolicyError, KeyState, new_key, rotate
from shared.certificates import verify_certificate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _key(state=KeyState.DEACTIVATED):
    key = new_key(tenant_id="t", key_id="k", name="n", algorithm="AES-256", wrapped=b"\x01" * 60, kek_version=1, now=T0)
    key = rotate(key, wrapped_new=b"\x02" * 60, kek_version=1, now=T0)
    return dataclasses.replace(key, state=state)


def _schedule(key=None, **kw):
    args = dict(destruction_id="dst_1", actor="alice", reason="retire", wait=7 * DAY, now=T0, min_wait=7 * DAY,
                max_wait=30 * DAY, dependent_releases=0, force=False)
    args.update(kw)
    return d.schedule(key or _key(), **args)


@pytest.mark.parametrize("state", [KeyState.ACTIVE, KeyState.SUSPENDED, KeyState.DESTROYED, KeyState.DESTROYED_COMPROMISED])
def test_live_or_destroyed_keys_cannot_be_scheduled(state):
    with pytest.raises(IllegalTransition):
        _schedule(_key(state))


@pytest.mark.parametrize("state", [KeyState.PRE_ACTIVATION, KeyState.DEACTIVATED, KeyState.COMPROMISED])
def test_destroyable_states_schedule_with_the_waiting_period(state):
    sched = _schedule(_key(state))
    assert sched.status == "scheduled" and sched.not_before == T0 + 7 * DAY and sched.approvals == ()


@pytest.mark.parametrize("wait", [6 * DAY, 31 * DAY, timedelta(seconds=1)])
def test_waiting_period_outside_bounds_is_refused(wait):
    with pytest.raises(d.DestructionError):
        _schedule(wait=wait)


def test_dependencies_refuse_unless_forced():
    with pytest.raises(d.DependencyError):
        _schedule(dependent_releases=3)
    forced = _schedule(dependent_releases=3, force=True)
    assert forced.forced and forced.dependent_releases == 3


def test_dual_control_refuses_the_scheduler_and_a_repeat_approver():
    sched = _schedule()
    with pytest.raises(d.DualControlError):
        d.approve(sched, actor="alice")
    approved = d.approve(sched, actor="bob")
    assert approved.approvals == ("bob",)
    with pytest.raises(d.DualControlError):
        d.approve(approved, actor="bob")


def test_due_needs_approval_and_the_end_of_the_wait():
    sched = _schedule()
    assert d.due(sched, now=T0 + 8 * DAY) == (False, "waiting for a second key custodian's approval")
    approved = d.approve(sched, actor="bob")
    ready, why = d.due(approved, now=T0 + 6 * DAY)
    assert not ready and "waiting period" in why
    assert d.due(approved, now=T0 + 7 * DAY)[0]


def test_cancel_until_it_ends_then_nothing_more():
    cancelled = d.cancel(_schedule(), actor="carol")
    assert cancelled.status == "cancelled" and cancelled.cancelled_by == "carol"
    assert not d.due(cancelled, now=T0 + 30 * DAY)[0]
    for action in (lambda: d.cancel(cancelled, actor="x"), lambda: d.approve(cancelled, actor="bob")):
        with pytest.raises(d.DestructionError):
            action()


def test_certificate_signs_and_verifies_and_detects_any_change():
    key = _key()
    approved = d.approve(_schedule(), actor="bob")
    signer = Ed25519PrivateKey.generate()
    body = d.certificate(approved, key=key, wrapped_by_version={1: b"\x01" * 60, 2: b"\x02" * 60},
                         destroyed_at=T0 + 8 * DAY, signing_key_id=d.public_key_id(signer.public_key()))
    assert body["versions"][1]["version"] == 2 and body["last_wrapped_sha256"] == body["versions"][1]["wrapped_sha256"]
    assert body["approvers"] == ["bob"] and body["scheduled_by"] == "alice"
    signature = d.sign_certificate(body, signer)
    assert verify_certificate(body, signature, signer.public_key())
    for change in ({"approvers": ["mallory"]}, {"destroyed_at": "2030-01-01T00:00:00+00:00"}, {"key_id": "other"}):
        assert not verify_certificate({**body, **change}, signature, signer.public_key())
    assert not verify_certificate(body, signature, Ed25519PrivateKey.generate().public_key())
    assert not verify_certificate(body, "not-base64!", signer.public_key())


@pytest.mark.parametrize("fields", [{"min_key_bits": 100}, {"destruction_wait_days": 6}, {"destruction_wait_days": 31},
                                    {"dependency_window_days": 0}])
def test_custody_settings_are_bounded(fields):
    with pytest.raises(KeyPolicyError):
        CustodySettings(**fields)
