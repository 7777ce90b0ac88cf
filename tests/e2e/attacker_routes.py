"""Which routes an attacker tries, and with what: chosen from the route table (`ROUTES`) and the
role records (`roles.py`), so a route added later is tried without editing the tests.

The selection rules, stated once:

- *Goal* routes: operator routes whose permission is in `GOAL_PERMISSIONS` (releasing, exporting
  or managing keys, custody, deciding approvals, the root of trust). `RELEASE_PERMISSION` routes
  (a device enrolment) count too: a device of one's own then asks for a key.
- *Escalation* routes: every other operator route about accounts, roles, tokens, settings,
  single sign-on, MFA, co-signing or pending changes: its permission is in an account family
  (`ACCOUNT_FAMILIES`) or a segment of its path is an account word (`ACCOUNT_WORDS`), less the
  routes that only take power away or end the caller's own sign-in (`SELF_DEFEATING`, DELETE).
- *Redemption* routes: unauthenticated POSTs whose body carries a token-like field (a first
  password with a setup token, accepting an invitation, enrolling a device): where a delivered
  secret is turned into an account or a device.

Bodies come from each route's pydantic model (`model_json_schema`): role fields take every role
name, booleans as below, e-mail fields an address at the attacker's own domain, id fields every id
the attacker has seen, token fields every secret the attacker holds, single sign-on settings the
attacker's own identity provider (mapping a group to each role); booleans True, except a switch
that only narrows the ways in (`..._only`), tried False: turning it on would only shut the
attacker's own mailbox path (invitations) before the search has tried it.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from pydantic.json_schema import models_json_schema

from services.gateway.permissions import PERMISSIONS
from services.gateway.roles import PROVIDER_ROLES, TENANT_ROLES
from services.gateway.routes import ROUTES, Route

GOAL_PERMISSIONS = frozenset({"keys.export", "keys.manage", "custody.manage", "approvals.decide", "custody.root"})
RELEASE_PERMISSION = "devices.enroll"
ACCOUNT_FAMILIES = ("users.", "tokens.", "tenant.", "tenants.create", "account.")
ACCOUNT_WORDS = frozenset({"users", "me", "tokens", "token-requests", "settings", "sso", "mfa", "roles", "confirm",
                           "changes", "cosign", "invitations", "invites", "approvals-of-changes"})
SELF_DEFEATING = frozenset({"logout", "disable", "revoke", "suspend", "offboard", "cancel", "deny", "password"})
ROLE_NAMES = tuple(dict.fromkeys(TENANT_ROLES + PROVIDER_ROLES))
ATTACKER_DOMAIN = "attacker.example"

OMIT = object()  # leave the field out (its default)
UNIQUE = "\x00unique"  # a fresh name at call time
UNIQUE_USER = "\x00user"  # a fresh username at call time
EMAIL = "\x00email"  # a fresh address at the attacker's domain at call time


def _words(path: str) -> set[str]:
    return {s for s in path.split("/") if s and not s.startswith("{")}


def goal_routes(routes: tuple[Route, ...] = ROUTES) -> list[Route]:
    """Releases first, then exports, then the rest: a harmless finding is never hidden by a
    destructive one made before it."""
    goals = [r for r in routes if r.auth == "operator" and r.permission in GOAL_PERMISSIONS | {RELEASE_PERMISSION}]
    order = {RELEASE_PERMISSION: 0, "keys.export": 1}
    return sorted(goals, key=lambda r: order.get(r.permission or "", 2))


def escalation_routes(routes: tuple[Route, ...] = ROUTES) -> list[Route]:
    chosen = []
    for r in routes:
        if r.auth != "operator" or r.permission in GOAL_PERMISSIONS or r.permission == RELEASE_PERMISSION:
            continue
        if r.method == "DELETE" or _words(r.path) & SELF_DEFEATING:
            continue
        if (r.permission or "").startswith(ACCOUNT_FAMILIES) or _words(r.path) & ACCOUNT_WORDS:
            chosen.append(r)
    return chosen


def redemption_routes(routes: tuple[Route, ...] = ROUTES) -> list[Route]:
    return [r for r in routes if r.auth == "none" and r.method == "POST" and r.body is not None
            and any("token" in name for name in r.body.model_fields)]


def token_field(route: Route) -> str:
    return next(name for name in route.body.model_fields if "token" in name)  # type: ignore[union-attr]


def permissions_of(roles) -> frozenset[str]:
    return frozenset(p for p, holders in PERMISSIONS.items() if not holders.isdisjoint(roles))


# --- bodies -----------------------------------------------------------------------------------


def _resolve(spec: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in spec:  # a schema shared in the OpenAPI document only (FactValue) is any JSON here
        return _resolve(defs.get(spec["$ref"].rsplit("/", 1)[1], {}), defs)
    if "anyOf" in spec:
        branch = next((b for b in spec["anyOf"] if b.get("type") != "null"), {})
        return {**_resolve(branch, defs), **{k: v for k, v in spec.items() if k != "anyOf"}}
    return spec


def _string_values(name: str, spec: dict[str, Any], ctx) -> list[Any]:
    if "role" in name:
        return list(ROLE_NAMES)
    if "email" in name or spec.get("format") == "email":
        return [EMAIL]
    if "password" in name:
        return [ctx.password]
    if "public_key" in name:
        return [ctx.recipient_key if "recipient" in name else ctx.rsa_key]
    if name.endswith("_id"):
        return ctx.ids_for(name)
    if "token" in name or "code" in name:  # a delivered secret or confirmation code
        return [v for v in ctx.secrets if _fits(v, spec)]
    if "username" in name:
        return [UNIQUE_USER]
    return [UNIQUE]


def _fits(value: str, spec: dict[str, Any]) -> bool:
    if not spec.get("minLength", 0) <= len(value) <= spec.get("maxLength", len(value)):
        return False
    return "pattern" not in spec or re.search(spec["pattern"], value) is not None


def _array_values(name: str, spec: dict[str, Any], defs) -> list[Any]:
    item = _resolve(spec.get("items", {}), defs)
    if "revoke" in name:
        return [[]]
    if "role" in name or "grant" in name:
        return [[role] for role in ROLE_NAMES]
    if "enum" in item:
        return [[value] for value in item["enum"]]
    return [[]]


def field_values(name: str, spec: dict[str, Any], required: bool, defs, ctx) -> list[Any]:
    """Every value worth trying for one field; OMIT leaves an optional field at its default."""
    spec, name = _resolve(spec, defs), name.lower()
    kind = spec.get("type")
    if "enum" in spec:
        values = list(spec["enum"])
    elif kind == "boolean":
        # A switch that narrows the ways in ("sso_only": no setup secrets) only takes power away,
        # and at once: it is tried off (widening, and so waiting for a second admin), never on.
        values = [False] if name.endswith("_only") else [True]
    elif kind == "array":
        values = _array_values(name, spec, defs)
    elif kind in ("integer", "number"):
        values = [spec.get("default", spec.get("minimum", 1))] if required else []
    elif kind == "string":
        values = _string_values(name, spec, ctx) if required or not _plain(name) else []
    elif kind == "object" and "sso" in name and getattr(ctx, "sso", None):
        values = [ctx.sso]  # single sign-on through an identity provider the attacker runs
    else:  # other nested objects: only when required, then empty
        values = [{}] if required else []
    if not required and spec.get("default", OMIT) not in values and kind != "array":  # an array's default: empty
        values.append(OMIT)
    return values or [OMIT]


def _plain(name: str) -> bool:
    """An optional string field with no bearing on who holds what (a comment, a description)."""
    return not any(word in name for word in ("role", "email", "password", "public_key", "token", "code", "_id", "user"))


def body_variants(route: Route, ctx) -> list[dict[str, Any] | None]:
    """Bodies to try: every field's first value, then each other value of one field at a time
    (a combination is reached over rounds: a user created with one role is granted the others).
    Placeholders (`UNIQUE`...) are filled in by `materialise` at call time."""
    if route.body is None:
        return [None]
    # As the OpenAPI document builds it (a shared schema such as FactValue stays a bare reference).
    keys, top = models_json_schema([(route.body, "validation")], ref_template="#/components/schemas/{model}")
    defs = top.get("$defs", {})
    schema = _resolve(keys[(route.body, "validation")], defs)
    required = set(schema.get("required", ()))
    names = list(schema.get("properties", {}))
    choices = [field_values(n, schema["properties"][n], n in required, defs, ctx) for n in names]
    base = [values[0] for values in choices]
    combos = [base] + [[*base[:i], v, *base[i + 1:]] for i, values in enumerate(choices) for v in values[1:]]
    return [{n: v for n, v in zip(names, combo, strict=True) if v is not OMIT} for combo in combos]


def path_variants(route: Route, ctx, cap: int = 400, keys: list[str] | None = None) -> list[str]:
    """Paths with every known value of each parameter (`keys`: the key ids to use, when given)."""
    params = re.findall(r"{([^}]+)}", route.path)
    choices = []
    for name in params:
        if name == "key_id" and keys is not None:
            choices.append(list(keys))
        elif name == "role":  # the roles seen pending (named alone), else every role
            choices.append(list(ctx.ids.get("role") or ROLE_NAMES))
        elif name.endswith("_id") or name == "id":
            choices.append(ctx.ids_for(name))
        else:
            choices.append(["1"])
    paths = []
    for combo in itertools.islice(itertools.product(*choices), cap):
        path = route.path
        for name, value in zip(params, combo, strict=True):
            path = path.replace("{" + name + "}", value)
        paths.append(path)
    return paths


def materialise(body: dict[str, Any] | None, counter: itertools.count) -> dict[str, Any] | None:
    if body is None:
        return None
    text = json.dumps(body)
    for marker, make in ((UNIQUE_USER, lambda n: f"atk-{n}"), (EMAIL, lambda n: f"atk-{n}@{ATTACKER_DOMAIN}"),
                         (UNIQUE, lambda n: f"atk{n}")):
        escaped = json.dumps(marker)[1:-1]
        while escaped in text:
            text = text.replace(escaped, make(next(counter)), 1)
    return json.loads(text)


# --- what a response delivers ----------------------------------------------------------------

_SECRET_KEY = re.compile(r"token|secret|password|share|recovery|invit|code", re.IGNORECASE)


def harvest(value: Any, ids: dict[str, set[str]], secrets: list[str], key: str = "") -> None:
    """Every id (`*_id` fields) and every credential-looking string in a response body."""
    if isinstance(value, dict):
        for k, v in value.items():
            harvest(v, ids, secrets, k)
    elif isinstance(value, list):
        for v in value:
            harvest(v, ids, secrets, key)
    elif isinstance(value, str):
        if key.endswith("_id") or key in ("id", "role"):  # a role named alone: a pending grant
            ids.setdefault(key, set()).add(value)
        credential = _SECRET_KEY.search(key) and not key.endswith("_id") and len(value) >= 8
        if (credential or value.startswith("sr_")) and value not in secrets:
            secrets.append(value)


def share_material(value: Any, key: str = "") -> bool:
    """Whether a response carries root-of-trust shares (sealed or not)."""
    if isinstance(value, dict):
        return any(share_material(v, k) for k, v in value.items())
    if re.search(r"shares?$", key) and value and not isinstance(value, (int, bool)):
        return True
    return isinstance(value, list) and any(share_material(v, key) for v in value if isinstance(v, dict))
