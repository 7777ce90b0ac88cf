"""Operator commands of the custody area: root of trust, tenant custody, key versions, destruction, BYOK.

`operator enrol-key|init|my-share|unseal|status|rekey|rekey-verify|rekey-cancel|custodians` are the
provider's root custodians' commands. `enrol-key` makes the custodian's X25519 key pair on their own
machine, keeps the private half in a 0600 file (never sent) and enrols the public half; init and
re-key seal each share to a different custodian's key, and `my-share` fetches and opens one's own.
A share is never taken from the command line (it would land in shell history and `ps`): `unseal`
reads it from a prompt without echo, or from stdin when piped. Shares cross the gateway and the bus
only sealed between this CLI and keysvc (shared/crypto/shares.py), trusted under the keysvc signing
key id the custodian pins (`--keysvc-key-id` or STRONGROOM_KEYSVC_KEY_ID; `operator key-id` computes
it from the key file on the keysvc host).
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.certificates import verify_certificate
from shared.crypto import byok, shares
from strongroom.cli_common import Commands, Ctx, api, print_data, read_share, show_object
from strongroom.cli_keys import ALGORITHMS
from strongroom.client import quote_id


def _key_path(ctx: Ctx, suffix: str = "") -> str:
    return f"/v1/keys/{quote_id(ctx.args.id)}{suffix}"


# --- root of trust ---------------------------------------------------------------------------


KEY_ID_ENV = "STRONGROOM_KEYSVC_KEY_ID"


def _pinned_key_id(ctx: Ctx) -> str:
    """The keysvc signing key id the custodian trusts; without one nothing is sealed or opened."""
    pinned = getattr(ctx.args, "keysvc_key_id", None) or os.environ.get(KEY_ID_ENV)
    if not pinned:
        raise SystemExit(f"strongroom: pin keysvc's signing key: pass --keysvc-key-id or set {KEY_ID_ENV} "
                         "(`strongroom operator key-id --key-file PATH` on the keysvc host prints it)")
    return pinned


KEY_FILE_ENV = "STRONGROOM_CUSTODIAN_KEY_FILE"


def _key_file(ctx: Ctx) -> Path:
    """Where this custodian's private key lives: --key-file, $STRONGROOM_CUSTODIAN_KEY_FILE, or the config dir."""
    given = getattr(ctx.args, "key_file", None) or os.environ.get(KEY_FILE_ENV)
    if given:
        return Path(given)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "strongroom" / "custodian-key.pem"


def _write_key(path: Path, private: X25519PrivateKey, *, replace: bool) -> None:
    """A 0600 PEM file; an existing one is replaced only when asked (it opens shares already handed out)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SystemExit(f"strongroom: {path} exists; pass --replace to make a new key (shares already sealed to "
                         "the old one then open only with the old file)") from None
    os.chmod(path, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _read_key(ctx: Ctx) -> X25519PrivateKey:
    path = _key_file(ctx)
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            raise SystemExit(f"strongroom: {path} is readable by group or others; chmod 600 it")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SystemExit(f"strongroom: no custodian key at {path}; run `strongroom operator enrol-key` first") from None
    if not isinstance(key, X25519PrivateKey):
        raise SystemExit(f"strongroom: {path} does not hold an X25519 private key")
    return key


def cmd_operator_enrol_key(ctx: Ctx) -> int:
    """Make this custodian's key pair here, keep the private half, enrol the public half."""
    private = X25519PrivateKey.generate()
    path = _key_file(ctx)
    _write_key(path, private, replace=ctx.args.replace)
    out = api(ctx).put("/v1/custody/custodian-key", {"public_key": shares.public_b64(private)})
    if ctx.as_json:
        print_data(ctx, {**out, "key_file": str(path)})
    else:
        print(f"enrolled key {out['key_id']}; private key kept in {path} (0600, never sent)")
    return 0


def _layout_body(ctx: Ctx) -> dict[str, Any]:
    body: dict[str, Any] = {"threshold": ctx.args.threshold}
    if ctx.args.shares is not None:
        body["shares"] = ctx.args.shares
    if ctx.args.custodian:
        body["custodians"] = ctx.args.custodian
    return body


def _print_custodians(out: dict[str, Any]) -> None:
    for c in out["custodians"]:
        print(f"share {c['number']}: sealed to custodian {c['custodian_id']} (key {c['key_id']})")
    print("note: each custodian runs `strongroom operator my-share` once to fetch and open their own share.",
          file=sys.stderr)


def _submit_share(ctx: Ctx, path: str, purpose: str) -> dict[str, Any]:
    """Seal the share to keysvc's signed transport key for the current round, then submit it."""
    pinned = _pinned_key_id(ctx)
    share = read_share(ctx)
    client = api(ctx)
    transport = client.post("/v1/custody/transport-key", {"purpose": purpose})
    try:
        sealed = shares.seal_share(share, transport, pinned_key_id=pinned, purpose=purpose, round_id=transport["round_id"])
    except shares.ShareTransportError as exc:
        raise SystemExit(f"strongroom: {exc}") from None
    return client.post(path, {"sealed_share": sealed, "round_id": transport["round_id"]})


def cmd_operator_init(ctx: Ctx) -> int:
    out = api(ctx).post("/v1/custody/init", _layout_body(ctx))
    if ctx.as_json:
        print_data(ctx, out)
        return 0
    print(f"root fingerprint: {out['root_fingerprint']}; any {out['threshold']} of {out['shares']} shares unseal custody")
    _print_custodians(out)
    return 0


def cmd_operator_my_share(ctx: Ctx) -> int:
    """Fetch this custodian's share (shown once), open it with the enrolled key, print it."""
    pinned = _pinned_key_id(ctx)
    private = _read_key(ctx)
    out = api(ctx).get("/v1/custody/shares/mine")
    try:
        share = shares.open_custodian_share(out, private, pinned_key_id=pinned)
    except shares.ShareTransportError as exc:
        raise SystemExit(f"strongroom: {exc}") from None
    if ctx.as_json:
        print_data(ctx, {k: out[k] for k in ("purpose", "root_fingerprint", "number")} | {"share": share})
        return 0
    print(f"your share {out['number']} of root {out['root_fingerprint']} ({out['purpose']}): {share}")
    print("note: shown once and stored nowhere: write it down now.", file=sys.stderr)
    return 0


def cmd_operator_custodians(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get("/v1/custody/custodians"))


def cmd_operator_unseal(ctx: Ctx) -> int:
    out = _submit_share(ctx, "/v1/custody/unseal", "unseal")
    if ctx.as_json:
        print_data(ctx, out)
    elif out.get("sealed"):
        print(f"share accepted: {out['submitted']} of {out['needed']}; still sealed")
    else:
        print("custody is unsealed")
    return 0


def cmd_operator_key_id(ctx: Ctx) -> int:
    """Run on the keysvc host: the id custodians pin, from the signing key file itself."""
    key = serialization.load_pem_private_key(Path(ctx.args.key_file).read_bytes(), password=None)
    print(shares.key_id(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)))
    return 0


def cmd_operator_status(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get("/v1/custody/status"))


def cmd_operator_rekey(ctx: Ctx) -> int:
    out = api(ctx).post("/v1/custody/rekey", _layout_body(ctx))
    if ctx.as_json:
        print_data(ctx, out)
        return 0
    print(f"new root fingerprint: {out['new_fingerprint']} (current: {out['root_fingerprint']}); "
          f"{out['threshold']} custodians must verify their new share before {out['expires_at']}:")
    _print_custodians(out)
    return 0


def cmd_operator_rekey_verify(ctx: Ctx) -> int:
    out = _submit_share(ctx, "/v1/custody/rekey/verify", "rekey-verify")
    if ctx.as_json:
        print_data(ctx, out)
    elif out.get("verified"):
        print(f"custody switched to root {out['root_fingerprint']}; the previous shares are retired shortly")
    else:
        print(f"new share verified: {out['submitted']} of {out['needed']}")
    return 0


def cmd_operator_rekey_cancel(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).post("/v1/custody/rekey/cancel", {}))


# --- tenant custody ------------------------------------------------------------------------


def cmd_custody_settings(ctx: Ctx) -> int:
    a = ctx.args
    changes = {k: v for k, v in (("min_key_bits", a.min_key_bits), ("destruction_wait_days", a.destruction_wait_days),
                                 ("dependency_window_days", a.dependency_window_days)) if v is not None}
    if a.export_deactivated is not None:
        changes["export_deactivated"] = a.export_deactivated == "yes"
    client = api(ctx)
    if not changes:
        return show_object(ctx, client.get("/v1/custody/settings"))
    current = client.get("/v1/custody/settings")
    return show_object(ctx, client.put("/v1/custody/settings", {**current, **changes}))


def cmd_custody_kek(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get("/v1/custody/kek"))


def cmd_custody_kek_rotate(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).post("/v1/custody/kek/rotate", {}))


def cmd_custody_signing_key(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get("/v1/custody/signing-key"))


# --- key versions, destruction, import/export ----------------------------------------------


def cmd_min_version(ctx: Ctx) -> int:
    body = {"min_decryption_version": ctx.args.version, "reason": ctx.args.reason}
    return show_object(ctx, api(ctx).post(_key_path(ctx, "/min-decryption-version"), body))


def cmd_destroy(ctx: Ctx) -> int:
    body: dict[str, Any] = {"reason": ctx.args.reason, "force": ctx.args.force}
    if ctx.args.wait_seconds is not None:
        body["wait_seconds"] = ctx.args.wait_seconds
    return show_object(ctx, api(ctx).post(_key_path(ctx, "/destruction"), body))


def cmd_destruction_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(_key_path(ctx, "/destruction")))


def cmd_destruction_approve(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).post(_key_path(ctx, "/destruction/approve"), {"reason": ctx.args.reason}))


def cmd_destruction_cancel(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).post(_key_path(ctx, "/destruction/cancel"), {"reason": ctx.args.reason}))


def cmd_destruction_certificate(ctx: Ctx) -> int:
    """Fetch the certificate and check its signature against keysvc's published key."""
    client = api(ctx)
    cert = client.get(_key_path(ctx, "/destruction-certificate"))
    signing = client.get("/v1/custody/signing-key")
    ok = verify_certificate(cert["certificate"], cert["signature"], base64.b64decode(signing["public_key"]))
    show_object(ctx, {**cert, "verified": ok})
    return 0 if ok else 1


def cmd_dependencies(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(_key_path(ctx, "/dependencies")))


def cmd_byok_import(ctx: Ctx) -> int:
    """Bring your own key: fetch a single-use import key, wrap the material here, send only the wrapping."""
    a = ctx.args
    material = Path(a.material_file).read_bytes()
    if len(material) not in (16, 24, 32):
        raise SystemExit(f"strongroom: {a.material_file} must hold the raw key: 16, 24 or 32 bytes (got {len(material)})")
    algorithm = byok.X25519_HPKE if a.wrapping == "x25519" else byok.RSA_OAEP
    client = api(ctx)
    params = client.get("/v1/custody/import-params", query={"wrapping_algorithm": algorithm})
    # The info is built here from the fields it binds, not taken on trust from the answer.
    info = byok.import_info(tenant_id=params["tenant_id"], key_id=params["key_id"], import_token=params["import_token"])
    body: dict[str, Any] = {"name": a.name, "algorithm": a.algorithm or f"AES-{len(material) * 8}",
                            "import_token": params["import_token"], "exportable": a.exportable, "activate": not a.inactive,
                            "wrapped_key_material": byok.wrap_material(algorithm, params["public_key"], material, info=info)}
    if a.volume:
        body["volume"] = a.volume
    return show_object(ctx, client.post("/v1/keys/import", body))


def _layout_args(p: Any) -> None:
    p.add_argument("--threshold", type=int, default=3, help="shares needed to unseal (at least 2)")
    p.add_argument("--shares", type=int, help="defaults to the number of custodians (one share each)")
    p.add_argument("--custodian", action="append", metavar="USER_ID",
                   help="a root custodian's user id, share i to the i-th (repeat; default: every enrolled one)")


def add_operator(cli: Commands) -> None:
    g = cli.noun("operator", "Root of trust: initialise, unseal and re-key custody (provider root custodians).")
    pin_help = f"keysvc signing key id to trust (default: ${KEY_ID_ENV}); see `operator key-id`"
    key_help = f"your custodian private key file (default: ${KEY_FILE_ENV}, else ~/.config/strongroom/custodian-key.pem)"
    p = g.action("enrol-key", cmd_operator_enrol_key, "Make your custodian key pair here and enrol its public half.")
    p.add_argument("--key-file", help=key_help)
    p.add_argument("--replace", action="store_true", help="replace an existing key file")
    p = g.action("init", cmd_operator_init, "Create the root key; each share is sealed to a different custodian.")
    _layout_args(p)
    p = g.action("my-share", cmd_operator_my_share, "Fetch and open your own share (shown once).")
    p.add_argument("--key-file", help=key_help)
    p.add_argument("--keysvc-key-id", help=pin_help)
    g.action("custodians", cmd_operator_custodians, "Root custodians who enrolled a key.")
    p = g.action("unseal", cmd_operator_unseal, "Submit your unseal share (prompted, never an argument).")
    p.add_argument("--share-file", help="read the share from this file instead of a prompt")
    p.add_argument("--keysvc-key-id", help=pin_help)
    g.action("status", cmd_operator_status, "Sealed or unsealed, and unseal progress.")
    p = g.action("rekey", cmd_operator_rekey, "Start replacing the root key; each new share sealed to a different custodian.")
    _layout_args(p)
    p = g.action("rekey-verify", cmd_operator_rekey_verify, "Submit one new share (prompted); enough of them switch the root.")
    p.add_argument("--share-file", help="read the share from this file instead of a prompt")
    p.add_argument("--keysvc-key-id", help=pin_help)
    p = g.action("key-id", cmd_operator_key_id, "Print the keysvc signing key id custodians pin (run on the keysvc host).",
                 api=False, token=False)
    p.add_argument("--key-file", required=True, help="keysvc's signing key (STRONGROOM_KEYSVC_SIGNING_KEY_FILE)")
    g.action("rekey-cancel", cmd_operator_rekey_cancel, "Abandon a pending re-key before its switch.")


def add_custody(cli: Commands) -> None:
    g = cli.noun("custody", "Tenant key custody: key policy, KEK rotation, certificate signing key.")
    p = g.action("settings", cmd_custody_settings, "Show, or with options change, the tenant's key policy.")
    p.add_argument("--min-key-bits", type=int, choices=(128, 192, 256))
    p.add_argument("--destruction-wait-days", type=int)
    p.add_argument("--dependency-window-days", type=int)
    p.add_argument("--export-deactivated", choices=("yes", "no"))
    g.action("kek", cmd_custody_kek, "Show the tenant KEK version and re-wrap progress.")
    g.action("kek-rotate", cmd_custody_kek_rotate, "Rotate the tenant KEK (re-wraps keys in the background).")
    g.action("signing-key", cmd_custody_signing_key, "Show keysvc's certificate-signing public key.")


def add_byok(cli: Commands) -> None:
    g = cli.noun("byok", "Bring your own key: import key material wrapped to a single-use import key.")
    p = g.action("import", cmd_byok_import, "Import a raw AES key from a file (wrapped here; never sent in the clear).")
    p.add_argument("name")
    p.add_argument("--material-file", required=True, help="file holding the raw key (16, 24 or 32 bytes)")
    p.add_argument("--wrapping", choices=("x25519", "rsa"), default="x25519",
                   help="HPKE to an X25519 import key (default) or RSA-OAEP-3072")
    p.add_argument("--algorithm", choices=ALGORITHMS)
    p.add_argument("--volume")
    p.add_argument("--exportable", action="store_true")
    p.add_argument("--inactive", action="store_true", help="import in pre_activation")


def add_key_version(cli: Commands) -> None:
    g = cli.noun("key-version", "Retire old key versions.")
    p = g.action("retire-below", cmd_min_version, "Set min_decryption_version: older versions stop decrypting.")
    p.add_argument("id")
    p.add_argument("version", type=int)
    p.add_argument("--reason", required=True)


def add_destruction(cli: Commands) -> None:
    g = cli.noun("destruction", "Crypto-shred keys: schedule, approve (a second custodian), cancel, certificate.")
    p = g.action("schedule", cmd_destroy, "Schedule a key's destruction after the waiting period.")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.add_argument("--wait-seconds", type=int)
    p.add_argument("--force", action="store_true", help="even though devices hold recent releases")
    for name, func, help_ in (("show", cmd_destruction_show, "Show a key's destruction."),
                              ("dependencies", cmd_dependencies, "Devices that received the key recently."),
                              ("certificate", cmd_destruction_certificate, "Fetch and verify the destruction certificate.")):
        p = g.action(name, func, help_)
        p.add_argument("id")
    for name, func, help_ in (("approve", cmd_destruction_approve, "Approve (must be another custodian)."),
                              ("cancel", cmd_destruction_cancel, "Cancel before it runs.")):
        p = g.action(name, func, help_)
        p.add_argument("id")
        p.add_argument("--reason", required=name == "cancel", default="approved" if name == "approve" else None)
