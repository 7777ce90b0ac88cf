"""Accounts, pure: separation of duties, grants awaiting a second admin, MFA roles, scopes,
lockout backoff, passwords, TOTP replay, recovery codes, sessions and rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from services.gateway.accounts import mfa, passwords, rules, sessions
from services.gateway.ratelimit import ALL_SOURCES, RateLimiter, SignInLimits, retry_after
from services.gateway.settings import GatewaySettings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("roles,small_team,ok", [
    ({"tenant_admin", "security_officer", "auditor"}, False, True),
    ({"tenant_admin", "key_custodian"}, False, False),
    ({"tenant_admin", "approver"}, False, False),
    ({"tenant_admin", "key_custodian"}, True, True),
    ({"key_custodian", "approver", "security_officer"}, False, True),
    ({"emperor"}, True, False),
])
def test_role_sets(roles, small_team, ok):
    assert rules.check_role_set(frozenset(roles), small_team=small_team).allowed is ok


def test_admin_officer_custodian_and_approver_grants_wait_for_a_second_admin():
    decision, plan = rules.plan_grant(current=frozenset(), pending=frozenset(),
                                         grant=frozenset({"key_custodian", "approver", "security_officer", "auditor"}),
                                         granter_id="a1", target_id="u1", small_team=False)
    assert decision.allowed
    assert plan.effective == ("auditor",) and plan.pending == ("approver", "key_custodian", "security_officer")
    _, plan = rules.plan_grant(current=frozenset(), pending=frozenset(), grant=frozenset({"tenant_admin"}),
                               granter_id="a1", target_id="u1", small_team=False)
    assert plan.effective == () and plan.pending == ("tenant_admin",)
    # the provider's too: one provider admin never makes a second one (who confirms custodians) alone
    _, plan = rules.plan_grant(current=frozenset(), pending=frozenset(), grant=frozenset({"provider_admin"}),
                               granter_id="a1", target_id="u1", small_team=False, known=rules.PROVIDER_ROLES)
    assert plan.effective == () and plan.pending == ("provider_admin",)


def test_pending_roles_count_towards_separation_of_duties():
    decision, _ = rules.plan_grant(current=frozenset(), pending=frozenset({"key_custodian"}),
                                      grant=frozenset({"tenant_admin"}), granter_id="a1", target_id="u1", small_team=False)
    assert not decision.allowed and "separation of duties" in decision.reason


def test_nobody_grants_or_confirms_for_themselves():
    decision, _ = rules.plan_grant(current=frozenset(), pending=frozenset(), grant=frozenset({"auditor"}),
                                      granter_id="a1", target_id="a1", small_team=False)
    assert not decision.allowed
    def confirm(confirmer_id: str) -> bool:
        return rules.check_second_admin(confirmer=_admin(confirmer_id), requested_by="a1", requested_at=_T0,
                                        target_id="u1").allowed

    assert not confirm("a1") and not confirm("u1") and confirm("a2")


_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _admin(user_id: str, **changes) -> dict:
    """An active admin since before _T0: password set, TOTP enrolled."""
    return {"user_id": user_id, "status": "active", "account": "person", "roles": ["tenant_admin"], "source": "local",
            "created_at": _T0 - timedelta(days=2), "admin_since": _T0 - timedelta(days=1),
            "password_hash": "$argon2id$...", "mfa": {"confirmed": True}, **changes}


@pytest.mark.parametrize(("changes", "active"), [
    ({}, True),
    ({"roles": ["security_officer"], "pending": [{"role": "tenant_admin"}], "admin_since": None}, False),  # pending
    ({"password_hash": None}, False),  # never set up: the invitation was not taken up
    ({"mfa": {"confirmed": False}}, False),  # MFA not enrolled
    ({"status": "disabled"}, False),
    ({"account": "service"}, False),
    ({"source": "oidc", "password_hash": None, "mfa": None}, True),  # the identity provider vouches
    ({"roles": ["provider_admin"]}, True),  # the provider tenant's admin role
])
def test_one_definition_of_an_active_admin(changes, active):
    assert rules.is_active_admin(_admin("a2", **changes)) is active


def test_a_pending_newer_or_unready_admin_confirms_nothing():
    def confirm(confirmer) -> rules.Decision:
        return rules.check_second_admin(confirmer=confirmer, requested_by="a1", requested_at=_T0, target_id="u1")

    assert confirm(_admin("a2")).allowed
    newer = confirm(_admin("a2", admin_since=_T0 + timedelta(seconds=1)))
    assert not newer.allowed and "after the request" in newer.reason
    assert not confirm(_admin("a2", admin_since=_T0)).allowed  # at the same instant is not before
    assert not confirm(_admin("a2", password_hash=None)).allowed
    assert not confirm(_admin("a2", roles=[], admin_since=None)).allowed
    assert not confirm(None).allowed
    # A first admin (no confirmation ever) counts from their creation.
    assert confirm(_admin("a2", admin_since=None)).allowed


def test_becoming_an_admin_is_dated():
    now = _T0
    assert rules.confirmed_admin_since(frozenset(), frozenset({"tenant_admin"}), now) == {"admin_since": now}
    assert rules.confirmed_admin_since(frozenset({"tenant_admin"}), frozenset({"tenant_admin", "auditor"}), now) == {}
    assert rules.confirmed_admin_since(frozenset({"tenant_admin"}), frozenset({"auditor"}), now) == {"admin_since": None}


@pytest.mark.parametrize(("email", "account", "domains", "ok"), [
    ("dave@acme.example", "person", [], True),
    ("dave@acme.example", "person", ["acme.example"], True),
    ("dave@ACME.example", "person", ["acme.example"], True),
    ("dave@evil.example", "person", ["acme.example"], False),
    ("dave@sub.acme.example", "person", ["acme.example"], False),  # exactly the listed domains
    (None, "person", [], False),
    (None, "service", ["acme.example"], True),
    ("bot@acme.example", "service", [], False),
])
def test_invitee_addresses(email, account, domains, ok):
    assert rules.check_email(email, account=account, allowed_domains=domains).allowed is ok


def test_mfa_roles_have_no_power_without_mfa():
    assert rules.effective_roles(frozenset({"key_custodian"}), mfa_satisfied=False) == {"member"}
    assert rules.effective_roles(frozenset({"key_custodian"}), mfa_satisfied=True) == {"member", "key_custodian"}
    assert rules.effective_roles(frozenset({"auditor"}), mfa_satisfied=False) == {"member", "auditor"}


def test_small_team_conflict_needs_a_second_person_for_changes_only():
    assert rules.needs_second_person(frozenset({"tenant_admin", "approver"}), small_team=True)
    assert not rules.needs_second_person(frozenset({"tenant_admin", "auditor"}), small_team=True)
    assert rules.needs_cosign("keys.manage") and not rules.needs_cosign("keys.read")


def test_scopes_narrow_a_token():
    assert rules.scope_allows("keys.read", None)
    assert rules.scope_allows("keys.read", frozenset({"keys.read"}))
    assert not rules.scope_allows("keys.manage", frozenset({"keys.read"}))
    assert not rules.check_scopes(frozenset({"keys.everything"})).allowed


def test_lockout_backs_off_and_expires():
    assert rules.lockout_seconds(4, threshold=5) == 0
    assert [rules.lockout_seconds(n, threshold=5) for n in (5, 6, 7)] == [30, 60, 120]
    assert rules.lockout_seconds(50, threshold=5) == rules.LOCKOUT_MAX_SECONDS
    until = rules.locked_until(5, NOW, threshold=5)
    assert until == NOW + timedelta(seconds=30)


def test_sign_in_lockout_per_address_backs_off_and_per_name_holds_to_the_window_end():
    limits = SignInLimits(threshold=5, global_threshold=50, window=timedelta(minutes=15))
    ends = NOW + timedelta(minutes=15)
    pair = {"source": "10.0.0.1", "expires_at": ends}
    assert limits.lock_after({**pair, "failures": 4}, NOW) is None
    assert limits.lock_after({**pair, "failures": 6}, NOW) == NOW + timedelta(seconds=60)
    name = {"source": ALL_SOURCES, "expires_at": ends}
    assert limits.lock_after({**name, "failures": 49}, NOW) is None
    assert limits.lock_after({**name, "failures": 50}, NOW) == ends


def test_sign_in_limits_default_to_a_name_limit_ten_times_the_address_limit():
    limits = SignInLimits.from_settings(GatewaySettings())
    assert limits.global_threshold == 10 * limits.threshold and limits.window == timedelta(minutes=15)


def test_retry_after_waits_for_the_last_lock_that_holds_now():
    assert retry_after([], NOW) is None
    assert retry_after([{"locked_until": None}, {"locked_until": NOW - timedelta(seconds=1)}], NOW) is None
    counters = [{"locked_until": NOW + timedelta(seconds=30)}, {"locked_until": NOW + timedelta(seconds=90)}]
    assert retry_after(counters, NOW) == 91


@pytest.mark.parametrize("password,reason", [
    ("short", "at least"), ("x" * 129, "at most"), ("password1234", "common"), ("abababababab", "repetitive"),
    ("alice-is-my-password", "username"),
])
def test_weak_passwords_are_refused(password, reason):
    assert reason in passwords.weakness(password, username="alice")


def test_argon2id_hash_and_verify():
    hasher = passwords.Hasher(time_cost=1, memory_kib=8192, parallelism=1)
    encoded = hasher.hash("vault-door-orchid-7291")
    assert encoded.startswith("$argon2id$")
    assert hasher.verify(encoded, "vault-door-orchid-7291")
    assert not hasher.verify(encoded, "vault-door-orchid-7292")
    assert not hasher.verify(None, "vault-door-orchid-7291")  # unknown user: the decoy never matches
    assert not hasher.verify("not a hash", "x")


def test_totp_accepts_adjacent_steps_once_and_refuses_replays():
    secret = mfa.new_secret()
    totp = pyotp.TOTP(secret)
    code = totp.at(NOW)
    step = mfa.matching_step(secret, code, NOW, last_step=None)
    assert step == int(NOW.timestamp()) // 30
    assert mfa.matching_step(secret, code, NOW, last_step=step) is None  # replay
    assert mfa.matching_step(secret, totp.at(NOW + timedelta(seconds=30)), NOW, last_step=step) == step + 1
    assert mfa.matching_step(secret, totp.at(NOW - timedelta(seconds=120)), NOW, last_step=None) is None
    assert mfa.matching_step(secret, "12345", NOW, last_step=None) is None
    assert mfa.provisioning_uri(secret, account="alice").startswith("otpauth://totp/")


def test_recovery_codes_are_distinct_and_digested_loosely():
    codes = mfa.new_recovery_codes()
    assert len(set(codes)) == mfa.RECOVERY_CODES
    assert mfa.recovery_digest(codes[0]) == mfa.recovery_digest(codes[0].upper().replace("-", " "))


def test_sessions_end_on_idle_absolute_and_logout():
    doc = {"created_at": NOW, "last_seen": NOW, "ended_at": None}
    kw = {"idle_seconds": 900, "absolute_seconds": 3600}
    assert sessions.ended(doc, NOW + timedelta(seconds=899), **kw) is None
    assert sessions.ended(doc, NOW + timedelta(seconds=900), **kw) == "session idle timeout"
    busy = {**doc, "last_seen": NOW + timedelta(seconds=3500)}
    assert sessions.ended(busy, NOW + timedelta(seconds=3600), **kw) == "session absolute timeout"
    assert sessions.ended({**doc, "ended_at": NOW}, NOW, **kw) == "session ended"
    assert not sessions.should_touch(doc, NOW + timedelta(seconds=5))
    assert sessions.should_touch(doc, NOW + timedelta(seconds=31))


def test_rate_limiter_refills_and_says_how_long_to_wait():
    limiter = RateLimiter(burst=2, per_second=0.5)
    assert limiter.take("ip", 0.0) is None and limiter.take("ip", 0.0) is None
    assert limiter.take("ip", 0.0) == 2
    assert limiter.take("other", 0.0) is None
    assert limiter.take("ip", 2.0) is None


@pytest.mark.parametrize("small_team,sso_changed,held", [
    (True, False, ("small_team",)), (False, False, ()), (None, True, ("sso",)), (True, True, ("small_team", "sso")),
])
def test_settings_that_widen_power_wait_for_a_second_admin(small_team, sso_changed, held):
    assert rules.settings_needing_confirmation(small_team=small_team, sso_changed=sso_changed) == held


def test_settings_change_confirmed_by_another_admin_only():
    assert not rules.check_second_admin(confirmer=_admin("a1"), requested_by="a1", requested_at=_T0).allowed
    assert rules.check_second_admin(confirmer=_admin("a2"), requested_by="a1", requested_at=_T0).allowed


def test_settings_that_widen_wait_for_a_second_admin():
    held = rules.settings_needing_confirmation
    assert held(small_team=None, sso_changed=False, sso_only=True) == ()  # narrows: applies at once
    assert held(small_team=None, sso_changed=False, sso_only=False) == ("sso_only",)
    assert held(small_team=False, sso_changed=False, domains_changed=True) == ("allowed_email_domains",)
