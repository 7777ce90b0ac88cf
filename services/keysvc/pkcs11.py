"""PKCS#11 root-key source: an AES-256 key that never leaves the HSM wraps keysvc's root key.

The HSM key is generated inside the token as sensitive and non-extractable; the root key is
kept only as AES-GCM ciphertext made by the HSM (a small JSON file). Loading asks the HSM to
decrypt it, so whoever holds the file but not the token and its PIN holds nothing. Same
`load()` interface as the other root-key sources in `rootkey.py`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

from .rootkey import ROOT_KEY_BYTES, RootKeyError

FORMAT = "strongroom.pkcs11-wrapped-root-key"
_AAD = b"strongroom root key v1"


class Pkcs11RootKey:
    name = "pkcs11"

    def __init__(self, module: str, *, token_label: str, pin: Any, key_label: str, wrapped_root_file: str | os.PathLike[str]):
        self.module = module
        self.token_label = token_label
        reveal = getattr(pin, "get_secret_value", None)
        self._pin: str = reveal() if callable(reveal) else pin
        self.key_label = key_label
        self.path = Path(wrapped_root_file)

    @classmethod
    def from_settings(cls, settings: Any) -> Pkcs11RootKey:
        return cls(settings.pkcs11_module, token_label=settings.pkcs11_token_label, pin=settings.pkcs11_pin,
                   key_label=settings.pkcs11_key_label, wrapped_root_file=settings.pkcs11_wrapped_root_file)

    def _open(self):
        import pkcs11
        from pkcs11.exceptions import PKCS11Error

        try:
            token = pkcs11.lib(self.module).get_token(token_label=self.token_label)
            return token.open(user_pin=self._pin, rw=True)
        except (PKCS11Error, RuntimeError) as exc:
            # SECURITY: name the failure class only; never the PIN.
            raise RootKeyError(f"cannot open PKCS#11 token {self.token_label!r}: {type(exc).__name__}") from None

    def _wrapping_key(self, session: Any, *, create: bool) -> Any:
        from pkcs11 import Attribute, KeyType
        from pkcs11.exceptions import NoSuchKey

        try:
            return session.get_key(label=self.key_label, key_type=KeyType.AES)
        except NoSuchKey:
            if not create:
                raise RootKeyError(f"the HSM has no AES key labelled {self.key_label!r}") from None
        return session.generate_key(
            KeyType.AES, 256, label=self.key_label, store=True,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.TOKEN: True},
        )

    def create(self, root: bytes | None = None) -> bytes:
        """Generate (or take) a root key, have the HSM encrypt it, write the file; refuses to overwrite."""
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        if self.path.exists():
            raise RootKeyError(f"{self.path} already exists; not replacing a root key")
        root = root if root is not None else secrets.token_bytes(ROOT_KEY_BYTES)
        if len(root) != ROOT_KEY_BYTES:
            raise RootKeyError(f"a root key is {ROOT_KEY_BYTES} bytes")
        iv = secrets.token_bytes(12)
        with self._open() as session:
            key = self._wrapping_key(session, create=True)
            ciphertext = key.encrypt(root, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, _AAD, 128))
        doc = {"format": FORMAT, "version": 1, "token_label": self.token_label, "key_label": self.key_label,
               "mechanism": "CKM_AES_GCM", "iv": base64.b64encode(iv).decode(),
               "ciphertext": base64.b64encode(bytes(ciphertext)).decode()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        return root

    def load(self) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.exceptions import PKCS11Error
        from pkcs11.mechanisms import GCMParams

        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError("format")
            iv, ciphertext = base64.b64decode(doc["iv"]), base64.b64decode(doc["ciphertext"])
        except FileNotFoundError:
            raise RootKeyError(f"wrapped root key file {self.path} does not exist") from None
        except (ValueError, KeyError, TypeError):
            raise RootKeyError(f"{self.path} is not a PKCS#11-wrapped root key file") from None
        with self._open() as session:
            key = self._wrapping_key(session, create=False)
            try:
                root = bytes(key.decrypt(ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, _AAD, 128)))
            except PKCS11Error:
                raise RootKeyError("the HSM refused to open the wrapped root key (altered file or another HSM key)") from None
        if len(root) != ROOT_KEY_BYTES:
            raise RootKeyError("the unwrapped root key has the wrong length")
        return root

    def __repr__(self) -> str:
        return f"Pkcs11RootKey(token={self.token_label!r}, key={self.key_label!r}, file={str(self.path)!r})"
