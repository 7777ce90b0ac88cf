"""Every route, one line each: method, path, view, who may call it, its body, query and response
models.

This table drives the router, the authentication and permission checks, the query validation
and the OpenAPI document, so they cannot disagree. `auth` is "none", "operator" or "device".
A route answers JSON described by `response`, unless `produces` names other media types (a
stream, a download, a redirect: `()`); tests/unit/test_route_models.py holds every route to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from shared import commands, export_formats
from shared import commands_audit as ca
from shared import commands_custody as cc
from shared import commands_policy as cp
from shared import commands_volumes as cv

from . import (
    docs,
    notifications,
    schemas,
    views,
    views_agents,
    views_audit,
    views_changes,
    views_custody,
    views_devices,
    views_evidence,
    views_policy,
    views_tpm,
    views_volumes,
    views_zero_touch,
)
from . import queries as Q
from . import responses as R
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
    query: type[BaseModel] | None = None  # validated by the guard before the view runs
    response: type[BaseModel] | None = None  # the success body (JSON)
    produces: tuple[str, ...] = ("application/json",)  # media types of the success body
    consumes: str = "application/json"  # the body's media type
    body_optional: bool = False  # the view takes a missing body as the model's defaults


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", views.health, "none", None, "Liveness of the gateway", response=R.Health),
    Route("GET", "/v1/live", views.live, "none", None, "Liveness: the gateway process answers (restart it if not)", response=R.Liveness),
    Route("GET", "/v1/ready", views.ready, "none", None, "Readiness: 503 naming each failing dependency (store, bus)", response=R.Readiness),
    Route("GET", "/metrics", views.metrics, "none", None, "Prometheus metrics (text exposition format; no tenant data)", produces=("text/plain",)),
    Route("GET", "/v1/docs", docs.page, "none", None, "This API's browsable reference (Swagger UI)", produces=("text/html",)),
    Route("GET", "/v1/docs/{asset}", docs.asset, "none", None, "The reference's scripts, styles and icon", produces=("text/javascript", "text/css", "image/png")),
    Route("POST", "/v1/tenants", views_tenants.create_tenant, "operator", "tenants.create", "Create a customer tenant and its first admin (one-time setup token)", account_schemas.CreateTenant, 201, response=R.TenantCreated),
    Route("POST", "/v1/tokens", views_tokens.create_token, "operator", "tokens.self", "Create a personal or service-account API token with scopes and expiry (shown once); a custodian or approver service account's waits for a second admin (202)", account_schemas.CreateToken, 201, response=R.Token),
    Route("GET", "/v1/tokens", views_tokens.list_tokens, "operator", "tokens.self", "List your API tokens (a tenant admin sees all)", response=R.TokenList),
    Route("DELETE", "/v1/tokens/{token_id}", views_tokens.revoke_token, "operator", "tokens.self", "Revoke an API token (yours; a tenant admin: any)", None, 204),
    Route("GET", "/v1/token-requests", views_tokens.list_token_requests, "operator", "tokens.manage", "Service-account tokens waiting for a second admin, or confirmed and not yet collected", response=R.TokenRequestList),
    Route("POST", "/v1/token-requests/{token_id}/confirm", views_tokens.confirm_token_request, "operator", "tokens.manage", "Confirm a service-account token request (a second admin, not its requester)", response=R.TokenRequest),
    Route("POST", "/v1/token-requests/{token_id}/collect", views_tokens.collect_token_request, "operator", "tokens.manage", "The requesting admin collects a confirmed service-account token (shown once)", None, 201, response=R.Token),
    Route("POST", "/v1/enrollment-tokens", views_devices.create_enrollment, "operator", "devices.enroll", "Create a single-use, expiring enrollment token", schemas.CreateEnrollment, 201, response=R.Enrollment),
    Route("GET", "/v1/devices", views_devices.list_devices, "operator", "devices.read", "List devices", response=R.DeviceList),
    Route("GET", "/v1/devices/{device_id}", views_devices.get_device, "operator", "devices.read", "Show a device", response=R.Device),
    Route("POST", "/v1/devices/{device_id}/revoke", views_devices.revoke_device, "operator", "devices.manage", "Revoke a device", schemas.RevokeDevice, response=R.DeviceRevoked),
    Route("POST", "/v1/keys", views.create_key, "operator", "keys.manage", "Create a volume key", commands.CreateKey, 201, response=commands.KeyView),
    Route("GET", "/v1/keys", views.list_keys, "operator", "keys.read", "List keys (metadata only)", query=commands.ListQuery, response=commands.KeyList),
    Route("GET", "/v1/keys/{key_id}", views.get_key, "operator", "keys.read", "Show a key (metadata only)", response=commands.KeyView),
    Route("POST", "/v1/keys/{key_id}/rotate", views.rotate_key, "operator", "keys.manage", "Rotate a key to a new version", commands.RotateKey, response=commands.KeyView, body_optional=True),
    Route("POST", "/v1/keys/{key_id}/state", views.change_key_state, "operator", "keys.manage", "Change a key's lifecycle state", commands.ChangeKeyState, response=commands.KeyView),
    Route("POST", "/v1/policies", views.create_policy, "operator", "policies.manage", "Create a policy", commands.PutPolicy, 201, response=cp.PolicyView),
    Route("GET", "/v1/policies", views.list_policies, "operator", "policies.read", "List policies", response=cp.PolicyList),
    Route("GET", "/v1/policies/{policy_id}", views.get_policy, "operator", "policies.read", "Show a policy", response=cp.PolicyView),
    Route("PUT", "/v1/policies/{policy_id}", views.update_policy, "operator", "policies.manage", "Replace a policy (new version)", commands.PutPolicy, response=cp.PolicyView),
    Route("DELETE", "/v1/policies/{policy_id}", views.delete_policy, "operator", "policies.manage", "Delete a policy", response=cp.PolicyDeleted),
    Route("GET", "/v1/audit", views.list_audit, "operator", "audit.read", "List audit records (filters, cursor)", query=ca.AuditQuery, response=ca.RecordPage),
    # --- accounts and sign-in ---
    Route("POST", "/v1/auth/bootstrap", views_tenants.bootstrap, "operator", "accounts.bootstrap", "Bootstrap credential: create the first admin, then the credential is disabled", account_schemas.Bootstrap, 201, response=R.Bootstrapped),
    Route("POST", "/v1/auth/setup", views_signin.setup_password, "none", None, "Set a first password with a one-time setup token", account_schemas.Setup, response=R.PasswordSet),
    Route("POST", "/v1/auth/login", views_signin.login, "none", None, "Sign in with password (and TOTP or a recovery code): a session token", account_schemas.Login, 201, response=R.Session),
    Route("GET", "/v1/auth/oidc/start", views_sso.oidc_start, "none", None, "Single sign-on: redirect to the tenant's OpenID provider (?tenant=)", None, 302, query=Q.TenantQuery, produces=()),
    Route("GET", "/v1/auth/oidc/callback", views_sso.oidc_callback, "none", None, "Single sign-on: OpenID provider callback; starts a session", None, 201, query=Q.OidcCallbackQuery, response=R.Session),
    Route("GET", "/v1/auth/saml/start", views_sso.saml_start, "none", None, "Single sign-on: redirect to the tenant's SAML IdP with an AuthnRequest (?tenant=)", None, 302, query=Q.TenantQuery, produces=()),
    Route("POST", "/v1/auth/saml/acs", views_sso.saml_acs, "none", None, "Single sign-on: SAML assertion consumer (HTTP-POST binding); starts a session", schemas.SamlPost, 201, consumes="application/x-www-form-urlencoded", response=R.Session),
    Route("GET", "/v1/auth/saml/metadata", views_sso.saml_metadata, "none", None, "SAML service-provider metadata for the tenant's IdP (?tenant=)", query=Q.TenantQuery, produces=("application/samlmetadata+xml",)),
    Route("POST", "/v1/auth/logout", views_signin.logout, "operator", "account.self", "End the calling session", None, 204),
    Route("GET", "/v1/me", views_signin.me, "operator", "account.self", "Who am I: user, roles, how I authenticated", response=R.Me),
    Route("POST", "/v1/me/mfa", views_signin.mfa_begin, "operator", "account.self", "Start TOTP enrolment (otpauth URI)", None, 201, response=R.MfaEnrolment),
    Route("POST", "/v1/me/mfa/confirm", views_signin.mfa_confirm, "operator", "account.self", "Confirm TOTP enrolment; returns recovery codes once", account_schemas.MfaCode, response=R.RecoveryCodes),
    Route("POST", "/v1/users", views_users.create_user, "operator", "users.manage", "Create a user, invited at their e-mail address (admin, security-officer, custodian and approver roles wait for a second admin)", account_schemas.CreateUser, 201, response=R.User),
    Route("GET", "/v1/users", views_users.list_users, "operator", "users.read", "List the tenant's users", response=R.UserList),
    Route("GET", "/v1/users/{user_id}", views_users.get_user, "operator", "users.read", "Show a user", response=R.User),
    Route("POST", "/v1/users/{user_id}/roles", views_users.change_roles, "operator", "users.manage", "Grant and revoke roles", account_schemas.ChangeRoles, response=R.User),
    Route("POST", "/v1/users/{user_id}/roles/{role}/confirm", views_users.confirm_role, "operator", "users.manage", "Confirm a pending role grant (a second tenant admin)", response=R.User),
    Route("POST", "/v1/users/{user_id}/invitation", invitations.resend_invitation, "operator", "users.manage", "Re-send a person's invitation to their address (a new setup token; the old one stops working)", response=R.User),
    Route("POST", "/v1/users/{user_id}/disable", views_users.disable_user, "operator", "users.manage", "Disable a user and drop their roles", response=R.User),
    Route("POST", "/v1/users/{user_id}/mfa/reset", views_users.request_mfa_reset, "operator", "users.manage", "Ask to reset a user's MFA (a second tenant admin confirms)", None, 202, response=R.MfaReset),
    Route("POST", "/v1/users/{user_id}/mfa/reset/confirm", views_users.confirm_mfa_reset, "operator", "users.manage", "Confirm an MFA reset: secret and recovery codes dropped, sessions ended", response=R.User),
    Route("POST", "/v1/me/password", views_signin.change_password, "operator", "account.self", "Change your password (current password and a TOTP code); ends your sessions", account_schemas.ChangePassword, 204),
    Route("GET", "/v1/changes", views_changes.list_changes, "operator", "account.self", "Small-team changes waiting for a second person (those you may confirm, and your own)", response=R.ChangeList),
    Route("POST", "/v1/changes/{change_id}/confirm", views_changes.confirm_change, "operator", "account.self", "A second person, signed in, confirms a pending change by id; the requester repeats it with X-Strongroom-Change", response=R.Change),
    Route("GET", "/v1/tenant/settings", views_tenants.get_settings, "operator", "tenant.settings", "Show tenant settings (small-team mode, single sign-on)", response=R.TenantSettingsView),
    Route("PUT", "/v1/tenant/settings", views_tenants.put_settings, "operator", "tenant.settings", "Change tenant settings (small-team mode on and SSO changes wait for a second admin: 202)", account_schemas.TenantSettings, response=R.TenantSettingsView),
    Route("POST", "/v1/tenant/settings/changes/{change_id}/confirm", views_tenants.confirm_settings, "operator", "tenant.settings", "Confirm a pending settings change (a second tenant admin)", response=R.TenantSettingsView),
    Route("GET", "/v1/tenants", views_tenants.list_tenants, "operator", "tenants.read", "Provider: customer tenants with status and usage", response=R.TenantList),
    Route("POST", "/v1/tenants/{tenant_id}/suspend", views_tenants.suspend_tenant, "operator", "tenants.manage", "Provider: suspend a tenant (its credentials and agents stop working)", response=R.Tenant),
    Route("POST", "/v1/tenants/{tenant_id}/resume", views_tenants.resume_tenant, "operator", "tenants.manage", "Provider: resume a suspended tenant", response=R.Tenant),
    Route("POST", "/v1/tenants/{tenant_id}/offboard", views_tenants.offboard_tenant, "operator", "tenants.manage", "Provider: offboard a tenant for good", response=R.Tenant),
    # --- policies, device groups, approvals, notifications ---
    Route("GET", "/v1/policies/{policy_id}/versions", views_policy.list_policy_versions, "operator", "policies.read", "List a policy's versions, newest first", response=cp.PolicyVersionList),
    Route("GET", "/v1/policies/{policy_id}/versions/{version}", views_policy.get_policy_version, "operator", "policies.read", "Show one version of a policy", response=cp.PolicyVersionView),
    Route("POST", "/v1/policies/{policy_id}/versions/{version}/restore", views_policy.restore_policy_version, "operator", "policies.manage", "Restore an older version (as a new version)", response=cp.RestoredPolicy),
    Route("POST", "/v1/policies/simulate", views_policy.simulate_policy, "operator", "policies.simulate", "Dry-run a candidate policy over given or recorded requests", views_policy.SimulateBody, response=cp.Simulation),
    Route("GET", "/v1/policy-settings", views_policy.get_policy_settings, "operator", "policies.read", "Show approval expiry and heartbeat grace", response=cp.PolicySettings),
    Route("PUT", "/v1/policy-settings", views_policy.put_policy_settings, "operator", "policies.manage", "Set approval expiry and heartbeat grace", cp.PolicySettings, response=cp.PolicySettings),
    Route("POST", "/v1/groups", views_policy.create_group, "operator", "groups.manage", "Create a device or key group", views_policy.GroupBody, 201, response=cp.GroupView),
    Route("GET", "/v1/groups", views_policy.list_groups, "operator", "groups.read", "List groups (?kind=device|key)", query=Q.GroupsQuery, response=cp.GroupList),
    Route("GET", "/v1/groups/{group_id}", views_policy.get_group, "operator", "groups.read", "Show a group", response=cp.GroupView),
    Route("PUT", "/v1/groups/{group_id}", views_policy.update_group, "operator", "groups.manage", "Replace a group", views_policy.GroupBody, response=cp.GroupView),
    Route("DELETE", "/v1/groups/{group_id}", views_policy.delete_group, "operator", "groups.manage", "Delete a group", response=cp.GroupDeleted),
    Route("GET", "/v1/approvals", views_policy.list_approvals, "operator", "approvals.read", "List approvals (?status=pending)", query=Q.ApprovalsQuery, response=cp.ApprovalList),
    Route("GET", "/v1/approvals/{approval_id}", views_policy.get_approval, "operator", "approvals.read", "Show an approval and its votes", response=cp.ApprovalView),
    Route("POST", "/v1/approvals/{approval_id}/approve", views_policy.approve, "operator", "approvals.decide", "Approve a pending key request", views_policy.VoteBody, response=cp.ApprovalView, body_optional=True),
    Route("POST", "/v1/approvals/{approval_id}/deny", views_policy.deny, "operator", "approvals.decide", "Deny a pending key request", views_policy.VoteBody, response=cp.ApprovalView, body_optional=True),
    Route("GET", "/v1/decisions", views_policy.list_decisions, "operator", "decisions.read", "List recent decisions", query=Q.DecisionsQuery, response=cp.DecisionList),
    Route("GET", "/v1/decisions/{request_id}", views_policy.get_decision, "operator", "decisions.read", "Show a decision with its full trace", response=cp.DecisionDetail),
    Route("GET", "/v1/devices/{device_id}/posture", views_policy.get_device_posture, "operator", "devices.read", "Show a device's posture and quarantine state", response=cp.Posture),
    Route("POST", "/v1/devices/{device_id}/clear-quarantine", views_policy.clear_quarantine, "operator", "devices.manage", "Let a quarantined device be released keys again", views_policy.ClearQuarantineBody, response=cp.DeviceStatus),
    # --- volumes ---
    Route("GET", "/v1/volumes", views_volumes.list_volumes, "operator", "volumes.read", "List registered volumes with their binding and last unlock", query=commands.ListQuery, response=R.VolumeList),
    Route("GET", "/v1/volumes/{volume_id}", views_volumes.get_volume, "operator", "volumes.read", "Show a volume with its attachment history, newest first (?history=N)", query=views_volumes.VolumeQuery, response=R.VolumeDetail),
    Route("POST", "/v1/volumes/{volume_id}/recovery-requests", views_volumes.request_recovery, "operator", "volumes.recover", "Break-glass: ask for a volume's recovery passphrase, sealed to your one-time X25519 key; two other people approve", cv.RecoveryRequest, 201, response=R.RecoveryRequestView),
    Route("GET", "/v1/volumes/{volume_id}/recovery-requests/{request_id}", views_volumes.recovery_status, "operator", "volumes.recover", "Your break-glass request's state", response=R.RecoveryRequestView),
    Route("POST", "/v1/volumes/{volume_id}/recovery-requests/{request_id}/collect", views_volumes.collect_recovery, "operator", "volumes.recover", "Collect an approved recovery passphrase, sealed to your one-time key (once)", response=cv.RecoveryRelease),
    Route("GET", "/v1/events/stream", notifications.event_stream, "operator", "events.read", "Server-sent events: raw requests, approvals, denials, releases, posture (?types=)", query=Q.EventStreamQuery, produces=("text/event-stream",)),
    Route("GET", "/v1/agent/key-requests/{request_id}", views_agents.key_request_status, "device", None, "Agent: poll (or ?wait=N long-poll) a key request", query=Q.WaitQuery, response=R.KeyReleased),
    Route("POST", "/v1/agent/heartbeat", views_agents.heartbeat, "device", None, "Agent: signed heartbeat with fresh facts", views_agents.HeartbeatBody, response=cp.HeartbeatAnswer),
    # --- key custody ---
    Route("GET", "/v1/custody/settings", views_custody.get_settings, "operator", "custody.read", "Show the tenant's key policy (minimum key size, destruction wait, dependency window)", response=cc.CustodySettingsBody),
    Route("PUT", "/v1/custody/settings", views_custody.put_settings, "operator", "custody.manage", "Set the tenant's key policy", cc.CustodySettingsBody, response=cc.CustodySettingsBody),
    Route("POST", "/v1/keys/{key_id}/min-decryption-version", views_custody.set_min_decryption_version, "operator", "keys.manage", "Retire old versions: set min_decryption_version", cc.SetMinDecryptionVersion, response=commands.KeyView),
    Route("GET", "/v1/keys/{key_id}/dependencies", views_custody.dependencies, "operator", "keys.read", "Devices that received the key recently (dependency report)", response=cc.DependencyReport),
    Route("POST", "/v1/keys/{key_id}/destruction", views_custody.schedule_destruction, "operator", "keys.manage", "Schedule crypto-shredding after a waiting period", cc.ScheduleDestruction, 202, response=cc.DestructionView),
    Route("GET", "/v1/keys/{key_id}/destruction", views_custody.get_destruction, "operator", "keys.read", "Show a key's scheduled destruction", response=cc.DestructionView),
    Route("POST", "/v1/keys/{key_id}/destruction/approve", views_custody.approve_destruction, "operator", "keys.manage", "Approve a destruction (a second custodian)", cc.ApproveDestruction, response=cc.DestructionView, body_optional=True),
    Route("POST", "/v1/keys/{key_id}/destruction/cancel", views_custody.cancel_destruction, "operator", "keys.manage", "Cancel a destruction before it runs", cc.CancelDestruction, response=cc.DestructionView),
    Route("GET", "/v1/keys/{key_id}/destruction-certificate", views_custody.destruction_certificate, "operator", "keys.read", "The signed destruction certificate", response=cc.CertificateView),
    Route("POST", "/v1/keys/import", views_custody.import_key, "operator", "keys.manage", "Import a key wrapped to the import public key", cc.ImportKey, 201, response=commands.KeyView),
    Route("POST", "/v1/keys/{key_id}/export", views_custody.export_key, "operator", "keys.export", "Export an exportable key, wrapped to the caller's RSA key", cc.ExportKey, response=cc.ExportedKey),
    Route("GET", "/v1/custody/import-params", views_custody.import_params, "operator", "keys.manage", "An import public key (RSA-OAEP-3072, or X25519 for HPKE with ?wrapping_algorithm=HPKE_X25519_HKDF_SHA256_AES_256_GCM) and single-use token", query=cc.ImportParamsQuery, response=cc.ImportParams),
    Route("GET", "/v1/custody/signing-key", views_custody.signing_key, "operator", "custody.read", "keysvc's public key for destruction certificates", response=cc.SigningKeyView),
    Route("GET", "/v1/custody/kek", views_custody.kek_status, "operator", "custody.read", "The tenant KEK version and re-wrap progress", response=cc.KekStatus),
    Route("POST", "/v1/custody/kek/rotate", views_custody.rotate_kek, "operator", "custody.manage", "Rotate the tenant KEK (data keys re-wrapped in the background)", None, 202, response=cc.KekRotationView),
    Route("GET", "/v1/custody/status", views_custody.custody_status, "operator", "custody.root.status", "Sealed or unsealed, and unseal progress", response=cc.CustodyStatus),
    Route("GET", "/v1/custody/custodians", views_custody.list_custodians, "operator", "custody.root.status", "Root custodians' enrolled keys (ids and key fingerprints)", response=cc.CustodianKeys),
    Route("PUT", "/v1/custody/custodian-key", views_custody.enrol_custodian_key, "operator", "custody.root", "Enrol (or replace) your own X25519 public key: your root share is sealed to it", cc.EnrolCustodianKey, response=cc.CustodianKey),
    Route("GET", "/v1/custody/shares/mine", views_custody.my_share, "operator", "custody.root", "Your root share, sealed to your enrolled key; shown once", response=cc.SealedDelivery),
    Route("POST", "/v1/custody/init", views_custody.init_custody, "operator", "custody.root", "Create the root key; returns its Shamir shares once, sealed to the request's key", cc.InitCustody, 201, response=cc.CustodyInitialized),
    Route("POST", "/v1/custody/transport-key", views_custody.transport_key, "operator", "custody.root", "keysvc's signed key for sealing a share, and the round to bind it to (opens an unseal round)", cc.TransportKeyRequest, response=cc.TransportKey),
    Route("POST", "/v1/custody/unseal", views_custody.unseal, "operator", "custody.root", "Submit one custodian's unseal share, sealed to the transport key", cc.SealedShare, response=cc.UnsealResult),
    Route("POST", "/v1/custody/rekey", views_custody.rekey_root, "operator", "custody.root", "Start replacing the root key: returns the new shares once, sealed to the request's key", cc.RekeyRoot, response=cc.RekeyStarted),
    Route("POST", "/v1/custody/rekey/verify", views_custody.verify_rekey, "operator", "custody.root", "Submit one new share, sealed to the transport key; a threshold of them switches to the new root", cc.SealedShare, response=cc.RekeyVerified),
    Route("POST", "/v1/custody/rekey/cancel", views_custody.cancel_rekey, "operator", "custody.root", "Abandon a pending root re-key before its switch", response=cc.RekeyCancelled),
    # --- audit exports, forwarders, reports ---
    Route("GET", "/v1/audit/checkpoints", views_audit.list_checkpoints, "operator", "audit.read", "List signed checkpoints of the audit chain", query=ca.CheckpointQuery, response=ca.CheckpointPage),
    Route("GET", "/v1/audit/signing-key", views_audit.signing_key, "operator", "audit.read", "Public keys that sign audit checkpoints", response=ca.SigningKeys),
    Route("GET", "/v1/audit/status", views_audit.audit_status, "operator", "audit.read", "Audit chain head, checkpoint, ingestion lag and queue depth", response=ca.AuditStatus),
    Route("GET", "/v1/audit/export", views_audit.export, "operator", "audit.export", "Stream a time range as " + export_formats.labels(), query=Q.ExportParams, produces=export_formats.MEDIA_TYPES),
    Route("POST", "/v1/audit/forwarders", views_audit.create_forwarder, "operator", "audit.forwarders.manage", "Create a continuous SIEM forwarder (syslog TCP/TLS, signed webhook)", ca.ForwarderSpec, 201, response=ca.ForwarderView),
    Route("GET", "/v1/audit/forwarders", views_audit.list_forwarders, "operator", "audit.read", "List forwarders with cursor, lag and last error", response=ca.ForwarderList),
    Route("GET", "/v1/audit/forwarders/{forwarder_id}", views_audit.get_forwarder, "operator", "audit.read", "Show a forwarder with cursor, lag and last error", response=ca.ForwarderView),
    Route("PATCH", "/v1/audit/forwarders/{forwarder_id}", views_audit.update_forwarder, "operator", "audit.forwarders.manage", "Change a forwarder's name, format, event-type filter or enabled flag", ca.ForwarderChange, response=ca.ForwarderView),
    Route("DELETE", "/v1/audit/forwarders/{forwarder_id}", views_audit.delete_forwarder, "operator", "audit.forwarders.manage", "Delete a forwarder", response=ca.ForwarderDeleted),
    Route("POST", "/v1/audit/forwarders/{forwarder_id}/rotate-secret", views_audit.rotate_forwarder_secret, "operator", "audit.forwarders.manage", "Give a webhook forwarder a new signing secret, returned this once", response=ca.ForwarderView),
    Route("GET", "/v1/audit/retention", views_audit.get_retention, "operator", "audit.read", "The tenant's online audit window", response=ca.RetentionWindow),
    Route("PUT", "/v1/audit/retention", views_audit.set_retention, "operator", "audit.retention.manage", "Set the tenant's online audit window (days)", ca.RetentionSetting, response=ca.RetentionWindow),
    Route("POST", "/v1/audit/retention/run", views_audit.run_retention, "operator", "audit.retention.manage", "Archive records past the window now (resumable, idempotent)", response=ca.RetentionRun),
    Route("GET", "/v1/audit/archives", views_audit.list_archives, "operator", "audit.read", "List signed audit archives", query=ca.ArchiveQuery, response=ca.ArchivePage),
    Route("GET", "/v1/audit/archives/{archive_id}", views_audit.get_archive, "operator", "audit.export", "Download a signed audit archive (gzip)", produces=("application/gzip",)),
    Route("GET", "/v1/reports", views_audit.report, "operator", "reports.read", "Releases, denials, approvals, keys and devices over a time range (json, csv, html)", query=ca.ReportQuery, response=R.Report, produces=("application/json", "text/csv", "text/html")),
    Route("POST", "/v1/agent/enroll/challenges", views_evidence.enrollment_challenge, "none", None, "Agent: a single-use challenge for enrolment evidence (the enrollment token is not spent)", views_evidence.EnrollmentChallengeBody, 201, response=R.Challenge),
    Route("POST", "/v1/agent/challenges", views_evidence.device_challenge, "device", None, "Agent: a single-use challenge for the evidence of its next request (RFC 9421-signed)", success=201, response=R.Challenge),
    Route("POST", "/v1/agent/tpm/enrol", views_tpm.tpm_enrol, "device", None, "Agent: register its TPM's EK and AK; answers the credential to activate (RFC 9421-signed)", views_tpm.TpmEnrolBody, 201, response=R.TpmActivation),
    Route("POST", "/v1/agent/tpm/activate", views_tpm.tpm_activate, "device", None, "Agent: the secret ActivateCredential recovered; registers the AK (RFC 9421-signed)", views_tpm.TpmActivateBody, response=R.TpmRegistered),
    Route("POST", "/v1/agent/enroll/zero-touch/challenges", views_zero_touch.zero_touch_challenge, "none", None, "Agent: a challenge for zero-touch enrolment evidence, where the tenant allows it", views_zero_touch.ZeroTouchChallengeBody, 201, response=R.Challenge),
    Route("POST", "/v1/agent/enroll/zero-touch", views_zero_touch.zero_touch_enroll, "none", None, "Agent: enrol with its verified cloud identity instead of a token (accounts and images the tenant allows)", views_zero_touch.ZeroTouchEnroll, 201, response=R.Enrolled),
    Route("POST", "/v1/agent/enroll", views_agents.enroll, "none", None, "Agent: enrol with an enrollment token", schemas.Enroll, 201, response=R.Enrolled),
    Route("POST", "/v1/agent/volumes", views_volumes.register, "device", None, "Agent: register (or re-bind) a LUKS2 volume it formatted or bound; bound to this device's instance (RFC 9421-signed)", cv.RegisterVolume, 201, response=R.Volume),
    Route("POST", "/v1/agent/volumes/{volume_id}/escrow-key", views_volumes.escrow_key, "device", None, "Agent: keysvc's single-use X25519 key to seal the volume's recovery passphrase to (RFC 9421-signed)", success=201, response=cv.EscrowKey),
    Route("POST", "/v1/agent/volumes/{volume_id}/recovery", views_volumes.escrow, "device", None, "Agent: escrow the volume's recovery passphrase, HPKE-sealed to the escrow key (RFC 9421-signed)", cv.EscrowRecovery, 201, response=cv.Escrowed),
    Route("POST", "/v1/agent/key-requests", views_agents.key_request, "device", None, "Agent: request a key (RFC 9421-signed)", schemas.KeyRequestBody, response=R.KeyReleased),
)


def setup(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, guarded(route))


__all__ = ["ROUTES", "Route", "Unauthorized", "setup"]
