"""SAML 2.0 response checks, pure: signatures against the pinned IdP certificate (assertion- or
response-level), tampering, signature wrapping, audience, times, InResponseTo, recipient, and a
parser that refuses DTDs (entity bombs, external entities)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from services.gateway.accounts import sso_saml
from services.gateway.accounts.sso_saml import InvalidResponse, MalformedResponse
from tests.e2e.saml_idp import LocalSamlIdp, idp_certificate

ACS = "https://sr.test/v1/auth/saml/acs"
SP = "https://sr.test/v1/auth/saml/metadata"


@pytest.fixture(scope="module")
def idp() -> LocalSamlIdp:
    return LocalSamlIdp()


def _check(idp: LocalSamlIdp, encoded: str, *, request_id: str = "_req1", cert: str | None = None,
           now: datetime | None = None) -> sso_saml.SamlIdentity:
    return sso_saml.verify_response(sso_saml.decode_response(encoded), idp_certificate_pem=cert or idp.cert_pem,
                                    idp_entity_id=idp.entity_id, sp_entity_id=SP, acs_url=ACS, request_id=request_id,
                                    now=now or datetime.now(UTC))


def _response(idp: LocalSamlIdp, **knobs) -> str:
    saved = {k: getattr(idp, k) for k in knobs}
    try:
        for k, v in knobs.items():
            setattr(idp, k, v)
        return idp.response(request_id="_req1", acs_url=ACS, sp_entity_id=SP)
    finally:
        for k, v in saved.items():
            setattr(idp, k, v)


@pytest.mark.parametrize("sign", ["assertion", "response"])
def test_signed_assertion_or_response_yields_the_identity(idp, sign):
    identity = _check(idp, _response(idp, sign=sign))
    assert identity.name_id == "saml-sam" and identity.attributes["groups"] == ["sec-team"] and identity.mfa
    assert identity.assertion_id.startswith("_a") and identity.remember_until > datetime.now(UTC)


@pytest.mark.parametrize("knobs,reason", [
    ({"sign": "none"}, "nor its assertion is signed"),
    ({"tamper": True}, "signature refused"),
    ({"sign": "response", "tamper": True}, "signature refused"),
    ({"audience": "https://someone-else.test"}, "audience"),
    ({"age": timedelta(minutes=10)}, "expired"),
    ({"in_response_to": "_other"}, "InResponseTo"),
])
def test_refused_responses(idp, knobs, reason):
    with pytest.raises(InvalidResponse, match=reason):
        _check(idp, _response(idp, **knobs))


def test_small_clock_skew_tolerated_but_no_more(idp):
    encoded = _response(idp)
    _check(idp, encoded, now=datetime.now(UTC) + timedelta(minutes=5, seconds=30))  # within 60 s of expiry
    with pytest.raises(InvalidResponse, match="expired"):
        _check(idp, encoded, now=datetime.now(UTC) + timedelta(minutes=6, seconds=30))
    with pytest.raises(InvalidResponse, match="not valid yet"):
        _check(idp, encoded, now=datetime.now(UTC) - timedelta(minutes=3))


def test_another_certificate_and_wrong_recipient_refused(idp):
    _, other = idp_certificate("someone-else")
    with pytest.raises(InvalidResponse, match="signature refused"):
        _check(idp, _response(idp), cert=other)
    root = sso_saml.decode_response(_response(idp))
    with pytest.raises(InvalidResponse, match="Recipient"):
        sso_saml.verify_response(root, idp_certificate_pem=idp.cert_pem, idp_entity_id=idp.entity_id,
                                 sp_entity_id=SP, acs_url=ACS + "x", request_id="_req1", now=datetime.now(UTC))
    with pytest.raises(InvalidResponse, match="issuer"):
        sso_saml.verify_response(root, idp_certificate_pem=idp.cert_pem, idp_entity_id="https://other-idp",
                                 sp_entity_id=SP, acs_url=ACS, request_id="_req1", now=datetime.now(UTC))


def test_signature_wrapping_refused(idp):
    """A signed assertion moved aside and an unsigned, forged one put where it is read."""
    root = etree.fromstring(base64.b64decode(_response(idp)))
    signed = root.find("saml:Assertion", sso_saml.NS)
    forged = etree.fromstring(etree.tostring(signed))
    forged.remove(forged.find("ds:Signature", sso_saml.NS))
    forged.find(".//saml:AttributeValue", sso_saml.NS).text = "admins!!"
    root.append(forged)  # two assertions: refused outright
    with pytest.raises(InvalidResponse, match="exactly one"):
        _check(idp, base64.b64encode(etree.tostring(root)).decode())
    # The forged one in place (its own ID) carrying the moved signature, the signed original hidden
    # inside it: the signature still checks out, but what is read is the signed original only.
    root.remove(signed)
    forged.set("ID", "_forged")
    forged.append(signed.find("ds:Signature", sso_saml.NS))
    forged.append(signed)
    identity = _check(idp, base64.b64encode(etree.tostring(root)).decode())
    assert identity.attributes["groups"] == ["sec-team"] and identity.assertion_id != "_forged"


def test_comment_in_name_id_reads_as_signed(idp):
    idp_user = dict(idp.user)
    try:
        idp.user = {**idp_user, "name_id": "sam@corp.test"}
        xml = base64.b64decode(_response(idp)).replace(b"sam@corp.test", b"sam@corp<!---->.test")
    finally:
        idp.user = idp_user
    # exc-c14n drops comments, so the signature still holds; the value read is the whole text.
    assert _check(idp, base64.b64encode(xml).decode()).name_id == "sam@corp.test"


BOMB = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>'
        b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&d;</samlp:Response>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
       b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&e;</samlp:Response>')


@pytest.mark.parametrize("raw,reason", [
    (b"<samlp:Response", "well-formed"),
    (BOMB, "DTD|well-formed"),
    (XXE, "DTD"),
    (b"<html/>", "not a SAML 2.0 Response"),
])
def test_malformed_and_hostile_xml_refused(raw, reason):
    with pytest.raises(MalformedResponse, match=reason):
        sso_saml.decode_response(base64.b64encode(raw).decode())
    with pytest.raises(MalformedResponse, match="base64"):
        sso_saml.decode_response("not base64 at all!")
    with pytest.raises(MalformedResponse, match="larger"):
        sso_saml.decode_response("A" * (sso_saml.MAX_RESPONSE_CHARS + 1))


def test_authn_request_carries_id_acs_and_issuer():
    import urllib.parse
    import zlib

    req = sso_saml.authn_request(idp_sso_url="https://idp.test/sso?x=1", sp_entity_id=SP, acs_url=ACS,
                                 now=datetime.now(UTC))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(req.url).query))
    assert query["x"] == "1" and query["RelayState"] == req.relay_state
    xml = etree.fromstring(zlib.decompress(base64.b64decode(query["SAMLRequest"]), -15))
    assert xml.get("ID") == req.request_id and xml.get("AssertionConsumerServiceURL") == ACS
    assert xml.find(f"{{{sso_saml.ASSERTION}}}Issuer").text == SP
