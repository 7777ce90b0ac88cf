"""Bodies of the accounts and sign-in routes. Passwords are bounded here and judged in the view
(`passwords.weakness`), so an oversized one is refused before any hashing."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.commands import NAME, Strict, items_among, some_change

from ..permissions import PERMISSIONS
from ..roles import PROVIDER_ROLES, TENANT_ROLES
from .rules import USERNAME_PATTERN

_ALL_ROLES = TENANT_ROLES + PROVIDER_ROLES
_PASSWORD = Field(min_length=1, max_length=1024, description="checked against the password policy")


def _known_roles(roles: list[str]) -> list[str]:
    unknown = sorted(set(roles) - set(_ALL_ROLES))
    if unknown:
        raise ValueError(f"unknown roles {unknown}; known: {list(_ALL_ROLES)}")
    return sorted(set(roles))


class Bootstrap(Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = _PASSWORD


class Login(Strict):
    tenant: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
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
    name: str = Field(pattern=NAME)
    admin_username: str = Field(default="admin", pattern=USERNAME_PATTERN)


class CreateUser(Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    roles: list[str] = Field(default_factory=list, max_length=len(_ALL_ROLES), json_schema_extra=items_among(_ALL_ROLES))
    account: Literal["person", "service"] = "person"

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
    expires_in_seconds: int = Field(default=90 * 86400, ge=60, le=365 * 86400)
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


class TenantSettings(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra=some_change)
    small_team: bool | None = None
    sso: SsoConfig | None = None
