"""Policy documents as posted: their pydantic shape, and the error that names a document's offending field."""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.provenance import Provenance
from shared.rpc import validation_error

from .operands import DAY_NAMES

MAX_RULES = 200

Effect = Literal["allow", "deny", "require_approval"]
Disclosure = Literal["none", "reasons", "full"]


class PolicyError(ValueError):
    """A policy document is invalid at ``path`` (JSON path such as ``rules[2].when.all[0].op``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<document>'}: {message}")
        self.path = path
        self.message = message


class Approval(BaseModel):
    """How a require_approval rule is satisfied: by whom, for how long."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    approvals_required: int = Field(1, ge=1, le=20)
    expires_in_seconds: int = Field(3600, ge=60, le=30 * 86400)
    remember_for_seconds: int = Field(0, ge=0, le=365 * 86400)


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
    when: dict[str, Any]  # compiled by hand (rules.py), for exact paths and a depth limit
    approval: Approval | None = None


class PolicyDoc(_Document):
    name: str = _Name
    description: str = Field("", max_length=1024)
    targets: TargetsDoc
    disclose: Disclosure = "reasons"
    timezone: str = "UTC"
    # Facts weaker than this count as absent in every condition that does not name its own.
    minimum_provenance: Provenance = "claimed"
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
    provenance: Provenance | None = None  # the least this test accepts; replaces the policy's minimum


class TimeWindowDoc(_Document):
    days: list[str] = list(DAY_NAMES)
    from_: str = Field(alias="from")
    to: str


def validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    """``data`` as ``model``, or a PolicyError naming the first offending field under ``prefix``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = _join(prefix, _loc_to_path(error["loc"]))
        if error["type"] == "extra_forbidden":
            raise PolicyError(path, "unknown field") from None
        if error["type"] == "missing":
            raise PolicyError(path, "required field is missing") from None
        raise PolicyError(path, validation_error(exc)[1].removeprefix("Value error, ")) from None


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
