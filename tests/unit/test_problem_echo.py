"""Validation problems name the field and never echo the input; the gateway writes datetimes as
RFC 3339 whatever view produced them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from services.gateway.accounts import schemas as account_schemas
from services.gateway.problems import validation_problem
from services.gateway.state import dumps, unstorable
from shared import commands_audit
from shared.rpc import ProblemError

MARKER = "zz-echo-marker-\u202e-ok"


@pytest.mark.parametrize(("model", "data", "field"), [
    (account_schemas.CreateUser, {"username": "alice", "roles": [MARKER]}, "roles"),
    (account_schemas.CreateToken, {"name": "t", "roles": ["auditor"], "scopes": [MARKER]}, "scopes"),
    (account_schemas.Login, {"username": "u", "password": "p", "totp": MARKER}, "totp"),
])
def test_a_validation_problem_names_the_field_and_not_the_input(model, data, field):
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    problem = validation_problem(caught.value)
    assert problem.field == field
    assert MARKER not in problem.detail and "echo-marker" not in problem.detail, problem.detail


def test_a_service_refusal_does_not_echo_the_input():
    with pytest.raises(ProblemError) as caught:
        commands_audit.ForwarderSpec.model_validate(
            {"name": "siem", "kind": "webhook", "url": "http://127.0.0.1:9/h", "event_types": [MARKER + " x"]})
    assert caught.value.problem.field is not None
    assert "echo-marker" not in caught.value.problem.detail, caught.value.problem.detail


def test_datetimes_are_rfc3339():
    moment = datetime(2026, 12, 4, 18, 59, 0, 476000, tzinfo=UTC)
    out = json.loads(dumps({"at": moment, "naive": moment.replace(tzinfo=None),
                            "paris": moment.astimezone(timezone(timedelta(hours=1))), "items": [moment]}))
    assert out == {"at": "2026-12-04T18:59:00.476Z", "naive": "2026-12-04T18:59:00.476Z",
                   "paris": "2026-12-04T18:59:00.476Z", "items": ["2026-12-04T18:59:00.476Z"]}


def test_an_unknown_key_is_named_only_when_it_is_a_plain_name():
    with pytest.raises(ValidationError) as caught:
        account_schemas.Login.model_validate({"username": "u", "password": "p", "method": "x"})
    assert validation_problem(caught.value).field == "method"
    with pytest.raises(ValidationError) as caught:
        account_schemas.Login.model_validate({"username": "u", "password": "p", MARKER + "\u0000<b>": "x"})
    problem = validation_problem(caught.value)
    assert problem.field == "…" and "echo-marker" not in problem.detail


def test_what_no_store_could_hold_is_found_with_its_field():
    """Lone surrogates, NUL in keys and integers past 64 bits were forwarded, and failed where they
    were encoded or stored (a 500, or an audit batch that could never be written)."""
    assert unstorable({"a": [{"b": "ok"}, {"c": "x\ud800"}]}) == ("a.1.c", "a lone UTF-16 surrogate is not text")
    assert unstorable({"a": {"\udfff": 1}})[0] == "a.…"
    assert unstorable({"\udfff": 1})[0] == "body"
    assert unstorable({"facts": {"os": {"a\u0000b": 1}}}) == ("facts.os.…", "a key must be text without NUL")
    assert unstorable({"facts": {"n": 2**63}}) == ("facts.n", "integers must fit in 64 bits")
    assert unstorable({"n": -(2**63) - 1})[0] == "n"
    assert unstorable({"a": ["\U0001f600", "\u202e", "\u0000", 2**63 - 1, -(2**63), 1e308, True]}) is None
