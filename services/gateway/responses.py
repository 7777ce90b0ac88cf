"""Success responses of the gateway's own views (those that do not forward a service's reply), as
pydantic models for the OpenAPI document. A forwarding route names the service's result model
of shared/commands*.py instead, so the service, the gateway and the docs share one definition.

Times are RFC 3339 (`state.dumps` writes every datetime so).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class View(BaseModel):
    """A documented response; a field added later is allowed until it is documented here."""

    model_config = ConfigDict(extra="allow")


class Health(View):
    status: Literal["ok", "unavailable"]
    store: Literal["ok", "unavailable"]
    bus: Literal["ok", "unavailable", "stalled"]
    time: datetime
    stalled_consumers: list[str] | None = None


class Liveness(View):
    status: Literal["alive"]


class Readiness(View):
    """Every check run (`checked`), and each failing one with what is wrong; 503 while any fails."""

    service: str
    status: Literal["ready", "not_ready"]
    checked: list[str]
    failing: dict[str, str]


# --- tenants, users, sessions ------------------------------------------------------------------


class InvitedAdmin(View):
    user_id: str
    username: str
    email: str | None = None
    invitation: str | None  # "sent" or "undelivered": the setup token went to the invitee's mailbox


class Bootstrapped(View):
    tenant_id: str
    user_id: str
    username: str
    roles: list[str]
    deployment: str
    second_admin: InvitedAdmin | None = None


class TenantCreated(View):
    tenant_id: str
    name: str
    admin_user_id: str
    admin_username: str
    invitation: str | None
    admins: list[InvitedAdmin]


class Usage(View):
    users: int
    devices: int
    tokens: int


class Tenant(View):
    tenant_id: str
    name: str | None
    status: str | None
    created_at: datetime | None
    usage: Usage | None = None
    offboarding: dict[str, Any] | None = None


class TenantList(View):
    items: list[Tenant]


class PendingRole(View):
    role: str
    granted_by: str


class User(View):
    user_id: str
    username: str
    account: Literal["person", "service"]
    roles: list[str]
    status: str | None
    source: str | None
    pending_roles: list[PendingRole]
    mfa_enrolled: bool
    password_set: bool
    created_at: datetime | None
    email: str | None = None
    invitation: str | None = None


class UserList(View):
    items: list[User]


class Me(View):
    """The caller: a user (with tenant, how they authenticated, roles in effect and token scopes),
    or the bootstrap credential (`kind` and `roles` only)."""

    kind: Literal["bootstrap"] | None = None
    roles: list[str]
    user_id: str | None = None
    username: str | None = None
    tenant_id: str | None = None
    auth: str | None = None
    effective_roles: list[str] | None = None
    scopes: list[str] | None = None


class MfaReset(View):
    user_id: str
    mfa_reset: dict[str, Any]


class PasswordSet(View):
    tenant_id: str
    user_id: str
    username: str


class Session(View):
    session_token: str
    session_id: str
    tenant_id: str
    user_id: str
    username: str
    roles: list[str]
    auth: str
    idle_timeout_seconds: int
    expires_at: datetime
    mfa_enrolment_required: bool


class MfaEnrolment(View):
    secret: str
    otpauth_uri: str


class RecoveryCodes(View):
    recovery_codes: list[str]


class PendingSettingsChange(View):
    change_id: str
    shown: dict[str, Any]
    requested_by: str
    requested_at: datetime


class TenantSettingsView(View):
    small_team: bool
    sso_only: bool = False
    allowed_email_domains: list[str] = []
    token_max_days: int | None = None
    sso: dict[str, Any] | None = None
    cloud_identity: dict[str, Any] | None = None  # the pinned trust anchors for agents' cloud evidence
    zero_touch: dict[str, Any] | None = None  # accounts (and images) whose VMs enrol without a token
    pending_changes: list[PendingSettingsChange] = []
    pending_change: PendingSettingsChange | None = None
    detail: str | None = None


# --- tokens ----------------------------------------------------------------------------------


class Token(View):
    token_id: str
    name: str
    user_id: str
    kind: str
    scopes: list[str] | None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked: bool | None = None
    confirmed_by: str | None
    minted_by: str | None = None
    token: str | None = None  # the secret, shown once when created or collected


class TokenList(View):
    items: list[Token]


class TokenRequest(View):
    token_id: str
    name: str
    user_id: str
    scopes: list[str] | None
    expires_in_seconds: int | None
    minted_by: str | None
    requested_at: datetime | None
    confirmed_by: str | None
    confirmed_at: datetime | None
    kind: Literal["service"]
    status: Literal["pending", "confirmed"]


class TokenRequestList(View):
    items: list[TokenRequest]


# --- devices and agents ------------------------------------------------------------------------


class Enrollment(View):
    enrollment_id: str
    token: str
    expires_at: datetime


class Device(View):
    device_id: str
    name: str | None
    status: str | None
    groups: list[str] | None
    enrolled_at: datetime | None
    revoked_at: datetime | None
    public_key: str | None


class DeviceList(View):
    items: list[Device]


class DeviceRevoked(View):
    device_id: str
    status: Literal["revoked"]


class Challenge(View):
    """A single-use challenge: evidence answers it in the holder's next request before it expires."""

    challenge: str
    expires_at: datetime


class TpmActivation(View):
    """The credential the device's TPM must activate (TPM2_ActivateCredential) before `expires_at`."""

    activation_id: str
    credential: dict[str, str]  # {"credential_blob": b64, "encrypted_secret": b64}
    expires_at: datetime


class TpmRegistered(View):
    device_id: str
    ak_subject: str


class Enrolled(View):
    device_id: str
    tenant_id: str
    key_id: str


class KeyReleased(View):
    """A released key sealed to the request's ephemeral key (200), or a request waiting for
    approval (202: `status` pending and what the policy discloses)."""

    request_id: str
    key_id: str | None = None
    key_version: int | None = None
    algorithm: str | None = None
    sealed_key: str | None = None
    hpke_suite: str | None = None
    latest_version: int | None = None
    status: str | None = None


class Report(View):
    """Releases, denials, approvals, keys and devices over the range (`?format=json`; csv and html
    render the same). Rows by device, key and policy carry the id and its ``name`` (None when no
    audit record named it); ``trends`` has releases and denials per ``hour`` and per ``day``."""

    since: datetime | None = None
    until: datetime | None = None
    trends: dict[str, list[dict[str, Any]]] | None = None


# --- co-signing by change id ------------------------------------------------------------------


class Change(View):
    """A small-team change waiting for (or confirmed by) a second person; the body is known only
    by its SHA-256, which the requester reads to the confirmer."""

    change_id: str
    requested_by: str
    method: str
    path: str
    body_sha256: str
    permission: str
    status: str
    created_at: datetime | None
    expires_at: datetime | None
    confirmed_by: str | None = None
    confirmed_at: datetime | None = None


class ChangeList(View):
    items: list[Change]


# --- volumes ----------------------------------------------------------------------------------


class VolumePlacement(View):
    """Where a device runs: the instance (and image) its enrolment evidence proved, else the device."""

    device_id: str
    instance: str
    image: str | None = None
    provenance: Literal["attested", "cloud", "observed"]


class LastUnlock(View):
    at: datetime
    device_id: str
    instance: str
    request_id: str


class Volume(View):
    volume_id: str
    luks_uuid: str
    key_id: str
    key_version: int
    device_path: str
    bound: VolumePlacement
    registered_at: datetime
    bound_at: datetime
    last_unlock: LastUnlock | None = None
    recovery_escrowed: datetime | None = None


class VolumeList(View):
    items: list[Volume]
    next: str | None


class Attachment(View):
    """One key request for the volume: from where, and how it ended."""

    request_id: str
    key_id: str
    at: datetime
    device_id: str
    instance: str
    image: str | None = None
    provenance: str
    attached_to_bound_instance: bool
    outcome: Literal["success", "denied", "pending", "failure"]


class VolumeDetail(Volume):
    attachments: list[Attachment]


class RecoveryRequestView(View):
    """A break-glass request for a volume's recovery passphrase and its approval's state."""

    volume_id: str
    request_id: str
    approval_id: str
    status: Literal["pending", "approved", "denied", "expired"]
    approvals_required: int
    approvals_received: int
    expires_at: datetime
