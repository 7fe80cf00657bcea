"""Reading certsrv's answers: the HTML pages of AD CS web enrollment (``certfnsh.asp`` after a
submission, ``certnew.cer`` when the request is not issued) and the certificate downloads.

certsrv has no machine-readable API: the outcome is in the page text. The markers (English and
German) are the ones Windows Server writes: an issued request links ``certnew.cer?ReqID=N&Enc=``;
a pending one says "Certificate Pending" and "Your Request Id is N."; a denied one gives
``The disposition message is "…"``; ``certnew.cer`` for a request it cannot hand out answers an
error page with "Disposition message:". Anything else (an IIS error page, a login form, another
language, garbage) is ``Unrecognised`` with the page's title, never the page itself.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

MAX_TEXT = 200  # a title or a CA message longer than this is cut (it lands in logs and events)

_ISSUED = re.compile(r"certnew\.cer\?ReqID=(\d+)&(?:amp;)?Enc=", re.IGNORECASE)
_REQUEST_ID = re.compile(
    r"(?:Your Request Id is|Ihre Anforderungs-ID ist|Ihre Anforderungskennung ist)\s*(\d+)", re.IGNORECASE)
_DISPOSITION = re.compile(
    r"(?:The disposition message is|Die Dispositionsmeldung ist)\s*[\"“„]([^\"”“]*)[\"”“]", re.IGNORECASE)
_DISPOSITION_LINE = re.compile(r"(?:Disposition message|Dispositionsmeldung):\s*(?:<[^>]*>\s*)*([^<\r\n]+)",
                               re.IGNORECASE)
_PENDING = re.compile(
    r"Certificate Pending|Taken Under Submission|wait for an administrator to issue"
    r"|Zertifikat ausstehend|Ausstehende Zertifikatanforderung|Ausstehendes Zertifikat"
    r"|Wird von der Zertifizierungsstelle bearbeitet|auf einen Administrator warten",
    re.IGNORECASE)
_ERROR = re.compile(r"ID=locInfoErr[^>]*>(.*?)(?:<P|</Body|$)", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_PEM_BODY = re.compile(rb"-----BEGIN [A-Z0-9 ]+-----(.*?)-----END [A-Z0-9 ]+-----", re.DOTALL)


@dataclass(frozen=True)
class Issued:
    request_id: str


@dataclass(frozen=True)
class Pending:
    request_id: str
    message: str = ""


@dataclass(frozen=True)
class Denied:
    message: str
    request_id: str | None = None


@dataclass(frozen=True)
class Unrecognised:
    title: str


Outcome = Issued | Pending | Denied | Unrecognised


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """Entity-decoded, tag-free, one line, at most ``limit`` characters."""
    flat = " ".join(html.unescape(_TAGS.sub(" ", text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def title(page: str) -> str:
    found = _TITLE.search(page)
    return clean(found.group(1)) if found else ""


def outcome(page: str, request_id: str | None = None) -> Outcome:
    """What a certsrv page says about a request (``request_id``: the one asked about, for the
    pages of ``certnew.cer`` that do not repeat it)."""
    issued = _ISSUED.search(page)
    if issued:
        return Issued(issued.group(1))
    found_id = _REQUEST_ID.search(page)
    req_id = found_id.group(1) if found_id else request_id
    disposition = _DISPOSITION.search(page) or _DISPOSITION_LINE.search(page)
    message = clean(disposition.group(1)) if disposition else ""
    if req_id is not None and (_PENDING.search(page) or (found_id and not disposition)):
        return Pending(req_id, message)
    if disposition:
        return Denied(message or "no message", req_id)
    error = _ERROR.search(page)
    what = title(page) or "a page without a title"
    return Unrecognised(f"{what}: {clean(error.group(1))}" if error else what)


def _der(body: bytes) -> bytes:
    """DER from a download: PEM (any label), bare base64, or DER as is."""
    armored = _PEM_BODY.search(body)
    if armored:
        return base64.b64decode(b"".join(armored.group(1).split()), validate=True)
    stripped = body.strip()
    if stripped[:1] == b"\x30":
        return stripped
    return base64.b64decode(b"".join(stripped.split()), validate=True)


def certificate(body: bytes) -> x509.Certificate:
    """The certificate of ``certnew.cer`` (Enc=b64: PEM or base64 DER). ValueError if not one."""
    try:
        return x509.load_der_x509_certificate(_der(body))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a certificate ({exc})") from None


def chain(body: bytes) -> list[x509.Certificate]:
    """The certificates of ``certnew.p7b`` (PKCS#7 certs-only; certsrv's base64 form is armored
    as "CERTIFICATE" or "PKCS7"). ValueError if not one."""
    try:
        return list(pkcs7.load_der_pkcs7_certificates(_der(body)))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a PKCS#7 certificate bundle ({exc})") from None


def issuer_first(leaf: x509.Certificate, certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """The chain above ``leaf``: its issuer, that one's issuer, ... then whatever is left."""
    rest = [c for c in certs if c != leaf]
    ordered: list[x509.Certificate] = []
    current = leaf
    while rest:
        parent = next((c for c in rest if c.subject == current.issuer), None)
        if parent is None:
            break
        ordered.append(parent)
        rest.remove(parent)
        if parent.subject == parent.issuer:
            break
        current = parent
    return ordered + rest
