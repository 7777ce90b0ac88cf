"""Policy documents: their pydantic shape, the facts they test, and parsing into compiled policies.

Parsing is where every expensive or dangerous step happens once: regexes are compiled with RE2
(linear time), CIDRs and time windows are parsed, comparison operands are classified. The
evaluator in ``policy.py`` then only reads these compiled values.

Facts an agent reports (``identity``, ``integrity``) and the gateway adds (``observed``); a
condition names one by dotted path, e.g. ``integrity.antivirus.pattern_date``. Keys that contain
dots go in brackets as JSON strings, list items by index: ``integrity.file_hashes["/etc/hosts"]``,
``identity.ip_addresses[0]``. Documents may carry extra keys; the models below list the ones we
document, see ``Facts``.

==========================================  =========================  ==========================
fact                                        type                       source
==========================================  =========================  ==========================
identity.device_id                          str                        agent
identity.cloud_provider/account/region      str                        agent (cloud metadata)
identity.zone/instance_id/image_id          str                        agent (cloud metadata)
identity.hostname                           str                        agent
identity.ip_addresses                       list[str]                  agent
identity.boot_time                          RFC 3339 time              agent
identity.agent_version                      version "1.10.0"           agent
integrity.firewall_enabled                  bool                       agent
integrity.antivirus.running                 bool                       agent
integrity.antivirus.pattern_date            RFC 3339 date or time      agent
integrity.agent_hash                        sha256 hex                 agent
integrity.file_hashes[path]                 sha256 hex                 agent
integrity.attestation.<claim>               any JSON                   agent (attestation)
observed.source_ip                          IP address                 gateway
observed.request_time                       RFC 3339 time              gateway
observed.device_id                          str                        gateway (authenticated)
==========================================  =========================  ==========================
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .conditions import AllOf, AnyOf, Condition, NotOf, Predicate
from .operands import (
    DAY_NAMES,
    Comparable,
    Network,
    TimeWindow,
    json_key,
    parse_timestamp,
    parse_version,
)
from .program import Program, compile_program

MAX_POLICY_BYTES = 64 * 1024
MAX_RULES = 200
MAX_DEPTH = 16
MAX_PATTERN_LENGTH = 512
MAX_FACT_PATH = 256
REGEX_MAX_MEM = 1 << 20  # RE2 program memory cap; a hostile pattern fails to compile instead
FACT_ROOTS = ("identity", "integrity", "observed")

Effect = Literal["allow", "deny", "require_approval"]
Disclosure = Literal["none", "reasons", "full"]
OPERATORS = (
    "equals", "not_equals", "in", "not_in", "matches", "glob", "cidr_contains",
    "lt", "lte", "gt", "gte", "within_time_window", "age_under", "exists",
)


class PolicyError(ValueError):
    """A policy document is invalid at ``path`` (JSON path such as ``rules[2].when.all[0].op``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<document>'}: {message}")
        self.path = path
        self.message = message


# --- the facts a policy may test (documentation and optional validation; extra keys allowed) ---

class _FactGroup(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class AntivirusFacts(_FactGroup):
    running: bool | None = None
    pattern_date: str | None = Field(None, description="RFC 3339 date or time of the signatures")


class IdentityFacts(_FactGroup):
    device_id: str | None = None
    cloud_provider: str | None = None
    account: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_id: str | None = None
    image_id: str | None = None
    hostname: str | None = None
    ip_addresses: list[str] = []
    boot_time: str | None = Field(None, description="RFC 3339")
    agent_version: str | None = Field(None, description="semantic version")


class IntegrityFacts(_FactGroup):
    firewall_enabled: bool | None = None
    antivirus: AntivirusFacts | None = None
    agent_hash: str | None = None
    file_hashes: dict[str, str] = Field(default_factory=dict, description="path -> sha256 hex")
    attestation: dict[str, Any] = Field(default_factory=dict, description="attestation claims")


class ObservedFacts(_FactGroup):
    """Set by the gateway from the request itself; an agent cannot choose these."""

    source_ip: str | None = None
    request_time: str | None = Field(None, description="RFC 3339")
    device_id: str | None = None


class Facts(_FactGroup):
    identity: IdentityFacts = IdentityFacts()
    integrity: IntegrityFacts = IntegrityFacts()
    observed: ObservedFacts = ObservedFacts()


# --- compiled policy ---



class Approval(BaseModel):
    """How a require_approval rule is satisfied: by whom, for how long."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    approvals_required: int = Field(1, ge=1, le=20)
    expires_in_seconds: int = Field(3600, ge=60, le=30 * 86400)
    remember_for_seconds: int = Field(0, ge=0, le=365 * 86400)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str
    effect: Effect
    when: Condition
    approval: Approval | None


@dataclass(frozen=True, slots=True)
class Targets:
    devices: Literal["all"] | frozenset[str]
    device_groups: frozenset[str]
    keys: Literal["all"] | frozenset[str]
    key_groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    version: int
    name: str
    description: str
    targets: Targets
    disclose: Disclosure
    timezone: str
    tz: ZoneInfo = field(repr=False, compare=False)
    rules: tuple[Rule, ...]
    program: Program = field(repr=False, compare=False)  # the rules' conditions, compiled for evaluation


# --- document shape ---

_Name = Field(min_length=1, max_length=128)
_RuleId = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TargetsDoc(_Document):
    devices: Any = Field(default_factory=list)
    device_groups: list[str] = []
    keys: Any = Field(default_factory=list)
    key_groups: list[str] = []

    @field_validator("devices", "keys")
    @classmethod
    def _all_or_ids(cls, value: Any) -> Any:
        if value == "all":
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError('must be "all" or a list of ids')
        return value


class RuleDoc(_Document):
    id: str = _RuleId
    description: str = Field("", max_length=1024)
    effect: Effect
    when: dict[str, Any]  # compiled by hand below, for exact paths and a depth limit
    approval: Approval | None = None


class PolicyDoc(_Document):
    name: str = _Name
    description: str = Field("", max_length=1024)
    targets: TargetsDoc
    disclose: Disclosure = "reasons"
    timezone: str = "UTC"
    rules: list[RuleDoc] = Field(min_length=1, max_length=MAX_RULES)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class PredicateDoc(_Document):
    fact: str | None = None
    op: str
    value: Any = None


class TimeWindowDoc(_Document):
    days: list[str] = list(DAY_NAMES)
    from_: str = Field(alias="from")
    to: str


# --- parsing ---

def parse_policy_json(raw: str | bytes, *, policy_id: str, version: int) -> Policy:
    """Parse a policy as posted; the size limit is checked before JSON decoding."""
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError("", f"policy is larger than {MAX_POLICY_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PolicyError("", f"not valid JSON: {exc}") from None
    return parse_policy(doc, policy_id=policy_id, version=version)


def parse_policy(doc: Mapping[str, Any], *, policy_id: str, version: int) -> Policy:
    """Validate a policy document and compile it; raises PolicyError naming the offending field."""
    if not isinstance(doc, Mapping):
        raise PolicyError("", "a policy must be a JSON object")
    try:
        size = len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())
    except RecursionError:
        raise PolicyError("", f"conditions nest deeper than {MAX_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise PolicyError("", f"not JSON: {exc}") from None
    if size > MAX_POLICY_BYTES:
        raise PolicyError("", f"policy is {size} bytes; the limit is {MAX_POLICY_BYTES}")
    parsed = _validate(PolicyDoc, doc, "")

    rules: list[Rule] = []
    first_use: dict[str, int] = {}
    for index, rule in enumerate(parsed.rules):
        where = f"rules[{index}]"
        if rule.id in first_use:
            first = first_use[rule.id]
            raise PolicyError(f"{where}.id", f"duplicate rule id {rule.id!r} (also rules[{first}])")
        first_use[rule.id] = index
        approval = rule.approval
        if rule.effect == "require_approval":
            approval = approval or Approval()
        elif approval is not None:
            raise PolicyError(f"{where}.approval", "approval applies only to require_approval rules")
        when = _compile_condition(rule.when, where, "when", 1, parsed.timezone)
        rules.append(Rule(rule.id, rule.description, rule.effect, when, approval))

    return Policy(
        id=policy_id,
        version=version,
        name=parsed.name,
        description=parsed.description,
        targets=_compile_targets(parsed.targets),
        disclose=parsed.disclose,
        timezone=parsed.timezone,
        tz=ZoneInfo(parsed.timezone),
        rules=tuple(rules),
        program=compile_program([rule.when for rule in rules]),
    )


def _validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = _join(prefix, _loc_to_path(error["loc"]))
        if error["type"] == "extra_forbidden":
            raise PolicyError(path, "unknown field") from None
        if error["type"] == "missing":
            raise PolicyError(path, "required field is missing") from None
        raise PolicyError(path, error["msg"].removeprefix("Value error, ")) from None


def _loc_to_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path or path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


def _compile_targets(doc: TargetsDoc) -> Targets:
    if doc.devices == [] and not doc.device_groups:
        raise PolicyError("targets.devices", 'targets no device: give "all", device ids or device_groups')
    if doc.keys == [] and not doc.key_groups:
        raise PolicyError("targets.keys", 'targets no key: give "all", key ids or key_groups')
    return Targets(
        devices="all" if doc.devices == "all" else frozenset(doc.devices),
        device_groups=frozenset(doc.device_groups),
        keys="all" if doc.keys == "all" else frozenset(doc.keys),
        key_groups=frozenset(doc.key_groups),
    )


def parse_condition(node: Any, *, path: str = "match", zone: str = "UTC") -> Condition:
    """A standalone condition (a dynamic group's membership test); errors name ``path``-relative fields."""
    return _compile_condition(node, "", path, 1, zone)


def _compile_condition(node: Any, rule_path: str, path: str, depth: int, zone: str) -> Condition:
    where = f"{rule_path}.{path}" if rule_path else path
    if depth > MAX_DEPTH:
        raise PolicyError(where, f"conditions nest deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        raise PolicyError(where, "a condition must be an object")
    combinators = node.keys() & {"all", "any", "not"}
    if not combinators:
        return _compile_predicate(node, rule_path, path, zone)
    if len(node) != 1:
        raise PolicyError(where, 'a condition is exactly one of "all", "any", "not", or a fact test')
    (kind, body), = node.items()
    if kind == "not":
        return NotOf(path, _compile_condition(body, rule_path, f"{path}.not", depth + 1, zone))
    if not isinstance(body, list) or not body:
        # An empty "all" would be vacuously true: an allow rule matching everything.
        raise PolicyError(f"{where}.{kind}", "must be a non-empty list of conditions")
    children = tuple(
        _compile_condition(child, rule_path, f"{path}.{kind}[{i}]", depth + 1, zone)
        for i, child in enumerate(body)
    )
    return AllOf(path, children) if kind == "all" else AnyOf(path, children)


def _compile_predicate(node: Mapping[str, Any], rule_path: str, path: str, zone: str) -> Predicate:
    where = f"{rule_path}.{path}" if rule_path else path
    doc = _validate(PredicateDoc, node, where)
    if doc.op not in OPERATORS:
        known = ", ".join(OPERATORS)
        raise PolicyError(f"{where}.op", f"unknown operator {doc.op!r}; expected one of {known}")
    fact = doc.fact
    if doc.op == "within_time_window":
        fact = fact or "observed.request_time"
        if fact != "observed.request_time":
            raise PolicyError(f"{where}.fact", "within_time_window tests observed.request_time only")
    elif fact is None:
        raise PolicyError(f"{where}.fact", "required field is missing")
    keys = _parse_fact_path(fact, f"{where}.fact")
    has_value = "value" in doc.model_fields_set
    operand = _compile_operand(doc.op, doc.value, has_value, f"{where}.value")
    signature = json.dumps([fact, doc.op, doc.value, zone if doc.op == "within_time_window" else None])
    return Predicate(path, fact, keys, doc.op, doc.value, operand, signature)


_FACT_HEAD = re.compile(r"[A-Za-z0-9_-]+")
_FACT_STEP = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d{1,6}|"(?:[^"\\]|\\.)*")\]')


def _parse_fact_path(fact: str, where: str) -> tuple[str | int, ...]:
    if not fact or len(fact) > MAX_FACT_PATH:
        raise PolicyError(where, f"a fact path is 1 to {MAX_FACT_PATH} characters")
    head = _FACT_HEAD.match(fact)
    if not head or head.group() not in FACT_ROOTS:
        raise PolicyError(where, f"a fact path starts with one of {', '.join(FACT_ROOTS)}")
    keys: list[str | int] = [head.group()]
    pos = head.end()
    while pos < len(fact):
        step = _FACT_STEP.match(fact, pos)
        if not step:
            raise PolicyError(where, f'bad fact path at character {pos}: use a.b, a["key.with.dots"] or a[0]')
        name, index = step.groups()
        if name is not None:
            keys.append(name)
        elif index.startswith('"'):
            try:
                keys.append(json.loads(index))
            except ValueError:
                raise PolicyError(where, f"bad quoted key {index}") from None
        else:
            keys.append(int(index))
        pos = step.end()
    if len(keys) < 2:
        raise PolicyError(where, f"name a fact inside {keys[0]}, e.g. {keys[0]}.<name>")
    return tuple(keys)


def _compile_operand(op: str, value: Any, has_value: bool, where: str) -> Any:
    if op == "exists":
        if has_value:
            raise PolicyError(where, "exists takes no value")
        return None
    if not has_value or value is None:
        hint = "; use exists to test presence" if has_value else ""
        raise PolicyError(where, f"{op} needs a value{hint}")
    if op in ("equals", "not_equals"):
        return json_key(value)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise PolicyError(where, f"{op} needs a non-empty list")
        return frozenset(json_key(item) for item in value)
    if op == "matches":
        return _compile_regex(_pattern_text(value, where), where)
    if op == "glob":
        return _compile_regex(glob_to_regex(_pattern_text(value, where)), where)
    if op == "cidr_contains":
        return _compile_networks(value, where)
    if op in ("lt", "lte", "gt", "gte"):
        return _compile_comparable(op, value, where)
    if op == "within_time_window":
        return _compile_window(value, where)
    if op == "age_under":
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            raise PolicyError(where, "age_under needs a positive number of seconds")
        return float(value)
    raise AssertionError(op)  # OPERATORS and this function disagree


def _pattern_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError(where, "a pattern must be a non-empty string")
    if len(value) > MAX_PATTERN_LENGTH:
        raise PolicyError(where, f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    return value


def _compile_regex(pattern: str, where: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = REGEX_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        detail = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PolicyError(where, f"invalid regular expression: {detail}") from None


def glob_to_regex(pattern: str) -> str:
    """fnmatch syntax (*, ?, [seq], [!seq]) as an anchored RE2 pattern, so globs are linear too."""
    out = ["(?s)^"]
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                out.append(r"\[")
                continue
            body = pattern[i:j].replace("\\", "\\\\").replace("[", r"\[")
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append(f"[{body}]")
        else:
            out.append(re.escape(char))
    out.append("$")
    return "".join(out)


def _compile_networks(value: Any, where: str) -> tuple[Network, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PolicyError(where, "cidr_contains needs a CIDR or a non-empty list of CIDRs")
    networks = []
    for index, item in enumerate(items):
        item_where = f"{where}[{index}]" if isinstance(value, list) else where
        if not isinstance(item, str):
            raise PolicyError(item_where, "a CIDR must be a string such as 10.0.0.0/8 or 2001:db8::/32")
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise PolicyError(item_where, f"invalid CIDR {item!r}: {exc}") from None
        networks.append(Network(network.version, int(network.network_address), int(network.netmask), item))
    return tuple(networks)


def _compile_comparable(op: str, value: Any, where: str) -> Comparable:
    if type(value) in (int, float) and math.isfinite(value):
        return Comparable("number", value)
    if isinstance(value, str):
        moment = parse_timestamp(value)
        if moment is not None:
            return Comparable("time", moment)
        version = parse_version(value)
        if version is not None:
            return Comparable("version", version)
    raise PolicyError(where, f"{op} needs a number, a version such as \"1.10.0\" or an RFC 3339 time")


def _compile_window(value: Any, where: str) -> TimeWindow:
    doc = _validate(TimeWindowDoc, value, where)
    days = set()
    for index, name in enumerate(doc.days):
        if name.lower() not in DAY_NAMES:
            raise PolicyError(f"{where}.days[{index}]", f"unknown day {name!r}; use {', '.join(DAY_NAMES)}")
        days.add(DAY_NAMES.index(name.lower()))
    if not days:
        raise PolicyError(f"{where}.days", "a time window needs at least one day")
    start = _minutes(doc.from_, f"{where}.from", allow_end_of_day=False)
    end = _minutes(doc.to, f"{where}.to", allow_end_of_day=True)
    if start == end:
        raise PolicyError(f"{where}.to", "a time window cannot start and end at the same time")
    return TimeWindow(frozenset(days), start, end)


def _minutes(text: str, where: str, *, allow_end_of_day: bool) -> int:
    found = re.fullmatch(r"(\d{2}):(\d{2})", text)
    if found:
        hours, minutes = int(found.group(1)), int(found.group(2))
        if hours < 24 and minutes < 60:
            return hours * 60 + minutes
        if allow_end_of_day and (hours, minutes) == (24, 0):
            return 1440
    raise PolicyError(where, f"expected a time HH:MM, got {text!r}")
