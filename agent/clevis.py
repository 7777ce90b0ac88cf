"""The Clevis pin `strongroom`: a LUKS slot key sealed in a compact JWE whose content key only a
policy-checked key release from Strongroom can rebuild.

Encrypt (``clevis encrypt strongroom CONFIG``) asks Strongroom for the data key the config names,
derives the JWE content key from it with HKDF-SHA256 over a fresh random salt, and seals the
plaintext with ``alg=dir, enc=A256GCM``. The protected header records what decrypt needs to ask
again (``clevis.strongroom``: url, key id and version, salt, and the agent state directory if the
config named one); it holds nothing secret, and as the JWE's additional data it cannot be edited
without the JWE failing to open. Decrypt (``clevis decrypt``) requests that same key version
under policy, so a denial, a revoked device or an unreachable gateway leaves the JWE sealed.

The JWE is built with joserfc in this process, not with the `jose` CLI as Clevis's own pins do:
the derived key then never crosses a process boundary, and no shell juggles JSON. Debian's
``jose jwe fmt`` and ``jose jwe dec`` read what this module writes (the e2e test runs Clevis on it).

This module does no I/O beyond `install_pins`; the CLI (``agent/cli_clevis.py``) fetches the key.
Security invariant: key bytes and the plaintext never appear in an error, a repr or the header.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.registry import HeaderParameter

PIN = "strongroom"
SUMMARY = "Encrypts using a Strongroom key released under policy"
ALG, ENC = "dir", "A256GCM"
SALT_LEN = 32
CEK_LEN = 32
HKDF_PURPOSE = "strongroom/clevis-jwe/v1"
MAX_JWE_CHARS = 64 * 1024
CONFIG_FIELDS = frozenset({"url", "key_id", "key_version", "home"})
PIN_COMMANDS = {"encrypt": f"clevis-encrypt-{PIN}", "decrypt": f"clevis-decrypt-{PIN}"}
DEFAULT_AGENT = "strongroom-agent"

ENCRYPT_USAGE = f"""
Usage: clevis encrypt {PIN} CONFIG [-y] < PLAINTEXT > JWE

{SUMMARY}

  -y              Accepted for compatibility with 'clevis luks bind -y';
                  trust comes from the agent's enrolled identity

This command uses the following configuration properties:

  url: <string>          The Strongroom gateway's base URL; must be the one
                         this agent enrolled with (REQUIRED)

  key_id: <string>       The Strongroom key whose release unlocks (REQUIRED)

  key_version: <int>     Bind to this key version (default: the latest)

  home: <string>         The agent's state directory (default:
                         $STRONGROOM_AGENT_HOME or ~/.strongroom-agent)

The agent must be enrolled first: strongroom-agent enroll --gateway URL --token -
"""
DECRYPT_USAGE = f"""
Usage: clevis decrypt {PIN} < JWE > PLAINTEXT
"""


class ClevisError(ValueError):
    """A config or JWE the pin cannot use; the message is for an operator and holds no secret."""


@dataclass(frozen=True)
class PinConfig:
    """What `clevis encrypt strongroom CONFIG` was asked to bind to."""

    url: str
    key_id: str
    key_version: int | None = None
    home: str | None = None


@dataclass(frozen=True)
class Binding:
    """The `clevis.strongroom` header member: what decrypt asks Strongroom for, and the HKDF salt."""

    url: str
    key_id: str
    key_version: int
    salt: bytes = field(repr=False)
    home: str | None = None

    def header(self) -> dict[str, Any]:
        member: dict[str, Any] = {"url": self.url, "key_id": self.key_id, "key_version": self.key_version,
                                  "salt": _b64url(self.salt)}
        if self.home is not None:
            member["home"] = self.home
        return {"alg": ALG, "enc": ENC, "clevis": {"pin": PIN, PIN: member}}


def parse_config(text: str) -> PinConfig:
    """The pin's CONFIG argument, validated the way Clevis's pins do (messages in their style)."""
    try:
        config = json.loads(text)
    except ValueError:
        raise ClevisError("Configuration is malformed!") from None
    if not isinstance(config, dict):
        raise ClevisError("Configuration is malformed!")
    unknown = sorted(set(config) - CONFIG_FIELDS)
    if unknown:
        raise ClevisError(f"Unknown configuration property '{unknown[0]}'!")
    for name in ("url", "key_id"):
        if not isinstance(config.get(name), str) or not config[name]:
            raise ClevisError(f"Missing the required '{name}' property!")
    if not config["url"].startswith(("https://", "http://")):
        raise ClevisError("The 'url' property must be an http(s) URL!")
    version = config.get("key_version")
    if version is not None and (not _is_int(version) or version < 1):
        raise ClevisError("The 'key_version' property must be an integer >= 1!")
    home = config.get("home")
    if home is not None and (not isinstance(home, str) or not home):
        raise ClevisError("The 'home' property must be a non-empty string!")
    return PinConfig(url=config["url"], key_id=config["key_id"], key_version=version, home=home)


def same_gateway(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def new_binding(config: PinConfig, *, key_version: int) -> Binding:
    """A binding to the key version Strongroom released, with a fresh salt (so a fresh content key)."""
    return Binding(url=config.url.rstrip("/"), key_id=config.key_id, key_version=key_version,
                   salt=secrets.token_bytes(SALT_LEN), home=config.home)


def content_key(data_key: bytes, binding: Binding) -> bytes:
    """HKDF-SHA256(data key, salt) with an info naming the purpose, key id and version: a content
    key for this JWE only, from which the data key cannot be recovered."""
    info = json.dumps([HKDF_PURPOSE, binding.key_id, binding.key_version], separators=(",", ":")).encode()
    return HKDF(algorithm=hashes.SHA256(), length=CEK_LEN, salt=binding.salt, info=info).derive(data_key)


def seal(plaintext: bytes, binding: Binding, data_key: bytes) -> str:
    """The compact JWE of `plaintext` under the content key derived for `binding`."""
    key = OctKey.import_key(content_key(data_key, binding))
    return jwe.encrypt_compact(binding.header(), plaintext, key, registry=_REGISTRY)


def read_binding(token: str) -> Binding:
    """The binding recorded in a compact JWE's protected header, checked before any key is asked for."""
    token = token.strip()
    if len(token) > MAX_JWE_CHARS:
        raise ClevisError("JWE is too large!")
    parts = token.split(".")
    if len(parts) != 5:
        raise ClevisError("JWE is not in compact form!")
    try:
        header = json.loads(_b64url_decode(parts[0]))
    except (ValueError, binascii.Error):
        raise ClevisError("Error decoding JWE protected header!") from None
    clevis = header.get("clevis") if isinstance(header, dict) else None
    if not isinstance(clevis, dict) or clevis.get("pin") != PIN:
        raise ClevisError("JWE pin mismatch!")
    if header.get("alg") != ALG or header.get("enc") != ENC:
        raise ClevisError(f"JWE must use alg '{ALG}' and enc '{ENC}'!")
    member = clevis.get(PIN)
    if not isinstance(member, dict):
        raise ClevisError(f"JWE missing required 'clevis.{PIN}' header parameter!")
    for name in ("url", "key_id", "salt"):
        if not isinstance(member.get(name), str) or not member[name]:
            raise ClevisError(f"JWE missing required 'clevis.{PIN}.{name}' header parameter!")
    version = member.get("key_version")
    if not _is_int(version) or version < 1:
        raise ClevisError(f"JWE missing required 'clevis.{PIN}.key_version' header parameter!")
    home = member.get("home")
    if home is not None and (not isinstance(home, str) or not home):
        raise ClevisError(f"JWE header parameter 'clevis.{PIN}.home' is malformed!")
    try:
        salt = _b64url_decode(member["salt"])
    except (ValueError, binascii.Error):
        salt = b""
    if len(salt) != SALT_LEN:
        raise ClevisError(f"JWE header parameter 'clevis.{PIN}.salt' is malformed!")
    return Binding(url=member["url"], key_id=member["key_id"], key_version=version, salt=salt, home=home)


def unseal(token: str, binding: Binding, data_key: bytes) -> bytes:
    """The plaintext, if the JWE authenticates under the content key derived for `binding`."""
    key = OctKey.import_key(content_key(data_key, binding))
    try:
        return jwe.decrypt_compact(token.strip(), key, registry=_REGISTRY).plaintext
    except (JoseError, ValueError):
        raise ClevisError("JWE does not decrypt with the released key (altered, or bound to another key)!") from None


def pin_script(action: str, agent: str = DEFAULT_AGENT) -> str:
    """The POSIX sh pin Clevis runs (`clevis-encrypt-strongroom` or `clevis-decrypt-strongroom`):
    it hands its arguments and stdin to the agent, which reads the secret from stdin only."""
    return (
        "#!/bin/sh\n"
        f"# Clevis pin '{PIN}' ({action}): written by '{DEFAULT_AGENT} clevis install'.\n"
        f'exec {shlex.quote(agent)} clevis {action} "$@"\n'
    )


def install_pins(bin_dir: Path, agent: str) -> list[Path]:
    """Write both pins into `bin_dir` (created if missing), mode 0755, each replaced atomically."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for action, name in PIN_COMMANDS.items():
        path = bin_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(pin_script(action, agent))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


def _check_object(value: object) -> None:
    if not isinstance(value, dict):
        raise ValueError("must be an object")


# joserfc refuses header members it does not know; `clevis` is the one this pin adds.
_REGISTRY = jwe.JWERegistry(
    header_registry={"clevis": HeaderParameter("Clevis pin metadata", _check_object, True)}, algorithms=[ALG, ENC]
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
