"""SAML 2.0 single sign-on, pure: the AuthnRequest (HTTP-Redirect binding) and the checks on the
IdP's Response (HTTP-POST binding): hardened parsing, the XML signature against the tenant's
pinned IdP certificate, issuer, audience, times, recipient and InResponseTo.

Signatures are verified with signxml (pure Python over lxml and `cryptography`, no xmlsec1
subprocess or temp files per login). SECURITY: every value we act on is read from the element
signxml returns as signed, never from the document as received, so a wrapped or moved
assertion cannot smuggle unsigned content in.
"""

from __future__ import annotations

import base64
import secrets
import urllib.parse
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, SignatureMethod, XMLVerifier
from signxml.algorithms import DigestAlgorithm
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature

PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
NS = {"samlp": PROTOCOL, "saml": ASSERTION, "ds": DSIG}
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"

CLOCK_SKEW = timedelta(seconds=60)
MAX_RESPONSE_CHARS = 200_000  # base64; a signed response with a certificate is ~10 kB
# Authentication contexts an IdP uses to say the person passed a second factor.
MFA_CONTEXTS = frozenset({
    "https://refeds.org/profile/mfa", "http://schemas.microsoft.com/claims/multipleauthn",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken", "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
})

_SIGNATURE = SignatureConfiguration(
    location="./",  # enveloped: a direct child of the element it signs
    expect_references=1,
    signature_methods=frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512,
                                 SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}),
)


class MalformedResponse(ValueError):
    """Not a well-formed, DTD-free SAML response at all: the caller's fault (400)."""


class InvalidResponse(ValueError):
    """A SAML response we refuse; the reason is for the audit log, not the caller (401)."""


@dataclass(frozen=True)
class AuthnRequest:
    url: str
    request_id: str
    relay_state: str


@dataclass(frozen=True)
class SamlIdentity:
    assertion_id: str
    name_id: str
    attributes: dict[str, list[str]]
    mfa: bool
    remember_until: datetime  # past this the assertion is refused on time alone; replay memory may end



def _child(element, path: str):
    """The first element at `path` under `element`, or None (an XML lookup, not a query)."""
    return next(element.iterfind(path, NS), None)

def certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise ValueError("idp_certificate_pem is not a PEM X.509 certificate") from None


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def authn_request(*, idp_sso_url: str, sp_entity_id: str, acs_url: str, now: datetime) -> AuthnRequest:
    """An unsigned AuthnRequest for the HTTP-Redirect binding (deflated, base64, in the query)."""
    request_id, relay_state = "_" + secrets.token_hex(20), secrets.token_urlsafe(32)
    xml = (f'<samlp:AuthnRequest xmlns:samlp="{PROTOCOL}" xmlns:saml="{ASSERTION}" ID="{request_id}" '
           f'Version="2.0" IssueInstant="{_instant(now)}" Destination={quoteattr(idp_sso_url)} '
           f'AssertionConsumerServiceURL={quoteattr(acs_url)} ProtocolBinding="{POST_BINDING}">'
           f'<saml:Issuer>{escape(sp_entity_id)}</saml:Issuer><samlp:NameIDPolicy AllowCreate="true"/>'
           f'</samlp:AuthnRequest>')
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = deflater.compress(xml.encode()) + deflater.flush()
    query = urllib.parse.urlencode({"SAMLRequest": base64.b64encode(deflated).decode(), "RelayState": relay_state})
    separator = "&" if "?" in idp_sso_url else "?"
    return AuthnRequest(f"{idp_sso_url}{separator}{query}", request_id, relay_state)


# SECURITY: no entity expansion, no DTD or network loads; a document with any DTD is refused
# outright (SAML never needs one), which also rules out entity bombs and external entities.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                          huge_tree=False)


def decode_response(encoded: str) -> etree._Element:
    """The SAMLResponse form field as an XML element, or MalformedResponse."""
    if len(encoded) > MAX_RESPONSE_CHARS:
        raise MalformedResponse(f"SAMLResponse is larger than {MAX_RESPONSE_CHARS} characters")
    try:
        raw = base64.b64decode("".join(encoded.split()), validate=True)
    except ValueError:
        raise MalformedResponse("SAMLResponse is not base64") from None
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError:
        raise MalformedResponse("SAMLResponse is not well-formed XML") from None
    info = root.getroottree().docinfo
    if info.internalDTD is not None or info.externalDTD is not None or info.doctype:
        raise MalformedResponse("SAMLResponse must not contain a DTD")
    if root.tag != f"{{{PROTOCOL}}}Response":
        raise MalformedResponse("SAMLResponse is not a SAML 2.0 Response")
    return root


def _text(element: etree._Element | None) -> str:
    # string(): all descendant text, comments excluded, so "alice<!---->@evil" reads as what was signed.
    return "" if element is None else str(element.xpath("string()")).strip()


def _time(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidResponse(f"{what} is not a dateTime") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _verified(element: etree._Element, cert: x509.Certificate, tag: str) -> etree._Element:
    """The element as signed by the pinned certificate; anything else is refused."""
    try:
        result = XMLVerifier().verify(element, x509_cert=cert, expect_config=_SIGNATURE)
    except (InvalidSignature, InvalidDigest, InvalidInput, InvalidCertificate, ValueError) as exc:
        raise InvalidResponse(f"signature refused: {type(exc).__name__}") from None
    signed = result.signed_xml
    if signed is None or signed.tag != f"{{{ASSERTION if tag == 'Assertion' else PROTOCOL}}}{tag}":
        raise InvalidResponse(f"the signature does not cover the {tag}")
    return signed


def verify_response(root: etree._Element, *, idp_certificate_pem: str, idp_entity_id: str, sp_entity_id: str,
                    acs_url: str, request_id: str, now: datetime) -> SamlIdentity:
    """The identity the IdP asserted, if the response passes every check; else InvalidResponse."""
    status = _child(root, "samlp:Status/samlp:StatusCode")
    if status is None or status.get("Value") != SUCCESS:
        raise InvalidResponse("the identity provider reported a failure status")
    if _child(root, "saml:EncryptedAssertion") is not None:
        raise InvalidResponse("encrypted assertions are not supported")
    if len(root.findall("saml:Assertion", NS)) != 1:
        raise InvalidResponse("expected exactly one assertion")
    cert = certificate(idp_certificate_pem)
    if _child(root, "ds:Signature") is not None:
        response = _verified(root, cert, "Response")
        if response.get("InResponseTo") not in (None, request_id):
            raise InvalidResponse("InResponseTo does not match our request")
        if response.get("Destination") not in (None, acs_url):
            raise InvalidResponse("Destination is not our assertion consumer service")
        found = response.findall("saml:Assertion", NS)
        if len(found) != 1:
            raise InvalidResponse("expected exactly one signed assertion")
        assertion = found[0]
        if _child(assertion, "ds:Signature") is not None:
            assertion = _verified(assertion, cert, "Assertion")
    else:
        assertion = _child(root, "saml:Assertion")
        if assertion is None or _child(assertion, "ds:Signature") is None:
            raise InvalidResponse("neither the response nor its assertion is signed")
        assertion = _verified(assertion, cert, "Assertion")
    return _check_assertion(assertion, idp_entity_id=idp_entity_id, sp_entity_id=sp_entity_id, acs_url=acs_url,
                            request_id=request_id, now=now)


def _check_assertion(assertion: etree._Element, *, idp_entity_id: str, sp_entity_id: str, acs_url: str,
                     request_id: str, now: datetime) -> SamlIdentity:
    if assertion.get("Version") != "2.0" or not assertion.get("ID"):
        raise InvalidResponse("the assertion lacks Version 2.0 or an ID")
    if _text(_child(assertion, "saml:Issuer")) != idp_entity_id:
        raise InvalidResponse("the assertion's issuer is not the tenant's identity provider")
    conditions = _child(assertion, "saml:Conditions")
    if conditions is None:
        raise InvalidResponse("the assertion has no conditions")
    not_before = _time(conditions.get("NotBefore"), "NotBefore")
    not_after = _time(conditions.get("NotOnOrAfter"), "NotOnOrAfter")
    if not_before is not None and now + CLOCK_SKEW < not_before:
        raise InvalidResponse("the assertion is not valid yet")
    if not_after is not None and now - CLOCK_SKEW >= not_after:
        raise InvalidResponse("the assertion has expired")
    restrictions = conditions.findall("saml:AudienceRestriction", NS)
    # Every AudienceRestriction must name us (they are a conjunction), and there must be one.
    if not restrictions or any(sp_entity_id not in {_text(a) for a in r.findall("saml:Audience", NS)}
                               for r in restrictions):
        raise InvalidResponse("the assertion is not addressed to this service provider (audience)")
    subject = _child(assertion, "saml:Subject")
    name_id = _text(_child(subject, "saml:NameID")) if subject is not None else ""
    if not name_id:
        raise InvalidResponse("the assertion has no subject NameID")
    confirmed_until = _bearer_confirmation(subject, acs_url=acs_url, request_id=request_id, now=now)
    attributes: dict[str, list[str]] = {}
    for attribute in assertion.findall("saml:AttributeStatement/saml:Attribute", NS):
        name = attribute.get("Name") or ""
        attributes.setdefault(name, []).extend(_text(v) for v in attribute.findall("saml:AttributeValue", NS))
    contexts = {_text(c) for c in assertion.findall("saml:AuthnStatement/saml:AuthnContext/saml:AuthnContextClassRef", NS)}
    latest = max(t for t in (not_after, confirmed_until) if t is not None)
    return SamlIdentity(assertion.get("ID", ""), name_id, attributes, bool(contexts & MFA_CONTEXTS),
                        latest + CLOCK_SKEW)


def _bearer_confirmation(subject: etree._Element, *, acs_url: str, request_id: str, now: datetime) -> datetime:
    """Web SSO profile: a bearer confirmation for our request, our ACS, still in time."""
    reason = "the assertion has no bearer subject confirmation"
    for confirmation in subject.findall("saml:SubjectConfirmation", NS):
        data = _child(confirmation, "saml:SubjectConfirmationData")
        if confirmation.get("Method") != BEARER or data is None:
            continue
        until = _time(data.get("NotOnOrAfter"), "SubjectConfirmationData NotOnOrAfter")
        not_before = _time(data.get("NotBefore"), "SubjectConfirmationData NotBefore")
        if until is None:
            reason = "the bearer confirmation has no NotOnOrAfter"
        elif now - CLOCK_SKEW >= until or (not_before is not None and now + CLOCK_SKEW < not_before):
            reason = "the bearer confirmation has expired"
        elif data.get("Recipient") != acs_url:
            reason = "the bearer confirmation's Recipient is not our assertion consumer service"
        elif data.get("InResponseTo") != request_id:
            reason = "InResponseTo does not match our request"
        else:
            return until
    raise InvalidResponse(reason)


def sp_metadata(*, sp_entity_id: str, acs_url: str) -> str:
    """Our service-provider metadata for the tenant's IdP administrator."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID={quoteattr(sp_entity_id)}>'
            f'<md:SPSSODescriptor WantAssertionsSigned="true" protocolSupportEnumeration="{PROTOCOL}">'
            f'<md:AssertionConsumerService Binding="{POST_BINDING}" Location={quoteattr(acs_url)} index="0"/>'
            f'</md:SPSSODescriptor></md:EntityDescriptor>\n')
