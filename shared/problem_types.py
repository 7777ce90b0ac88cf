"""Problem types (RFC 9457 `type` members) a client acts on, each declared once: the gateway sets
them, the CLI maps them to what the operator should do next."""

from __future__ import annotations

# The caller's roles would allow the request, but only on an MFA-verified credential: enrol in
# MFA (or sign in again with a TOTP code) first.
MFA_REQUIRED = "tag:strongroom.dev,2026:problems/mfa-required"
