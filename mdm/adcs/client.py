"""The certsrv client: submit a request to ``certfnsh.asp``, fetch the certificate from
``certnew.cer`` and its chain from ``certnew.p7b``, check the login (``GET /certsrv/``).

One ``httpx.AsyncClient`` per source, reused (keep-alive: NTLM authenticates a connection).
Every failure to get an outcome becomes ``SourceUnavailable`` with the status, the page's title
or the network error; never the page, never a credential. The CA's outcomes become
``CertificatePending`` / ``CertificateDenied``.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography import x509

from mdm.adcs import pages
from mdm.adcs.auth import AuthFailed
from mdm.pki.source_errors import CertificateDenied, CertificatePending, SourceUnavailable

log = logging.getLogger(__name__)

NAME = "adcs"
Issued = tuple[x509.Certificate, list[x509.Certificate]]  # the certificate, its chain (issuer first)
CERT_TYPES = ("application/pkix-cert", "application/x-x509-ca-cert", "application/x-x509-user-cert")


class CertsrvClient:
    def __init__(self, base_url: str, *, auth: httpx.Auth | None, timeout: float, ca_bundle: str = "",
                 auth_label: str = "", transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.auth_label = auth_label
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self._http = httpx.AsyncClient(
            auth=auth, timeout=httpx.Timeout(timeout), verify=verify, follow_redirects=False,
            headers={"User-Agent": "Mozilla/5.0 (compatible; mdm certsrv client)"}, transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                    data: Mapping[str, str] | None = None) -> httpx.Response:
        url = f"{self.base_url}/{path}"
        try:
            response = await self._http.request(method, url, params=params, data=data)
        except httpx.TimeoutException:
            raise self._down(f"no answer from {url} within {self.timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise self._down(f"cannot connect to {url}: {_first_line(exc)}") from None
        except AuthFailed as exc:
            raise self._down(f"authentication to {url} failed: {exc}") from None
        except httpx.HTTPError as exc:
            raise self._down(f"{method} {url}: {type(exc).__name__}: {_first_line(exc)}") from None
        if response.status_code == 401:
            raise self._down(f"HTTP 401 from {url}: the server refused the {self.auth_label} authentication")
        if response.status_code >= 300:
            page = pages.title(response.text) if _is_html(response) else ""
            raise self._down(f"HTTP {response.status_code} from {url}" + (f" ({page})" if page else ""))
        return response

    @staticmethod
    def _down(message: str) -> SourceUnavailable:
        log.warning("adcs: %s", message)
        return SourceUnavailable(NAME, message)

    async def check(self) -> str:
        """GET the certsrv home page with the configured login; its title, or SourceUnavailable."""
        response = await self._call("GET", "")
        return pages.title(response.text) or f"HTTP {response.status_code}"

    async def submit(self, request_der: bytes, template: str) -> Issued:
        """Submit a PKCS#10 or a CMS (enroll on behalf of) under ``template``; the certificate and
        the chain above it, or CertificatePending/CertificateDenied/SourceUnavailable."""
        form = {
            "Mode": "newreq",
            "CertRequest": _b64_lines(request_der),
            "CertAttrib": f"CertificateTemplate:{template}\r\nUserAgent:mdm\r\n",
            "TargetStoreFlags": "0",
            "SaveCert": "yes",
        }
        response = await self._call("POST", "certfnsh.asp", data=form)
        found = pages.outcome(response.text)
        if isinstance(found, pages.Issued):
            log.info("adcs: request %s issued (template %s)", found.request_id, template)
            return await self.fetch(found.request_id)
        raise self._outcome_error(found, "certfnsh.asp", template=template)

    async def fetch(self, request_id: str) -> Issued:
        """The certificate of request ``request_id`` and its chain, or the error its page says."""
        if not request_id.isdigit():
            raise SourceUnavailable(NAME, f"request id {request_id!r} is not a certsrv request number")
        params = {"ReqID": request_id, "Enc": "b64"}
        response = await self._call("GET", "certnew.cer", params=params)
        if not _content_type(response).startswith(CERT_TYPES):
            found = pages.outcome(response.text, request_id)
            if isinstance(found, pages.Issued):  # a page that links the certificate: not one
                found = pages.Unrecognised(pages.title(response.text) or "a page instead of the certificate")
            raise self._outcome_error(found, "certnew.cer")
        try:
            cert = pages.certificate(response.content)
        except ValueError as exc:
            raise self._down(f"certnew.cer of request {request_id}: {exc}") from None
        chain_response = await self._call("GET", "certnew.p7b", params=params)
        try:
            bundle = pages.chain(chain_response.content)
        except ValueError as exc:
            raise self._down(f"certnew.p7b of request {request_id}: {exc}") from None
        return cert, pages.issuer_first(cert, bundle)

    def _outcome_error(self, found: pages.Outcome, page: str, **context: Any) -> Exception:
        where = f" ({', '.join(f'{k} {v}' for k, v in context.items())})" if context else ""
        if isinstance(found, pages.Pending):
            log.info("adcs: request %s is pending%s", found.request_id, where)
            return CertificatePending(NAME, found.request_id, found.message)
        if isinstance(found, pages.Denied):
            log.warning("adcs: request %s denied%s: %s", found.request_id or "?", where, found.message)
            return CertificateDenied(NAME, found.message, found.request_id)
        title = found.title if isinstance(found, pages.Unrecognised) else ""
        return self._down(f"{page} answered a page that is no certsrv outcome ({title}){where}")


def _content_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";")[0].strip().lower()


def _is_html(response: httpx.Response) -> bool:
    return "html" in _content_type(response) or response.text.lstrip()[:1] == "<"


def _b64_lines(der: bytes) -> str:
    """Base64 in 64-character lines, as certsrv's own page posts it."""
    text = base64.b64encode(der).decode()
    return "\r\n".join(text[i:i + 64] for i in range(0, len(text), 64))


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
