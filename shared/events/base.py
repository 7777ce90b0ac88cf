"""The envelope every event shares: ids, time, tenant, correlation and the acting principal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


E = TypeVar("E", bound="Event")


class Actor(BaseModel):
    """Who caused an event: a user, a device, a service, the provider or the bootstrap credential."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["user", "device", "service", "provider", "bootstrap"]
    id: str
    auth: str | None = None


SYSTEM = Actor(kind="service", id="strongroom")


class Event(BaseModel):
    """The envelope shared by all events."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: str = Field(default_factory=new_id)
    version: int = 1
    tenant_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str = Field(default_factory=new_id)
    causation_id: str | None = None
    actor: Actor = SYSTEM
    source_ip: str | None = None

    @property
    def routing_key(self) -> str:
        """The AMQP routing key: the type, refined where consumers want only some of an event's kind."""
        return self.type

    def caused(self, cls: type[E], **fields: Any) -> E:
        """A follow-up event in the same conversation (same correlation, caused by this one)."""
        fields.setdefault("tenant_id", self.tenant_id)
        fields.setdefault("correlation_id", self.correlation_id)
        fields.setdefault("actor", self.actor)
        return cls(causation_id=self.event_id, **fields)
