"""A local SAML 2.0 identity provider for tests: reads the gateway's AuthnRequest (HTTP-Redirect
binding) and answers with an auto-posting form carrying a Response whose assertion (or the whole
response) is signed with a test RSA key and self-signed certificate made with `cryptography`.
Knobs let a test send what a real IdP never would (tampered, expired, unsigned, misaddressed)."""

from __future__ import annotations

import base64
import html
import re
import urllib.parse
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod

from .local_http import LocalHttpServer

PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion"


def idp_certificate(common_name: str = "test-idp") -> tuple[bytes, str]:
    """An RSA-2048 key (PEM) and a self-signed certificate valid for a day (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def _instant(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalSamlIdp(LocalHttpServer):
    def __init__(self, entity_id: str = "https://idp.test/saml"):
        self.entity_id = entity_id
        self.key_pem, self.cert_pem = idp_certificate()
        self.user: dict[str, Any] = {"name_id": "saml-sam", "groups": ["sec-team"],
                                     "context": "https://refeds.org/profile/mfa"}
        self.sign = "assertion"  # "assertion", "response" or "none"
        self.tamper = False  # change a group attribute after signing
        self.audience: str | None = None  # None: the SP entity id from the AuthnRequest
        self.age = timedelta(0)  # shift every time into the past (expired assertions)
        self.assertion_id: str | None = None  # fixed id, to replay an assertion under a new request
        self.in_response_to: str | None = None  # None: the AuthnRequest's ID

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/sso", self.sso)

    def settings(self, group_roles: dict[str, list[str]], **extra: Any) -> dict[str, Any]:
        return {"protocol": "saml", "idp_entity_id": self.entity_id, "idp_sso_url": self.url + "/sso",
                "idp_certificate_pem": self.cert_pem, "group_roles": group_roles, **extra}

    async def sso(self, request: web.Request) -> web.Response:
        """Signs the configured user in at once and posts the Response back to the ACS."""
        deflated = base64.b64decode(request.query["SAMLRequest"])
        authn = etree.fromstring(zlib.decompress(deflated, -15))
        acs = authn.get("AssertionConsumerServiceURL")
        sp_entity_id = authn.find(f"{{{ASSERTION}}}Issuer").text
        response = self.response(request_id=authn.get("ID"), acs_url=acs, sp_entity_id=sp_entity_id)
        return web.Response(content_type="text/html", text=(
            f'<form method="post" action="{html.escape(acs)}">'
            f'<input type="hidden" name="SAMLResponse" value="{html.escape(response)}"/>'
            f'<input type="hidden" name="RelayState" value="{html.escape(request.query.get("RelayState", ""))}"/>'
            f'</form>'))

    def response(self, *, request_id: str, acs_url: str, sp_entity_id: str) -> str:
        """A base64 SAMLResponse as the knobs say."""
        now = datetime.now(UTC) - self.age
        in_response_to = self.in_response_to or request_id
        assertion_id = self.assertion_id or f"_a{uuid.uuid4().hex}"
        values = "".join(f"<saml:AttributeValue>{html.escape(g)}</saml:AttributeValue>" for g in self.user["groups"])
        assertion = etree.fromstring(
            f'<saml:Assertion xmlns:saml="{ASSERTION}" ID="{assertion_id}" Version="2.0" IssueInstant="{_instant(now)}">'
            f'<saml:Issuer>{self.entity_id}</saml:Issuer>'
            f'<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified">'
            f'{html.escape(self.user["name_id"])}</saml:NameID>'
            f'<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
            f'<saml:SubjectConfirmationData InResponseTo="{in_response_to}" Recipient="{html.escape(acs_url)}" '
            f'NotOnOrAfter="{_instant(now + timedelta(minutes=5))}"/></saml:SubjectConfirmation></saml:Subject>'
            f'<saml:Conditions NotBefore="{_instant(now - timedelta(seconds=5))}" '
            f'NotOnOrAfter="{_instant(now + timedelta(minutes=5))}">'
            f'<saml:AudienceRestriction><saml:Audience>{html.escape(self.audience or sp_entity_id)}</saml:Audience>'
            f'</saml:AudienceRestriction></saml:Conditions>'
            f'<saml:AuthnStatement AuthnInstant="{_instant(now)}"><saml:AuthnContext><saml:AuthnContextClassRef>'
            f'{self.user["context"]}</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>'
            f'<saml:AttributeStatement><saml:Attribute Name="groups">{values}</saml:Attribute></saml:AttributeStatement>'
            f'</saml:Assertion>')
        if self.sign == "assertion":
            assertion = self._signed(assertion, assertion_id)
        response_id = f"_r{uuid.uuid4().hex}"
        response = etree.fromstring(
            f'<samlp:Response xmlns:samlp="{PROTOCOL}" xmlns:saml="{ASSERTION}" ID="{response_id}" Version="2.0" '
            f'IssueInstant="{_instant(now)}" Destination="{html.escape(acs_url)}" InResponseTo="{in_response_to}">'
            f'<saml:Issuer>{self.entity_id}</saml:Issuer><samlp:Status>'
            f'<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:Response>')
        response.append(assertion)
        if self.sign == "response":
            response = self._signed(response, response_id)
        xml = etree.tostring(response)
        if self.tamper:  # a group the IdP never asserted, after the signature was made
            xml = xml.replace(b">sec-team<", b">admins!!<")
        return base64.b64encode(xml).decode()

    def _signed(self, element: etree._Element, element_id: str) -> etree._Element:
        signer = XMLSigner(signature_algorithm="rsa-sha256", digest_algorithm="sha256",
                           c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
        return signer.sign(element, key=self.key_pem, cert=self.cert_pem, reference_uri=element_id)


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the IdP's auto-posting form (what a browser would post)."""
    action = html.unescape(re.search(r'action="([^"]*)"', page).group(1))
    fields = {html.unescape(n): html.unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', page)}
    return action, fields


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
