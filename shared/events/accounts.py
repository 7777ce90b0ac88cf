"""Events of accounts and sign-in."""

from __future__ import annotations

from typing import Any, Literal

from .base import Event

# --- accounts and sign-in: event models ----------------------------------------------


class TenantLifecycleChanged(Event):
    """A provider admin suspended, resumed or offboarded a customer tenant."""

    type: Literal["tenant.suspended", "tenant.resumed", "tenant.offboarded"]


class TenantSettingsChanged(Event):
    """Settings applied, or (small-team mode, single sign-on) requested and waiting for a second
    tenant admin, whose confirmation then applies them with the requester named."""

    type: Literal["tenant.settings_changed", "tenant.settings_change_pending"] = "tenant.settings_changed"
    settings: dict[str, Any]
    change_id: str | None = None
    requested_by: str | None = None


class UserCreated(Event):
    type: Literal["user.created"] = "user.created"
    user_id: str
    username: str
    account: Literal["person", "service"] = "person"
    roles: tuple[str, ...] = ()
    pending_roles: tuple[str, ...] = ()
    source: str = "local"  # local, bootstrap, oidc, saml


class UserRolesChanged(Event):
    """Roles granted (effective now), granted pending a second admin, confirmed, or revoked."""

    type: Literal["user.role_granted", "user.role_pending", "user.role_confirmed", "user.role_revoked"]
    user_id: str
    roles: tuple[str, ...]
    granted_by: str | None = None


class UserLoggedIn(Event):
    type: Literal["user.logged_in"] = "user.logged_in"
    user_id: str
    method: str  # password, password+totp, password+recovery_code, oidc, saml
    session_id: str


class UserLoginFailed(Event):
    type: Literal["user.login_failed"] = "user.login_failed"
    user_id: str | None = None
    username: str
    method: str
    reason: str


class UserLoggedOut(Event):
    type: Literal["user.logged_out"] = "user.logged_out"
    user_id: str
    session_id: str


class ChangeCosign(Event):
    """Small-team co-signing: a change waiting for a second person (`change.cosign_pending`), and
    that person's confirmation of exactly this method, path and body digest (`change.confirmed`)."""

    type: Literal["change.cosign_pending", "change.confirmed"] = "change.cosign_pending"
    change_id: str
    method: str
    path: str
    body_sha256: str
    permission: str
    requested_by: str
    confirmed_by: str | None = None


class UserMfaEnrolled(Event):
    type: Literal["user.mfa_enrolled"] = "user.mfa_enrolled"
    user_id: str
    method: Literal["totp"] = "totp"


class UserPasswordSet(Event):
    type: Literal["user.password_set"] = "user.password_set"
    user_id: str


class UserRecoveryCodeUsed(Event):
    type: Literal["user.recovery_code_used"] = "user.recovery_code_used"
    user_id: str
    remaining: int


class UserMfaReset(Event):
    """An admin asked to reset a user's MFA (pending), and a second admin confirmed (reset)."""

    type: Literal["user.mfa_reset_pending", "user.mfa_reset"]
    user_id: str
    requested_by: str


class ServiceTokenRequested(Event):
    """An admin asked for a token of a service account holding a custodian or approver role
    (requested); a second admin confirmed it (confirmed). The requester then collects it, which
    creates the token (token.created)."""

    type: Literal["token.requested", "token.confirmed"]
    token_id: str  # the id the token gets once collected
    name: str
    user_id: str  # the service account
    scopes: tuple[str, ...] | None = None
    minted_by: str
    confirmed_by: str | None = None
