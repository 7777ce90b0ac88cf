"""Operator accounts, pure: which roles may be held together, which grants wait for a second
admin, who needs MFA, and how a credential's scopes narrow a user's roles.

Nothing here does I/O; the views load state, ask these functions, and save what they return.
Every refusal is a `Decision` with a reason an operator can act on (kept verbatim in the audit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..permissions import PERMISSIONS
from ..roles import ADMIN_ROLES, CONFIRMED_ROLES, CONFLICTS, MFA_ROLES, PEOPLE_ONLY_ROLES, PROVIDER_ROLES, TENANT_ROLES
from ..roles import MEMBER as MEMBER_ROLE

# Every authenticated user may manage their own sign-in (MFA enrolment, logout, whoami).
MEMBER = MEMBER_ROLE.name

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_PATTERN = rf"^{_LABEL}(?:\.{_LABEL})+$"
EMAIL_PATTERN = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""

    @classmethod
    def deny(cls, reason: str) -> Decision:
        return cls(False, reason)


ALLOW = Decision(True)


def conflicting(roles: frozenset[str]) -> list[frozenset[str]]:
    return [pair for pair in CONFLICTS if pair <= roles]


def roles_for(tenant_kind: str) -> tuple[str, ...]:
    """The provider tenant has provider roles only; a customer tenant, tenant roles only."""
    return PROVIDER_ROLES if tenant_kind == "provider" else TENANT_ROLES


def check_role_set(roles: frozenset[str], *, small_team: bool, known: tuple[str, ...] = TENANT_ROLES) -> Decision:
    """May one user hold all of `roles` (effective and pending together)?"""
    unknown = roles - set(known)
    if unknown:
        return Decision.deny(f"unknown roles {sorted(unknown)}")
    clashes = conflicting(roles)
    if clashes and not small_team:
        pair = " and ".join(sorted(clashes[0]))
        return Decision.deny(f"separation of duties: one user may not hold {pair} "
                             "(a tenant may allow it for small teams)")
    return ALLOW


@dataclass(frozen=True)
class GrantPlan:
    effective: tuple[str, ...]  # take effect now
    pending: tuple[str, ...]  # wait for a second tenant admin


def plan_grant(*, current: frozenset[str], pending: frozenset[str], grant: frozenset[str],
               granter_id: str, target_id: str, small_team: bool,
               known: tuple[str, ...] = TENANT_ROLES, account: str = "person") -> tuple[Decision, GrantPlan]:
    """Split a grant into roles effective now and roles that wait for a second admin."""
    if granter_id == target_id and grant:
        return Decision.deny("a user may not grant roles to themselves"), GrantPlan((), ())
    if account == "service" and (held := sorted(grant & PEOPLE_ONLY_ROLES)):
        # SECURITY: whoever holds a service account's token would hold the role, with no person behind it.
        return Decision.deny(f"a service account may never hold {', '.join(held)}: only a named person may"), GrantPlan((), ())
    new = grant - current - pending
    decision = check_role_set(current | pending | new, small_team=small_team, known=known)
    if not decision.allowed:
        return decision, GrantPlan((), ())
    return ALLOW, GrantPlan(tuple(sorted(new - CONFIRMED_ROLES)), tuple(sorted(new & CONFIRMED_ROLES)))


def check_email(email: str | None, *, account: str, allowed_domains: list[str]) -> Decision:
    """A person is invited at an address (in one of the tenant's allowed domains, if it sets any);
    a service account has none."""
    if account != "person":
        return Decision.deny("a service account has no e-mail address") if email else ALLOW
    if not email:
        return Decision.deny("a person needs an e-mail address: their invitation goes there")
    domain = email.rsplit("@", 1)[1].lower()
    if allowed_domains and domain not in allowed_domains:
        return Decision.deny("this tenant invites only addresses in its allowed e-mail domains")
    return ALLOW


# --- the second admin ------------------------------------------------------------------------

SSO_SOURCES = ("oidc", "saml")


def setup_complete(user: dict) -> bool:
    """A person has taken over their account: a password they set with their own invitation and
    TOTP enrolled, or single sign-on (the identity provider vouches for them at each sign-in)."""
    if user.get("source") in SSO_SOURCES:
        return True
    return bool(user.get("password_hash")) and bool((user.get("mfa") or {}).get("confirmed"))


def admin_since(user: dict) -> datetime | None:
    """When the user's admin role took effect (its confirmation; a tenant's first admins: their
    creation), or None if they hold none."""
    if ADMIN_ROLES.isdisjoint(user.get("roles", ())):
        return None
    return user.get("admin_since") or user.get("created_at")


def is_active_admin(user: dict) -> bool:
    """THE definition of an active admin, for every second-admin confirmation: a person holding an
    admin role in effect (a pending grant is no role), who has completed setup, and is not disabled."""
    return (user.get("status") == "active" and user.get("account", "person") == "person"
            and admin_since(user) is not None and setup_complete(user))


def check_second_admin(*, confirmer: dict | None, requested_by: str, requested_at: datetime,
                       target_id: str | None = None, what: str = "granted a role") -> Decision:
    """May `confirmer` be the second admin for something `requested_by` asked for at `requested_at`
    (a role grant, small-team mode, a single sign-on change, an MFA reset, a service-account token)?
    An active admin, neither the requester nor the one it concerns, who was an admin before the
    request (a newer admin confirms nothing: an admin cannot make a confirmer after the fact)."""
    if confirmer is None:
        return Decision.deny("only a person who is an active admin confirms")
    if confirmer["user_id"] == requested_by:
        return Decision.deny(f"the admin who {what} cannot also confirm it")
    if target_id is not None and confirmer["user_id"] == target_id:
        return Decision.deny("a user may not confirm what concerns themselves")
    if not is_active_admin(confirmer):
        return Decision.deny("only an active admin confirms: one holding the admin role in effect, "
                             "with their own password and MFA set up, not disabled")
    since = admin_since(confirmer)
    if since is not None and since >= requested_at:
        return Decision.deny("an admin who became one after the request cannot confirm it")
    return ALLOW


def confirmed_admin_since(roles_before: frozenset[str], roles_after: frozenset[str], now: datetime) -> dict:
    """The fields to save when a change of roles makes the user an admin (or stops it)."""
    if ADMIN_ROLES.isdisjoint(roles_after):
        return {"admin_since": None}
    if ADMIN_ROLES.isdisjoint(roles_before):
        return {"admin_since": now}
    return {}


def settings_needing_confirmation(*, small_team: bool | None, sso_changed: bool, sso_only: bool | None = None,
                                  domains_changed: bool = False, anchors_changed: bool = False,
                                  zero_touch_changed: bool = False) -> tuple[str, ...]:
    """Tenant settings that widen who holds power wait for a second tenant admin: turning on
    small-team mode (conflicting roles in one person), any single sign-on change (its group
    mapping, and the IdP it trusts to assert groups, decide who gets which role), turning "SSO
    only" off (setup secrets again) and any change of the allowed e-mail domains (where invitations
    may go), any change of the cloud identity trust anchors (whose signatures prove an agent's
    facts) and of zero-touch enrolment (which VMs enrol without a token)."""
    return tuple(name for name, pending in (("small_team", small_team is True), ("sso", sso_changed),
                                            ("sso_only", sso_only is False),
                                            ("allowed_email_domains", domains_changed),
                                            ("cloud_identity", anchors_changed),
                                            ("zero_touch", zero_touch_changed)) if pending)


def needs_mfa(roles: frozenset[str]) -> bool:
    return not MFA_ROLES.isdisjoint(roles)


def needs_second_person(roles: frozenset[str], *, small_team: bool) -> bool:
    """A small-team user holding conflicting roles acts only with a second person."""
    return small_team and bool(conflicting(roles))


def effective_roles(roles: frozenset[str], *, mfa_satisfied: bool) -> frozenset[str]:
    """Roles that count for this credential: none of an MFA role's power without MFA."""
    if needs_mfa(roles) and not mfa_satisfied:
        return frozenset({MEMBER})
    return roles | {MEMBER}


def check_scopes(scopes: frozenset[str]) -> Decision:
    unknown = scopes - set(PERMISSIONS)
    if unknown:
        return Decision.deny(f"unknown scopes {sorted(unknown)}")
    return ALLOW


def scope_allows(permission: str, scopes: frozenset[str] | None) -> bool:
    """A token without scopes carries its owner's roles; with scopes, only those permissions."""
    return scopes is None or permission in scopes or permission == "account.self"


# --- service-account tokens ----------------------------------------------------------------


def separation_waived(*, small_team: bool, account: str) -> bool:
    """Small-team mode lets one person hold roles kept apart, acting only co-signed. SECURITY: never
    a service account: whoever holds its token would hold both roles, with no second person."""
    return small_team and account != "service"


def token_needs_second_admin(roles: frozenset[str]) -> bool:
    """A service account's token hands its holder the account's roles: for a custodian or approver
    role (every role whose grant waits for a second admin) a second admin confirms the token too."""
    return not CONFIRMED_ROLES.isdisjoint(roles)


def token_may_act(token: dict, owner: dict) -> bool:
    """SECURITY: asked on every request, so a token minted while its service account held no
    custodian or approver role stops working once such a grant is confirmed."""
    if owner.get("account") != "service" or token.get("confirmed_by"):
        return True
    return not token_needs_second_admin(frozenset(owner.get("roles", ())))


def token_auth(token: dict) -> str:
    """`actor.auth` of a token's requests: a service account's token names the admin who minted it
    (and the one who confirmed it), so the audit names the people behind the account."""
    if token.get("kind") != "service":
        return "token"
    auth = f"token+minted_by:{token.get('created_by')}"
    return f"{auth}+confirmed_by:{token['confirmed_by']}" if token.get("confirmed_by") else auth


# --- tenant lifecycle ---------------------------------------------------------------------

_LIFECYCLE = {  # action -> (states it applies to, new state, event type)
    "suspend": (("active",), "suspended", "tenant.suspended"),
    "resume": (("suspended",), "active", "tenant.resumed"),
    "offboard": (("active", "suspended"), "offboarded", "tenant.offboarded"),
}


def tenant_transition(action: str, status: str) -> tuple[str, str] | None:
    """The new status and event type of a lifecycle action, or None when `status` does not allow it."""
    states, new_state, event_type = _LIFECYCLE[action]
    return (new_state, event_type) if status in states else None


# --- lockout -------------------------------------------------------------------------------

LOCKOUT_BASE_SECONDS = 30
LOCKOUT_MAX_SECONDS = 15 * 60


def lockout_seconds(failures: int, *, threshold: int) -> int:
    """Backoff after failed logins: nothing below the threshold, then doubling up to a cap."""
    if failures < threshold:
        return 0
    return min(LOCKOUT_BASE_SECONDS * 2 ** (failures - threshold), LOCKOUT_MAX_SECONDS)


def locked_until(failures: int, now: datetime, *, threshold: int) -> datetime | None:
    seconds = lockout_seconds(failures, threshold=threshold)
    return now + timedelta(seconds=seconds) if seconds else None


# --- group-to-role mapping for single sign-on ----------------------------------------------


def roles_from_groups(groups: list[str], mapping: dict[str, list[str]]) -> frozenset[str]:
    """The tenant's mapping turns identity-provider groups into Strongroom roles."""
    roles: set[str] = set()
    for group in groups:
        roles.update(mapping.get(group, ()))
    return frozenset(roles) & frozenset(TENANT_ROLES)


__all__ = [
    "ALLOW",
    "CONFIRMED_ROLES",
    "CONFLICTS",
    "MEMBER",
    "MFA_ROLES",
    "PROVIDER_ROLES",
    "Decision",
    "GrantPlan",
    "check_role_set",
    "check_scopes",
    "check_second_admin",
    "effective_roles",
    "is_active_admin",
    "locked_until",
    "lockout_seconds",
    "needs_mfa",
    "needs_second_person",
    "plan_grant",
    "roles_for",
    "roles_from_groups",
    "scope_allows",
]


def needs_cosign(permission: str) -> bool:
    """For a small-team user holding conflicting roles, every change needs a second person."""
    return not permission.endswith(".read") and permission not in ("account.self", "tokens.self")
