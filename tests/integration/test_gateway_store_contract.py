"""One contract for the gateway's stores: the MongoDB store and its in-memory twin answer alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.gateway.ratelimit import ALL_SOURCES
from services.gateway.store import GatewayStore
from services.gateway.store_memory import MemoryGatewayStore
from shared import events
from shared.store import service_database

T = "ten_c"
OTHER = "ten_other"
ACTOR = events.Actor(kind="user", id="usr_admin")


def _event(user_id: str = "usr_a") -> events.Event:
    return events.UserPasswordSet(tenant_id=T, actor=ACTOR, correlation_id="c", user_id=user_id)


@pytest.fixture(params=["mongo", "memory"])
async def store(request, mongo_client, db_prefix):
    published: list[events.Event] = []

    async def publish(event: events.Event) -> None:
        published.append(event)

    if request.param == "mongo":
        s = GatewayStore(service_database(mongo_client, "gateway", prefix=db_prefix), publish=publish)
    else:
        s = MemoryGatewayStore(publish=publish)
    await s.create_indexes()
    s.published = published
    return s


def _user(user_id: str, **extra) -> dict:
    return {"user_id": user_id, "username": user_id.removeprefix("usr_"), "account": "person", "roles": [],
            "pending": [], "status": "active", "source": "local", "created_at": datetime.now(UTC), "rev": 0,
            "mfa": None, "recovery": [], **extra}


async def test_tenants_change_status_by_compare_and_swap(store):
    accounts = store.accounts
    now = datetime.now(UTC)
    created = events.TenantCreated(tenant_id=T, actor=ACTOR, correlation_id="c", name="c")
    await accounts.insert_tenant(T, {"name": "c", "kind": "customer", "status": "active", "created_at": now,
                                     "settings": {}}, created)
    await accounts.insert_tenant("provider", {"name": "p", "kind": "provider", "status": "active", "created_at": now,
                                              "settings": {}}, created)
    assert [t["tenant_id"] for t in await accounts.customer_tenants()] == [T]
    assert await accounts.customer_tenant("provider") is None
    changed = events.TenantLifecycleChanged(tenant_id=T, actor=ACTOR, correlation_id="c", type="tenant.suspended")
    assert await accounts.change_tenant_status(T, was="active", now="suspended", at=now, event=changed)
    assert not await accounts.change_tenant_status(T, was="active", now="suspended", at=now, event=changed)
    doc = await accounts.tenant(T)
    assert doc["status"] == "suspended" and doc["suspended_at"] is not None
    assert [e.type for e in store.published] == ["tenant.created", "tenant.created", "tenant.suspended"]


async def test_settings_changes_wait_and_apply_once(store):
    accounts = store.accounts
    created = events.TenantCreated(tenant_id=T, actor=ACTOR, correlation_id="c", name="c")
    await accounts.insert_tenant(T, {"name": "c", "kind": "customer", "status": "active",
                                     "created_at": datetime.now(UTC), "settings": {}}, created)
    changed = events.TenantSettingsChanged(tenant_id=T, actor=ACTOR, correlation_id="c", settings={})
    await accounts.hold_settings_change(T, {"change_id": "chg_1", "settings": {"small_team": True}}, changed)
    assert not (await accounts.tenant(T))["settings"]
    assert await accounts.confirm_settings_change(T, "chg_1", {"small_team": True}, changed)
    assert not await accounts.confirm_settings_change(T, "chg_1", {"small_team": True}, changed)
    doc = await accounts.tenant(T)
    assert doc["settings"] == {"small_team": True} and doc["pending_settings"] == []


async def test_roles_are_saved_against_the_revision_read(store):
    accounts = store.accounts
    await accounts.insert_user(T, _user("usr_a"), _event())
    assert await accounts.set_roles(T, "usr_a", rev=0, roles=["auditor"], pending=[], evts=(_event(),))
    assert not await accounts.set_roles(T, "usr_a", rev=0, roles=["approver"], pending=[], evts=(_event(),))
    doc = await accounts.user(T, "usr_a")
    assert doc["roles"] == ["auditor"] and doc["rev"] == 1
    assert (await accounts.user_by_username(T, "a"))["user_id"] == "usr_a"
    assert len(store.published) == 2


async def test_totp_steps_only_move_forward_and_recovery_codes_work_once(store):
    accounts = store.accounts
    await accounts.insert_user(T, _user("usr_a"), _event())
    await accounts.begin_mfa(T, "usr_a", "sealed")
    assert not await accounts.confirm_mfa(T, "usr_a", sealed_secret="other", step=5, recovery=["r1"], event=_event())
    assert await accounts.confirm_mfa(T, "usr_a", sealed_secret="sealed", step=5, recovery=["r1", "r2"], event=_event())
    assert not await accounts.advance_totp_step(T, "usr_a", 5)
    assert await accounts.advance_totp_step(T, "usr_a", 6)
    assert await accounts.use_recovery_code(T, "usr_a", "r1", _event())
    assert not await accounts.use_recovery_code(T, "usr_a", "r1", _event())
    doc = await accounts.user(T, "usr_a")
    assert doc["mfa"] == {"secret": "sealed", "confirmed": True, "last_step": 6} and doc["recovery"] == ["r2"]


async def test_passwords_set_once_by_setup_token_and_rehashed_only_unchanged(store):
    accounts = store.accounts
    await accounts.insert_user(T, _user("usr_a", setup_digest="d1", setup_expires_at=datetime.now(UTC)), _event())
    assert (await accounts.user_by_setup_digest("d1"))["tenant_id"] == T
    assert await accounts.set_first_password(T, "usr_a", "d1", "h1", _event())
    assert not await accounts.set_first_password(T, "usr_a", "d1", "h2", _event())
    assert await accounts.user_by_setup_digest("d1") is None
    assert not await accounts.rehash_password(T, "usr_a", old="h0", new="h3")
    assert await accounts.rehash_password(T, "usr_a", old="h1", new="h3")
    assert (await accounts.user(T, "usr_a"))["password_hash"] == "h3"


async def test_a_resent_invitation_voids_the_old_setup_token(store):
    accounts = store.accounts
    later = datetime.now(UTC) + timedelta(hours=1)
    await accounts.insert_user(T, _user("usr_a", setup_digest="d1", setup_expires_at=later, invitation="sending"), _event())
    await accounts.set_invitation(T, "usr_a", "undelivered")
    doc = await accounts.user(T, "usr_a")
    assert doc["invitation"] == "undelivered" and doc["setup_digest"] == "d1"
    await accounts.set_invitation(T, "usr_a", "sending", {"setup_digest": "d2", "setup_expires_at": later})
    assert await accounts.user_by_setup_digest("d1") is None
    assert (await accounts.user_by_setup_digest("d2"))["invitation"] == "sending"
    await accounts.set_invitation("ten_other", "usr_a", "sent")  # another tenant's user: untouched
    assert (await accounts.user(T, "usr_a"))["invitation"] == "sending"


async def test_a_queued_notice_is_claimed_by_one_until_its_retry_and_dropped_once_sent(store):
    accounts = store.accounts
    now = datetime.now(UTC)
    await accounts.queue_mail(T, {"mail_id": "mail_1", "to": "a@x.example", "subject": "s", "body": "b",
                                  "created_at": now, "next_at": now + timedelta(seconds=30), "attempts": 0})
    assert await accounts.claim_mail(now, now + timedelta(seconds=60)) is None  # not due yet
    later = now + timedelta(seconds=31)
    claimed = await accounts.claim_mail(later, later + timedelta(seconds=60))
    assert claimed["mail_id"] == "mail_1" and claimed["tenant_id"] == T and claimed["attempts"] == 1
    assert await accounts.claim_mail(later, later + timedelta(seconds=60)) is None  # claimed: nobody else sends it
    again = await accounts.claim_mail(later + timedelta(seconds=61), later + timedelta(seconds=120))
    assert again["attempts"] == 2
    await accounts.drop_mail(T, "mail_1")
    assert await accounts.claim_mail(later + timedelta(days=1), later + timedelta(days=2)) is None


async def test_becoming_an_admin_is_saved_with_the_roles(store):
    accounts = store.accounts
    await accounts.insert_user(T, _user("usr_a"), _event())
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert await accounts.set_roles(T, "usr_a", rev=0, roles=["tenant_admin"], pending=[], evts=(_event(),),
                                    since={"admin_since": at})
    assert (await accounts.user(T, "usr_a"))["admin_since"].replace(tzinfo=UTC) == at
    await accounts.sync_roles(T, "usr_a", ["auditor"], _event(), {"admin_since": None})
    doc = await accounts.user(T, "usr_a")
    assert doc["roles"] == ["auditor"] and doc["admin_since"] is None


async def test_failed_sign_ins_count_per_source_lock_and_clear(store):
    accounts = store.accounts
    now = datetime.now(UTC).replace(microsecond=0)
    ends = now + timedelta(minutes=15)
    for source, expected in (("10.0.0.1", 1), ("10.0.0.1", 2), (ALL_SOURCES, 1), ("10.0.0.2", 1)):
        counter = await accounts.count_failed_sign_in(T, "a", source, now=now, window_ends=ends)
        assert (counter["source"], counter["failures"], counter["expires_at"]) == (source, expected, ends)
    until = now + timedelta(minutes=30)
    await accounts.lock_sign_in(T, "a", "10.0.0.1", until=until, expires_at=until)
    counters = {c["source"]: c for c in await accounts.sign_in_counters(T, "a", "10.0.0.1", now)}
    assert set(counters) == {"10.0.0.1", ALL_SOURCES}  # this address's counter and the name's; not 10.0.0.2's
    assert counters["10.0.0.1"]["locked_until"] == until and counters[ALL_SOURCES]["locked_until"] is None
    # A lock longer than its window keeps its counter alive; the name's counter ends with its window.
    assert [c["source"] for c in await accounts.sign_in_counters(T, "a", "10.0.0.1", ends)] == ["10.0.0.1"]
    await accounts.clear_failed_sign_ins(T, "a", "10.0.0.1", now)
    assert [c["source"] for c in await accounts.sign_in_counters(T, "a", "10.0.0.1", now)] == [ALL_SOURCES]
    assert {c["source"] for c in await accounts.sign_in_counters(T, "a", "10.0.0.2", now)} == {"10.0.0.2", ALL_SOURCES}
    assert await accounts.sign_in_counters("ten_other", "a", ALL_SOURCES, now) == []


async def test_a_failure_after_its_window_starts_the_count_again(store):
    accounts = store.accounts
    now = datetime.now(UTC).replace(microsecond=0)
    for _ in range(3):
        await accounts.count_failed_sign_in(T, "a", "10.0.0.1", now=now, window_ends=now + timedelta(minutes=1))
    later = now + timedelta(minutes=2)
    assert await accounts.sign_in_counters(T, "a", "10.0.0.1", later) == []
    counter = await accounts.count_failed_sign_in(T, "a", "10.0.0.1", now=later, window_ends=later + timedelta(minutes=1))
    assert counter["failures"] == 1 and counter["expires_at"] == later + timedelta(minutes=1)
    assert (await accounts.count_failed_sign_in(T, "a", "10.0.0.1", now=later, window_ends=later))["failures"] == 2
    # A good sign-in from one address sweeps the name's expired counters from every address.
    await accounts.count_failed_sign_in(T, "a", "10.0.0.3", now=now, window_ends=now + timedelta(minutes=1))
    await accounts.clear_failed_sign_ins(T, "a", "10.0.0.9", later)
    assert await accounts.sign_in_counters(T, "a", "10.0.0.3", now) == []


async def test_tokens_list_by_owner_and_revoke_once(store):
    accounts = store.accounts
    now = datetime.now(UTC)
    for token_id, owner in (("tok_1", "usr_a"), ("tok_2", "usr_b")):
        await accounts.insert_token(T, {"token_id": token_id, "user_id": owner, "digest": f"d_{token_id}",
                                        "created_at": now, "revoked": False}, _event())
    assert [t["token_id"] for t in await accounts.list_tokens(T, owner="usr_a")] == ["tok_1"]
    assert len(await accounts.list_tokens(T, owner=None)) == 2
    assert not await accounts.revoke_token(T, "tok_1", owner="usr_b", at=now, event=_event())
    assert await accounts.revoke_token(T, "tok_1", owner="usr_a", at=now, event=_event())
    assert not await accounts.revoke_token(T, "tok_1", owner=None, at=now, event=_event())
    assert await accounts.count_live_tokens(T) == 1
    assert (await accounts.token_by_digest("d_tok_1"))["revoked"] is True


async def test_service_token_requests_are_held_on_the_account_and_collected_once(store):
    accounts = store.accounts
    await accounts.insert_user(T, _user("usr_bot", account="service"), _event())
    await accounts.insert_user(T, _user("usr_p"), _event())
    req = {"token_id": "tok_r", "name": "ci", "scopes": None, "minted_by": "usr_admin", "confirmed_by": None}
    assert not await accounts.save_token_requests(T, "usr_p", rev=0, requests=[req], event=_event())  # a person
    assert await accounts.save_token_requests(T, "usr_bot", rev=0, requests=[req], event=_event())
    assert not await accounts.save_token_requests(T, "usr_bot", rev=0, requests=[], event=_event())
    assert await accounts.token_requests(T) == [{**req, "user_id": "usr_bot"}]
    assert await accounts.token_requests("ten_other") == []
    token = {"token_id": "tok_r", "user_id": "usr_bot", "digest": "d_r", "created_at": datetime.now(UTC),
             "revoked": False}
    assert await accounts.collect_token_request(T, "usr_bot", rev=1, requests=[], token=token, event=_event())
    assert not await accounts.collect_token_request(T, "usr_bot", rev=1, requests=[], token=token, event=_event())
    assert await accounts.token_requests(T) == []
    assert (await accounts.token_by_digest("d_r"))["user_id"] == "usr_bot"


async def test_single_use_things_are_used_once(store):
    accounts = store.accounts
    now = datetime.now(UTC)
    assert await accounts.mark_bootstrapped(T, "usr_a", now)
    assert not await accounts.mark_bootstrapped(T, "usr_b", now)
    assert await accounts.bootstrap_tenant() == T
    await accounts.insert_sso_state(T, {"state": "s1", "expires_at": now})
    assert (await accounts.take_sso_state("s1"))["tenant_id"] == T
    assert await accounts.take_sso_state("s1") is None
    assert await accounts.first_use_of_assertion(T, "as_1", now)
    assert not await accounts.first_use_of_assertion(T, "as_1", now)
    event = events.EnrollmentTokenCreated(tenant_id=T, actor=ACTOR, correlation_id="c", enrollment_id="enr_1",
                                          expires_at=now + timedelta(hours=1))
    await store.insert_enrollment(T, {"enrollment_id": "enr_1", "digest": "e1", "used": False,
                                      "expires_at": now + timedelta(hours=1)}, event)
    assert (await store.take_enrollment("e1", now))["tenant_id"] == T
    assert await store.take_enrollment("e1", now) is None
    assert await store.remember_nonce(T, "dev_1", "n1", now)
    assert not await store.remember_nonce(T, "dev_1", "n1", now)


async def test_a_nonce_is_refused_again_only_for_its_own_device_and_tenant(store):
    now = datetime.now(UTC)
    assert await store.remember_nonce(T, "dev_1", "n:1/x", now)
    assert await store.remember_nonce(T, "dev_2", "n:1/x", now)
    assert await store.remember_nonce(OTHER, "dev_1", "n:1/x", now)
    assert await store.remember_nonce(T, "dev_1", "n:1/y", now)
    assert not await store.remember_nonce(T, "dev_1", "n:1/x", now)
    assert not await store.remember_nonce(OTHER, "dev_1", "n:1/x", now)
    assert await store.forget_expired_nonces(now + timedelta(seconds=1)) == 4
    assert await store.remember_nonce(T, "dev_1", "n:1/x", now)


async def test_a_store_created_before_nonces_were_keyed_by_id_still_refuses_their_replay(mongo_client, db_prefix):
    # The old layout: generated `_id`s, and a unique index on (tenant, device, nonce) that stays.
    db = service_database(mongo_client, "gateway", prefix=db_prefix)
    await db["nonces"].create_index([("tenant_id", 1), ("device_id", 1), ("nonce", 1)], unique=True)
    now = datetime.now(UTC)
    await db["nonces"].insert_one({"tenant_id": T, "device_id": "dev_1", "nonce": "n1", "expires_at": now})

    async def publish(event: events.Event) -> None:
        pass

    store = GatewayStore(db, publish=publish)
    await store.create_indexes()
    assert not await store.remember_nonce(T, "dev_1", "n1", now)
    assert await store.remember_nonce(T, "dev_1", "n2", now)
    assert not await store.remember_nonce(T, "dev_1", "n2", now)


async def test_devices_are_revoked_once(store):
    now = datetime.now(UTC)
    enrolled = events.DeviceEnrolled(tenant_id=T, actor=ACTOR, correlation_id="c", device_id="dev_1",
                                     enrollment_id="enr_1", name="d", public_key="k", groups=())
    await store.insert_device(T, {"device_id": "dev_1", "status": "active", "enrolled_at": now}, enrolled)
    revoked = events.DeviceRevoked(tenant_id=T, actor=ACTOR, correlation_id="c", device_id="dev_1", reason="lost")
    assert await store.count_active_devices(T) == 1
    assert await store.revoke_device(T, "dev_1", now, revoked)
    assert not await store.revoke_device(T, "dev_1", now, revoked)
    assert (await store.device(T, "dev_1"))["status"] == "revoked"
    assert [d["device_id"] for d in await store.list_devices(T)] == ["dev_1"]
    assert [e.type for e in store.published] == ["device.enrolled", "device.revoked"]


async def test_an_instance_is_bound_to_the_active_device_that_enrolled_with_it(store):
    now = datetime.now(UTC)
    for device_id in ("dev_1", "dev_2"):
        enrolled = events.DeviceEnrolled(tenant_id=T, actor=ACTOR, correlation_id="c", device_id=device_id,
                                         enrollment_id="enr_1", name="vm", public_key="k")
        await store.insert_device(T, {"device_id": device_id, "status": "active", "enrolled_at": now,
                                      "subject": "aws:1/i-1" if device_id == "dev_1" else None}, enrolled)
    assert await store.device_bound_to(T, "aws:1/i-1") == "dev_1"
    assert await store.device_bound_to(T, "aws:1/i-2") is None
    assert await store.device_bound_to(OTHER, "aws:1/i-1") is None
    revoked = events.DeviceRevoked(tenant_id=T, actor=ACTOR, correlation_id="c", device_id="dev_1", reason="lost")
    assert await store.revoke_device(T, "dev_1", now, revoked)
    assert await store.device_bound_to(T, "aws:1/i-1") is None  # a revoked device holds nothing


async def test_a_change_is_confirmed_once_and_used_once_for_exactly_its_request(store):
    from services.gateway.changes import new_change

    now = datetime.now(UTC)
    doc = new_change(requested_by="usr_a", method="POST", path="/v1/keys", digest="d" * 64, permission="keys.manage",
                     now=now, ttl_seconds=60)
    asked = events.ChangeCosign(tenant_id=T, actor=ACTOR, correlation_id="c", change_id=doc["change_id"],
                                method="POST", path="/v1/keys", body_sha256="d" * 64, permission="keys.manage",
                                requested_by="usr_a")
    await store.changes.insert_change(T, doc, asked)
    change_id = doc["change_id"]
    request = {"requested_by": "usr_a", "method": "POST", "path": "/v1/keys", "body_sha256": "d" * 64}
    assert [c["change_id"] for c in await store.changes.pending_changes(T, now)] == [change_id]
    assert await store.changes.pending_changes(T, now + timedelta(seconds=61)) == []
    assert await store.changes.use_change(T, change_id, **request, at=now) is None  # not confirmed yet
    confirmed = asked.model_copy(update={"type": "change.confirmed", "confirmed_by": "usr_b"})
    assert await store.changes.confirm_change(T, change_id, confirmed_by="usr_b", at=now, event=confirmed)
    assert not await store.changes.confirm_change(T, change_id, confirmed_by="usr_c", at=now, event=confirmed)
    assert await store.changes.use_change(T, change_id, **{**request, "body_sha256": "e" * 64}, at=now) is None
    assert await store.changes.use_change(T, change_id, **{**request, "requested_by": "usr_b"}, at=now) is None
    assert await store.changes.use_change("ten_other", change_id, **request, at=now) is None
    used = await store.changes.use_change(T, change_id, **request, at=now)
    assert used is not None and used["confirmed_by"] == "usr_b"
    assert await store.changes.use_change(T, change_id, **request, at=now) is None  # once
    assert (await store.changes.change(T, change_id))["status"] == "used"
    assert [e.type for e in store.published] == ["change.cosign_pending", "change.confirmed"]


async def test_a_session_ends_once_and_its_events_are_published(store):
    now = datetime.now(UTC)
    session = {"session_id": "ses_1", "digest": "x" * 64, "user_id": "usr_a", "auth": "password", "mfa": False,
               "created_at": now, "last_seen": now, "ended_at": None}
    logged_in = events.UserLoggedIn(tenant_id=T, actor=ACTOR, correlation_id="c", user_id="usr_a", method="password",
                                    session_id="ses_1")
    await store.accounts.insert_session(T, session, logged_in)
    logged_out = events.UserLoggedOut(tenant_id=T, actor=ACTOR, correlation_id="c", user_id="usr_a", session_id="ses_1")
    assert await store.accounts.end_session(T, "ses_1", now, logged_out)
    assert not await store.accounts.end_session(T, "ses_1", now, logged_out)
    assert (await store.accounts.session_by_digest("x" * 64))["ended_at"] is not None
    denied = events.UserLoginFailed(tenant_id=T, actor=ACTOR, correlation_id="c", user_id=None, username="nobody",
                                    method="password", reason="unknown user")
    await store.record_event(T, denied)
    assert [e.type for e in store.published] == ["user.logged_in", "user.logged_out", "user.login_failed"]
    await store.forget_published_events()
    if isinstance(store, GatewayStore):  # the published event's own document is swept; nothing is left staged
        assert await store.events.raw.count_documents({}) == 0
        assert await store.outbox.relay() == 0


async def test_challenges_are_single_use_per_holder_tenant_and_lifetime(store):
    now = datetime.now(UTC)
    ev = store.evidence
    await ev.insert_challenge(T, "c" * 32, holder="dev_a", expires_at=now + timedelta(seconds=60))
    await ev.insert_challenge(T, "d" * 32, holder="dev_a", expires_at=now - timedelta(seconds=1))
    assert not await ev.take_challenge(OTHER, "c" * 32, holder="dev_a", now=now)  # another tenant's
    assert not await ev.take_challenge(T, "c" * 32, holder="dev_b", now=now)  # another device's
    assert await ev.take_challenge(T, "c" * 32, holder="dev_a", now=now)
    assert not await ev.take_challenge(T, "c" * 32, holder="dev_a", now=now)  # used
    assert not await ev.take_challenge(T, "d" * 32, holder="dev_a", now=now)  # expired
    assert await ev.forget_expired_challenges(now) == 1


async def test_an_instance_is_claimed_once_per_tenant(store):
    ev = store.evidence
    record = {"subject": "aws:1/i-1", "pending_time": "2026-12-01T08:00:00Z", "device_id": "dev_a"}
    assert await ev.claim_first_use(T, record)
    assert not await ev.claim_first_use(T, {**record, "device_id": "dev_b"})
    assert await ev.claim_first_use(OTHER, record)  # tenants are apart
    assert not await ev.advance_first_use(T, {**record, "device_id": "dev_b", "pending_time": "2026-12-02T08:00:00Z"})
    assert await ev.advance_first_use(T, {**record, "pending_time": "2026-12-02T08:00:00Z"})
    assert await ev.first_use(T, "aws:1/i-1") == {**record, "pending_time": "2026-12-02T08:00:00Z"}
    assert await ev.first_use(T, "aws:1/i-2") is None
