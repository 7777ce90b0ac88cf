"""The agent's TPM: endorsement and attestation keys, credential activation, quotes, PCR reads.

A thin wrapper over the tpm2-tools command-line tools, talking to the TPM named by a TCTI string
(`device:/dev/tpmrm0` on a VM, `swtpm:host=127.0.0.1,port=2321` with a software TPM). The EK and
the AK live at persistent handles, so they survive the agent and reboots; every call flushes the
transient objects and sessions it leaves behind (a TPM without a resource manager has room for
only three loaded objects).

Files the tools read or write live in a private temporary directory (mode 0700) that is removed
afterwards; nothing secret is passed in argv (the activated secret only ever sits in that
directory). The quote's qualifying data is `SHA-256(server nonce ‖ request's one-time public
key)` (`quote_nonce`); the server checks the same. The device key may live in the TPM too
(`ensure_device_key`, `sign`): an ECDSA P-256 key the AK certifies.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import re
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

DEFAULT_EK_HANDLE = 0x81010001
DEFAULT_AK_HANDLE = 0x81010002
DEFAULT_DEVICE_KEY_HANDLE = 0x81010003
# A request-signing key born in the TPM that can never leave it (tpm2-tools attribute syntax).
_DEVICE_KEY_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"
EK_CERTIFICATE_NV_INDEX = 0x01C00002   # TCG EK Credential Profile: RSA 2048 EK certificate
TOOLS_TIMEOUT_SECONDS = 120.0   # creating an RSA EK takes tens of seconds on some hardware TPMs
NONCE_BYTES = 32
_CREDENTIAL_FILE_MAGIC = 0xBADCC0DE    # tpm2-tools' header for a makecredential output file
_HANDLE = re.compile(r"0x[0-9a-fA-F]+")

AkAlgorithm = Literal["ecc", "rsa"]
_AK_ARGS: dict[str, tuple[str, ...]] = {"ecc": ("-G", "ecc", "-s", "ecdsa"), "rsa": ("-G", "rsa", "-s", "rsassa")}


class TpmError(Exception):
    """A TPM operation failed; says which tool and the TPM's error, never any secret."""


def quote_nonce(server_nonce: bytes, request_public_key: bytes) -> bytes:
    """The qualifying data of a quote for one request: SHA-256(server nonce ‖ one-time public key)."""
    if len(server_nonce) != NONCE_BYTES:
        raise TpmError(f"the server's nonce must be {NONCE_BYTES} bytes")
    return hashlib.sha256(server_nonce + request_public_key).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class EnrolmentKeys:
    """What the agent presents at enrolment: EK and AK public areas (TPM2B_PUBLIC), the EK certificate if any."""

    ek_public: bytes
    ak_public: bytes
    ak_name: bytes
    ek_certificate: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ek_public": _b64(self.ek_public), "ak_public": _b64(self.ak_public)}
        if self.ek_certificate is not None:
            doc["ek_certificate"] = _b64(self.ek_certificate)
        return doc


@dataclass(frozen=True)
class Quote:
    """A TPM quote as the TPM made it (TPMS_ATTEST, TPMT_SIGNATURE) and the SHA-256 PCR values it covers."""

    attest: bytes
    signature: bytes
    pcrs: dict[int, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"attest": _b64(self.attest), "signature": _b64(self.signature),
                "pcrs": {str(pcr): value.hex() for pcr, value in sorted(self.pcrs.items())}}


@dataclass(frozen=True)
class DeviceKeyEvidence:
    """A device key in the TPM: its TPM2B_PUBLIC and the AK's certification of it (TPMS_ATTEST, TPMT_SIGNATURE)."""

    public: bytes
    attest: bytes
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {"public": _b64(self.public), "attest": _b64(self.attest), "signature": _b64(self.signature)}


def _pcr_list(pcrs: Sequence[int]) -> list[int]:
    ordered = sorted(set(pcrs))
    if not ordered or any(not 0 <= pcr < 24 for pcr in ordered):
        raise TpmError("PCR numbers must be between 0 and 23")
    return ordered


def _der_length(data: bytes) -> int:
    """The length of the DER element at the start of `data` (an NV index pads the certificate)."""
    if len(data) < 2 or data[0] != 0x30:
        raise TpmError("the EK certificate is not DER")
    if data[1] < 0x80:
        return 2 + data[1]
    count = data[1] & 0x7F
    if not 0 < count <= 3 or len(data) < 2 + count:
        raise TpmError("the EK certificate is not DER")
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _exclusive(method: _Method) -> _Method:
    """One sequence of tools at a time per `Tpm`: each ends by flushing the transient objects it loaded."""
    @functools.wraps(method)
    def locked(self: Tpm, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return locked  # type: ignore[return-value]


class Tpm:
    """One TPM, through tpm2-tools. Calls are blocking (run them in a thread from async code)."""

    def __init__(self, tcti: str, *, ek_handle: int = DEFAULT_EK_HANDLE, ak_handle: int = DEFAULT_AK_HANDLE,
                 device_key_handle: int = DEFAULT_DEVICE_KEY_HANDLE, timeout: float = TOOLS_TIMEOUT_SECONDS) -> None:
        self.tcti, self.ek_handle, self.ak_handle, self.timeout = tcti, ek_handle, ak_handle, timeout
        self.device_key_handle = device_key_handle
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Tpm(tcti={self.tcti!r}, ek={self.ek_handle:#x}, ak={self.ak_handle:#x})"

    # --- plumbing ---------------------------------------------------------------------

    def _run(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "TPM2TOOLS_TCTI": self.tcti}
        try:
            done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise TpmError(f"{args[0]} not found: install tpm2-tools") from None
        except subprocess.TimeoutExpired:
            raise TpmError(f"{args[0]} timed out talking to the TPM") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
            raise TpmError(f"{args[0]} failed: {lines[0] if lines else f'exit status {done.returncode}'}")
        return done.stdout

    def _flush(self) -> None:
        """Flush transient objects and sessions, so the next call finds the TPM's object slots free."""
        for kind in ("-t", "-s", "-l"):
            with contextlib.suppress(TpmError):
                self._run("tpm2_flushcontext", kind)

    def _persistent(self) -> set[int]:
        return {int(handle, 16) for handle in _HANDLE.findall(self._run("tpm2_getcap", "handles-persistent"))}

    def _nv_indices(self) -> set[int]:
        return {int(handle, 16) for handle in _HANDLE.findall(self._run("tpm2_getcap", "handles-nv-index"))}

    # --- keys -------------------------------------------------------------------------

    @_exclusive
    def ensure_keys(self, ak_algorithm: AkAlgorithm = "ecc", *, replace_ak: bool = False) -> EnrolmentKeys:
        """Create the EK and AK at their persistent handles if absent (or a new AK if `replace_ak`), and read them."""
        with tempfile.TemporaryDirectory(prefix="strongroom-tpm-") as tmp:
            work = Path(tmp)
            try:
                persistent = self._persistent()
                if self.ek_handle not in persistent:
                    self._run("tpm2_createek", "-c", hex(self.ek_handle), "-G", "rsa", "-u", "ek.pub", cwd=work)
                    self._flush()
                if replace_ak and self.ak_handle in persistent:
                    self._run("tpm2_evictcontrol", "-c", hex(self.ak_handle), cwd=work)
                if replace_ak or self.ak_handle not in persistent:
                    self._create_ak(ak_algorithm, work)
                self._run("tpm2_readpublic", "-c", hex(self.ek_handle), "-o", "ek.pub", cwd=work)
                self._run("tpm2_readpublic", "-c", hex(self.ak_handle), "-o", "ak.pub", "-n", "ak.name", cwd=work)
                keys = EnrolmentKeys((work / "ek.pub").read_bytes(), (work / "ak.pub").read_bytes(),
                                     (work / "ak.name").read_bytes(), self._ek_certificate(work))
            finally:
                self._flush()
        return keys

    def _create_ak(self, algorithm: AkAlgorithm, work: Path) -> None:
        if algorithm not in _AK_ARGS:
            raise TpmError("the attestation key algorithm must be ecc or rsa")
        self._run("tpm2_createak", "-C", hex(self.ek_handle), "-c", "ak.ctx", *_AK_ARGS[algorithm], "-g", "sha256",
                  "-u", "ak.new.pub", "-r", "ak.priv", cwd=work)
        self._run("tpm2_evictcontrol", "-c", "ak.ctx", hex(self.ak_handle), cwd=work)
        self._flush()

    def _ek_certificate(self, work: Path) -> bytes | None:
        if EK_CERTIFICATE_NV_INDEX not in self._nv_indices():
            return None
        self._run("tpm2_nvread", hex(EK_CERTIFICATE_NV_INDEX), "-C", hex(EK_CERTIFICATE_NV_INDEX), "-o", "ek.crt", cwd=work)
        data = (work / "ek.crt").read_bytes()
        return data[: _der_length(data)]

    # --- enrolment --------------------------------------------------------------------

    def activate(self, challenge: Mapping[str, Any]) -> bytes:
        """`activate_credential` for the server's challenge `{"credential_blob": b64, "encrypted_secret": b64}`."""
        try:
            blob = base64.b64decode(challenge["credential_blob"], validate=True)
            secret = base64.b64decode(challenge["encrypted_secret"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise TpmError("the server's credential challenge is malformed") from None
        return self.activate_credential(blob, secret)

    @_exclusive
    def activate_credential(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """Recover the secret the server sealed to our EK and AK name (TPM2_ActivateCredential)."""
        blob = (struct.pack(">II", _CREDENTIAL_FILE_MAGIC, 1) + struct.pack(">H", len(credential_blob)) + credential_blob
                + struct.pack(">H", len(encrypted_secret)) + encrypted_secret)
        with tempfile.TemporaryDirectory(prefix="strongroom-tpm-") as tmp:
            work = Path(tmp)
            (work / "credential").write_bytes(blob)
            try:
                # The standard EK's policy: PolicySecret(endorsement hierarchy).
                self._run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx", cwd=work)
                self._run("tpm2_policysecret", "-S", "session.ctx", "-c", "e", cwd=work)
                self._run("tpm2_activatecredential", "-c", hex(self.ak_handle), "-C", hex(self.ek_handle),
                          "-i", "credential", "-o", "secret", "-P", "session:session.ctx", cwd=work)
                return (work / "secret").read_bytes()
            finally:
                self._flush()

    # --- a device key in the TPM -------------------------------------------------------

    @_exclusive
    def ensure_device_key(self, *, replace: bool = False) -> DeviceKeyEvidence:
        """Create the ECDSA P-256 device key at its persistent handle if absent (or anew), and have the AK certify it."""
        with tempfile.TemporaryDirectory(prefix="strongroom-tpm-") as tmp:
            work = Path(tmp)
            try:
                persistent = self._persistent()
                if replace and self.device_key_handle in persistent:
                    self._run("tpm2_evictcontrol", "-c", hex(self.device_key_handle), cwd=work)
                if replace or self.device_key_handle not in persistent:
                    self._create_device_key(work)
                self._run("tpm2_readpublic", "-c", hex(self.device_key_handle), "-o", "key.pub", cwd=work)
                self._run("tpm2_certify", "-c", hex(self.device_key_handle), "-C", hex(self.ak_handle), "-g", "sha256",
                          "-o", "attest", "-s", "signature", cwd=work)
                return DeviceKeyEvidence((work / "key.pub").read_bytes(), (work / "attest").read_bytes(),
                                         (work / "signature").read_bytes())
            finally:
                self._flush()

    def _create_device_key(self, work: Path) -> None:
        """Under a storage primary of the owner hierarchy, from the TPM's own random numbers; then made persistent."""
        self._run("tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "parent.ctx", cwd=work)
        self._flush()
        self._run("tpm2_create", "-C", "parent.ctx", "-G", "ecc256:ecdsa-sha256", "-a", _DEVICE_KEY_ATTRIBUTES,
                  "-u", "new.pub", "-r", "new.priv", cwd=work)
        self._flush()
        self._run("tpm2_load", "-C", "parent.ctx", "-u", "new.pub", "-r", "new.priv", "-c", "key.ctx", cwd=work)
        self._run("tpm2_evictcontrol", "-c", "key.ctx", hex(self.device_key_handle), cwd=work)
        self._flush()

    @_exclusive
    def sign(self, message: bytes) -> bytes:
        """An ECDSA P-256 / SHA-256 signature of `message` by the device key in the TPM, DER-encoded."""
        with tempfile.TemporaryDirectory(prefix="strongroom-tpm-") as tmp:
            work = Path(tmp)
            (work / "message").write_bytes(message)
            try:
                self._run("tpm2_sign", "-c", hex(self.device_key_handle), "-g", "sha256", "-s", "ecdsa", "-f", "plain",
                          "-o", "signature", "message", cwd=work)
                return (work / "signature").read_bytes()
            finally:
                self._flush()

    # --- measurements -----------------------------------------------------------------

    @_exclusive
    def quote(self, qualifying_data: bytes, pcrs: Sequence[int]) -> Quote:
        """A quote by the AK over the SHA-256 bank's `pcrs`, with `qualifying_data` (see `quote_nonce`)."""
        selected = _pcr_list(pcrs)
        with tempfile.TemporaryDirectory(prefix="strongroom-tpm-") as tmp:
            work = Path(tmp)
            try:
                self._run("tpm2_quote", "-c", hex(self.ak_handle), "-l", "sha256:" + ",".join(map(str, selected)),
                          "-q", qualifying_data.hex(), "-g", "sha256", "-m", "attest", "-s", "signature",
                          "-o", "pcrs", "-F", "values", cwd=work)
                values = (work / "pcrs").read_bytes()
                attest, signature = (work / "attest").read_bytes(), (work / "signature").read_bytes()
            finally:
                self._flush()
        return Quote(attest, signature, self._split(values, selected))

    def quote_for_request(self, server_nonce: bytes, request_public_key: bytes, pcrs: Sequence[int]) -> Quote:
        """The quote a release or heartbeat carries: bound to the server's nonce and the request's one-time key."""
        return self.quote(quote_nonce(server_nonce, request_public_key), pcrs)

    @_exclusive
    def read_pcrs(self, pcrs: Sequence[int]) -> dict[int, bytes]:
        selected = _pcr_list(pcrs)
        with tempfile.TemporaryDirectory(prefix="strongroom-tpm-") as tmp:
            work = Path(tmp)
            self._run("tpm2_pcrread", "sha256:" + ",".join(map(str, selected)), "-o", "pcrs", cwd=work)
            return self._split((work / "pcrs").read_bytes(), selected)

    @_exclusive
    def extend_pcr(self, pcr: int, data: bytes) -> None:
        """Extend `pcr` (SHA-256 bank) with the digest of `data`: a measurement, as a boot loader makes."""
        selected = _pcr_list([pcr])
        self._run("tpm2_pcrextend", f"{selected[0]}:sha256={hashlib.sha256(data).hexdigest()}")

    @staticmethod
    def _split(values: bytes, selected: list[int]) -> dict[int, bytes]:
        if len(values) != 32 * len(selected):
            raise TpmError("the TPM returned an unexpected number of PCR values")
        return {pcr: values[32 * i : 32 * (i + 1)] for i, pcr in enumerate(selected)}
