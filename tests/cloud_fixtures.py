"""Cloud identity evidence minted by the tests: AWS region certificates, a GCP JWKS, an Azure CA.

Each signer works as the cloud's does (the same formats, algorithms and fields), but with keys
the tests create, so the verifiers can be driven through every refusal. RSA keys are costly to
generate, so each is made once per session.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey

NOW = datetime(2026, 12, 5, 0, 30, tzinfo=UTC)
ACCOUNT, INSTANCE = "123456789012", "i-0abc1234def567890"
PENDING = "2026-12-01T08:00:00Z"


@cache
def rsa_key(label: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(subject: str, key: rsa.RSAPrivateKey, *, issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
                ca: bool = False, dns: tuple[str, ...] = (), days: int = 365) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=30)).not_valid_after(NOW + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cms_sign(content: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey, *, with_certs: bool = False,
             attributes: bool = True) -> str:
    """Base64 DER of a SignedData over `content` (binary mode: no CRLF rewriting), as IMDS serves it."""
    options = [pkcs7.PKCS7Options.Binary] + ([] if with_certs else [pkcs7.PKCS7Options.NoCerts])
    options += [] if attributes else [pkcs7.PKCS7Options.NoAttributes]
    der = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hashes.SHA256()).sign(
        serialization.Encoding.DER, options)
    return base64.b64encode(der).decode("ascii")


# --- AWS ----------------------------------------------------------------------------------


@cache
def aws_region_cert(region: str) -> x509.Certificate:
    return certificate(f"Amazon Web Services LLC {region}", rsa_key(f"aws:{region}"), days=3650)


def aws_region_certs(*regions: str) -> dict[str, str]:
    return {r: pem(aws_region_cert(r)) for r in regions or ("eu-west-1",)}


def aws_document(*, region: str = "eu-west-1", account: str = ACCOUNT, instance: str = INSTANCE,
                 pending: str = PENDING, **overrides: Any) -> bytes:
    """A document shaped as IMDS serves it (pretty-printed JSON)."""
    doc = {
        "accountId": account, "architecture": "x86_64", "availabilityZone": f"{region}a", "billingProducts": None,
        "devpayProductCodes": None, "marketplaceProductCodes": None, "imageId": "ami-0abcdef1234567890",
        "instanceId": instance, "instanceType": "t3.micro", "kernelId": None, "pendingTime": pending,
        "privateIp": "10.0.0.12", "ramdiskId": None, "region": region, "version": "2017-09-30", **overrides,
    }
    return json.dumps(doc, indent=2).encode("utf-8")


def aws_sign(document: bytes, region: str = "eu-west-1", *, signer: str | None = None, attributes: bool = True) -> str:
    """`rsa2048` for `document`, by the region's key (or another region's, or a stranger's)."""
    label = signer or region
    return cms_sign(document, aws_region_cert(label), rsa_key(f"aws:{label}"), attributes=attributes)


# --- GCP ----------------------------------------------------------------------------------


@cache
def gcp_key(kid: str = "gcp-1") -> RSAKey:
    return RSAKey.import_key(rsa_key(f"gcp:{kid}"), {"kid": kid, "use": "sig", "alg": "RS256"})


def gcp_jwks(*kids: str) -> dict[str, Any]:
    return {"keys": [gcp_key(k).as_dict(private=False) for k in kids or ("gcp-1",)]}


def gcp_claims(audience: str, *, now: datetime = NOW, lifetime: int = 3600, **overrides: Any) -> dict[str, Any]:
    iat = int(now.timestamp())
    return {
        "iss": "https://accounts.google.com", "aud": audience, "azp": "1122334455", "sub": "1122334455",
        "email": "vm@project.iam.gserviceaccount.com", "email_verified": True, "iat": iat, "exp": iat + lifetime,
        "google": {"compute_engine": {
            "project_id": "strongroom-test", "project_number": 987654321, "zone": "europe-west1-b",
            "instance_id": "4567890123456789", "instance_name": "vm-1", "instance_creation_timestamp": iat - 86400,
        }},
        **overrides,
    }


def gcp_token(audience: str, *, kid: str = "gcp-1", header: dict[str, Any] | None = None, **claims: Any) -> str:
    return jwt.encode(header or {"alg": "RS256", "kid": kid, "typ": "JWT"}, gcp_claims(audience, **claims), gcp_key(kid))


# --- Azure --------------------------------------------------------------------------------

VM_ID, SUBSCRIPTION = "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "8d10da13-8125-4ba9-a717-bf7490507b3d"


@cache
def azure_chain(label: str = "azure") -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    """(root, intermediate, signer): the signer names *.metadata.azure.com, as Azure's does."""
    root_key, mid_key, leaf_key = (rsa_key(f"{label}:{n}") for n in ("root", "mid", "leaf"))
    root = certificate(f"{label} Root CA", root_key, ca=True, days=3650)
    mid = certificate(f"{label} TLS Issuing CA", mid_key, issuer=(f"{label} Root CA", root_key), ca=True)
    leaf = certificate("metadata.azure.com", leaf_key, issuer=(f"{label} TLS Issuing CA", mid_key),
                       dns=("metadata.azure.com", "*.metadata.azure.com"))
    return root, mid, leaf


def azure_document(nonce: str, *, now: datetime = NOW, hours: int = 6, **overrides: Any) -> bytes:
    stamp = "%m/%d/%y %H:%M:%S -0000"
    doc = {
        "licenseType": "", "nonce": nonce, "plan": {"name": "", "product": "", "publisher": ""}, "sku": "22_04-lts-gen2",
        "subscriptionId": SUBSCRIPTION, "timeStamp": {
            "createdOn": now.strftime(stamp), "expiresOn": (now + timedelta(hours=hours)).strftime(stamp)},
        "vmId": VM_ID, **overrides,
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def azure_sign(content: bytes, *, label: str = "azure") -> str:
    """Signed by the chain's signer, which travels in the structure (the intermediate does not)."""
    leaf = azure_chain(label)[2]
    return cms_sign(content, leaf, rsa_key(f"{label}:leaf"), with_certs=True)
