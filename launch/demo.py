"""`strongroom dev --demo`: a demo tenant prepared through the gateway's own API, as its people would.

One person per tenant role (two admins: a grant waits for a second one), each invited by mail
(read back from the dev mail folder), with a password and TOTP enrolled; a sample key, a sample
policy and an enrollment token. What a user needs next is written to the data directory:
`demo/credentials.json` (passwords and TOTP secrets: dev only, 0600), one CLI profile per person
(an API token minted from their MFA session) and `demo.env`, the environment to source.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pyotp

from strongroom import profiles

TENANT = "demo"
DOMAIN = "demo.example"
KEY_NAME = "demo-key"
# (username, roles); ann and dave are the two admins: dave confirms what ann grants.
PEOPLE = (("ann", ("tenant_admin",)), ("dave", ("tenant_admin",)), ("carol", ("key_custodian",)),
          ("sam", ("security_officer",)), ("paula", ("approver",)), ("otto", ("auditor",)))
DEFAULT_PROFILE = "sam"  # the security officer: devices, policies, enrollment tokens
POLICY = {"name": "demo-eu", "disclose": "reasons", "rules": [
    {"id": "eu-only", "effect": "allow", "when": {"all": [
        {"fact": "identity.region", "op": "in", "value": ["eu-west-1"], "provenance": "claimed"},
        {"fact": "integrity.firewall_enabled", "op": "equals", "value": True}]}}]}
FACTS = {"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": True}}
_SETUP = re.compile(r"sr_setup_[A-Za-z0-9_-]+")


class DemoFailed(RuntimeError):
    """The gateway refused a step of the demo's preparation (its answer, never a secret)."""


@dataclass
class Person:
    username: str
    roles: tuple[str, ...]
    password: str = ""
    user_id: str = ""
    totp_secret: str | None = None
    totp_step: int = 0  # the step its confirmation used: a code is good once
    session: str = ""
    api_token: str = ""

    def __post_init__(self) -> None:
        while not self.password or self.username in self.password.lower():  # the gateway refuses that
            self.password = "demo-" + secrets.token_urlsafe(12)

    def __repr__(self) -> str:  # holds a password, a TOTP secret and credentials
        return f"Person({self.username!r}, roles={self.roles})"


class Api:
    """The gateway's HTTP API with one bearer token at a time."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   expect: tuple[int, ...] = (200, 201)) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            if resp.status not in expect:
                detail = data.get("detail") if isinstance(data, dict) else ""
                raise DemoFailed(f"{method} {path}: {resp.status} {detail}")
            return data


def _invitation(mail_dir: Path, address: str) -> str:
    """The setup token of the newest invitation mailed to `address`."""
    found = None
    for path in sorted(mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime):
        text = path.read_text(encoding="utf-8", errors="replace")
        token = _SETUP.search(text)
        if token and f"To: {address}" in text:
            found = token.group(0)
    if found is None:
        raise DemoFailed(f"no invitation for {address} in {mail_dir}")
    return found


async def _sign_in(api: Api, person: Person, mail_dir: Path) -> None:
    """First password from the invitation, sign-in by tenant name, TOTP enrolment where the roles need it."""
    await api.call("POST", "/v1/auth/setup", {"setup_token": _invitation(mail_dir, f"{person.username}@{DOMAIN}"),
                                              "password": person.password})
    login = await api.call("POST", "/v1/auth/login", {"tenant": TENANT, "username": person.username,
                                                      "password": person.password})
    person.session, person.user_id = login["session_token"], login["user_id"]
    if login["mfa_enrolment_required"]:
        enrol = await api.call("POST", "/v1/me/mfa", token=person.session)
        person.totp_secret = enrol["secret"]
        totp = pyotp.TOTP(enrol["secret"])
        person.totp_step = int(time.time()) // totp.interval
        # Confirming upgrades this session to MFA-verified: no second sign-in (and no reused code).
        await api.call("POST", "/v1/me/mfa/confirm", {"code": totp.at(person.totp_step * totp.interval)},
                       token=person.session)
    token = await api.call("POST", "/v1/tokens", {"name": "demo"}, token=person.session)
    person.api_token = token["token"]


async def _provider(api: Api, bootstrap: str) -> str:
    """The provider admin (root), with MFA, creates the demo tenant and its two admins."""
    root = Person("root", ("provider_admin",))
    await api.call("POST", "/v1/auth/bootstrap", {"username": root.username, "password": root.password}, token=bootstrap)
    login = await api.call("POST", "/v1/auth/login", {"tenant": "provider", "username": "root", "password": root.password})
    enrol = await api.call("POST", "/v1/me/mfa", token=login["session_token"])
    await api.call("POST", "/v1/me/mfa/confirm", {"code": pyotp.TOTP(enrol["secret"]).now()},
                   token=login["session_token"])
    tenant = await api.call("POST", "/v1/tenants", {
        "name": TENANT, "admin_username": "ann", "admin_email": f"ann@{DOMAIN}",
        "second_admin_username": "dave", "second_admin_email": f"dave@{DOMAIN}"}, token=login["session_token"])
    return tenant["tenant_id"]


async def _people(api: Api, mail_dir: Path) -> dict[str, Person]:
    people = {name: Person(name, roles) for name, roles in PEOPLE}
    ann, dave = people["ann"], people["dave"]
    await _sign_in(api, ann, mail_dir)
    await _sign_in(api, dave, mail_dir)
    for person in people.values():
        if person.username in ("ann", "dave"):
            continue
        user = await api.call("POST", "/v1/users", {"username": person.username, "email": f"{person.username}@{DOMAIN}",
                                                    "roles": list(person.roles)}, token=ann.session)
        for pending in user.get("pending_roles") or []:  # separation of duties: the second admin confirms
            await api.call("POST", f"/v1/users/{user['user_id']}/roles/{pending['role']}/confirm", token=dave.session)
        await _sign_in(api, person, mail_dir)
    return people


async def _content(api: Api, people: dict[str, Person]) -> dict[str, str]:
    """The custodian's key, the security officer's policy and enrollment token."""
    key = await api.call("POST", "/v1/keys", {"name": KEY_NAME, "algorithm": "AES-256"}, token=people["carol"].session)
    await api.call("POST", "/v1/policies", POLICY, token=people["sam"].session)
    enrolment = await api.call("POST", "/v1/enrollment-tokens", {"name": "demo-vm"}, token=people["sam"].session)
    return {"key_id": key["key_id"], "enrollment_token": enrolment["token"]}


def _private(path: Path, text: str) -> None:
    """Written 0600 from its creation: it holds credentials."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _write(data_dir: Path, url: str, tenant_id: str, people: dict[str, Person], content: dict[str, str]) -> None:
    demo = data_dir / "demo"
    cli_env = {profiles.ENV_CONFIG_DIR: str(demo / "cli")}
    for p in people.values():
        profiles.save(cli_env, p.username, {"url": url, "token": p.api_token, "tenant_id": tenant_id,
                                            "username": p.username})
        _private(demo / "passwords" / p.username, p.password + "\n")
        if p.totp_secret:  # with the step used last, as `strongroom ... --totp-secret-file` keeps it
            _private(demo / "totp" / p.username, p.totp_secret + "\n")
            _private(demo / "totp" / f"{p.username}.last-step", str(p.totp_step))
    _private(demo / "credentials.json", json.dumps({
        "tenant": TENANT, "tenant_id": tenant_id, "key_id": content["key_id"],
        "people": [{"username": p.username, "roles": list(p.roles), "password": p.password,
                    "totp_secret": p.totp_secret} for p in people.values()]}, indent=2) + "\n")
    (demo / "facts.json").write_text(json.dumps(FACTS) + "\n", encoding="utf-8")
    (demo / "policy.json").write_text(json.dumps(POLICY, indent=2) + "\n", encoding="utf-8")
    env = {**base_env(url), profiles.ENV_CONFIG_DIR: str(demo / "cli"), profiles.ENV_PROFILE: DEFAULT_PROFILE,
           "STRONGROOM_AGENT_HOME": str(demo / "agent"), "STRONGROOM_AGENT_FACTS_FILE": str(demo / "facts.json"),
           "STRONGROOM_AGENT_ENROLLMENT_TOKEN": content["enrollment_token"], "DEMO_KEY_ID": content["key_id"]}
    _private(data_dir / "demo.env", env_lines(env))


def base_env(url: str) -> dict[str, str]:
    """This gateway's URL, and the commands of the installation running it first on the PATH."""
    return {"STRONGROOM_URL": url, "PATH": f"{Path(sys.executable).parent}:$PATH"}


def env_lines(env: dict[str, str]) -> str:
    """`export` lines for a shell to source (double quotes, so `$PATH` expands)."""
    return "".join(f'export {k}="{v}"\n' for k, v in env.items())


async def prepare(url: str, bootstrap: str, data_dir: Path) -> bool:
    """Prepares the demo once per data directory; on later starts only a fresh enrollment token.
    Returns True when it prepared the tenant now."""
    async with aiohttp.ClientSession() as http:
        api = Api(http, url)
        credentials = data_dir / "demo" / "credentials.json"
        if credentials.exists():
            sam = profiles.load({profiles.ENV_CONFIG_DIR: str(data_dir / "demo" / "cli")}, "sam")
            enrolment = await api.call("POST", "/v1/enrollment-tokens", {"name": "demo-vm"}, token=sam["token"])
            _refresh_env(data_dir / "demo.env", url, enrolment["token"])
            return False
        tenant_id = await _provider(api, bootstrap)
        people = await _people(api, data_dir / "mail")
        content = await _content(api, people)
        _write(data_dir, url, tenant_id, people, content)
        return True


def _refresh_env(path: Path, url: str, enrollment_token: str) -> None:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("export STRONGROOM_AGENT_ENROLLMENT_TOKEN="):
            line = f'export STRONGROOM_AGENT_ENROLLMENT_TOKEN="{enrollment_token}"'
        elif line.startswith("export STRONGROOM_URL="):
            line = f'export STRONGROOM_URL="{url}"'
        lines.append(line)
    _private(path, "\n".join(lines) + "\n")


def banner(data_dir: Path, fresh: bool) -> str:
    """What `strongroom dev --demo` prints at start: loudly, where the demo's secrets are."""
    rel = os.path.relpath(data_dir)
    return (
        "\n" + "!" * 78 + "\n"
        f"!! DEMO MODE: {'prepared' if fresh else 'kept'} tenant '{TENANT}' with one person per role "
        f"({', '.join(n for n, _ in PEOPLE)}).\n"
        f"!! Their passwords and TOTP secrets are in {rel}/demo/credentials.json (0600): dev only, never in production.\n"
        + "!" * 78 + "\n"
        f"Next, in another terminal (the agent's enrollment token and the demo key id are in demo.env):\n"
        f"  . {rel}/demo.env\n"
        "  strongroom-agent enroll --gateway \"$STRONGROOM_URL\" --name vm-1\n"
        "  strongroom-agent request-key \"$DEMO_KEY_ID\"\n"
        "  strongroom --profile otto audit list        # ann, dave, carol, sam, paula, otto: one profile each\n"
    )
