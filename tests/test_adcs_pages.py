"""Reading certsrv's answers (mdm.adcs.pages): the issued, pending, denied and error pages in
English and German as the contract fake renders Windows' pages, pages of other shapes (the
``certsrv`` library's markers, IIS errors, garbage), and the certificate and PKCS#7 downloads."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from mdm.adcs import pages
from mdm.devfakes import adcs_pages as fake_pages
from mdm.devfakes.adcs_ca import TestPki
from tests.engines import ENGINE_FREE

pytestmark = ENGINE_FREE


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki()


@pytest.mark.parametrize("language", fake_pages.LANGUAGES)
def test_the_issued_page_gives_the_request_id(language: str) -> None:
    assert pages.outcome(fake_pages.issued(language, 42)) == pages.Issued("42")


@pytest.mark.parametrize("language", fake_pages.LANGUAGES)
def test_the_pending_page_gives_the_request_id(language: str) -> None:
    found = pages.outcome(fake_pages.pending(language, 7))
    assert isinstance(found, pages.Pending) and found.request_id == "7"


@pytest.mark.parametrize("language", fake_pages.LANGUAGES)
def test_the_denied_page_gives_the_cas_message(language: str) -> None:
    message = 'Denied by Policy Module 0x80094012, "the template" & <more>'.replace('"', "'")
    found = pages.outcome(fake_pages.denied(language, message, 9))
    assert found == pages.Denied(message, "9")


def test_a_denied_page_without_request_id() -> None:
    assert pages.outcome(fake_pages.denied("en", "No template.", None)) == pages.Denied("No template.", None)


@pytest.mark.parametrize("language", fake_pages.LANGUAGES)
def test_an_error_page_is_unrecognised_with_its_title_and_error(language: str) -> None:
    found = pages.outcome(fake_pages.error(language, fake_pages.UNKNOWN_REQUEST), "5")
    assert isinstance(found, pages.Unrecognised)
    assert "Microsoft Active Directory" in found.title and "0x80092004" in found.title


def test_certnew_error_page_of_a_pending_request_polled_by_id() -> None:
    page = ("<html><title>Microsoft Active Directory Certificate Services</title><body>"
            "Disposition message:\t\tTaken Under Submission\r\n</body></html>")
    assert pages.outcome(page, "12") == pages.Pending("12", "Taken Under Submission")


def test_certnew_error_page_of_a_denied_request_polled_by_id() -> None:
    page = "<html><body>Disposition message:<td>Denied by Policy Module</td></body></html>"
    assert pages.outcome(page, "12") == pages.Denied("Denied by Policy Module", "12")


@pytest.mark.parametrize("page", [
    fake_pages.IIS_500,
    fake_pages.IIS_401,
    "<html><head><title>Anmeldung</title></head><body><form>login</form></body></html>",
    "\x00\x01garbage without markup",
    "",
    fake_pages.welcome("en", "CN=CA"),
])
def test_other_pages_are_unrecognised(page: str) -> None:
    assert isinstance(pages.outcome(page), pages.Unrecognised)


def test_titles_are_cleaned_and_cut() -> None:
    page = f"<title> A &amp; B\r\n{'x' * 500}</title>"
    text = pages.title(page)
    assert text.startswith("A & B x") and len(text) == pages.MAX_TEXT and "\n" not in text


def test_certificate_downloads_pem_base64_and_der(pki: TestPki) -> None:
    cert = pki.issuing.cert
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    bare = b"\r\n".join(pem.splitlines()[1:-1])
    for body in (pem, der, bare):
        assert pages.certificate(body) == cert
    with pytest.raises(ValueError, match="not a certificate"):
        pages.certificate(b"<html>nope</html>")


def test_chain_downloads_in_either_armor_and_ordered_issuer_first(pki: TestPki) -> None:
    leaf = pki.enrollment_agent().cert
    bundle = pkcs7.serialize_certificates([pki.root.cert, leaf, pki.issuing.cert], serialization.Encoding.PEM)
    as_certsrv = bundle.replace(b"PKCS7", b"CERTIFICATE")  # certsrv's b64 p7b says CERTIFICATE
    for body in (bundle, as_certsrv):
        certs = pages.chain(body)
        assert pages.issuer_first(leaf, certs) == [pki.issuing.cert, pki.root.cert]
    with pytest.raises(ValueError, match="PKCS#7"):
        pages.chain(b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n")
