"""Test-side helpers: set up a tenant through the API, and a bare agent that signs requests
itself, so tests can also send what a well-behaved agent never would (tampered, replayed)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass

import pyotp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.crypto import httpsig, release

ALLOW_EU = {
    "name": "eu-volumes",
    "disclose": "reasons",
    "rules": [
        {"id": "eu-only", "effect": "allow",
         "when": {"all": [{"fact": "identity.region", "op": "in", "value": ["eu-west-1", "eu-central-1"]},
                          {"fact": "integrity.firewall_enabled", "op": "equals", "value": True}]}},
    ],
}
EU_FACTS = {"identity": {"region": "eu-west-1", "cloud_provider": "aws"}, "integrity": {"firewall_enabled": True}}


def raw(public_key) -> str:
    return base64.b64encode(
        public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


PASSWORD = "vault-door-orchid-7291"


@dataclass
class Tenant:
    tenant_id: str
    admin: object  # a TeamApi: each call goes as a tenant user whose roles allow it (see below)
    key_id: str
    policy_id: str
    team: Team | None = None

    @property
    def extra_records(self) -> int:
        """Audit records beyond those of the single first-admin token make_tenant once created:
        its team's user.* records, less that token.created. Exact-count assertions add this."""
        return self.team.account_records - 1 if self.team else 0


async def sign_in(api, username: str, password: str = PASSWORD, *, tenant: str | None = None, enrol_step: int = 0):
    """Logs in; enrols TOTP when the user's roles require it (confirmed with the code of the step
    `enrol_step` away from now: -1 leaves the current and next codes unused, for a test that signs
    in again and then steps up). The returned Api carries `user_id`, `totp_secret` and
    `recovery_codes` for tests that need them."""
    body = {"username": username, "password": password}
    if tenant is not None:
        body["tenant"] = tenant
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/login", json=body)
    assert status == 201, out
    user = api.as_(out["session_token"])
    user.user_id, user.totp_secret, user.recovery_codes = out["user_id"], None, []
    if out["mfa_enrolment_required"]:
        status, enrol, _ = await user.call("POST", "/v1/me/mfa")
        assert status == 201, enrol
        if enrol_step and time.time() % 30 > 24:
            # A code one step away is accepted only while the server's clock is in the same step:
            # near a boundary, wait for the next step rather than race it on a busy box.
            await asyncio.sleep(30.5 - time.time() % 30)
        code = pyotp.TOTP(enrol["secret"]).at(time.time() + 30 * enrol_step)
        status, done, _ = await user.call("POST", "/v1/me/mfa/confirm", json={"code": code})
        assert status == 200, done
        user.totp_secret, user.recovery_codes = enrol["secret"], done["recovery_codes"]
    return user


def address(username: str, tenant: str = "acme") -> str:
    """The e-mail address the helpers give a person (in the tenant's own domain)."""
    return f"{username}@{re.sub(r'[^a-z0-9-]+', '-', tenant.lower()).strip('-') or 'tenant'}.example"


async def accept_invitation(api, email: str, password: str = PASSWORD) -> dict:
    """As the invitee: read the newest invitation in their mailbox (real SMTP) and set a password."""
    token = api.mailbox.setup_token(email)
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/setup", json={"setup_token": token, "password": password})
    assert status == 200, out
    return out


_PROVIDER_ADMINS: dict[str, object] = {}  # bootstrap credential -> signed-in provider admin


async def provider_admin(api):
    """The provider admin of this stack: created once with the bootstrap credential, which names a
    second provider admin too (invited by mail; see `second_provider_admin`)."""
    if api.token in _PROVIDER_ADMINS:
        return _PROVIDER_ADMINS[api.token]
    status, out, _ = await api.call("POST", "/v1/auth/bootstrap", json={
        "username": "provider-admin", "password": PASSWORD, "email": address("provider-admin", "provider"),
        "second_admin_username": "provider-admin-2", "second_admin_email": address("provider-admin-2", "provider")})
    assert status == 201, out
    admin = await sign_in(api, "provider-admin", tenant="provider")
    _PROVIDER_ADMINS[api.token] = admin
    return admin


def _route_permission(method: str, path: str) -> str | None:
    from services.gateway.routes import ROUTES

    path = path.split("?", 1)[0]
    candidates = [r for r in ROUTES if r.method == method and r.auth == "operator"
                  and re.fullmatch(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(r.path)), path)]
    candidates.sort(key=lambda r: r.path.count("{"))
    return candidates[0].permission if candidates else None


# Which role a helper user gets for a permission, most specific first (never tenant admin:
# separation of duties keeps the people who manage users away from keys and approvals).
_ROLE_PREFERENCE = ("security_officer", "key_custodian", "approver", "auditor")


class Team:
    """A tenant's people, created through the API honouring separation of duties: two tenant
    admins (so custodian and approver grants can be confirmed by a second one) and, on demand,
    one user per role, each signed in (with TOTP where the role requires it)."""

    def __init__(self, api, tenant_id: str, admin, second_admin, name: str = "acme"):
        self.api, self.tenant_id, self.name = api, tenant_id, name
        self.admin, self.second_admin = admin, second_admin
        self.by_role: dict[str, object] = {"tenant_admin": admin}
        self._counter = 0
        self.account_records = 0  # user.* audit records this team caused

    async def user(self, *roles: str, username: str | None = None, enrol_step: int = 0):
        """A new signed-in user holding `roles` (pending grants confirmed by the second admin;
        `enrol_step` as in `sign_in`)."""
        self._counter += 1
        username = username or f"{'-'.join(r.replace('_', '-') for r in roles) or 'member'}-{self._counter}"
        email = address(username, self.name)
        status, out, _ = await self.admin.call("POST", "/v1/users", json={"username": username, "roles": list(roles),
                                                                          "email": email})
        assert status == 201, out
        for pending in out["pending_roles"]:
            status, done, _ = await self.second_admin.call(
                "POST", f"/v1/users/{out['user_id']}/roles/{pending['role']}/confirm")
            assert status == 200, done
        await accept_invitation(self.api, email)
        person = await sign_in(self.api, username, tenant=self.tenant_id, enrol_step=enrol_step)
        # created, each confirmation, password set, logged in, and MFA enrolled where required
        self.account_records += 3 + len(out["pending_roles"]) + (person.totp_secret is not None)
        return person

    async def for_role(self, role: str):
        if role not in self.by_role:
            self.by_role[role] = await self.user(role)
        return self.by_role[role]

    async def for_permission(self, permission: str | None):
        from services.gateway.permissions import PERMISSIONS

        holders = PERMISSIONS.get(permission or "", frozenset())
        if "tenant_admin" in holders or "member" in holders:
            return self.admin
        for role in _ROLE_PREFERENCE:
            if role in holders:
                return await self.for_role(role)
        return self.admin  # nobody in a tenant may: the call shows the refusal


class TeamApi:
    """Looks like the test Api; each call goes as the team member whose role the route needs."""

    def __init__(self, team: Team):
        self.team = team
        self.session, self.url, self.token = team.admin.session, team.admin.url, team.admin.token

    def as_(self, token):
        return self.team.admin.as_(token)

    async def call(self, method: str, path: str, json=None, data: bytes | None = None, headers=None):
        if method == "POST" and path == "/v1/tokens" and isinstance(json, dict) and "roles" in json:
            # The idiom from before named accounts ("a token with roles X" = another person):
            # now a new user holding those roles, signed in; its session is the token.
            person = await self.team.user(*json["roles"])
            return 201, {"token": person.token, "user_id": person.user_id, "name": json.get("name")}, "application/json"
        member = await self.team.for_permission(_route_permission(method, path))
        return await member.call(method, path, json=json, data=data, headers=headers)


async def make_team(api, name: str = "acme") -> Team:
    """A customer tenant created by the provider admin with its first two tenant admins, each
    invited at their own address; each sets a password from the invitation in their mailbox."""
    provider = await provider_admin(api)
    status, body, _ = await provider.call("POST", "/v1/tenants", json={
        "name": name, "admin_email": address("admin", name),
        "second_admin_username": "second-admin", "second_admin_email": address("second-admin", name)})
    assert status == 201, body
    tenant_id = body["tenant_id"]
    await accept_invitation(api, address("admin", name))
    admin = await sign_in(api, body["admin_username"], tenant=tenant_id)
    await accept_invitation(api, address("second-admin", name))
    team = Team(api, tenant_id, admin, await sign_in(api, "second-admin", tenant=tenant_id), name)
    team.account_records = 8  # two admins: created, password set, logged in, MFA enrolled
    return team


async def make_tenant(api, name: str = "acme", policy: dict | None = None, algorithm: str = "AES-256") -> Tenant:
    team = await make_team(api, name)
    admin = TeamApi(team)
    status, key, _ = await admin.call("POST", "/v1/keys", json={"name": f"{name}-vol", "algorithm": algorithm})
    assert status == 201, key
    status, pol, _ = await admin.call("POST", "/v1/policies", json=policy or ALLOW_EU)
    assert status == 201, pol
    return Tenant(team.tenant_id, admin, key["key_id"], pol["policy_id"], team)


class BareAgent:
    def __init__(self, api, signing_key: Ed25519PrivateKey, key_id: str, tenant_id: str):
        self.api, self.signing_key, self.key_id, self.tenant_id = api.as_(None), signing_key, key_id, tenant_id
        self.device_id = key_id.split("/", 1)[1]

    @classmethod
    async def enroll(cls, tenant: Tenant, api, name: str = "vm-1", evidence=None) -> BareAgent:
        """``evidence``: a function of the new device key giving the evidence to enrol with."""
        status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": name})
        assert status == 201, enr
        key = Ed25519PrivateKey.generate()
        body = {"enrollment_token": enr["token"], "name": name, "public_key": raw(key.public_key())}
        if evidence is not None:
            body["evidence"] = evidence(key)
        status, dev, _ = await api.as_(None).call("POST", "/v1/agent/enroll", json=body)
        assert status == 201, dev
        return cls(api, key, dev["key_id"], dev["tenant_id"])

    def signed(self, body: bytes, **overrides) -> dict[str, str]:
        url = self.api.url + "/v1/agent/key-requests"
        headers = {"Content-Type": "application/json"}
        headers.update(httpsig.sign_request(method="POST", url=url, headers=headers, body=body,
                                            key_id=self.key_id, private_key=self.signing_key, **overrides))
        return headers

    async def challenge(self) -> str:
        """A single-use challenge bound to this device (POST /v1/agent/challenges, signed)."""
        url = self.api.url + "/v1/agent/challenges"
        headers = httpsig.sign_request(method="POST", url=url, headers={}, body=b"", key_id=self.key_id,
                                       private_key=self.signing_key)
        status, out, _ = await self.api.call("POST", "/v1/agent/challenges", data=b"", headers=headers)
        assert status == 201, out
        return out["challenge"]

    def request_body(self, key_id: str, facts: dict, key_version: int | None = None,
                     evidence: dict | None = None, challenge: str | None = None) -> tuple[bytes, X25519PrivateKey]:
        ephemeral = X25519PrivateKey.generate()
        body = {"key_id": key_id, "facts": facts, "ephemeral_public_key": raw(ephemeral.public_key())}
        if challenge is not None:
            body["challenge"] = challenge
        if key_version is not None:
            body["key_version"] = key_version
        if evidence is not None:
            body["evidence"] = evidence
        return json.dumps(body).encode(), ephemeral

    async def request(self, key_id: str, facts: dict, key_version: int | None = None, evidence: dict | None = None,
                      challenge: str | None = None):
        body, ephemeral = self.request_body(key_id, facts, key_version, evidence, challenge)
        status, out, ctype = await self.api.call("POST", "/v1/agent/key-requests", data=body, headers=self.signed(body))
        key = None
        if status == 200:
            key = release.open_sealed(
                base64.b64decode(out["sealed_key"]), ephemeral,
                release.release_info(tenant_id=self.tenant_id, request_id=out["request_id"],
                                     key_id=out["key_id"], key_version=out["key_version"]),
            )
        return status, out, key


def signed_evidence(issuer: Ed25519PrivateKey, agent: BareAgent | Ed25519PrivateKey, facts: dict, **claims) -> dict:
    """``signed`` evidence (services/gateway/evidence/signed.py): ``facts`` signed by ``issuer``,
    bound to the agent's key (or this device key) unless ``claims`` say otherwise."""
    key = agent.signing_key if isinstance(agent, BareAgent) else agent
    subject = f"test:{agent.device_id}" if isinstance(agent, BareAgent) else None
    document = json.dumps({"facts": facts, "public_key": raw(key.public_key()), "subject": subject,
                           **claims}).encode()
    return {"kind": "signed", "document": base64.b64encode(document).decode(),
            "signature": base64.b64encode(issuer.sign(document)).decode()}


async def audit_records(admin, *, expect_at_least: int = 0, timeout: float = 10.0) -> list[dict]:
    """All of a tenant's audit records, waiting until at least `expect_at_least` have landed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records, after = [], 0
        while True:
            status, page, _ = await admin.call("GET", f"/v1/audit?after={after}&limit=1000")
            assert status == 200, page
            records += page["items"]
            if page["next"] is None:
                break
            after = page["next"]
        # make_tenant's team (user.* records) replaced the first-admin token it used to create:
        # counts written against that baseline still hold.
        team = getattr(admin, "team", None)
        counted = len(records) - (team.account_records - 1 if team else 0)
        if counted >= expect_at_least or asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.1)


async def audit_records_until(admin, predicate, *, timeout: float = 10.0) -> list[dict]:
    """A tenant's audit records once `predicate(records)` holds (or the timeout, for the assert)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records = await audit_records(admin)
        if predicate(records) or asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.1)


async def put_confirmed_settings(team: Team, body: dict) -> dict:
    """PUT /v1/tenant/settings by the first admin; a change that waits for a second admin
    (small-team mode on, single sign-on) is confirmed by the second. Returns the settings."""
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json=body)
    if status == 202:
        change_id = out["pending_change"]["change_id"]
        status, out, _ = await team.second_admin.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm")
    assert status == 200, out
    return out


# --- root-of-trust shares, sealed end to end as `strongroom operator ...` seals them ---------------


def keysvc_key_id(stack) -> str:
    """The id a custodian pins: computed from the stack's keysvc signing key file, not from the API."""
    from pathlib import Path

    from shared.crypto import shares

    key = serialization.load_pem_private_key(Path(stack.key_settings.signing_key_file).read_bytes(), password=None)
    return shares.key_id(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


async def post_share(provider, stack, share: str, *, purpose: str = "unseal"):
    """Seal `share` to keysvc's transport key for the current round and submit it: (status, body)."""
    from shared.crypto import shares

    status, transport, _ = await provider.call("POST", "/v1/custody/transport-key", json={"purpose": purpose})
    if status != 200:
        return status, transport
    sealed = shares.seal_share(share, transport, pinned_key_id=keysvc_key_id(stack), purpose=purpose,
                               round_id=transport["round_id"])
    path = "/v1/custody/unseal" if purpose == shares.UNSEAL else "/v1/custody/rekey/verify"
    status, out, _ = await provider.call("POST", path, json={"sealed_share": sealed, "round_id": transport["round_id"]})
    return status, out


class Custodian:
    """A provider root custodian: a signed-in person and the X25519 key pair their CLI keeps
    (only the public half was enrolled with keysvc)."""

    def __init__(self, person, private: X25519PrivateKey):
        self.person, self.private = person, private
        self.user_id = person.user_id

    async def call(self, *args, **kwargs):
        return await self.person.call(*args, **kwargs)


_SECOND_PROVIDER_ADMINS: dict[str, object] = {}


async def second_provider_admin(api):
    """The second provider admin the bootstrap named (so a provider-admin or root-custodian grant
    can be confirmed by a second person): sets a password from their invitation and signs in."""
    if api.token in _SECOND_PROVIDER_ADMINS:
        return _SECOND_PROVIDER_ADMINS[api.token]
    await provider_admin(api)
    await accept_invitation(api, address("provider-admin-2", "provider"))
    second = await sign_in(api, "provider-admin-2", tenant="provider")
    _SECOND_PROVIDER_ADMINS[api.token] = second
    return second


async def root_custodian(api, name: str, *, enrol: bool = True) -> Custodian:
    """A provider user granted root_custodian by one provider admin, confirmed by a second, signed
    in with TOTP; with `enrol`, their own X25519 public key enrolled as `strongroom operator enrol-key` does."""
    from shared.crypto import shares

    provider, second = await provider_admin(api), await second_provider_admin(api)
    email = address(name, "provider")
    status, out, _ = await provider.call("POST", "/v1/users", json={"username": name, "roles": ["root_custodian"],
                                                                   "email": email})
    assert status == 201 and [p["role"] for p in out["pending_roles"]] == ["root_custodian"], out
    status, done, _ = await second.call("POST", f"/v1/users/{out['user_id']}/roles/root_custodian/confirm")
    assert status == 200, done
    await accept_invitation(api, email)
    custodian = Custodian(await sign_in(api, name, tenant="provider"), X25519PrivateKey.generate())
    if enrol:
        status, done, _ = await custodian.call("PUT", "/v1/custody/custodian-key",
                                               json={"public_key": shares.public_b64(custodian.private)})
        assert status == 200, done
    return custodian


async def root_custodians(api, count: int) -> list[Custodian]:
    return [await root_custodian(api, f"root-custodian-{i + 1}") for i in range(count)]


async def my_share(custodian: Custodian, stack) -> tuple[int, dict]:
    """The custodian fetches their own sealed share and opens it with their private key."""
    from shared.crypto import shares

    status, out, _ = await custodian.call("GET", "/v1/custody/shares/mine")
    if status == 200:
        out = {**out, "share": shares.open_custodian_share(out, custodian.private, pinned_key_id=keysvc_key_id(stack))}
    return status, out


async def new_shares(custodians: list[Custodian], stack, path: str, body: dict, *, starter: Custodian | None = None):
    """POST init or re-key as `starter` (default: the first custodian), naming `custodians`; on
    success each custodian fetches and opens their own share and the answer gains `opened`, in order."""
    starter = starter or custodians[0]
    body = {"custodians": [c.user_id for c in custodians], **body}
    status, out, _ = await starter.call("POST", path, json=body)
    if status in (200, 201):
        opened = []
        for custodian in custodians:
            got, mine = await my_share(custodian, stack)
            assert got == 200, mine
            opened.append(mine["share"])
        out = {**out, "opened": opened}
    return status, out
