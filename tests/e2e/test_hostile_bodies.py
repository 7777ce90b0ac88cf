"""Hypothesis posts generated hostile bodies to every JSON route of the route table: deep nesting,
huge strings and arrays within the body limit, wrong types, unicode (lone surrogates, NUL,
right-to-left overrides), numbers out of range, invalid JSON and UTF-8. Operator routes go with a
token whose role may call them, agent routes signed by an enrolled device, so the body reaches
the view. Never a 5xx; every refusal is problem+json, a malformed body (400/422) names the field,
and no refusal echoes a value it was sent (a rule across fields names no field, blaming the body). Prints the figures: requests, 4xx, 5xx, and the
in-process gateway's resident memory before and after.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.routes import ROUTES
from services.gateway.settings import GatewaySettings

from .api_world import make_world

EXAMPLES = 60  # bodies per route
LIMIT = GatewaySettings.model_fields["max_body_bytes"].default
MARKER = "zq-echo-canary"  # in every generated value: a refusal must never send it back
HOSTILE_TEXT = st.sampled_from([
    MARKER + "\u0000", MARKER + "\u202e\u200f", MARKER + "\ud800", MARKER + "\udfff", MARKER + "\U0001f4a9",
    MARKER + "\ufeff", MARKER + "'\";--", MARKER + "{{7*7}}", MARKER + "\\u0000", MARKER,
])
NUMBERS = st.sampled_from([1e308, -1e308, 2**64, -(2**63) - 1, 10**400, 0.1, -0.0, 1e-320, 0, -1, 2**31])
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, HOSTILE_TEXT, st.text(max_size=20).map(lambda t: MARKER + t))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), HOSTILE_TEXT.filter(lambda t: t != MARKER)),
                                                 inner, max_size=4)), max_leaves=12)
# Routes (of any body) these bodies go to: all with a JSON body, and those that take one optionally.
JSON_ROUTES = [r for r in ROUTES if r.body is not None and r.consumes == "application/json"]
OPERATIONAL = ("/logout", "/password")  # would end the world's sessions: they get the throwaway token


def _nested(depth: int, array: bool) -> bytes:
    opener, closer = (b"[", b"]") if array else (b'{"a":', b"}")
    return opener * depth + b"1" + closer * depth


def _dumps(value) -> bytes:
    # allow_nan: Infinity/NaN are not JSON, so they test the parser; surrogates pass as \ud800 escapes
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def hostile_bodies(draw, fields: tuple[str, ...]) -> bytes:
    kind = draw(st.sampled_from(["nested", "big_string", "big_array", "wrong_types", "unicode_keys", "numbers",
                                 "not_an_object", "invalid", "nan", "unstorable"]))
    field = draw(st.sampled_from(fields)) if fields else "x"
    if kind == "nested":
        return _nested(draw(st.integers(30, 3000)), draw(st.booleans()))
    if kind == "big_string":
        size = draw(st.integers(1_000, LIMIT - 200))
        return _dumps({field: MARKER + draw(st.sampled_from(["A", "\u00e9", "\u202e", "\U0001f600"])) * (size // 4)})
    if kind == "big_array":
        return _dumps({field: [draw(SCALARS)] * draw(st.integers(100, 2_000))})
    if kind == "wrong_types":
        return _dumps({name: draw(JSON_VALUES) for name in fields if draw(st.booleans())} or {field: draw(JSON_VALUES)})
    if kind == "unicode_keys":  # an unknown key is named in the problem only when it is a plain name
        return _dumps({draw(HOSTILE_TEXT.filter(lambda t: t != MARKER)): draw(SCALARS), field: draw(SCALARS)})
    if kind == "numbers":
        return _dumps({name: draw(NUMBERS) for name in fields})
    if kind == "not_an_object":
        return _dumps(draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=3))))
    if kind == "unstorable":  # valid JSON no store holds, nested where a free-form field (facts) takes it
        inner = draw(st.sampled_from([{"n": 2**64}, {"n": -(2**63) - 1}, {"k\u0000": 1}, {"a": [{"b": 10**30}]}]))
        return _dumps({field: {"os": inner}})
    if kind == "nan":
        return _dumps({field: draw(st.sampled_from([float("inf"), float("-inf"), float("nan")]))})
    return draw(st.sampled_from([b"\xff\xfe{", b'{"a": "\xc3\x28"}', b'{"a":1,}', b"{'a': 1}", b'{"a": 01}',
                                 b'{"\x00": 1}', b"", b" " * 100, b'{"a": "' + b"\\ud800" * 10 + b'"}']))


def _names_field(problem: dict) -> bool:
    """A refusal names the field; one for a rule across fields (a model's own check) names none,
    and says so by blaming the body."""
    return bool(problem.get("field")) or problem.get("detail", "").startswith("body: ")


def _fuzz_route(route, url: str, world, stats: collections.Counter, problems: list[str]) -> None:
    """Runs in a worker thread (the gateway serves on the test's loop): one route, many bodies."""
    session = requests.Session()
    path = world.path(route.path)
    token = world.token_for(route.path, route.permission)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=hostile_bodies(tuple(route.body.model_fields)))
    def post(body: bytes):
        if route.auth == "device":
            headers = world.signed(url + path, route.method, body)
        else:
            headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        response = session.request(route.method, url + path, data=body, headers=headers, timeout=60)
        stats["requests"] += 1
        stats[f"{response.status_code // 100}xx"] += 1
        stats[(route.method, route.path, response.status_code)] += 1
        where = f"{route.method} {route.path} <- {body[:120]!r}: {response.status_code} {response.text[:200]}"
        if response.status_code >= 500:
            problems.append("server error: " + where)
        elif response.status_code >= 400:
            if not response.headers.get("Content-Type", "").startswith("application/problem+json"):
                problems.append("not a problem: " + where)
            elif response.status_code in (400, 422) and not _names_field(response.json()):
                problems.append("no field named: " + where)
            if MARKER in response.text or re.search(r"zq-echo", response.text):
                problems.append("input echoed: " + where)

    post()


def _rss_kib() -> int:
    with open("/proc/self/status") as status:  # the stack (gateway included) runs in this process
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


async def test_hostile_bodies_never_get_a_server_error(api, stack):
    world = await make_world(api)
    stats: collections.Counter = collections.Counter()
    problems: list[str] = []
    rss_before = _rss_kib()
    # Routes that end the calling session run last, so the rest keep their tokens.
    for route in sorted(JSON_ROUTES, key=lambda r: r.path.endswith(OPERATIONAL)):
        await asyncio.to_thread(_fuzz_route, route, stack.url, world, stats, problems)
    rss_after = _rss_kib()
    print(f"\nhostile bodies: {len(JSON_ROUTES)} routes, {stats['requests']} requests, {stats['2xx']} 2xx, "
          f"{stats['4xx']} 4xx, {stats['5xx']} 5xx; process RSS {rss_before // 1024} MiB before, "
          f"{rss_after // 1024} MiB after")
    gated = [f"{r.method} {r.path}" for r in JSON_ROUTES
             if not any(k[:2] == (r.method, r.path) and k[2] not in (401, 403, 429) for k in stats if isinstance(k, tuple))]
    print(f"routes whose bodies never got past authentication or rate limits: {gated}")
    assert stats["requests"] >= len(JSON_ROUTES) * EXAMPLES // 2
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
