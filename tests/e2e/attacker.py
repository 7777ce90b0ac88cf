"""One person trying to become two: starting from a single credential, the attacker calls every
escalation route (see `attacker_routes`) with every credential it holds, harvests every id and
every secret any answer delivers, turns each secret into a credential where it can (as a bearer
token, through every redemption route: a setup token, an invitation, an enrollment token), and
repeats until nothing new appears. `goal_findings` then lists whatever that person could do that
needs a second person: holding or using a goal permission, a root share, a key released."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.crypto import shares

from .attacker_routes import (
    ATTACKER_DOMAIN,
    GOAL_PERMISSIONS,
    RELEASE_PERMISSION,
    ROLE_NAMES,
    body_variants,
    escalation_routes,
    goal_routes,
    harvest,
    materialise,
    path_variants,
    permissions_of,
    redemption_routes,
    share_material,
    token_field,
)
from .helpers import EU_FACTS, PASSWORD, BareAgent, raw, sign_in

# Today's co-sign header: a second credential the attacker holds is offered with every call. A
# server that no longer reads it ignores it.
COSIGN_HEADER = "X-Strongroom-Cosign"
_MAILED_SECRET = re.compile(r"\bsr_[A-Za-z0-9_-]{16,}")
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_DER = base64.b64encode(_RSA.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


@dataclass
class Cred:
    api: Any
    via: str
    label: str = "?"
    tenant_id: str | None = None
    user_id: str | None = None
    roles: frozenset[str] = frozenset()
    scopes: tuple[str, ...] | None = None
    username: str | None = None  # set when the attacker knows its password (and may sign in again)
    alive: bool = True

    @property
    def identity(self) -> tuple:
        return (self.tenant_id, self.user_id, self.roles, self.scopes)


@dataclass
class Attacker:
    api: Any  # the unauthenticated test Api
    ids: dict[str, dict[str, None]] = field(default_factory=dict)  # insertion-ordered sets
    creds: list[Cred] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    devices: list[tuple[BareAgent, str]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    password: str = PASSWORD
    calls: int = 0
    max_tenants: int = 2
    rounds: list[str] = field(default_factory=list)
    # async () -> list of message texts: by default, every message the stack's SMTP receiver took
    # for an address at the attacker's own domain (it controls those mailboxes)
    mailboxes: list[Any] = field(default_factory=list)
    idp: Any = None  # a LocalOpenIdProvider the attacker runs: single sign-on is one more way in

    def __post_init__(self):
        self.api = self.api.as_(None)
        if not self.mailboxes and getattr(self.api, "mailbox", None) is not None:
            self.mailboxes = [self._own_domain_mail]
        self._tried: set[str] = set()
        self._origin: dict[str, str] = {}
        self._done: set[tuple] = set()
        self._counter = itertools.count(1)
        self.recipient_private, self.recipient_key = shares.new_recipient_key()
        self.rsa_key = _RSA_DER
        self.escalation, self.redemptions = escalation_routes(), redemption_routes()
        self.sso = self.idp.settings({f"atk-{role}": [role] for role in ROLE_NAMES}) if self.idp else None

    # --- what the attacker knows --------------------------------------------------------------

    def target(self, *key_ids: str) -> None:
        """The tenant's real keys: what a release or an export must never reach."""
        self.targets.extend(key_ids)
        self.seed("key_id", *key_ids)

    def seed(self, name: str, *values: str) -> None:
        for value in values:
            self.ids.setdefault(name, {})[value] = None

    def ids_for(self, name: str, cap: int = 60) -> list[str]:
        """Ids seen under this name; an id of a kind never seen is taken to name an account."""
        return list(self.ids.get(name) or self.ids.get("user_id") or {})[:cap]

    def _harvest(self, out: Any, origin: str = "") -> None:
        found: dict[str, set[str]] = {}
        known = len(self.secrets)
        harvest(out, found, self.secrets)
        for secret in self.secrets[known:]:
            self._origin[secret] = origin
        for name, values in found.items():
            self.seed(name, *values)

    async def _own_domain_mail(self) -> list[str]:
        return [m.get_content() for m in self.api.mailbox.to_domain(ATTACKER_DOMAIN)]

    async def _read_mail(self) -> None:
        """Secrets mailed to the attacker's own domain count as delivered to the attacker: every
        Strongroom secret in them (`sr_...`: a setup token, an invitation)."""
        for mailbox in self.mailboxes:
            for text in await mailbox():
                for word in _MAILED_SECRET.findall(text):
                    if word not in self.secrets:
                        self.secrets.append(word)
                        self._origin[word] = "a mail to the attacker's domain"

    async def _call(self, cred: Cred, method: str, path: str, body, permission: str | None = None):
        self.calls += 1
        status, out, _ = await cred.api.call(method, path, json=body, headers=self._cosign(cred, permission))
        self._harvest(out, f"{method} {path} {json.dumps(body) if body else ''} by {cred.label} -> {status}")
        return status, out

    def _cosign(self, cred: Cred, permission: str | None) -> dict[str, str] | None:
        for other in self.creds:
            if other.alive and other.user_id != cred.user_id and other.tenant_id == cred.tenant_id \
                    and permission in permissions_of(other.roles):
                return {COSIGN_HEADER: other.api.token}
        return None

    # --- credentials ----------------------------------------------------------------------------

    async def adopt(self, api, via: str, *, username: str | None = None) -> Cred | None:
        cred = Cred(api, via, username=username)
        if not await self._refresh(cred):
            return None
        if any(c.identity == cred.identity and c.alive for c in self.creds) and username is None:
            return None  # one more credential of a principal already held adds nothing
        self.creds.append(cred)
        return cred

    async def _refresh(self, cred: Cred) -> bool:
        status, me, _ = await cred.api.call("GET", "/v1/me")
        if status != 200:
            cred.alive = False
            return False
        cred.tenant_id, cred.user_id = me.get("tenant_id"), me.get("user_id")
        cred.label = f"{me.get('username', me.get('kind'))}@{cred.tenant_id}"
        cred.roles = frozenset(me.get("effective_roles", me.get("roles", ())))
        cred.scopes = tuple(me["scopes"]) if me.get("scopes") is not None else None
        stored = frozenset(me.get("roles", ()))
        if cred.username and stored - cred.roles:  # a role gained since sign-in waits for MFA: sign in again
            try:
                cred.api = await sign_in(self.api, cred.username, self.password, tenant=cred.tenant_id)
            except AssertionError:
                return True
            return await self._refresh_once(cred)
        return True

    async def _refresh_once(self, cred: Cred) -> bool:
        username, cred.username = cred.username, None
        try:
            return await self._refresh(cred)
        finally:
            cred.username = username

    def explorers(self) -> list[Cred]:
        """One credential per person; at most two people with the same escalation permissions in a
        tenant (enough for one to grant and the other to confirm; more only repeat them); in at
        most `max_tenants` tenants, the first the attacker got into (a further tenant it creates
        starts from where the first did: one admin alone)."""
        chosen, people, groups = [], set(), {}
        relevant = {r.permission for r in self.escalation}
        tenants = list(dict.fromkeys(c.tenant_id for c in self.creds))[:self.max_tenants]
        for cred in self.creds:
            group = (cred.tenant_id, permissions_of(cred.roles) & relevant)
            if not cred.alive or cred.user_id in people or groups.get(group, 0) >= 2 or cred.tenant_id not in tenants:
                continue
            people.add(cred.user_id)
            groups[group] = groups.get(group, 0) + 1
            chosen.append(cred)
        return chosen

    # --- the search -----------------------------------------------------------------------------

    async def escalate(self, rounds: int = 8) -> int:
        """Rounds until a fixed point (no new call, credential or role); returns the rounds run."""
        started = time.monotonic()
        for n in range(1, rounds + 1):
            before = self._state()
            for cred in list(self.creds):
                if cred.alive:
                    await self._refresh(cred)
            for cred in self.explorers():
                await self._explore(cred)
            await self.redeem()
            self.rounds.append(f"round {n}: {self.calls} calls, {len(self.creds)} credentials, "
                               f"{len(self.explorers())} explorers, {time.monotonic() - started:.1f} s")
            if self._state() == before:
                return n
        raise AssertionError(f"no fixed point after {rounds} rounds: {len(self.creds)} credentials")

    def _state(self) -> tuple:
        return (len(self._done), len(self.secrets), tuple(c.identity for c in self.creds if c.alive))

    async def _explore(self, cred: Cred) -> None:
        held = permissions_of(cred.roles)
        for route in self.escalation:
            if route.permission in held and not (route.method == "GET" and "{" in route.path):
                paths = path_variants(route, self)
                for batch in range(0, len(paths), 8):  # paths name different records: a few at once
                    await asyncio.gather(*(self._explore_path(cred, route, p) for p in paths[batch:batch + 8]))

    async def _explore_path(self, cred: Cred, route, path: str) -> None:
        for body in body_variants(route, self):
            key = (cred.user_id, cred.api.token if cred.user_id is None else "", route.method, path,
                   json.dumps(body, sort_keys=True))
            if key in self._done:
                continue
            sent = materialise(body, self._counter)
            status, _ = await self._call(cred, route.method, path, sent, route.permission)
            if status != 409:  # a conflict (the record changed meanwhile) is tried again next round
                self._done.add(key)
            if 200 <= status < 300 and route.method != "GET":
                self.steps.append(f"{cred.label}: {route.method} {path} {sent or ''} -> {status}")

    async def redeem(self) -> None:
        """Each new secret: as a bearer credential, then through every redemption route."""
        await self._read_mail()
        await self._sso_sign_ins()
        for secret in list(self.secrets):
            if secret in self._tried:
                continue
            self._tried.add(secret)
            if await self.adopt(self.api.as_(secret), f"a secret delivered by {self._origin.get(secret)}, as a bearer token"):
                continue
            for route in self.redemptions:
                await self._redeem_with(route, secret)

    async def _sso_sign_ins(self) -> None:
        """Through the attacker's identity provider, as a member of each mapped group, into each
        tenant the attacker is in (a tenant without that provider configured refuses)."""
        if self.idp is None:
            return
        for tenant_id in {c.tenant_id for c in self.creds if c.tenant_id}:
            for group in self.sso["group_roles"]:
                self.idp.user = {"sub": f"{group}-{tenant_id}", "preferred_username": group, "groups": [group],
                                 "amr": ["pwd", "mfa"]}
                status, out = await self._oidc(tenant_id)
                if status == 201 and "session_token" in out:
                    await self.adopt(self.api.as_(out["session_token"]),
                                     f"single sign-on as {group} through the attacker's own identity provider")

    async def _oidc(self, tenant_id: str) -> tuple[int, Any]:
        """The OIDC code flow, following the redirects as a browser would."""
        session, location = self.api.session, f"{self.api.url}/v1/auth/oidc/start?tenant={tenant_id}"
        for _ in range(3):
            async with session.get(location, allow_redirects=False) as resp:
                if resp.status != 302:
                    return resp.status, await resp.json(content_type=None)
                location = resp.headers["Location"]
        return 0, None

    async def _redeem_with(self, route, secret: str) -> None:
        body = dict(body_variants(route, self)[0] or {})
        body[token_field(route)] = secret
        device = Ed25519PrivateKey.generate()
        if "public_key" in body:
            body["public_key"] = raw(device.public_key())
        body = materialise(body, self._counter)
        self.calls += 1
        status, out, _ = await self.api.call("POST", route.path, json=body)
        if not 200 <= status < 300:
            return
        self._harvest(out)
        self.steps.append(f"redeemed a delivered secret at POST {route.path} -> {status}")
        if "session_token" in out:
            await self.adopt(self.api.as_(out["session_token"]), f"session from POST {route.path}")
        elif out.get("username") and out.get("tenant_id"):
            try:
                person = await sign_in(self.api, out["username"], self.password, tenant=out["tenant_id"])
            except AssertionError as e:
                self.steps.append(f"could not sign in as {out['username']}: {e}")
                return
            await self.adopt(person, f"a secret delivered by {self._origin.get(secret)}, redeemed at POST {route.path}, "
                                     f"then signed in as {out['username']}", username=out["username"])
        elif out.get("key_id") and out.get("tenant_id"):
            where = f"{route.path} with a secret delivered by {self._origin.get(secret)}"
            self.devices.append((BareAgent(self.api, device, out["key_id"], out["tenant_id"]), where))

    # --- the goal -------------------------------------------------------------------------------

    async def goal_findings(self, *, only: frozenset[str] | None = None, tenant_ok=lambda tenant_id: False,
                            probe_held: bool = False) -> list[str]:
        """Everything the held credentials do that needs a second person. `only` limits the goal
        permissions; `tenant_ok(tenant_id)` exempts a tenant's own permissions (the provider's
        custody.root), though never a root share; `probe_held` also uses permissions found held."""
        goals = only or GOAL_PERMISSIONS | {RELEASE_PERMISSION}
        holds, findings, principals = [], [], {}
        for cred in self.creds:
            if cred.alive and await self._refresh(cred):
                principals.setdefault(cred.identity, cred)
        for cred in principals.values():
            held = permissions_of(cred.roles) & goals
            if held and not tenant_ok(cred.tenant_id):
                holds.append(f"{cred.label} holds {sorted(held)} (roles {sorted(cred.roles)}), via: {cred.via}")
            findings += await self._probe_goals(cred, goals, tenant_ok, probe_held)
        await self.redeem()  # enrollment tokens become devices
        released: set[str] = set()  # what was done first, then what is merely held
        findings = [f for f in findings if "root shares" in f] + [f for f in findings if "root shares" not in f]
        for agent, where in self.devices:
            for key_id in [k for k in self.targets if k not in released]:
                status, out, key = await agent.request(key_id, EU_FACTS)
                released |= {key_id} if status == 200 and key else set()
                if status == 200 and key:
                    findings.insert(0, f"key {key_id} released to a device enrolled at {where}")
        return list(dict.fromkeys(findings + holds))

    async def _probe_goals(self, cred: Cred, goals: frozenset[str], tenant_ok, probe_held: bool) -> list[str]:
        """Each goal route: once when refused by role; when held, a release route (an enrollment
        token), and in an exempt tenant a few bodies (a share in the answer is still a finding)."""
        findings, held = [], permissions_of(cred.roles)
        for route in goal_routes():
            exempt = tenant_ok(cred.tenant_id)
            if route.permission not in goals or (route.permission in held and not (
                    probe_held or exempt or route.permission == RELEASE_PERMISSION)):
                continue
            tries = 4 if route.permission in held and route.permission != RELEASE_PERMISSION else 1
            for path in path_variants(route, self, keys=self.targets)[:tries]:
                for body in body_variants(route, self)[:tries]:
                    sent = materialise(body, self._counter)
                    status, out = await self._call(cred, route.method, path, sent, route.permission)
                    if 200 <= status < 300 and share_material(out) and self._ours(out):
                        findings.append(f"{cred.label} got root shares from {route.method} {path}, via: {cred.via}")
                    elif 200 <= status < 300 and status != 202 and not exempt and route.permission != RELEASE_PERMISSION:
                        findings.append(f"{cred.label}: {route.method} {path} -> {status}, via: {cred.via}")
        return findings

    def _ours(self, answer: Any) -> bool:
        """Shares the attacker can open: sealed to the key it sent, or one opens with that key."""
        if self.recipient_key in json.dumps(answer):
            return True
        if not isinstance(answer, dict):
            return False
        sealed = [v for k, v in answer.items() if k.endswith("shares") and isinstance(v, list)]
        fingerprints = [v for k, v in answer.items() if k.endswith("fingerprint") and isinstance(v, str)]
        for n, item in enumerate((i for group in sealed for i in group if isinstance(i, str)), start=1):
            for purpose, fp in itertools.product((shares.INIT, shares.REKEY), fingerprints):
                try:
                    shares.SUITE.decrypt(base64.b64decode(item), self.recipient_private,
                                         info=shares.outbound_info(purpose, fp, n))
                    return True
                except Exception:  # not ours, or not a sealed share at all
                    continue
        return False

    def report(self) -> str:
        """The search, the credentials held, and the steps that changed something: confirmations
        (where a second person should have been needed) first."""
        progress = "\n".join(f"  {r}" for r in self.rounds)
        held = "\n".join(f"  {c.label} roles={sorted(c.roles)} via: {c.via}" for c in self.creds if c.alive)
        confirms = [s for s in self.steps if "/confirm" in s or "/collect" in s]
        others = [s for s in self.steps if s not in confirms]
        steps = "\n".join(f"  {s}" for s in confirms[:25] + others[:35])
        return (f"search:\n{progress}\ncredentials held:\n{held}\n"
                f"steps that succeeded ({len(self.steps)}; confirmations first):\n{steps}")
