"""A contract fake of Microsoft AD CS web enrollment (``/certsrv``) over real TLS on a real socket.

``AdcsFake(keytab=kdc.service_keytab)`` serves, in its own thread and event loop:

- ``GET /certsrv/`` the welcome page;
- ``POST /certsrv/certfnsh.asp`` (``Mode=newreq``, ``CertRequest`` = base64/PEM PKCS#10 or a CMS
  SignedData wrapping one, ``CertAttrib`` lines ``CertificateTemplate:NAME``): the issued, pending
  or denied page (``adcs_pages``), by the template's rule and the Enrollment Agent check;
- ``GET /certsrv/certnew.cer?ReqID=N&Enc=b64|bin`` the certificate (``application/pkix-cert``;
  b64 = PEM) when issued, the pending/denied page otherwise, an error page for an unknown id;
- ``GET /certsrv/certnew.p7b?ReqID=N&Enc=b64|bin`` PKCS#7 certs-only: leaf, issuing CA, root.

Enroll on behalf of: the CMS signature and messageDigest verify, the signer certificate is issued
by a CA in ``agent_issuers`` (the fake's issuing CA by default), carries the Certificate Request
Agent EKU and is valid now; the signed attribute ``requestername`` ("DOMAIN\\user", the domain
the fake's ``netbios``; an account of ``directory`` when one is given) names the subject user.
A template with ``requires_agent`` refuses plain
PKCS#10s.

Test controls (thread-safe): ``url``, ``ca_file`` (the root, to trust the TLS server), ``pki``
(``TestPki``: ``enrollment_agent(...)`` makes EA certificates), ``templates``, ``requests``
(the log), ``approve(id)``, ``deny(id, message)``, ``stop()`` / ``start()`` (down: port closed,
reopened on the same port), ``slow`` (seconds of delay per request), ``error_page`` (IIS's HTTP
500 page for every request), ``language`` ("en" / "de").
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from mdm.devfakes import adcs_pages as pages
from mdm.devfakes.adcs_auth import Authenticator, Caller, write_ntlm_users
from mdm.devfakes.adcs_ca import KeyPair, TestPki
from mdm.devfakes.adcs_policy import Policy, Request, Template, default_templates
from mdm.devfakes.loop_thread import LoopThread

log = logging.getLogger(__name__)

__all__ = ["AdcsFake", "KeyPair", "Request", "Template", "TestPki", "default_templates"]

HTML = "text/html"


@dataclass
class _Faults:
    slow: float = 0.0
    error_page: bool = False
    language: Literal["en", "de"] = "en"
    lock: threading.Lock = field(default_factory=threading.Lock)


class AdcsFake:
    def __init__(self, *, keytab: Path | None = None,
                 auth: tuple[str, ...] = ("negotiate",),
                 basic_users: Mapping[str, str] | None = None,
                 ntlm_users: Mapping[str, str] | None = None,
                 templates: Mapping[str, Template] | None = None,
                 pki: TestPki | None = None, netbios: str = "CORP",
                 agent_issuers: list[x509.Certificate] | None = None,
                 directory: set[str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, url_host: str = "localhost") -> None:
        self.pki = pki or TestPki()
        self.host, self.port, self.url_host = host, port, url_host
        self._tmp = tempfile.TemporaryDirectory(prefix="adcs-fake-")
        tmp = Path(self._tmp.name)
        tls = self.pki.server_tls(url_host)
        self.ca_file = tmp / "root.pem"
        self.ca_file.write_bytes(self.pki.root.cert_pem)
        (tmp / "tls.pem").write_bytes(tls.cert_pem)
        (tmp / "tls.key").write_bytes(tls.key_pem)
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(str(tmp / "tls.pem"), str(tmp / "tls.key"))
        ntlm_file = (write_ntlm_users(tmp / "ntlm.users", ntlm_users, netbios)
                     if ntlm_users else None)
        self._auth = Authenticator(auth, keytab=keytab, basic_users=basic_users or {},
                                   ntlm_user_file=ntlm_file)
        self.policy = Policy(self.pki, dict(templates or default_templates()), netbios=netbios,
                             agent_issuers=agent_issuers or [self.pki.issuing.cert],
                             directory=directory)
        self._faults = _Faults()
        self._thread = LoopThread("adcs-fake")
        self._runner: web.AppRunner | None = None
        self.hits = 0

    # ---- configuration and controls (thread-safe) ---------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.url_host}:{self.port}/certsrv"

    @property
    def templates(self) -> dict[str, Template]:
        return self.policy.templates

    @property
    def requests(self) -> list[Request]:
        return self.policy.log()

    def request(self, req_id: int) -> Request:
        return self.policy.get(req_id)

    def approve(self, req_id: int) -> Request:
        """The CA administrator issues a pending request."""
        return self.policy.approve(req_id)

    def deny(self, req_id: int, message: str = "Denied by the CA administrator.") -> Request:
        return self.policy.deny(req_id, message)

    @property
    def slow(self) -> float:
        return self._faults.slow

    @slow.setter
    def slow(self, seconds: float) -> None:
        with self._faults.lock:
            self._faults.slow = seconds

    @property
    def error_page(self) -> bool:
        return self._faults.error_page

    @error_page.setter
    def error_page(self, on: bool) -> None:
        with self._faults.lock:
            self._faults.error_page = on

    @property
    def language(self) -> str:
        return self._faults.language

    @language.setter
    def language(self, value: Literal["en", "de"]) -> None:
        if value not in pages.LANGUAGES:
            raise ValueError(f"language {value!r}: one of {pages.LANGUAGES}")
        with self._faults.lock:
            self._faults.language = value

    def add_template(self, template: Template) -> None:
        self.policy.templates[template.name] = template

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (again on the same port after ``stop``)."""
        self._call(self._start())

    def stop(self) -> None:
        """The CA web server is down: the port is closed (connections refused)."""
        if self._thread.running:
            self._call(self._stop())

    def close(self) -> None:
        if self._thread.running:
            self._call(self._stop())
            self._thread.close()
        self._tmp.cleanup()

    def __enter__(self) -> AdcsFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any) -> Any:
        return self._thread.call(coro)

    async def _start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl, reuse_address=True)
        await site.start()
        if self.port == 0:
            sockets: list[Any] = list(getattr(site._server, "sockets", None) or [])
            self.port = int(sockets[0].getsockname()[1])
        self._runner = runner

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ---- HTTP -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        with self._faults.lock:
            delay, broken, language = (self._faults.slow, self._faults.error_page,
                                       self._faults.language)
        if delay:
            await asyncio.sleep(delay)
        outcome = await asyncio.get_running_loop().run_in_executor(
            None, self._auth.authenticate, request.headers.get("Authorization"), request.transport)
        if outcome.caller is None:
            response = web.Response(status=401, text=pages.IIS_401, content_type=HTML)
            for value in outcome.headers:
                response.headers.add("WWW-Authenticate", value)
            return response
        if broken:
            response = web.Response(status=500, text=pages.IIS_500, content_type=HTML)
        else:
            response = await self._route(request, outcome.caller, language)
        for value in outcome.headers:  # the mutual-authentication token
            response.headers.add("WWW-Authenticate", value)
        return response

    async def _route(self, request: web.Request, caller: Caller,
                     language: str) -> web.Response:
        path = request.path.lower().rstrip("/")
        if path in ("/certsrv", "/certsrv/default.asp") and request.method == "GET":
            ca_name = self.pki.issuing.cert.subject.rfc4514_string()
            return _html(pages.welcome(language, ca_name))
        if path == "/certsrv/certfnsh.asp" and request.method == "POST":
            form = await request.post()
            return self._submit(form, caller, language)
        if path in ("/certsrv/certnew.cer", "/certsrv/certnew.p7b") and request.method == "GET":
            return self._fetch(request, path.endswith(".p7b"), language)
        return web.Response(status=404, text="<html><body>404 - File or directory not found."
                                             "</body></html>", content_type=HTML)

    def _submit(self, form: Mapping[str, Any], caller: Caller, language: str) -> web.Response:
        mode = str(form.get("Mode", ""))
        text = form.get("CertRequest")
        if mode.lower() != "newreq" or not isinstance(text, str):
            return _html(pages.error(language, pages.NO_TEMPLATE if mode else "Mode is missing."))
        record = self.policy.submit(text, str(form.get("CertAttrib", "")), caller.name)
        log.info("adcs fake: request %s by %s: %s", record.id, caller.name, record.status)
        if record.status == "issued":
            return _html(pages.issued(language, record.id))
        if record.status == "pending":
            return _html(pages.pending(language, record.id))
        return _html(pages.denied(language, record.message, record.id or None))

    def _fetch(self, request: web.Request, chain: bool, language: str) -> web.Response:
        try:
            req_id = int(request.query.get("ReqID", ""))
            record = self.policy.get(req_id)
        except (ValueError, KeyError):
            return _html(pages.error(language, pages.UNKNOWN_REQUEST))
        if record.status == "pending":
            return _html(pages.pending(language, record.id))
        if record.status != "issued" or record.certificate is None:
            return _html(pages.denied(language, record.message, record.id))
        pem = request.query.get("Enc", "bin").lower() == "b64"
        encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
        if chain:
            body = pkcs7.serialize_certificates([record.certificate, *self.pki.chain], encoding)
            return web.Response(body=body, content_type="application/x-pkcs7-certificates")
        body = record.certificate.public_bytes(encoding)
        return web.Response(body=body, content_type="application/pkix-cert")


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type=HTML, charset="utf-8")

