"""Bodies of the accounts and sign-in routes. Passwords are bounded here and judged in the view
(`passwords.weakness`), so an oversized one is refused before any hashing."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.commands import NAME, Strict, items_among, some_change

from ..evidence.cloud import CloudAnchors
from ..permissions import PERMISSIONS
from ..roles import PROVIDER_ROLES, TENANT_ROLES
from .rules import DOMAIN_PATTERN, EMAIL_PATTERN, USERNAME_PATTERN

_ALL_ROLES = TENANT_ROLES + PROVIDER_ROLES
_CLOUD_ID = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
_CLOUD_IDS = {"type": "string", "pattern": _CLOUD_ID}
_PASSWORD = Field(min_length=1, max_length=1024, description="checked against the password policy")


def _known_roles(roles: list[str]) -> list[str]:
    unknown = sorted(set(roles) - set(_ALL_ROLES))
    if unknown:
        raise ValueError(f"unknown roles {unknown}; known: {list(_ALL_ROLES)}")
    return sorted(set(roles))


def _check_second_admin(first: str, first_field: str, username: str | None, email: str | None) -> None:
    """A first admin's second: named with an address, or not at all, and not the first admin again."""
    if (username is None) != (email is None):
        raise ValueError("second_admin_username and second_admin_email go together")
    if username == first:
        raise ValueError(f"second_admin_username must differ from {first_field}")


def _email(description: str, default: object = ...) -> object:
    return Field(default, max_length=254, pattern=EMAIL_PATTERN, description=description)


class Bootstrap(Strict):
    """The first admin (it holds the bootstrap credential, so it sets its own password), and a
    second admin invited at their own address: admin grants wait for a second admin."""

    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = _PASSWORD
    email: str | None = _email("the first admin's address, for admin notices", None)
    second_admin_username: str | None = Field(default=None, pattern=USERNAME_PATTERN)
    second_admin_email: str | None = _email("where the second admin's invitation is sent", None)

    @model_validator(mode="after")
    def _second_admin(self) -> Bootstrap:
        _check_second_admin(self.username, "username", self.second_admin_username, self.second_admin_email)
        return self


class Login(Strict):
    # The tenant's id or its name (a name only one tenant bears).
    tenant: str | None = Field(default=None, pattern=NAME)
    username: str = Field(min_length=1, max_length=64)
    password: str = _PASSWORD
    totp: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    recovery_code: str | None = Field(default=None, min_length=8, max_length=40)


class ChangePassword(Strict):
    current_password: str = _PASSWORD
    new_password: str = _PASSWORD
    totp: str | None = Field(default=None, pattern=r"^[0-9]{6}$")


class Setup(Strict):
    setup_token: str = Field(min_length=10, max_length=200)
    password: str = _PASSWORD


class MfaCode(Strict):
    code: str = Field(pattern=r"^[0-9]{6}$")


class CreateTenant(Strict):
    """A customer tenant and its first admins, each invited at their own address. Name a second
    admin here: admin and custodian grants wait for a second admin, whom a lone admin cannot make."""

    name: str = Field(pattern=NAME)
    admin_username: str = Field(default="admin", pattern=USERNAME_PATTERN)
    admin_email: str = _email("where the first admin's invitation (setup token) is sent")
    second_admin_username: str | None = Field(default=None, pattern=USERNAME_PATTERN)
    second_admin_email: str | None = _email("where the second admin's invitation is sent", None)

    @model_validator(mode="after")
    def _second_admin(self) -> CreateTenant:
        _check_second_admin(self.admin_username, "admin_username", self.second_admin_username, self.second_admin_email)
        return self


class CreateUser(Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    roles: list[str] = Field(default_factory=list, max_length=len(_ALL_ROLES), json_schema_extra=items_among(_ALL_ROLES))
    account: Literal["person", "service"] = "person"
    email: str | None = _email("a person's address: their invitation goes there, never to the creator", None)

    @field_validator("roles")
    @classmethod
    def _roles(cls, roles: list[str]) -> list[str]:
        return _known_roles(roles)


class ChangeRoles(Strict):
    grant: list[str] = Field(default_factory=list, max_length=len(_ALL_ROLES), json_schema_extra=items_among(_ALL_ROLES))
    revoke: list[str] = Field(default_factory=list, max_length=len(_ALL_ROLES), json_schema_extra=items_among(_ALL_ROLES))

    @field_validator("grant", "revoke")
    @classmethod
    def _roles(cls, roles: list[str]) -> list[str]:
        return _known_roles(roles)


class CreateToken(Strict):
    name: str = Field(pattern=NAME)
    scopes: list[str] | None = Field(default=None, min_length=1, max_length=len(PERMISSIONS),
                                     json_schema_extra=items_among(list(PERMISSIONS)),
                                     description="permissions this token may use; default: all of its owner's")
    # Default and upper bound: the tenant's token lifetime cap (`token_max_days`, default 90 days).
    expires_in_seconds: int | None = Field(default=None, ge=60, le=365 * 86400)
    service_account_id: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str] | None) -> list[str] | None:
        if scopes is None:
            return None
        unknown = sorted(set(scopes) - set(PERMISSIONS))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}")
        return sorted(set(scopes))


class SsoConfig(Strict):
    """A tenant's identity provider: OIDC (issuer, client) or SAML (IdP certificate, entity ids)."""

    protocol: Literal["oidc", "saml"]
    # OIDC
    issuer: str | None = Field(default=None, max_length=500)
    client_id: str | None = Field(default=None, max_length=200)
    client_secret: str | None = Field(default=None, max_length=500)
    authorization_endpoint: str | None = Field(default=None, max_length=500)
    token_endpoint: str | None = Field(default=None, max_length=500)
    jwks_uri: str | None = Field(default=None, max_length=500)
    redirect_uri: str | None = Field(default=None, max_length=500)
    # SAML
    idp_entity_id: str | None = Field(default=None, max_length=500)
    idp_sso_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    idp_certificate_pem: str | None = Field(default=None, max_length=10_000)
    sp_entity_id: str | None = Field(default=None, max_length=500, description="default: <public url>/v1/auth/saml/metadata")
    # Both
    groups_claim: str = Field(default="groups", max_length=100)
    group_roles: dict[str, list[str]] = Field(default_factory=dict, max_length=100, json_schema_extra={
        "additionalProperties": {"type": "array", **items_among(_ALL_ROLES)}})

    @field_validator("group_roles")
    @classmethod
    def _mapped_roles(cls, mapping: dict[str, list[str]]) -> dict[str, list[str]]:
        return {group: _known_roles(roles) for group, roles in mapping.items()}

    @model_validator(mode="after")
    def _saml_complete(self) -> SsoConfig:
        if self.protocol == "saml":
            for name in ("idp_entity_id", "idp_sso_url", "idp_certificate_pem"):
                if not getattr(self, name):
                    raise ValueError(f"{name} is required for SAML")
            from .sso_saml import certificate

            certificate(self.idp_certificate_pem or "")  # ValueError names the field
        return self


class ZeroTouch(Strict):
    """Who may enrol without a token: VMs whose verified identity names one of `accounts` (AWS
    accounts, GCP projects, Azure subscriptions) and, if any are listed, one of `image_ids`."""

    accounts: list[str] = Field(min_length=1, max_length=50, json_schema_extra={"items": _CLOUD_IDS})
    image_ids: list[str] = Field(default_factory=list, max_length=200, json_schema_extra={"items": _CLOUD_IDS})
    groups: list[str] = Field(default_factory=list, max_length=32,
                              json_schema_extra={"items": {"type": "string", "pattern": NAME}})

    @field_validator("accounts", "image_ids")
    @classmethod
    def _ids(cls, ids: list[str]) -> list[str]:
        if not all(re.fullmatch(_CLOUD_ID, i) for i in ids):
            raise ValueError("each entry must be an account, project, subscription or image id")
        return sorted(set(ids))

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups: list[str]) -> list[str]:
        if not all(re.fullmatch(NAME, g) for g in groups):
            raise ValueError("each group must be a name")
        return groups


class TenantSettings(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra=some_change)
    small_team: bool | None = None
    token_max_days: int | None = Field(default=None, ge=1, le=365)  # API token lifetime cap
    sso: SsoConfig | None = None
    # People sign in only through the tenant's identity provider: no setup secret is ever created.
    sso_only: bool | None = None
    # Invitations go only to addresses in these domains (empty: any).
    allowed_email_domains: list[str] | None = Field(default=None, max_length=50,
                                                    json_schema_extra={"items": {"type": "string", "pattern": DOMAIN_PATTERN}})
    # Trust anchors for agents' cloud identity evidence (AWS region certificates, Google's JWKS,
    # Azure's roots): a change waits for a second tenant admin.
    cloud_identity: CloudAnchors | None = None
    # VMs of these accounts (and images) enrol with their cloud identity, no token: waits for a second admin.
    zero_touch: ZeroTouch | None = None

    @field_validator("allowed_email_domains")
    @classmethod
    def _domains(cls, domains: list[str] | None) -> list[str] | None:
        if domains is None:
            return None
        bad = [d for d in domains if not re.fullmatch(DOMAIN_PATTERN, d)]
        if bad:
            raise ValueError("each entry must be a domain name such as example.com")
        return sorted({d.lower() for d in domains})
