"""The gateway's settings from the environment (STRONGROOM_GATEWAY_X, else STRONGROOM_X: shared/config.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings, per_service


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_GATEWAY_", extra="ignore")

    # Address the HTTP API listens on (0.0.0.0 in a container).
    host: str = "127.0.0.1"
    # Port the HTTP API listens on.
    port: int = 8400
    # Hash of this credential is stored; the credential itself is never stored or logged.
    bootstrap_token: SecretStr | None = None
    # How long a key request waits for policysvc's decision and keysvc's release.
    release_timeout_seconds: float = 10.0
    # Largest request body accepted (413 past it).
    max_body_bytes: int = 64 * 1024
    # Oldest agent request signature accepted (replay window).
    signature_max_age_seconds: int = 300
    # Default lifetime of an enrollment token.
    enrollment_ttl_seconds: int = 24 * 3600
    # An evidence challenge (POST /v1/agent/challenges) is good for one use within this time.
    challenge_ttl_seconds: int = 120
    # Issuers of `signed` evidence (evidence/signed.py): comma-separated base64 raw Ed25519 public keys.
    evidence_signers: str = ""
    # --- accounts and sign-in ---
    # "provider": a provider tenant whose admins run customer tenants; "enterprise": one tenant.
    deployment: Literal["provider", "enterprise"] = "provider"
    # The one tenant's name in an "enterprise" deployment.
    enterprise_tenant_name: str = "enterprise"
    # Argon2id (RFC 9106): 64 MiB, 2 passes, 2 lanes is about 60 ms per hash on a 2-core box;
    # at most `password_hash_concurrency` hashes run at once so a login flood queues, not swaps.
    password_time_cost: int = 2
    # Argon2id memory per hash, KiB.
    password_memory_kib: int = 64 * 1024
    # Argon2id lanes.
    password_parallelism: int = 2
    # Password hashes computed at once (more wait).
    password_hash_concurrency: int = 2
    # A sign-in session ends after this long unused.
    session_idle_seconds: int = 15 * 60
    # A sign-in session ends this long after it began, used or not.
    session_absolute_seconds: int = 8 * 3600
    # Lifetime of an invitation's one-time setup token.
    setup_token_ttl_seconds: int = 72 * 3600
    # An open event stream re-checks its credential this often (and at once on a logout or a
    # revocation seen by this instance): an ended session or token ends the stream.
    stream_recheck_seconds: float = 30.0
    # Raw key requests (one per release) reach this instance only while an event stream that may
    # show them is open here, and for this long after the last one closed: a browser reconnecting
    # within it gets the ones it missed from the replay buffer (later, a gap is shown).
    stream_binding_linger_seconds: float = 60.0
    # Small-team co-signing: a change waits this long for a second person's confirmation and use.
    change_ttl_seconds: int = 3600
    # Failed sign-ins (wrong password, unknown user, missing or wrong TOTP or recovery code) count
    # per (username, source address): at `lockout_threshold` within a window that pair is locked
    # with doubling backoff, while the user still signs in from elsewhere. Per username across all
    # addresses, `lockout_global_threshold` failures within one window lock the name everywhere
    # until that window ends: at most that many guesses per name per window, however many
    # addresses guess. A window runs `lockout_window_seconds` from its first failure.
    lockout_threshold: int = 5
    # Failures per username, from any address, that lock the name until the window ends.
    lockout_global_threshold: int = 50
    # Length of a failure-counting window, from its first failure.
    lockout_window_seconds: int = 15 * 60
    # Token buckets: (burst, refill per second), per source address and per credential.
    login_rate_burst: int = 60
    # Sign-in token bucket refill per second (per address and per credential).
    login_rate_per_second: float = 1.0
    # Failed authentication (a refused credential or signature, a failed sign-in) per source
    # address, on every route: past `auth_failure_burst` failures, refilled at
    # `auth_failure_per_second`, that address gets 429 + Retry-After and no credential it sends
    # is tried. Other addresses are unaffected. A well-configured client fails rarely; these
    # bound guessing (and the audit records it causes) to about 12 a minute per address.
    auth_failure_burst: int = 30
    # Refill per second of the failed-authentication bucket per address.
    auth_failure_per_second: float = 0.2
    # Agent calls (`/v1/agent/*`), sized for real agents. One device asks for its keys at boot
    # and on rotation (a request each, and a long poll of at most 60 s while one waits for an
    # approval) and heartbeats every half grace period (minutes): `agent_rate_burst_per_device`
    # (60) covers a boot that unlocks dozens of volumes, `_per_second_per_device` (0.5, 30 a
    # minute) anything a healthy agent does after. One address may carry many VMs behind a NAT:
    # `_burst_per_address` (3,000) lets that many boot at once, `_per_second_per_address` (100)
    # carries thousands heartbeating. Past either: 429 + Retry-After. The device bucket is taken
    # only once a request's signature checked out, so no one else can spend a device's budget.
    agent_rate_burst_per_address: int = 3_000
    # Agent calls per second per source address, after the burst.
    agent_rate_per_second_per_address: float = 100.0
    # Agent calls one device may make at once.
    agent_rate_burst_per_device: int = 60
    # Agent calls per second per device, after the burst.
    agent_rate_per_second_per_device: float = 0.5
    # Load shedding: while a queue on the release path (policysvc, keysvc, auditsvc) holds more than
    # `queue_depth_limit` messages, key requests get 503 + Retry-After (`queue_depth_retry_after_seconds`)
    # instead of adding to it; 0 turns it off. Depths are read every `queue_depth_refresh_seconds`.
    queue_depth_limit: int = 20_000
    # How often the gateway reads those queues' depths (in the background, never per request).
    queue_depth_refresh_seconds: float = 1.0
    # The Retry-After (seconds) of a key request refused for a deep queue.
    queue_depth_retry_after_seconds: int = 2
    # Public base URL of the gateway, used for SSO redirect URIs and the SAML audience.
    public_url: str | None = None
    # 32 random bytes (a 0600 file) that seal TOTP secrets and SSO client secrets in the store;
    # required (the gateway does not start without it); every gateway instance uses the same file.
    data_key_file: str | None = per_service()
    # --- mail: invitations (setup tokens) go to the invitee, notifications to every admin ---
    # SMTP when `smtp_host` is set (`smtp_tls`: implicit TLS, typically port 465; `smtp_starttls`:
    # upgrade a plain connection, typically 587); otherwise, when `mail_folder` is set (dev mode),
    # one .eml file per message there. With neither, mail cannot be sent: an invitation then shows
    # `undelivered` and an admin re-sends it once mail works.
    smtp_host: str | None = None
    # SMTP port.
    smtp_port: int = 25
    # Upgrade a plain SMTP connection with STARTTLS (typically port 587).
    smtp_starttls: bool = False
    # Implicit TLS to the SMTP server (typically port 465).
    smtp_tls: bool = False
    # SMTP user name (with `smtp_password`).
    smtp_username: str | None = None
    # SMTP password.
    smtp_password: SecretStr | None = None
    # How long one SMTP exchange may take.
    smtp_timeout_seconds: float = 10.0
    # Sender address of invitations and notices.
    mail_from: str = "strongroom@localhost"
    # Development: write each message as an .eml file here instead of sending it.
    mail_folder: str | None = None
    # An admin notice the mail server did not take waits in the store and is tried again this often.
    mail_retry_seconds: float = 60.0
