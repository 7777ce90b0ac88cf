"""TPM attestation against a real (software) TPM: swtpm driven by tpm2-tools through agent/tpm.py,
checked by the server's pure verifier (services/gateway/evidence/tpm*.py, `cryptography` only).

The decisive enrolment test: the server's own MakeCredential, and the TPM recovers the secret only
when the AK it names is in the TPM that holds the EK.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.tpm import Tpm, TpmError
from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.tpm import boot_change, golden_mismatches, quote_from_json, subject_of, verify_quote
from services.gateway.evidence.tpm_devicekey import device_key_from_json
from services.gateway.evidence.tpm_enrol import activation_succeeded, begin_activation, enrolment_from_json
from tests.swtpm import manufacture, running_swtpm

PCRS = [0, 7, 16]


def look_alike(certificate: x509.Certificate) -> x509.Certificate:
    """A self-signed certificate with the same subject and validity, by another key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder().subject_name(certificate.subject).issuer_name(certificate.subject)
            .public_key(key.public_key()).serial_number(certificate.serial_number)
            .not_valid_before(certificate.not_valid_before_utc).not_valid_after(certificate.not_valid_after_utc)
            .sign(key, hashes.SHA256()))


@pytest.fixture
def swtpm(tmp_path):
    with running_swtpm(tmp_path / "tpm-a") as tpm:
        yield tpm


@pytest.fixture
def other_swtpm(tmp_path):
    with running_swtpm(tmp_path / "tpm-b") as tpm:
        yield tpm


def enrol(tpm: Tpm, algorithm: str = "ecc"):
    """The enrolment exchange, both sides, through its JSON forms: the AK the server registers once the TPM proved it."""
    presented = enrolment_from_json(json.loads(json.dumps(tpm.ensure_keys(algorithm).to_json())))
    activation = begin_activation(presented.ek_public, presented.ak_public, ek_certificate=presented.ek_certificate)
    returned = tpm.activate(json.loads(json.dumps(activation.credential.to_json())))
    assert activation_succeeded(activation.secret_digest, returned)
    return activation.ak


def quote_for_request(tpm: Tpm, server_nonce: bytes, request_key: bytes, pcrs=PCRS):
    """What the agent sends with a request, as JSON, parsed back by the gateway."""
    sent = json.dumps(tpm.quote_for_request(server_nonce, request_key, pcrs).to_json())
    return quote_from_json(json.loads(sent))


@pytest.mark.parametrize("algorithm", ["ecc", "rsa"])
def test_enrolment_then_a_fresh_quote_verifies(swtpm, algorithm):
    tpm = Tpm(swtpm.tcti)
    ak = enrol(tpm, algorithm)
    tpm.extend_pcr(16, b"application measurement")
    nonce, request_key = os.urandom(32), os.urandom(32)
    verified = verify_quote(quote_for_request(tpm, nonce, request_key), ak=ak, server_nonce=nonce,
                            request_public_key=request_key, required_pcrs=[0, 7])
    assert verified.provenance == "attested" and verified.subject == subject_of(ak)
    assert verified.facts["integrity"]["pcr"] == {str(pcr): value.hex() for pcr, value in tpm.read_pcrs(PCRS).items()}
    assert verified.facts["integrity"]["pcr"]["16"] != "00" * 32
    # The keys are persistent: the agent finds the same AK next time.
    assert tpm.ensure_keys(algorithm).ak_public == Tpm(swtpm.tcti).ensure_keys(algorithm).ak_public


def test_activation_fails_when_the_ak_is_not_in_the_ek_tpm(swtpm, other_swtpm):
    device, elsewhere = Tpm(swtpm.tcti), Tpm(other_swtpm.tcti)
    device_keys, other_keys = device.ensure_keys("ecc"), elsewhere.ensure_keys("ecc")
    # The device claims an AK from another TPM: its own TPM cannot activate for that name.
    claimed = begin_activation(device_keys.ek_public, other_keys.ak_public)
    with pytest.raises(TpmError, match="tpm2_activatecredential failed"):
        device.activate_credential(claimed.credential.credential_blob, claimed.credential.encrypted_secret)
    # Nor can the TPM holding that AK: the seed is sealed to the device's EK.
    with pytest.raises(TpmError, match="tpm2_activatecredential failed"):
        elsewhere.activate_credential(claimed.credential.credential_blob, claimed.credential.encrypted_secret)
    # A tampered credential does not activate either.
    genuine = begin_activation(device_keys.ek_public, device_keys.ak_public)
    blob = bytearray(genuine.credential.credential_blob)
    blob[-1] ^= 1
    with pytest.raises(TpmError):
        device.activate_credential(bytes(blob), genuine.credential.encrypted_secret)
    returned = device.activate_credential(genuine.credential.credential_blob, genuine.credential.encrypted_secret)
    assert activation_succeeded(genuine.secret_digest, returned)


def test_a_quote_by_a_foreign_ak_is_refused(swtpm, other_swtpm):
    ak = enrol(Tpm(swtpm.tcti))
    foreign = Tpm(other_swtpm.tcti)
    enrol(foreign)
    nonce, request_key = os.urandom(32), os.urandom(32)
    with pytest.raises(EvidenceError, match="signature invalid"):
        verify_quote(quote_for_request(foreign, nonce, request_key), ak=ak, server_nonce=nonce, request_public_key=request_key)


@pytest.mark.parametrize("algorithm", ["ecc", "rsa"])
def test_wrong_nonce_altered_pcr_and_altered_attest_are_refused(swtpm, algorithm):
    tpm = Tpm(swtpm.tcti)
    ak = enrol(tpm, algorithm)
    nonce, request_key = os.urandom(32), os.urandom(32)
    quote = quote_for_request(tpm, nonce, request_key)
    check = {"ak": ak, "server_nonce": nonce, "request_public_key": request_key}
    with pytest.raises(EvidenceError, match="nonce"):
        verify_quote(quote, **{**check, "server_nonce": os.urandom(32)})
    with pytest.raises(EvidenceError, match="nonce"):
        verify_quote(quote, **{**check, "request_public_key": os.urandom(32)})
    with pytest.raises(EvidenceError, match="PCR values do not match"):
        verify_quote(type(quote)(quote.attest, quote.signature, {**quote.pcrs, 7: b"\x01" * 32}), **check)
    attest = bytearray(quote.attest)
    attest[-1] ^= 1   # the PCR digest, as an attacker who wants other PCR values would change it
    with pytest.raises(EvidenceError, match="signature invalid"):
        verify_quote(type(quote)(bytes(attest), quote.signature, quote.pcrs), **check)
    assert verify_quote(quote, **check).provenance == "attested"


def test_a_new_measurement_breaks_the_golden_values(swtpm):
    tpm = Tpm(swtpm.tcti)
    ak = enrol(tpm)
    nonce, request_key = os.urandom(32), os.urandom(32)
    golden = verify_quote(quote_for_request(tpm, nonce, request_key), ak=ak, server_nonce=nonce,
                          request_public_key=request_key).facts["integrity"]["pcr"]
    tpm.extend_pcr(16, b"an unexpected kernel module")
    nonce = os.urandom(32)
    now = verify_quote(quote_for_request(tpm, nonce, request_key), ak=ak, server_nonce=nonce, request_public_key=request_key)
    assert golden_mismatches(now.facts["integrity"]["pcr"], golden) == ["PCR 16 differs from its golden value"]


def test_reboot_and_rollback_are_detected_from_the_reset_count(swtpm, tmp_path):
    tpm = Tpm(swtpm.tcti)
    ak = enrol(tpm)

    def integrity():
        nonce, request_key = os.urandom(32), os.urandom(32)
        verified = verify_quote(quote_for_request(tpm, nonce, request_key), ak=ak, server_nonce=nonce,
                                request_public_key=request_key)
        return verified.facts["integrity"]

    tpm.extend_pcr(16, b"measured before the reboot")
    before = integrity()
    assert boot_change(before, integrity()) == "none"
    swtpm.stop()
    shutil.copytree(swtpm.state_dir, tmp_path / "snapshot")
    swtpm.restart()
    after = integrity()   # the AK persisted across the reboot: the same registered AK verifies
    assert boot_change(before, after) == "rebooted"
    assert after["reset_count"] == before["reset_count"] + 1
    assert after["pcr"]["16"] == "00" * 32 != before["pcr"]["16"]
    swtpm.restart()
    latest = integrity()
    # The TPM's state is put back to an earlier copy: its counters go backwards.
    swtpm.stop()
    shutil.rmtree(swtpm.state_dir)
    shutil.copytree(tmp_path / "snapshot", swtpm.state_dir)
    swtpm.restart()
    assert boot_change(latest, integrity()) == "rolled_back"


def test_an_ek_certificate_from_the_tpm_vendor_is_checked(tmp_path):
    manufacture(tmp_path / "tpm-state", tmp_path / "tpm-ca")
    root = x509.load_pem_x509_certificate((tmp_path / "tpm-ca" / "swtpm-localca-rootca-cert.pem").read_bytes())
    issuer = x509.load_pem_x509_certificate((tmp_path / "tpm-ca" / "issuercert.pem").read_bytes())
    with running_swtpm(tmp_path / "tpm-state") as software:
        tpm = Tpm(software.tcti)
        keys = tpm.ensure_keys("ecc")
        assert keys.ek_certificate is not None
        activation = begin_activation(keys.ek_public, keys.ak_public, ek_certificate=keys.ek_certificate,
                                      roots=[root], intermediates=[issuer], require_certificate=True)
        assert activation.ek_certified
        returned = tpm.activate_credential(activation.credential.credential_blob, activation.credential.encrypted_secret)
        assert activation_succeeded(activation.secret_digest, returned)
        with pytest.raises(EvidenceError, match="does not chain"):   # the vendor's intermediate is not known
            begin_activation(keys.ek_public, keys.ak_public, ek_certificate=keys.ek_certificate, roots=[root])
        with pytest.raises(EvidenceError, match="does not chain"):   # a look-alike of the vendor's root
            begin_activation(keys.ek_public, keys.ak_public, ek_certificate=keys.ek_certificate,
                             roots=[look_alike(root)], intermediates=[issuer])


def test_tool_files_never_outlive_a_call(swtpm, tmp_path, monkeypatch):
    private = tmp_path / "agent-tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    tpm = Tpm(swtpm.tcti)
    ak = enrol(tpm)
    nonce = os.urandom(32)
    verify_quote(quote_for_request(tpm, nonce, b"k"), ak=ak, server_nonce=nonce, request_public_key=b"k")
    assert list(private.iterdir()) == []


def test_an_unreachable_tpm_is_a_clear_error(tmp_path):
    tpm = Tpm("swtpm:host=127.0.0.1,port=1", timeout=10)
    with pytest.raises(TpmError, match="tpm2_getcap failed"):
        tpm.ensure_keys()
    with pytest.raises(TpmError, match="between 0 and 23"):
        tpm.quote(b"n", [24])
    assert not Path(tmp_path / "tpm-a").exists()


def test_a_device_key_in_the_tpm_signs_requests_and_survives_a_reboot(swtpm):
    tpm = Tpm(swtpm.tcti)
    ak = enrol(tpm)
    key = device_key_from_json(json.loads(json.dumps(tpm.ensure_device_key().to_json())), ak=ak)
    message = b"@method: POST\n@path: /v1/agent/release"
    key.public_key.verify(tpm.sign(message), message, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.public_key.verify(tpm.sign(message), message + b"x", ec.ECDSA(hashes.SHA256()))
    swtpm.restart()
    assert device_key_from_json(tpm.ensure_device_key().to_json(), ak=ak).name == key.name
    key.public_key.verify(tpm.sign(message), message, ec.ECDSA(hashes.SHA256()))
    renewed = device_key_from_json(tpm.ensure_device_key(replace=True).to_json(), ak=ak)
    assert renewed.name != key.name
    with pytest.raises(InvalidSignature):
        key.public_key.verify(tpm.sign(message), message, ec.ECDSA(hashes.SHA256()))
