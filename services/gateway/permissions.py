"""Who may do what: permission -> roles that hold it, derived from the role records (`roles.py`).

Routes name a permission (see `routes.py`); nothing else decides access.
"""

from __future__ import annotations

from .roles import PROVIDER_ROLES, ROLES

PERMISSIONS: dict[str, frozenset[str]] = {
    permission: frozenset(r.name for r in ROLES if permission in r.permissions)
    for permission in sorted({p for r in ROLES for p in r.permissions})
}

# Permissions provider roles hold inside the provider tenant: customer tenants' lifecycle, the
# provider's own people, and the root of trust (root custodians). None of them reads or changes a
# customer tenant's content.
PROVIDER_PERMISSIONS = frozenset(p for r in ROLES if r.name in PROVIDER_ROLES for p in r.permissions)


def allowed(permission: str, roles: frozenset[str]) -> bool:
    holders = PERMISSIONS.get(permission)
    if holders is None:  # deny by default: an unknown permission is nobody's
        return False
    return not holders.isdisjoint(roles)
