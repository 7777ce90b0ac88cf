"""Schemathesis over the served OpenAPI document, against the running stack: every operation,
schema-valid (positive) generated requests, with a token for each role and real ids in the paths.
No request may get a 5xx (`not_a_server_error`), no schema-valid request may be refused as
malformed (`positive_data_acceptance`: a 400/422/413 to a request the document allows, but for
the rules listed in KNOWN_GAPS), and every success must match its documented response model
(`response_schema_conformance`).

The stack serves in this test's event loop, so the generated requests (schemathesis sends them
with `requests`, blocking) go from a worker thread, one operation after another.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass, field
from urllib.parse import urlencode

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES
from schemathesis.core import NotSet

from .api_world import make_world

# What schemathesis' positive_data_acceptance accepts for a schema-valid request (a 5xx is then
# refused on its own: not_a_server_error).
ACCEPTED = {s for code in POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES if "x" not in code for s in [int(code)]} | {
    s for code in POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES if code in ("2xx", "3xx") for s in range(int(code[0]) * 100, int(code[0]) * 100 + 100)}
# Rules a JSON Schema cannot state, each refused naming its field: a schema-valid request may break
# them, and is then refused (400/422) for that field only. Any other refusal fails the test.
KNOWN_GAPS: dict[tuple[str, str], tuple[str, ...]] = {
    # the policy language: a rule's `when` and a group's `match` are conditions policysvc compiles
    ("POST", "/v1/policies"): ("rules",), ("PUT", "/v1/policies/{policy_id}"): ("rules",),
    ("POST", "/v1/policies/simulate"): ("policy.rules", "requests"),
    ("POST", "/v1/groups"): ("match",), ("PUT", "/v1/groups/{group_id}"): ("match", "kind"),  # kind: never changes
    # cross-field: since must not be after until
    ("GET", "/v1/audit"): ("since",), ("GET", "/v1/audit/export"): ("since",), ("GET", "/v1/reports"): ("since",),
    # the resource's or tenant's state: the key's versions, the tenant's minimum key size, who holds which roles
    ("POST", "/v1/keys/{key_id}/min-decryption-version"): ("min_decryption_version",),
    ("POST", "/v1/keys"): ("algorithm",),
    ("POST", "/v1/keys/import"): ("algorithm", "import_token", "wrapped_key_material"),  # a token issued before
    ("POST", "/v1/users"): ("roles",), ("POST", "/v1/users/{user_id}/roles"): ("grant", "revoke"),
    # token scopes are the caller's own permissions; its lifetime is capped by the tenant's setting
    ("POST", "/v1/tokens"): ("scopes", "expires_in_seconds"),
    # where a forwarder may send depends on what its name resolves to (and the provider's allowlist)
    ("POST", "/v1/audit/forwarders"): ("tls_ca_pem", "host", "url"),
    # cryptographic content: a key that must parse, a ciphertext that must open, a certificate
    ("POST", "/v1/keys/{key_id}/export"): ("public_key",), ("POST", "/v1/custody/unseal"): ("sealed_share",),
    ("POST", "/v1/custody/rekey/verify"): ("sealed_share",),
    # a single-use escrow token issued before, and a passphrase sealed to its key
    ("POST", "/v1/agent/volumes/{volume_id}/recovery"): ("escrow_token", "sealed_passphrase"),
    # certificates that must parse; "SSO only" needs single sign-on configured first (the tenant's state)
    ("PUT", "/v1/tenant/settings"): ("sso", "cloud_identity", "sso_only"),
    # TPM public areas that must parse as a restricted AK and EK
    ("POST", "/v1/agent/tpm/enrol"): ("ak_public", "ek_public"),
    # cross-field: a share threshold must not exceed the number of shares (refused for the whole body)
    ("POST", "/v1/custody/init"): ("body",), ("POST", "/v1/custody/rekey"): ("body",),
    # cross-field: a second admin's name and address go together (refused for the whole body)
    ("POST", "/v1/tenants"): ("body",), ("POST", "/v1/auth/bootstrap"): ("body",),
}
EXAMPLES = 8  # generated requests per operation (plus the document's own examples)
# The event stream never ends by itself: its own tests (test_notifications) cover it.
SKIPPED = {("GET", "/v1/events/stream")}
# Run what changes or ends things last, so the rest is exercised against live resources.
ORDER = {"GET": 0, "PUT": 1, "PATCH": 1, "POST": 2, "DELETE": 3}
LAST = ("/logout", "/password", "/disable", "/offboard", "/suspend", "/revoke", "/state", "/destruction")


@dataclass
class Outcome:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    gaps: int = 0  # refusals for a rule in KNOWN_GAPS


def _known_gap(op, response) -> bool:
    fields = KNOWN_GAPS.get((op.method.upper(), op.path), ())
    field = str(response.json().get("field") or "body")  # a rule across fields names none
    return any(field == f or field.startswith((f + ".", f + "[")) for f in fields)


def _send(case, url: str, session: requests.Session, world, token: str | None):
    """Operator and public operations as schemathesis sends them; device operations signed by the
    world's enrolled agent (RFC 9421 over the exact bytes sent), so they reach their views."""
    if case.operation.definition.raw.get("security") != [{"httpSignature": []}]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return case.call(base_url=url, session=session, headers=headers, timeout=60)
    body = b"" if isinstance(case.body, NotSet) else json.dumps(case.body).encode()
    target = url + case.formatted_path + (f"?{urlencode(case.query)}" if case.query else "")
    return session.request(case.method, target, data=body, headers=world.signed(target, case.method, body), timeout=60)


def _exercise(op, url: str, world, token: str | None, outcome: Outcome) -> None:
    """Runs in a worker thread: generated requests for one operation, checked one by one."""
    names = {p.name for p in op.path_parameters}
    strategy = op.as_strategy(path_parameters={k: v for k, v in world.ids.items() if k in names})
    session = requests.Session()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = _send(case, url, session, world, token)
        outcome.statuses[response.status_code] += 1
        # not_a_server_error and positive_data_acceptance, collected rather than raised, so every
        # operation is reported (and nothing is shrunk)
        if 200 <= response.status_code < 300:  # response_schema_conformance: the typed response is the truth
            try:
                case.operation.validate_response(response)
            except Exception as exc:
                outcome.failures.append(f"nonconforming {op.method.upper()} {op.path}: {str(exc)[:600]}")
        if response.status_code in (400, 422) and _known_gap(op, response):
            outcome.gaps += 1
        elif response.status_code >= 500 or response.status_code not in ACCEPTED:
            outcome.failures.append(f"{op.method.upper()} {op.path}: {response.status_code} {response.text[:300]} <- "
                                    f"path={case.path_parameters} query={case.query} body={str(case.body)[:300]}")

    run()


async def test_schema_valid_requests_are_accepted_and_never_a_server_error(api, stack):
    world = await make_world(api)
    status, spec, _ = await api.as_(None).call("GET", "/v1/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in SKIPPED]
    operations.sort(key=lambda op: (any(op.path.endswith(s) or s + "/" in op.path for s in LAST),
                                    ORDER.get(op.method.upper(), 2)))
    per_operation: dict[str, Outcome] = {}
    for op in operations:
        outcome = per_operation.setdefault(f"{op.method.upper()} {op.path}", Outcome())
        token = world.token_for(op.path, op.definition.raw.get("x-permission"))
        await asyncio.to_thread(_exercise, op, stack.url, world, token, outcome)
    requests_sent = sum(sum(o.statuses.values()) for o in per_operation.values())
    with_2xx = [name for name, o in per_operation.items() if any(200 <= s < 300 for s in o.statuses)]
    only_denied = [name for name, o in per_operation.items() if set(o.statuses) <= {401, 403}]
    failures = [f for o in per_operation.values() for f in o.failures]
    print(f"\nschemathesis: {len(per_operation)} operations, {requests_sent} requests, "
          f"{len(with_2xx)} operations answered 2xx, {len(only_denied)} only 401/403: {only_denied}")
    print(f"statuses: {sum((o.statuses for o in per_operation.values()), collections.Counter())}, "
          f"of which refused for a known gap: {sum(o.gaps for o in per_operation.values())}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:60])
