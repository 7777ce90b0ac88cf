"""MakeCredential on the server (TPM 2.0 Library Part 1, §24): a secret only the TPM holding both keys can recover.

The server seals a random secret to the device's endorsement key (EK) and to the *name* of its
attestation key (AK). `TPM2_ActivateCredential` releases it only inside the TPM that holds the EK's
private key and has an object of exactly that name loaded, so a device that returns the secret
proves that the AK (with the attributes its name commits to: fixedTPM, restricted, sign) lives in
the same TPM as the EK.

    seed          random, as long as the EK's name-algorithm digest
    secret        RSA-OAEP(EK, seed, hash = EK name alg, label "IDENTITY\\0")        (Part 1, B.10.3)
    symKey        KDFa(nameAlg, seed, "STORAGE", AK name, "", EK symmetric key bits)
    encIdentity   AES-CFB(symKey, IV = 0, TPM2B_DIGEST(credential))
    hmacKey       KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits)
    credential    TPM2B(HMAC(hmacKey, encIdentity ‖ AK name)) ‖ encIdentity       (TPM2B_ID_OBJECT)

Only RSA endorsement keys are supported (the PC Client profile's default EK). Pure: no I/O.
"""

from __future__ import annotations

import base64
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.modes import CFB  # CFB is what TPM 2.0 parameter encryption uses
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from .base import EvidenceError
from .tpm_wire import ALG_AES, ALG_CFB, ALG_RSA, ATTR_DECRYPT, ATTR_RESTRICTED, HASHES, TpmPublic, tpm2b

MAX_CREDENTIAL_BYTES = 32   # the secret must fit a TPM2B_DIGEST of the EK's name algorithm


def kdfa(hash_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa (Part 1, §11.4.10.2): SP 800-108 counter mode over HMAC; the label is NUL-terminated."""
    algorithm = HASHES[hash_alg]()
    label = label if label.endswith(b"\0") else label + b"\0"
    out, counter = b"", 0
    while len(out) * 8 < bits:
        counter += 1
        block = struct.pack(">I", counter) + label + context_u + context_v + struct.pack(">I", bits)
        out += hmac.new(key, block, algorithm.name).digest()
    return out[: (bits + 7) // 8]


@dataclass(frozen=True)
class Credential:
    """What the device passes to `TPM2_ActivateCredential`: credentialBlob and secret, both without size prefix."""

    credential_blob: bytes    # TPM2B_ID_OBJECT's contents
    encrypted_secret: bytes   # TPM2B_ENCRYPTED_SECRET's contents

    def to_json(self) -> dict[str, str]:
        """What the server sends the device: `{"credential_blob": b64, "encrypted_secret": b64}`."""
        return {"credential_blob": base64.b64encode(self.credential_blob).decode("ascii"),
                "encrypted_secret": base64.b64encode(self.encrypted_secret).decode("ascii")}

    def __repr__(self) -> str:   # the blob is harmless without the TPM, but keep reprs quiet anyway
        return f"Credential(<{len(self.credential_blob)} + {len(self.encrypted_secret)} bytes>)"


def make_credential(ek: TpmPublic, ak_name: bytes, secret: bytes, *, seed: bytes | None = None) -> Credential:
    """Seal `secret` (1..32 bytes) to the TPM holding `ek`, for the object named `ak_name`."""
    if ek.type != ALG_RSA or not isinstance(ek.public_key, rsa.RSAPublicKey):
        raise EvidenceError("unsupported endorsement key")
    if not ek.has(ATTR_RESTRICTED | ATTR_DECRYPT) or ek.symmetric is None:
        raise EvidenceError("endorsement key is not a storage key")
    sym_alg, sym_bits, sym_mode = ek.symmetric
    if sym_alg != ALG_AES or sym_mode != ALG_CFB or sym_bits not in (128, 256):
        raise EvidenceError("unsupported endorsement key")
    if not 0 < len(secret) <= MAX_CREDENTIAL_BYTES:
        raise EvidenceError("credential secret size")
    name_alg = ek.name_alg
    hash_cls = HASHES[name_alg]
    seed = seed if seed is not None else os.urandom(hash_cls.digest_size)
    encrypted_seed = ek.public_key.encrypt(
        seed, padding.OAEP(mgf=padding.MGF1(hash_cls()), algorithm=hash_cls(), label=b"IDENTITY\0"))
    sym_key = kdfa(name_alg, seed, b"STORAGE", ak_name, b"", sym_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()
    hmac_key = kdfa(name_alg, seed, b"INTEGRITY", b"", b"", hash_cls.digest_size * 8)
    outer_hmac = hmac.new(hmac_key, enc_identity + ak_name, hash_cls.name).digest()
    return Credential(tpm2b(outer_hmac) + enc_identity, encrypted_seed)

