"""Every route, one line each: method, path, view, who may call it, and its body schema.

This table drives the router, the authentication and permission checks, and the OpenAPI
document, so they cannot disagree. `auth` is "none", "operator" or "device".
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from shared import commands, commands_custody, commands_policy, export_formats

from . import (
    notifications,
    schemas,
    views,
    views_agents,
    views_audit,
    views_changes,
    views_custody,
    views_devices,
    views_policy,
)
from .accounts import invitations, views_signin, views_sso, views_tenants, views_tokens, views_users
from .accounts import schemas as account_schemas
from .auth import Unauthorized
from .guard import guarded


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    view: object
    auth: str
    permission: str | None
    summary: str
    body: type[BaseModel] | None = None
    success: int = 200


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", views.health, "none", None, "Liveness of the gateway"),
    Route("POST", "/v1/tenants", views_tenants.create_tenant, "operator", "tenants.create", "Create a customer tenant and its first admin (one-time setup token)", account_schemas.CreateTenant, 201),
    Route("POST", "/v1/tokens", views_tokens.create_token, "operator", "tokens.self", "Create a personal or service-account API token with scopes and expiry (shown once); a custodian or approver service account's waits for a second admin (202)", account_schemas.CreateToken, 201),
    Route("GET", "/v1/tokens", views_tokens.list_tokens, "operator", "tokens.self", "List your API tokens (a tenant admin sees all)"),
    Route("DELETE", "/v1/tokens/{token_id}", views_tokens.revoke_token, "operator", "tokens.self", "Revoke an API token (yours; a tenant admin: any)", None, 204),
    Route("GET", "/v1/token-requests", views_tokens.list_token_requests, "operator", "tokens.manage", "Service-account tokens waiting for a second admin, or confirmed and not yet collected"),
    Route("POST", "/v1/token-requests/{token_id}/confirm", views_tokens.confirm_token_request, "operator", "tokens.manage", "Confirm a service-account token request (a second admin, not its requester)"),
    Route("POST", "/v1/token-requests/{token_id}/collect", views_tokens.collect_token_request, "operator", "tokens.manage", "The requesting admin collects a confirmed service-account token (shown once)", None, 201),
    Route("POST", "/v1/enrollment-tokens", views_devices.create_enrollment, "operator", "devices.enroll", "Create a single-use, expiring enrollment token", schemas.CreateEnrollment, 201),
    Route("GET", "/v1/devices", views_devices.list_devices, "operator", "devices.read", "List devices"),
    Route("GET", "/v1/devices/{device_id}", views_devices.get_device, "operator", "devices.read", "Show a device"),
    Route("POST", "/v1/devices/{device_id}/revoke", views_devices.revoke_device, "operator", "devices.manage", "Revoke a device", schemas.RevokeDevice),
    Route("POST", "/v1/keys", views.create_key, "operator", "keys.manage", "Create a volume key", commands.CreateKey, 201),
    Route("GET", "/v1/keys", views.list_keys, "operator", "keys.read", "List keys (metadata only)"),
    Route("GET", "/v1/keys/{key_id}", views.get_key, "operator", "keys.read", "Show a key (metadata only)"),
    Route("POST", "/v1/keys/{key_id}/rotate", views.rotate_key, "operator", "keys.manage", "Rotate a key to a new version", commands.RotateKey),
    Route("POST", "/v1/keys/{key_id}/state", views.change_key_state, "operator", "keys.manage", "Change a key's lifecycle state", commands.ChangeKeyState),
    Route("POST", "/v1/policies", views.create_policy, "operator", "policies.manage", "Create a policy", commands.PutPolicy, 201),
    Route("GET", "/v1/policies", views.list_policies, "operator", "policies.read", "List policies"),
    Route("GET", "/v1/policies/{policy_id}", views.get_policy, "operator", "policies.read", "Show a policy"),
    Route("PUT", "/v1/policies/{policy_id}", views.update_policy, "operator", "policies.manage", "Replace a policy (new version)", commands.PutPolicy),
    Route("DELETE", "/v1/policies/{policy_id}", views.delete_policy, "operator", "policies.manage", "Delete a policy"),
    Route("GET", "/v1/audit", views.list_audit, "operator", "audit.read", "List audit records (filters, cursor)"),
    # --- accounts and sign-in ---
    Route("POST", "/v1/auth/bootstrap", views_tenants.bootstrap, "operator", "accounts.bootstrap", "Bootstrap credential: create the first admin, then the credential is disabled", account_schemas.Bootstrap, 201),
    Route("POST", "/v1/auth/setup", views_signin.setup_password, "none", None, "Set a first password with a one-time setup token", account_schemas.Setup),
    Route("POST", "/v1/auth/login", views_signin.login, "none", None, "Sign in with password (and TOTP or a recovery code): a session token", account_schemas.Login, 201),
    Route("GET", "/v1/auth/oidc/start", views_sso.oidc_start, "none", None, "Single sign-on: redirect to the tenant's OpenID provider (?tenant=)", None, 302),
    Route("GET", "/v1/auth/oidc/callback", views_sso.oidc_callback, "none", None, "Single sign-on: OpenID provider callback; starts a session", None, 201),
    Route("GET", "/v1/auth/saml/start", views_sso.saml_start, "none", None, "Single sign-on: redirect to the tenant's SAML IdP with an AuthnRequest (?tenant=)", None, 302),
    Route("POST", "/v1/auth/saml/acs", views_sso.saml_acs, "none", None, "Single sign-on: SAML assertion consumer (HTTP-POST binding); starts a session", None, 201),
    Route("GET", "/v1/auth/saml/metadata", views_sso.saml_metadata, "none", None, "SAML service-provider metadata for the tenant's IdP (?tenant=)"),
    Route("POST", "/v1/auth/logout", views_signin.logout, "operator", "account.self", "End the calling session", None, 204),
    Route("GET", "/v1/me", views_signin.me, "operator", "account.self", "Who am I: user, roles, how I authenticated"),
    Route("POST", "/v1/me/mfa", views_signin.mfa_begin, "operator", "account.self", "Start TOTP enrolment (otpauth URI)", None, 201),
    Route("POST", "/v1/me/mfa/confirm", views_signin.mfa_confirm, "operator", "account.self", "Confirm TOTP enrolment; returns recovery codes once", account_schemas.MfaCode),
    Route("POST", "/v1/users", views_users.create_user, "operator", "users.manage", "Create a user, invited at their e-mail address (admin, security-officer, custodian and approver roles wait for a second admin)", account_schemas.CreateUser, 201),
    Route("GET", "/v1/users", views_users.list_users, "operator", "users.read", "List the tenant's users"),
    Route("GET", "/v1/users/{user_id}", views_users.get_user, "operator", "users.read", "Show a user"),
    Route("POST", "/v1/users/{user_id}/roles", views_users.change_roles, "operator", "users.manage", "Grant and revoke roles", account_schemas.ChangeRoles),
    Route("POST", "/v1/users/{user_id}/roles/{role}/confirm", views_users.confirm_role, "operator", "users.manage", "Confirm a pending role grant (a second tenant admin)"),
    Route("POST", "/v1/users/{user_id}/invitation", invitations.resend_invitation, "operator", "users.manage", "Re-send a person's invitation to their address (a new setup token; the old one stops working)"),
    Route("POST", "/v1/users/{user_id}/disable", views_users.disable_user, "operator", "users.manage", "Disable a user and drop their roles"),
    Route("POST", "/v1/users/{user_id}/mfa/reset", views_users.request_mfa_reset, "operator", "users.manage", "Ask to reset a user's MFA (a second tenant admin confirms)", None, 202),
    Route("POST", "/v1/users/{user_id}/mfa/reset/confirm", views_users.confirm_mfa_reset, "operator", "users.manage", "Confirm an MFA reset: secret and recovery codes dropped, sessions ended"),
    Route("POST", "/v1/me/password", views_signin.change_password, "operator", "account.self", "Change your password (current password and a TOTP code); ends your sessions", account_schemas.ChangePassword, 204),
    Route("GET", "/v1/changes", views_changes.list_changes, "operator", "account.self", "Small-team changes waiting for a second person (those you may confirm, and your own)"),
    Route("POST", "/v1/changes/{change_id}/confirm", views_changes.confirm_change, "operator", "account.self", "A second person, signed in, confirms a pending change by id; the requester repeats it with X-Strongroom-Change"),
    Route("GET", "/v1/tenant/settings", views_tenants.get_settings, "operator", "tenant.settings", "Show tenant settings (small-team mode, single sign-on)"),
    Route("PUT", "/v1/tenant/settings", views_tenants.put_settings, "operator", "tenant.settings", "Change tenant settings (small-team mode on and SSO changes wait for a second admin: 202)", account_schemas.TenantSettings),
    Route("POST", "/v1/tenant/settings/changes/{change_id}/confirm", views_tenants.confirm_settings, "operator", "tenant.settings", "Confirm a pending settings change (a second tenant admin)"),
    Route("GET", "/v1/tenants", views_tenants.list_tenants, "operator", "tenants.read", "Provider: customer tenants with status and usage"),
    Route("POST", "/v1/tenants/{tenant_id}/suspend", views_tenants.suspend_tenant, "operator", "tenants.manage", "Provider: suspend a tenant (its credentials and agents stop working)"),
    Route("POST", "/v1/tenants/{tenant_id}/resume", views_tenants.resume_tenant, "operator", "tenants.manage", "Provider: resume a suspended tenant"),
    Route("POST", "/v1/tenants/{tenant_id}/offboard", views_tenants.offboard_tenant, "operator", "tenants.manage", "Provider: offboard a tenant for good"),
    # --- policies, device groups, approvals, notifications ---
    Route("GET", "/v1/policies/{policy_id}/versions", views_policy.list_policy_versions, "operator", "policies.read", "List a policy's versions, newest first"),
    Route("GET", "/v1/policies/{policy_id}/versions/{version}", views_policy.get_policy_version, "operator", "policies.read", "Show one version of a policy"),
    Route("POST", "/v1/policies/{policy_id}/versions/{version}/restore", views_policy.restore_policy_version, "operator", "policies.manage", "Restore an older version (as a new version)"),
    Route("POST", "/v1/policies/simulate", views_policy.simulate_policy, "operator", "policies.simulate", "Dry-run a candidate policy over given or recorded requests", views_policy.SimulateBody),
    Route("GET", "/v1/policy-settings", views_policy.get_policy_settings, "operator", "policies.read", "Show approval expiry and heartbeat grace"),
    Route("PUT", "/v1/policy-settings", views_policy.put_policy_settings, "operator", "policies.manage", "Set approval expiry and heartbeat grace", commands_policy.PolicySettings),
    Route("POST", "/v1/groups", views_policy.create_group, "operator", "groups.manage", "Create a device or key group", views_policy.GroupBody, 201),
    Route("GET", "/v1/groups", views_policy.list_groups, "operator", "groups.read", "List groups (?kind=device|key)"),
    Route("GET", "/v1/groups/{group_id}", views_policy.get_group, "operator", "groups.read", "Show a group"),
    Route("PUT", "/v1/groups/{group_id}", views_policy.update_group, "operator", "groups.manage", "Replace a group", views_policy.GroupBody),
    Route("DELETE", "/v1/groups/{group_id}", views_policy.delete_group, "operator", "groups.manage", "Delete a group"),
    Route("GET", "/v1/approvals", views_policy.list_approvals, "operator", "approvals.read", "List approvals (?status=pending)"),
    Route("GET", "/v1/approvals/{approval_id}", views_policy.get_approval, "operator", "approvals.read", "Show an approval and its votes"),
    Route("POST", "/v1/approvals/{approval_id}/approve", views_policy.approve, "operator", "approvals.decide", "Approve a pending key request", views_policy.VoteBody),
    Route("POST", "/v1/approvals/{approval_id}/deny", views_policy.deny, "operator", "approvals.decide", "Deny a pending key request", views_policy.VoteBody),
    Route("GET", "/v1/decisions", views_policy.list_decisions, "operator", "decisions.read", "List recent decisions"),
    Route("GET", "/v1/decisions/{request_id}", views_policy.get_decision, "operator", "decisions.read", "Show a decision with its full trace"),
    Route("GET", "/v1/devices/{device_id}/posture", views_policy.get_device_posture, "operator", "devices.read", "Show a device's posture and quarantine state"),
    Route("POST", "/v1/devices/{device_id}/clear-quarantine", views_policy.clear_quarantine, "operator", "devices.manage", "Let a quarantined device be released keys again", views_policy.ClearQuarantineBody),
    Route("GET", "/v1/events/stream", notifications.event_stream, "operator", "events.read", "Server-sent events: approvals, denials, posture (?types=)"),
    Route("GET", "/v1/agent/key-requests/{request_id}", views_agents.key_request_status, "device", None, "Agent: poll (or ?wait=N long-poll) a key request"),
    Route("POST", "/v1/agent/heartbeat", views_agents.heartbeat, "device", None, "Agent: signed heartbeat with fresh facts", views_agents.HeartbeatBody),
    # --- key custody ---
    Route("GET", "/v1/custody/settings", views_custody.get_settings, "operator", "custody.read", "Show the tenant's key policy (minimum key size, destruction wait, dependency window)"),
    Route("PUT", "/v1/custody/settings", views_custody.put_settings, "operator", "custody.manage", "Set the tenant's key policy", commands_custody.CustodySettingsBody),
    Route("POST", "/v1/keys/{key_id}/min-decryption-version", views_custody.set_min_decryption_version, "operator", "keys.manage", "Retire old versions: set min_decryption_version", commands_custody.SetMinDecryptionVersion),
    Route("GET", "/v1/keys/{key_id}/dependencies", views_custody.dependencies, "operator", "keys.read", "Devices that received the key recently (dependency report)"),
    Route("POST", "/v1/keys/{key_id}/destruction", views_custody.schedule_destruction, "operator", "keys.manage", "Schedule crypto-shredding after a waiting period", commands_custody.ScheduleDestruction, 202),
    Route("GET", "/v1/keys/{key_id}/destruction", views_custody.get_destruction, "operator", "keys.read", "Show a key's scheduled destruction"),
    Route("POST", "/v1/keys/{key_id}/destruction/approve", views_custody.approve_destruction, "operator", "keys.manage", "Approve a destruction (a second custodian)", commands_custody.ApproveDestruction),
    Route("POST", "/v1/keys/{key_id}/destruction/cancel", views_custody.cancel_destruction, "operator", "keys.manage", "Cancel a destruction before it runs", commands_custody.CancelDestruction),
    Route("GET", "/v1/keys/{key_id}/destruction-certificate", views_custody.destruction_certificate, "operator", "keys.read", "The signed destruction certificate"),
    Route("POST", "/v1/keys/import", views_custody.import_key, "operator", "keys.manage", "Import a key wrapped to the import public key", commands_custody.ImportKey, 201),
    Route("POST", "/v1/keys/{key_id}/export", views_custody.export_key, "operator", "keys.export", "Export an exportable key, wrapped to the caller's RSA key", commands_custody.ExportKey),
    Route("GET", "/v1/custody/import-params", views_custody.import_params, "operator", "keys.manage", "An import public key (RSA-OAEP-3072, or X25519 for HPKE with ?wrapping_algorithm=HPKE_X25519_HKDF_SHA256_AES_256_GCM) and single-use token"),
    Route("GET", "/v1/custody/signing-key", views_custody.signing_key, "operator", "custody.read", "keysvc's public key for destruction certificates"),
    Route("GET", "/v1/custody/kek", views_custody.kek_status, "operator", "custody.read", "The tenant KEK version and re-wrap progress"),
    Route("POST", "/v1/custody/kek/rotate", views_custody.rotate_kek, "operator", "custody.manage", "Rotate the tenant KEK (data keys re-wrapped in the background)", None, 202),
    Route("GET", "/v1/custody/status", views_custody.custody_status, "operator", "custody.root.status", "Sealed or unsealed, and unseal progress"),
    Route("GET", "/v1/custody/custodians", views_custody.list_custodians, "operator", "custody.root.status", "Root custodians' enrolled keys (ids and key fingerprints)"),
    Route("PUT", "/v1/custody/custodian-key", views_custody.enrol_custodian_key, "operator", "custody.root", "Enrol (or replace) your own X25519 public key: your root share is sealed to it", commands_custody.EnrolCustodianKey),
    Route("GET", "/v1/custody/shares/mine", views_custody.my_share, "operator", "custody.root", "Your root share, sealed to your enrolled key; shown once"),
    Route("POST", "/v1/custody/init", views_custody.init_custody, "operator", "custody.root", "Create the root key; returns its Shamir shares once, sealed to the request's key", commands_custody.InitCustody, 201),
    Route("POST", "/v1/custody/transport-key", views_custody.transport_key, "operator", "custody.root", "keysvc's signed key for sealing a share, and the round to bind it to (opens an unseal round)", commands_custody.TransportKeyRequest),
    Route("POST", "/v1/custody/unseal", views_custody.unseal, "operator", "custody.root", "Submit one custodian's unseal share, sealed to the transport key", commands_custody.SealedShare),
    Route("POST", "/v1/custody/rekey", views_custody.rekey_root, "operator", "custody.root", "Start replacing the root key: returns the new shares once, sealed to the request's key", commands_custody.RekeyRoot),
    Route("POST", "/v1/custody/rekey/verify", views_custody.verify_rekey, "operator", "custody.root", "Submit one new share, sealed to the transport key; a threshold of them switches to the new root", commands_custody.SealedShare),
    Route("POST", "/v1/custody/rekey/cancel", views_custody.cancel_rekey, "operator", "custody.root", "Abandon a pending root re-key before its switch"),
    # --- audit exports, forwarders, reports ---
    Route("GET", "/v1/audit/checkpoints", views_audit.list_checkpoints, "operator", "audit.read", "List signed checkpoints of the audit chain"),
    Route("GET", "/v1/audit/signing-key", views_audit.signing_key, "operator", "audit.read", "Public keys that sign audit checkpoints"),
    Route("GET", "/v1/audit/status", views_audit.audit_status, "operator", "audit.read", "Audit chain head, checkpoint, ingestion lag and queue depth"),
    Route("GET", "/v1/audit/export", views_audit.export, "operator", "audit.export", "Stream a time range as " + export_formats.labels()),
    Route("POST", "/v1/audit/forwarders", views_audit.create_forwarder, "operator", "audit.forwarders.manage", "Create a continuous SIEM forwarder (syslog TCP/TLS, signed webhook)", None, 201),
    Route("GET", "/v1/audit/forwarders", views_audit.list_forwarders, "operator", "audit.read", "List forwarders with cursor, lag and last error"),
    Route("GET", "/v1/audit/forwarders/{forwarder_id}", views_audit.get_forwarder, "operator", "audit.read", "Show a forwarder with cursor, lag and last error"),
    Route("PATCH", "/v1/audit/forwarders/{forwarder_id}", views_audit.update_forwarder, "operator", "audit.forwarders.manage", "Change a forwarder's name, format, event-type filter or enabled flag"),
    Route("DELETE", "/v1/audit/forwarders/{forwarder_id}", views_audit.delete_forwarder, "operator", "audit.forwarders.manage", "Delete a forwarder"),
    Route("POST", "/v1/audit/forwarders/{forwarder_id}/rotate-secret", views_audit.rotate_forwarder_secret, "operator", "audit.forwarders.manage", "Give a webhook forwarder a new signing secret, returned this once"),
    Route("GET", "/v1/audit/retention", views_audit.get_retention, "operator", "audit.read", "The tenant's online audit window"),
    Route("PUT", "/v1/audit/retention", views_audit.set_retention, "operator", "audit.retention.manage", "Set the tenant's online audit window (days)"),
    Route("POST", "/v1/audit/retention/run", views_audit.run_retention, "operator", "audit.retention.manage", "Archive records past the window now (resumable, idempotent)"),
    Route("GET", "/v1/audit/archives", views_audit.list_archives, "operator", "audit.read", "List signed audit archives"),
    Route("GET", "/v1/audit/archives/{archive_id}", views_audit.get_archive, "operator", "audit.export", "Download a signed audit archive (gzip)"),
    Route("GET", "/v1/reports", views_audit.report, "operator", "reports.read", "Releases, denials, approvals, keys and devices over a time range (json, csv, html)"),
    Route("POST", "/v1/agent/enroll", views_agents.enroll, "none", None, "Agent: enrol with an enrollment token", schemas.Enroll, 201),
    Route("POST", "/v1/agent/key-requests", views_agents.key_request, "device", None, "Agent: request a key (RFC 9421-signed)", schemas.KeyRequestBody),
)


def setup(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, guarded(route))


__all__ = ["ROUTES", "Route", "Unauthorized", "setup"]
