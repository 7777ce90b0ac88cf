"""Every message contract between the services: frozen, versioned pydantic events.

The `type` literal is also the routing key on the topic exchange. Decode once through
`decode_event`; evolve a contract by bumping `version` and adding an upcast next to the model
and registering it in `UPCASTS` below. The models live in one module per area; this package
is the one place that knows them all. No event carries key material in the clear: released
keys travel HPKE-sealed to the agent's one-time public key, which only the agent can open.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter, ValidationError

from .accounts import (
    ChangeCosign,
    ServiceTokenRequested,
    TenantLifecycleChanged,
    TenantSettingsChanged,
    UserCreated,
    UserLoggedIn,
    UserLoggedOut,
    UserLoginFailed,
    UserMfaEnrolled,
    UserMfaReset,
    UserPasswordSet,
    UserRecoveryCodeUsed,
    UserRolesChanged,
)
from .audit import (
    AuditArchived,
    AuditCheckpointed,
    AuditRetentionUpdated,
    ForwarderCreated,
    ForwarderDeleted,
    ForwarderSecretRotated,
    ForwarderUpdated,
)
from .base import SYSTEM as SYSTEM
from .base import Actor as Actor
from .base import Event
from .base import new_id as new_id
from .base import utcnow as utcnow
from .core import (
    AccessDenied,
    DeviceEnrolled,
    DeviceRevoked,
    DeviceTpmRegistered,
    EnrollmentTokenCreated,
    KeyCreated,
    KeyDecided,
    KeyReleased,
    KeyReleaseRefused,
    KeyRequested,
    KeyRotated,
    KeyStateChanged,
    PolicyDeleted,
    PolicyUpdated,
    TenantCreated,
    TokenCreated,
    TokenRevoked,
    _device_enrolled_v1_to_v2,
    _key_decided_v1_to_v2,
    _key_requested_v1_to_v2,
)
from .core import (
    EvidenceSummary as EvidenceSummary,
)
from .custody import (
    CustodyCustodianKeyEnrolled,
    CustodyInitialized,
    CustodyRekeyed,
    CustodyRekeyRolledBack,
    CustodySettingsChanged,
    CustodyUnsealProgress,
    KekRotated,
    KekRotationStarted,
    KeyDestroyed,
    KeyDestructionApproved,
    KeyDestructionCancelled,
    KeyDestructionScheduled,
    KeyExported,
    KeyImported,
    KeyMinDecryptionVersionSet,
    TenantDestroyed,
)
from .policy import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    ApprovalVoted,
    DevicePostureFailed,
    DeviceQuarantineCleared,
    DeviceQuarantined,
    GroupDeleted,
    GroupUpdated,
    PolicySettingsUpdated,
)
from .volumes import Placement as Placement
from .volumes import (
    VolumeAttached,
    VolumeAttachedElsewhere,
    VolumeRecoveryEscrowed,
    VolumeRecoveryReleased,
    VolumeRegistered,
)

AnyEvent = Annotated[
    Union[  # noqa: UP007 - sixty members read better one per line
        TenantCreated,
        TokenCreated,
        TokenRevoked,
        AccessDenied,
        EnrollmentTokenCreated,
        DeviceEnrolled,
        DeviceRevoked,
        DeviceTpmRegistered,
        KeyCreated,
        KeyRotated,
        KeyStateChanged,
        PolicyUpdated,
        PolicyDeleted,
        KeyRequested,
        KeyDecided,
        KeyReleased,
        KeyReleaseRefused,
        # --- accounts and sign-in ---
        TenantLifecycleChanged,
        TenantSettingsChanged,
        UserCreated,
        UserRolesChanged,
        UserLoggedIn,
        UserLoginFailed,
        UserLoggedOut,
        ChangeCosign,
        UserMfaEnrolled,
        UserPasswordSet,
        UserRecoveryCodeUsed,
        UserMfaReset,
        ServiceTokenRequested,
        # --- policies, device groups, approvals, notifications ---
        GroupUpdated,
        GroupDeleted,
        PolicySettingsUpdated,
        ApprovalRequested,
        ApprovalVoted,
        ApprovalGranted,
        ApprovalDenied,
        ApprovalExpired,
        DevicePostureFailed,
        DeviceQuarantined,
        DeviceQuarantineCleared,
        # --- key custody ---
        KeyMinDecryptionVersionSet,
        KeyDestructionScheduled,
        KeyDestructionApproved,
        KeyDestructionCancelled,
        KeyDestroyed,
        KeyImported,
        KeyExported,
        CustodySettingsChanged,
        CustodyInitialized,
        CustodyCustodianKeyEnrolled,
        CustodyUnsealProgress,
        CustodyRekeyed,
        CustodyRekeyRolledBack,
        KekRotationStarted,
        KekRotated,
        TenantDestroyed,
        # --- audit exports, forwarders, reports ---
        AuditCheckpointed,
        AuditArchived,
        AuditRetentionUpdated,
        ForwarderCreated,
        ForwarderUpdated,
        ForwarderDeleted,
        ForwarderSecretRotated,
        # --- volumes ---
        VolumeRegistered,
        VolumeAttached,
        VolumeAttachedElsewhere,
        VolumeRecoveryEscrowed,
        VolumeRecoveryReleased,
    ],
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)

# Upcasts: (type, from_version) -> function turning the old payload into the next version.
UPCASTS: dict[tuple[str, int], Any] = {
    ("key.decided", 1): _key_decided_v1_to_v2,
    ("key.requested", 1): _key_requested_v1_to_v2,
    ("device.enrolled", 1): _device_enrolled_v1_to_v2,
}


class MalformedEvent(ValueError):
    """A message that is not a valid event; it is dead-lettered with this reason."""


def decode_event(body: bytes) -> Event:
    """Parse and validate a message body, upcasting older versions first.

    Every consumer decodes every event it gets, so the usual case (a current version) is parsed
    and validated in one pass by pydantic; an older version or an invalid body takes the careful
    path, which upcasts, or names what is wrong for the dead-letter reason.
    """
    try:
        event = _ADAPTER.validate_json(body)
    except ValidationError:
        pass
    else:
        if (event.type, event.version) not in UPCASTS:
            return event
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedEvent("event must be a JSON object")
    while (up := UPCASTS.get((raw.get("type"), raw.get("version")))) is not None:
        raw = up(raw)
    try:
        return _ADAPTER.validate_python(raw)
    except Exception as exc:  # pydantic.ValidationError: keep only the locations and messages
        errors = getattr(exc, "errors", lambda: [])()
        detail = "; ".join(
            ".".join(str(p) for p in e.get("loc", ())) + ": " + e.get("msg", "") for e in errors[:5]
        )
        raise MalformedEvent(detail or str(exc)) from None


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def event_types() -> list[str]:
    """Every event type (routing key): a model whose `type` admits several values names each."""
    return [t for m in AnyEvent.__args__[0].__args__ for t in get_args(m.model_fields["type"].annotation)]  # type: ignore[attr-defined]
