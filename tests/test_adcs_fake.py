"""The AD CS web-enrollment contract fake, spoken to with raw httpx and a gssapi client against the
real KDC of the tests: issued / pending → approve → fetch / denied, the Enrollment Agent check,
unknown templates, authentication, German pages and the failure modes."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdm.devfakes import adcs_pages, adcs_policy, adcs_request
from mdm.devfakes.adcs import AdcsFake
from mdm.devfakes.adcs_ca import TestPki
from tests.adcs_fake_support import (
    BASIC,
    NTLM_USERS,
    NegotiateAuth,
    NtlmAuth,
    adcs_fake_fixture,  # noqa: F401  (fixture)
    adcs_user_fixture,  # noqa: F401  (fixture)
    csr,
    kinit,
    on_behalf_of,
    pem,
    submit,
    tls,
)
from tests.engines import ENGINE_FREE
from tests.kdc import Kdc, kdc_fixture, krb5_ccache_fixture  # noqa: F401  (fixtures)

pytestmark = ENGINE_FREE

_REQ_ID = re.compile(r"certnew\.cer\?ReqID=(\d+)&amp;Enc=b64")
_PENDING_ID = re.compile(r"Your Request Id is (\d+)\.")
_DISPOSITION = re.compile(r'The disposition message is "([^"]*)"')


@pytest.fixture(name="fake")
def fake_fixture(adcs_fake: AdcsFake) -> Iterator[AdcsFake]:
    yield adcs_fake
    adcs_fake.language, adcs_fake.slow, adcs_fake.error_page = "en", 0.0, False
    adcs_fake.start()


@pytest.fixture(name="basic")
def basic_fixture(fake: AdcsFake) -> Iterator[httpx.Client]:
    with httpx.Client(verify=tls(fake), auth=BASIC, timeout=10) as client:
        yield client


def _issued_id(response: httpx.Response) -> int:
    assert response.status_code == 200
    assert "Certificate Issued" in response.text, response.text
    match = _REQ_ID.search(response.text)
    assert match and f"certnew.cer?ReqID={match.group(1)}&amp;Enc=bin" in response.text
    return int(match.group(1))


def _disposition(response: httpx.Response) -> str:
    assert response.status_code == 200 and "Certificate Request Denied" in response.text
    match = _DISPOSITION.search(response.text)
    assert match, response.text
    return match.group(1)


def test_issued_over_negotiate_with_mutual_auth_cer_and_chain(
        fake: AdcsFake, kdc: Kdc, adcs_user: tuple[str, str], krb5_ccache: Path) -> None:
    kinit(kdc, adcs_user, krb5_ccache)
    auth = NegotiateAuth()
    with httpx.Client(verify=tls(fake), auth=auth, timeout=10) as client:
        welcome = client.get(f"{fake.url}/")
        assert welcome.status_code == 200 and "Welcome" in welcome.text
        assert auth.mutual  # the AP-REP came back and verified
        request, _ = csr("iphone-42")
        req_id = _issued_id(submit(client, fake, pem(request), "MdmDevice"))
        b64 = client.get(f"{fake.url}/certnew.cer", params={"ReqID": req_id, "Enc": "b64"})
        binary = client.get(f"{fake.url}/certnew.cer", params={"ReqID": req_id, "Enc": "bin"})
        chain = client.get(f"{fake.url}/certnew.p7b", params={"ReqID": req_id, "Enc": "b64"})
    assert b64.headers["Content-Type"] == "application/pkix-cert"
    cert = x509.load_pem_x509_certificate(b64.content)
    assert x509.load_der_x509_certificate(binary.content) == cert
    assert cert.public_key() == request.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "iphone-42"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert chain.headers["Content-Type"] == "application/x-pkcs7-certificates"
    certs = pkcs7.load_pem_pkcs7_certificates(chain.content)
    assert set(certs) == {cert, fake.pki.issuing.cert, fake.pki.root.cert}  # a SET OF: no order
    cert.verify_directly_issued_by(fake.pki.issuing.cert)
    row = fake.request(req_id)
    assert (row.caller, row.template, row.status) == (adcs_user[0], "MdmDevice", "issued")


def test_requester_template_takes_the_callers_name_and_upn(fake: AdcsFake,
                                                           basic: httpx.Client) -> None:
    request, _ = csr("ignored")
    req_id = _issued_id(submit(basic, fake, pem(request), "User"))
    cert = fake.request(req_id).certificate
    assert cert is not None
    assert cert.subject.rfc4514_string() == "CN=svc"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.type_id.dotted_string for n in san.get_values_for_type(x509.OtherName)] == [
        "1.3.6.1.4.1.311.20.2.3"]


def test_pending_then_approved_then_fetched(fake: AdcsFake, basic: httpx.Client) -> None:
    request, _ = csr()
    page = submit(basic, fake, pem(request), "PendingUser")
    assert "Certificate Pending" in page.text
    match = _PENDING_ID.search(page.text)
    assert match
    req_id = int(match.group(1))
    polled = basic.get(f"{fake.url}/certnew.cer", params={"ReqID": req_id, "Enc": "b64"})
    assert polled.headers["Content-Type"].startswith("text/html")
    assert f"Your Request Id is {req_id}." in polled.text
    fake.approve(req_id)
    fetched = basic.get(f"{fake.url}/certnew.cer", params={"ReqID": req_id, "Enc": "b64"})
    assert fetched.headers["Content-Type"] == "application/pkix-cert"
    assert x509.load_pem_x509_certificate(fetched.content).public_key() == request.public_key()


def test_pending_then_denied_by_the_administrator(fake: AdcsFake, basic: httpx.Client) -> None:
    page = submit(basic, fake, pem(csr()[0]), "PendingUser")
    match = _PENDING_ID.search(page.text)
    assert match
    fake.deny(int(match.group(1)), "Denied by the CA administrator.")
    polled = basic.get(f"{fake.url}/certnew.cer", params={"ReqID": match.group(1), "Enc": "b64"})
    assert _disposition(polled) == "Denied by the CA administrator."
    with pytest.raises(ValueError):
        fake.approve(int(match.group(1)))


@pytest.mark.parametrize(("template", "message"), [
    ("DeniedUser", adcs_policy.NOT_PERMITTED),
    ("NoSuchTemplate", adcs_pages.UNSUPPORTED_TEMPLATE),
    ("", adcs_pages.NO_TEMPLATE),
])
def test_denied_templates(fake: AdcsFake, basic: httpx.Client, template: str,
                          message: str) -> None:
    assert _disposition(submit(basic, fake, pem(csr()[0]), template)) == message


def test_unreadable_and_forged_requests_are_denied(fake: AdcsFake, basic: httpx.Client) -> None:
    assert _disposition(submit(basic, fake, "not base64 !!", "MdmDevice")) == adcs_request.BAD_ASN1
    der = bytearray(csr()[0].public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature: still DER, no longer valid
    forged = x509.load_der_x509_csr(bytes(der))
    assert _disposition(submit(basic, fake, pem(forged), "MdmDevice")) == \
        adcs_request.BAD_SIGNATURE


def test_enroll_on_behalf_of_with_a_trusted_agent(fake: AdcsFake, basic: httpx.Client) -> None:
    agent = fake.pki.enrollment_agent()
    request, _ = csr("whatever-the-device-says")
    req_id = _issued_id(submit(basic, fake, on_behalf_of(request, agent, "CORP\\alice"),
                               "MdmUser"))
    row = fake.request(req_id)
    assert row.on_behalf_of == "CORP\\alice" and row.caller == "svc"
    assert row.certificate is not None
    assert row.certificate.subject.rfc4514_string() == "CN=alice"
    assert row.certificate.public_key() == request.public_key()


@pytest.fixture(scope="module", name="foreign_pki")
def foreign_pki_fixture() -> TestPki:
    return TestPki(ca_name="OTHER-CA")


@pytest.mark.parametrize("case", ["untrusted", "no_eku", "expired", "digest", "no_requester",
                                  "other_domain", "plain_pkcs10"])
def test_enroll_on_behalf_of_refusals(fake: AdcsFake, basic: httpx.Client,
                                      foreign_pki: TestPki, case: str) -> None:
    request, _ = csr()
    good = fake.pki.enrollment_agent()
    expected, body = {
        "untrusted": (adcs_policy.UNTRUSTED_AGENT,
                      lambda: on_behalf_of(request, foreign_pki.enrollment_agent())),
        "no_eku": (adcs_policy.AGENT_WRONG_USAGE,
                   lambda: on_behalf_of(request, fake.pki.enrollment_agent(with_eku=False))),
        "expired": (adcs_policy.AGENT_EXPIRED,
                    lambda: on_behalf_of(request, fake.pki.enrollment_agent(expired=True))),
        "digest": (adcs_request.BAD_CMS_SIGNATURE,
                   lambda: on_behalf_of(request, good, digest_of=b"another request")),
        "no_requester": (adcs_policy.NO_REQUESTER,
                         lambda: on_behalf_of(request, good, requester=None)),
        "other_domain": (adcs_policy.NO_SUCH_USER,
                         lambda: on_behalf_of(request, good, "EVIL\\alice")),
        "plain_pkcs10": (adcs_policy.AGENT_REQUIRED, lambda: pem(request)),
    }[case]
    assert _disposition(submit(basic, fake, body(), "MdmUser")) == expected
    assert fake.requests[-1].status == "denied"


def test_authentication_refused(fake: AdcsFake, kdc: Kdc) -> None:
    with httpx.Client(verify=tls(fake), timeout=10) as client:
        bare = client.get(f"{fake.url}/")
        assert bare.status_code == 401
        assert bare.headers.get_list("WWW-Authenticate") == [
            "Negotiate", "NTLM", 'Basic realm="localhost"']
        bogus = client.get(f"{fake.url}/", headers={"Authorization": "Negotiate YWJjZGVm"})
        assert bogus.status_code == 401
        truncated = client.get(f"{fake.url}/", headers={"Authorization": "Negotiate !!"})
        assert truncated.status_code == 401
        wrong = client.get(f"{fake.url}/", auth=(BASIC[0], "wrong"))
        assert wrong.status_code == 401
        posted = client.post(f"{fake.url}/certfnsh.asp", data={"Mode": "newreq"})
        assert posted.status_code == 401
    assert all(r.caller != "" for r in fake.requests)


def test_ntlm(fake: AdcsFake) -> None:
    (user, password), = NTLM_USERS.items()
    with httpx.Client(verify=tls(fake), auth=NtlmAuth(f"CORP\\{user}", password),
                      timeout=10) as client:
        page = submit(client, fake, pem(csr()[0]), "MdmDevice")
        req_id = _issued_id(page)
    assert fake.request(req_id).caller.lower() == f"corp\\{user}"
    with httpx.Client(verify=tls(fake), auth=NtlmAuth(f"CORP\\{user}", "wrong"), timeout=10) as c:
        assert c.get(f"{fake.url}/").status_code == 401


def test_german_pages(fake: AdcsFake, basic: httpx.Client) -> None:
    fake.language = "de"
    pending = submit(basic, fake, pem(csr()[0]), "PendingUser")
    assert "Ausstehendes Zertifikat" in pending.text
    match = re.search(r"Ihre Anforderungs-ID ist (\d+)\.", pending.text)
    assert match and int(match.group(1)) == fake.requests[-1].id
    denied = submit(basic, fake, pem(csr()[0]), "DeniedUser")
    assert "Zertifikatanforderung wurde verweigert" in denied.text
    assert f'Die Dispositionsmeldung ist "{adcs_policy.NOT_PERMITTED}".' in denied.text
    issued = submit(basic, fake, pem(csr()[0]), "MdmDevice")
    assert "Zertifikat wurde ausgestellt" in issued.text and _REQ_ID.search(issued.text)


def test_failure_modes(fake: AdcsFake, basic: httpx.Client) -> None:
    unknown = basic.get(f"{fake.url}/certnew.cer", params={"ReqID": 999999, "Enc": "b64"})
    assert unknown.status_code == 200 and adcs_pages.UNKNOWN_REQUEST in unknown.text
    fake.error_page = True
    broken = submit(basic, fake, pem(csr()[0]), "MdmDevice")
    assert broken.status_code == 500 and "500 - Internal server error." in broken.text
    fake.error_page = False
    fake.slow = 0.3
    started = time.monotonic()
    assert basic.get(f"{fake.url}/").status_code == 200
    assert time.monotonic() - started >= 0.3
    fake.slow = 0.0
    port = fake.port
    fake.stop()
    with httpx.Client(verify=tls(fake), auth=BASIC, timeout=5) as fresh, \
            pytest.raises(httpx.ConnectError):
        fresh.get(f"{fake.url}/")
    fake.start()
    assert fake.port == port
    with httpx.Client(verify=tls(fake), auth=BASIC, timeout=5) as fresh:
        assert fresh.get(f"{fake.url}/").status_code == 200


def test_language_must_be_known(fake: AdcsFake) -> None:
    with pytest.raises(ValueError):
        fake.language = "fr"  # type: ignore[assignment]


def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mdm.devfakes.adcs_cli", "--basic", "u:p", "--out", str(tmp_path),
         "--agent-p12", str(tmp_path / "ea.p12"), "--agent-password", "pw"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[1]
        root = Path(process.stdout.readline().split()[1])
        ctx = ssl.create_default_context(cafile=str(root))
        assert httpx.get(f"{url}/", auth=("u", "p"), verify=ctx).status_code == 200
        _, ea, _ = pkcs12.load_key_and_certificates((tmp_path / "ea.p12").read_bytes(), b"pw")
        assert ea is not None
        assert x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.1") in \
            ea.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    finally:
        process.terminate()
        assert process.wait(10) == 0
        if process.stdout is not None:
            process.stdout.close()


def test_requester_must_be_an_account_of_the_directory(fake: AdcsFake, basic: httpx.Client) -> None:
    agent = fake.pki.enrollment_agent()
    fake.policy.directory = {"alice"}
    try:
        unknown = submit(basic, fake, on_behalf_of(csr()[0], agent, "CORP\\alice device 1"), "MdmUser")
        assert _disposition(unknown) == adcs_policy.NO_SUCH_USER
        _issued_id(submit(basic, fake, on_behalf_of(csr()[0], agent, "corp\\Alice"), "MdmUser"))
    finally:
        fake.policy.directory = None
