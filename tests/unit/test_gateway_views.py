"""Gateway views and guard over the in-memory stores and bus: no broker, no database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.gateway.accounts.common import ACCOUNTS
from services.gateway.accounts.passwords import Hasher
from services.gateway.app import build_app
from services.gateway.changes import CHANGE_HEADER
from services.gateway.datakey import ensure_data_key_file
from services.gateway.ratelimit import ALL_SOURCES
from services.gateway.roles import ADMIN_ROLES
from services.gateway.settings import GatewaySettings
from services.gateway.state import GATEWAY
from services.gateway.store_memory import MemoryGatewayStore
from shared import events, rpc
from shared.bus_memory import MemoryBus
from shared.crypto import tokens


def _public_key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


PASSWORD = "a long and unusual passphrase"
T1 = "ten_one"


class Gw:
    """A gateway app on memory stores, with helpers that seed tenants, users and sessions."""

    def __init__(self, client: TestClient, store: MemoryGatewayStore, published: list[events.Event],
                 hasher: Hasher):
        self.client, self.store, self.published, self.hasher = client, store, published, hasher

    async def tenant(self, tenant_id: str = T1, *, kind: str = "customer", small_team: bool = False) -> None:
        doc = {"name": tenant_id, "kind": kind, "status": "active", "created_at": datetime.now(UTC),
               "settings": {"small_team": True} if small_team else {}}
        await self.store.accounts.insert_tenant(tenant_id, doc, events.TenantCreated(
            tenant_id=tenant_id, actor=events.Actor(kind="user", id="test"), correlation_id="c", name=tenant_id))

    async def user(self, username: str, roles: list[str], *, tenant_id: str = T1, password_hash: str | None = None,
                   account: str = "person") -> tuple[str, str]:
        """A user with an MFA-verified session: (user_id, bearer token). An admin is set up (their own
        password and TOTP), so they count as an active admin for second-admin confirmations."""
        user_id = events.new_id("usr_")
        admin = not ADMIN_ROLES.isdisjoint(roles) and account == "person"
        doc = {"user_id": user_id, "username": username, "account": account, "roles": roles, "pending": [],
               "status": "active", "source": "local", "created_at": datetime.now(UTC), "rev": 0,
               "mfa": {"secret": None, "confirmed": True, "last_step": None} if admin else None,
               "recovery": [], "password_hash": password_hash or ("$argon2id$seeded" if admin else None)}
        await self.store.accounts.insert_user(tenant_id, doc, events.UserCreated(
            tenant_id=tenant_id, actor=events.Actor(kind="user", id="test"), correlation_id="c", user_id=user_id,
            username=username, roles=tuple(roles)))
        token = tokens.new_token("sr_ses")
        now = datetime.now(UTC)
        await self.store.accounts.insert_session(tenant_id, {
            "session_id": events.new_id("ses_"), "digest": tokens.digest(token), "user_id": user_id,
            "auth": "password+totp", "mfa": True, "created_at": now, "last_seen": now, "ended_at": None})
        return user_id, token

    async def call(self, method: str, path: str, token: str | None = None, json=None, headers=None):
        h = {"Authorization": f"Bearer {token}"} if token else {}
        h.update(headers or {})
        async with self.client.request(method, path, json=json, headers=h) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, body, resp.headers

    def types(self) -> list[str]:
        return [e.type for e in self.published]


@pytest.fixture
async def gw(tmp_path):
    bus = MemoryBus()
    await bus.start()
    published: list[events.Event] = []

    async def publish(event: events.Event) -> None:
        published.append(event)
        await bus.publish(event)

    store = MemoryGatewayStore(publish=publish)
    key_file = tmp_path / "data.key"
    ensure_data_key_file(str(key_file))
    settings = GatewaySettings(bootstrap_token=tokens.new_token("sr_boot"), data_key_file=str(key_file),
                               password_time_cost=2, password_memory_kib=8, password_parallelism=1,
                               lockout_threshold=3)
    client = TestClient(TestServer(build_app(settings, bus=bus, store=store)))
    await client.start_server()
    try:
        yield Gw(client, store, published, Hasher(time_cost=2, memory_kib=8, parallelism=1))
    finally:
        await client.close()
        await bus.close()


async def test_a_role_grant_waits_for_a_second_admin_and_is_confirmed_by_one(gw):
    await gw.tenant()
    _, first = await gw.user("alice", ["tenant_admin"])
    _, second = await gw.user("bob", ["tenant_admin"])
    carol, _ = await gw.user("carol", ["auditor"])

    status, body, _ = await gw.call("POST", f"/v1/users/{carol}/roles", first, {"grant": ["key_custodian"]})
    assert status == 200
    assert body["roles"] == ["auditor"]
    assert body["pending_roles"][0]["role"] == "key_custodian"
    assert "user.role_pending" in gw.types()

    status, body, _ = await gw.call("POST", f"/v1/users/{carol}/roles/key_custodian/confirm", first)
    assert status == 403
    assert "cannot also confirm" in body["detail"]

    status, body, _ = await gw.call("POST", f"/v1/users/{carol}/roles/key_custodian/confirm", second)
    assert status == 200
    assert body["roles"] == ["auditor", "key_custodian"]
    assert body["pending_roles"] == []
    stored = await gw.store.accounts.user(T1, carol)
    assert stored["roles"] == ["auditor", "key_custodian"] and stored["rev"] == 2
    assert gw.types()[-1] == "user.role_confirmed"

    status, _, _ = await gw.call("POST", f"/v1/users/{carol}/roles/key_custodian/confirm", second)
    assert status == 404


async def test_failed_sign_ins_lock_the_name_out(gw):
    await gw.tenant()
    await gw.user("dave", ["auditor"], password_hash=gw.hasher.hash(PASSWORD))
    for _ in range(3):
        status, _, _ = await gw.call("POST", "/v1/auth/login", json={"tenant": T1, "username": "dave",
                                                                       "password": "not the right one at all"})
        assert status == 401
    counters = await gw.store.accounts.sign_in_counters(T1, "dave", "127.0.0.1", datetime.now(UTC))
    assert {c["source"]: c["failures"] for c in counters} == {"127.0.0.1": 3, ALL_SOURCES: 3}
    status, _, headers = await gw.call("POST", "/v1/auth/login", json={"tenant": T1, "username": "dave",
                                                                            "password": PASSWORD})
    assert status == 429
    assert int(headers["Retry-After"]) >= 1


async def test_a_good_sign_in_clears_the_failures(gw):
    await gw.tenant()
    await gw.user("erin", ["auditor"], password_hash=gw.hasher.hash(PASSWORD))
    await gw.call("POST", "/v1/auth/login", json={"tenant": T1, "username": "erin", "password": "wrong wrong wrong"})
    status, body, _ = await gw.call("POST", "/v1/auth/login", json={"tenant": T1, "username": "erin",
                                                                      "password": PASSWORD})
    assert status == 201 and body["session_token"].startswith("sr_ses")
    # The good sign-in forgives its own address; the name's count across addresses runs out its window.
    counters = await gw.store.accounts.sign_in_counters(T1, "erin", "127.0.0.1", datetime.now(UTC))
    assert {c["source"]: c["failures"] for c in counters} == {ALL_SOURCES: 1}


async def test_a_good_password_without_its_totp_answers_like_a_wrong_one_and_counts(gw):
    await gw.tenant()
    user_id, _ = await gw.user("olga", ["security_officer"], password_hash=gw.hasher.hash(PASSWORD))
    secret = pyotp.random_base32()
    sealed = gw.client.server.app[ACCOUNTS].seal_totp(secret, tenant_id=T1, user_id=user_id)
    gw.store.accounts.users[(T1, user_id)]["mfa"] = {"secret": sealed, "confirmed": True, "last_step": None}
    login = {"tenant": T1, "username": "olga", "password": PASSWORD}
    answers = [await gw.call("POST", "/v1/auth/login", json=body)
               for body in ({**login, "password": "not the right one at all"}, login, {**login, "totp": "000000"})]
    assert [(status, body) for status, body, _ in answers] == [(401, answers[0][1])] * 3
    # Three failures (the fixture's threshold): even the right code is refused now.
    status, _, headers = await gw.call("POST", "/v1/auth/login", json={**login, "totp": pyotp.TOTP(secret).now()})
    assert status == 429 and int(headers["Retry-After"]) >= 1


async def test_only_this_addresss_lock_or_the_names_lock_refuses_a_sign_in(gw):
    await gw.tenant()
    await gw.user("ann", ["auditor"], password_hash=gw.hasher.hash(PASSWORD))
    accounts, now = gw.store.accounts, datetime.now(UTC)
    login = {"tenant": T1, "username": "ann", "password": PASSWORD}
    for source in ("10.9.9.9", ALL_SOURCES):
        await accounts.count_failed_sign_in(T1, "ann", source, now=now, window_ends=now + timedelta(minutes=15))
    await accounts.lock_sign_in(T1, "ann", "10.9.9.9", until=now + timedelta(minutes=5), expires_at=now + timedelta(minutes=15))
    status, body, _ = await gw.call("POST", "/v1/auth/login", json=login)
    assert status == 201, body  # the test client signs in from 127.0.0.1, not 10.9.9.9
    await accounts.lock_sign_in(T1, "ann", ALL_SOURCES, until=now + timedelta(minutes=15), expires_at=now + timedelta(minutes=15))
    status, _, headers = await gw.call("POST", "/v1/auth/login", json=login)
    assert status == 429 and int(headers["Retry-After"]) > 5 * 60


async def test_sign_in_rehashes_a_password_under_raised_parameters(gw):
    await gw.tenant()
    weaker = Hasher(time_cost=1, memory_kib=8, parallelism=1)
    old = weaker.hash(PASSWORD)
    user_id, _ = await gw.user("frank", ["auditor"], password_hash=old)
    assert gw.hasher.needs_rehash(old)

    status, _, _ = await gw.call("POST", "/v1/auth/login", json={"tenant": T1, "username": "frank",
                                                                   "password": PASSWORD})
    assert status == 201
    new = (await gw.store.accounts.user(T1, user_id))["password_hash"]
    assert new != old
    assert not gw.hasher.needs_rehash(new)
    assert gw.hasher.verify(new, PASSWORD)


async def test_a_token_works_until_it_is_revoked(gw):
    await gw.tenant()
    _, session = await gw.user("gina", ["auditor"])
    status, body, _ = await gw.call("POST", "/v1/tokens", session, {"name": "ci", "expires_in_seconds": 3600})
    assert status == 201
    token, token_id = body["token"], body["token_id"]
    assert "digest" not in body

    status, body, _ = await gw.call("GET", "/v1/me", token)
    assert status == 200 and body["auth"] == "token"
    status, body, _ = await gw.call("GET", "/v1/tokens", session)
    assert [t["token_id"] for t in body["items"]] == [token_id]

    status, _, _ = await gw.call("DELETE", f"/v1/tokens/{token_id}", session)
    assert status == 204
    assert gw.types()[-1] == "token.revoked"
    status, _, _ = await gw.call("GET", "/v1/me", token)
    assert status == 401
    status, _, _ = await gw.call("DELETE", f"/v1/tokens/{token_id}", session)
    assert status == 404


async def test_someone_elses_token_cannot_be_revoked_without_tokens_manage(gw):
    await gw.tenant()
    _, owner = await gw.user("hank", ["auditor"])
    _, other = await gw.user("iris", ["auditor"])
    _, body, _ = await gw.call("POST", "/v1/tokens", owner, {"name": "mine", "expires_in_seconds": 3600})
    status, _, _ = await gw.call("DELETE", f"/v1/tokens/{body['token_id']}", other)
    assert status == 404


async def test_tenant_lifecycle_moves_only_along_its_transitions(gw):
    await gw.tenant("provider", kind="provider")
    await gw.tenant()
    _, provider = await gw.user("root", ["provider_admin"], tenant_id="provider")
    _, tenant_admin = await gw.user("jane", ["tenant_admin"])

    status, _, _ = await gw.call("POST", f"/v1/tenants/{T1}/resume", provider)
    assert status == 409
    status, body, _ = await gw.call("POST", f"/v1/tenants/{T1}/suspend", provider)
    assert status == 200 and body["status"] == "suspended"
    status, _, _ = await gw.call("GET", "/v1/me", tenant_admin)
    assert status == 401  # a suspended tenant's credentials stop working
    status, body, _ = await gw.call("POST", f"/v1/tenants/{T1}/resume", provider)
    assert status == 200 and body["status"] == "active"
    status, body, _ = await gw.call("POST", f"/v1/tenants/{T1}/offboard", provider)
    assert status == 200 and body["status"] == "offboarding"  # until keysvc has shredded its keys
    status, _, _ = await gw.call("POST", f"/v1/tenants/{T1}/resume", provider)
    assert status == 409
    status, _, _ = await gw.call("POST", "/v1/tenants/provider/suspend", provider)
    assert status == 404
    assert gw.types().count("tenant.suspended") == 1


async def test_a_small_team_user_with_conflicting_roles_acts_only_co_signed(gw):
    await gw.tenant(small_team=True)
    _, both = await gw.user("kim", ["key_custodian", "tenant_admin"])
    _, other_admin = await gw.user("lee", ["tenant_admin"])
    _, auditor = await gw.user("max", ["auditor"])
    new_user = {"username": "nat", "roles": ["auditor"], "account": "person", "email": "nat@one.example"}

    status, body, _ = await gw.call("POST", "/v1/users", both, new_user)
    assert status == 428 and body["field"] == CHANGE_HEADER, body
    change_id = body["change_id"]
    status, body, _ = await gw.call("POST", f"/v1/changes/{change_id}/confirm", auditor)
    assert status == 403 and "users.manage" in body["detail"]  # the co-signer must hold the permission too
    status, body, _ = await gw.call("POST", f"/v1/changes/{change_id}/confirm", both)
    assert status == 403 and "cannot also confirm" in body["detail"]  # and be someone else
    status, body, _ = await gw.call("POST", "/v1/users", both, new_user, headers={CHANGE_HEADER: change_id})
    assert status == 409 and "not been confirmed" in body["detail"]
    status, body, _ = await gw.call("POST", f"/v1/changes/{change_id}/confirm", other_admin)
    assert status == 200 and body["status"] == "confirmed"
    status, body, _ = await gw.call("POST", "/v1/users", both, {**new_user, "username": "eve"},
                                    headers={CHANGE_HEADER: change_id})
    assert status == 409 and "another body" in body["detail"]  # confirmed for that body only
    status, body, _ = await gw.call("POST", "/v1/users", both, new_user, headers={CHANGE_HEADER: change_id})
    assert status == 201 and body["username"] == "nat"
    status, body, _ = await gw.call("POST", "/v1/users", both, new_user, headers={CHANGE_HEADER: change_id})
    assert status == 409 and "already" in body["detail"]  # once
    assert [e.type for e in gw.published if e.type.startswith("change.")] == ["change.cosign_pending",
                                                                               "change.confirmed"]
    status, _, _ = await gw.call("GET", "/v1/users", both)
    assert status == 200  # reading needs no second person


async def test_the_guard_denies_by_default(gw):
    await gw.tenant()
    _, auditor = await gw.user("olga", ["auditor"])
    status, _, _ = await gw.call("GET", "/v1/users")
    assert status == 401
    status, _, _ = await gw.call("POST", "/v1/users", auditor, {"username": "pat", "roles": []})
    assert status == 403
    status, _, _ = await gw.call("POST", "/v1/agent/key-requests", json={"key_id": "k"})
    assert status == 401


async def test_revoking_a_device_publishes_once(gw):
    await gw.tenant()
    _, officer = await gw.user("quinn", ["security_officer"])
    status, body, _ = await gw.call("POST", "/v1/enrollment-tokens", officer, {"name": "laptop"})
    assert status == 201
    status, body, _ = await gw.call("POST", "/v1/agent/enroll", json={
        "enrollment_token": body["token"], "name": "laptop", "public_key": _public_key()})
    assert status == 201
    device_id = body["device_id"]
    status, _, _ = await gw.call("POST", f"/v1/devices/{device_id}/revoke", officer, {"reason": "lost"})
    assert status == 200
    status, _, _ = await gw.call("POST", f"/v1/devices/{device_id}/revoke", officer, {"reason": "lost"})
    assert status == 404
    assert gw.types().count("device.revoked") == 1


async def test_small_team_mode_waits_for_a_second_admin(gw):
    await gw.tenant()
    _, first = await gw.user("rita", ["tenant_admin"])
    _, second = await gw.user("sam", ["tenant_admin"])
    status, body, _ = await gw.call("PUT", "/v1/tenant/settings", first, {"small_team": True})
    assert status == 202
    change_id = body["pending_change"]["change_id"]
    status, body, _ = await gw.call("GET", "/v1/tenant/settings", first)
    assert body["small_team"] is False and len(body["pending_changes"]) == 1

    status, _, _ = await gw.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm", first)
    assert status == 403
    status, body, _ = await gw.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm", second)
    assert status == 200 and body["small_team"] is True and body["pending_changes"] == []
    status, _, _ = await gw.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm", second)
    assert status == 404


async def test_an_mfa_reset_takes_two_admins_and_ends_the_users_sessions(gw):
    await gw.tenant()
    _, first = await gw.user("tom", ["tenant_admin"])
    _, second = await gw.user("uma", ["tenant_admin"])
    victim, victim_session = await gw.user("vic", ["auditor"])
    await gw.store.accounts.begin_mfa(T1, victim, "sealed")
    await gw.store.accounts.confirm_mfa(T1, victim, sealed_secret="sealed", step=1, recovery=["r"], event=events.UserMfaEnrolled(
        tenant_id=T1, actor=events.Actor(kind="user", id=victim), correlation_id="c", user_id=victim))

    status, _, _ = await gw.call("POST", f"/v1/users/{victim}/mfa/reset", first)
    assert status == 202
    status, _, _ = await gw.call("POST", f"/v1/users/{victim}/mfa/reset/confirm", first)
    assert status == 403
    status, body, _ = await gw.call("POST", f"/v1/users/{victim}/mfa/reset/confirm", second)
    assert status == 200 and body["mfa_enrolled"] is False
    stored = await gw.store.accounts.user(T1, victim)
    assert stored["mfa"] is None and stored["recovery"] == [] and "mfa_reset" not in stored
    status, _, _ = await gw.call("GET", "/v1/me", victim_session)
    assert status == 401  # sessions started before the reset are over


async def _serve(gw: Gw, service: str, result) -> list[rpc.RpcRequest]:
    """A stand-in for `service` on the memory bus that answers `result` and keeps each request."""
    seen: list[rpc.RpcRequest] = []

    async def answer(request: rpc.RpcRequest) -> rpc.RpcReply:
        seen.append(request)
        return rpc.RpcReply(result=result)

    await gw.client.app[GATEWAY].bus.serve(service, answer)
    return seen


async def test_query_keys_named_like_call_arguments_are_refused_at_the_edge(gw):
    """The route's query model refuses an undeclared key, naming it, before any call is made."""
    await gw.tenant()
    _, admin = await gw.user("ann", ["tenant_admin"])
    seen = await _serve(gw, "auditsvc", {"items": [], "next": None})
    status, body, _ = await gw.call("GET", "/v1/audit?method=x", admin)
    assert (status, body["field"]) == (400, "method"), body
    assert seen == []
    status, body, _ = await gw.call("GET", "/v1/audit?action=key.created&limit=5", admin)
    assert (status, body) == (200, {"items": [], "next": None})
    assert (seen[0].method, seen[0].params) == ("list_records", {"action": "key.created", "limit": "5"})


async def test_body_fields_named_like_call_arguments_reach_the_service_as_params(gw):
    await gw.tenant()
    _, admin = await gw.user("ann", ["tenant_admin"])
    seen = await _serve(gw, "auditsvc", {"retention_days": 30})
    status, _, _ = await gw.call("PUT", "/v1/audit/retention", admin, {"retention_days": 30, "service": "x"})
    assert status == 200
    assert (seen[0].method, seen[0].params) == ("set_retention", {"retention_days": 30, "service": "x"})


async def test_policy_settings_bodies_are_read_as_before_and_sent_whole(gw):
    await gw.tenant()
    _, officer = await gw.user("ola", ["security_officer"])
    seen = await _serve(gw, "policysvc", {"approval_expiry_seconds": 60, "heartbeat_grace_seconds": 900})
    status, _, _ = await gw.call("PUT", "/v1/policy-settings", officer, {"approval_expiry_seconds": 60.0})
    assert status == 200
    assert seen[0].params == {"approval_expiry_seconds": 60, "heartbeat_grace_seconds": 900}
    for bad in ({"approval_expiry_seconds": 0}, {"heartbeat_grace_seconds": 1.5}, {"colour": "red"}):
        status, problem, _ = await gw.call("PUT", "/v1/policy-settings", officer, bad)
        assert (status, problem["field"]) == (422, next(iter(bad))), problem
    assert len(seen) == 1
