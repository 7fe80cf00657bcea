"""A contract fake of Exchange's PowerShell endpoint: WSMan + PSRP + Kerberos over real sockets.

``ExchangePsrpFake(org, keytab=...)`` serves ``/PowerShell`` (HTTP with WinRM message encryption,
or HTTPS) in its own thread and event loop, for plain pypsrp clients::

    fake = ExchangePsrpFake(Organisation.generate(mailboxes=10, devices=20), keytab=kdc.service_keytab,
                            tls=True)
    fake.start()
    ... WSMan("localhost", port=fake.port, ssl=True, path="/PowerShell", auth="kerberos",
              cert_validation=str(fake.ca_file), ...)
    fake.close()

Layers: ``exchange_auth`` (Negotiate acceptor, message encryption), ``exchange_wsman`` (SOAP
in/out, Windows' faults), ``exchange_shell`` (psrpcore runspace pools, NoLanguage, the cmdlets run
by ``org.execute``). Control (thread-safe, from tests): ``url``, ``port``, ``ca_file``, ``org``,
``fail_next(n, status)``, ``garbage_next(n)`` (an HTML page with 200), ``delay_next(n, seconds)``,
``restart()`` (every shell and pipeline forgotten, as after an IIS recycle: the next request of an
old pool gets the "shell was not found" fault), ``stop()`` / ``start()`` (port closed, reopened on
the same port), ``requests``, ``peak_concurrency`` / ``reset_peak()``, ``shell_count``.

Process entry point (benchmark): ``python -m mdm.devfakes.exchange_psrp --mailboxes N --devices M
--keytab K [--principal-map P=Cmd1,Cmd2;...] [--port 0] [--tls-cert C --tls-key K]`` prints
``URL <url>`` and serves until killed (``KRB5_CONFIG`` from the environment).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
import threading
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from mdm.devfakes import exchange_auth as auth
from mdm.devfakes import exchange_wsman as wsman
from mdm.devfakes.exchange_org import Organisation
from mdm.devfakes.exchange_shell import Shell, Stats
from mdm.devfakes.loop_thread import LoopThread

log = logging.getLogger(__name__)

CONFIGURATION = "Microsoft.Exchange"
MACHINE = "EXCH01.corp.example.com"
RECEIVE_LIMIT = 96 * 1024  # raw PSRP bytes per Receive answer (base64 fits pypsrp's envelope)
GARBAGE = (b"<!DOCTYPE html><html><head><title>Service Unavailable</title>"
           b"<meta charset=utf-8></head><body><h1>Service Unavailable</h1><hr>"
           b"<p>HTTP Error 503. The service is unavailable.</body></html>")


class _Inject:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail: list[int] = []
        self.garbage = 0
        self.delays: list[float] = []


class ExchangePsrpFake:
    def __init__(self, org: Organisation, *, keytab: Path, tls: bool = False,
                 tls_cert: Path | None = None, tls_key: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, url_host: str = "localhost",
                 workers: int = 64) -> None:
        self.org = org
        self.keytab = Path(keytab)
        self.host, self.port, self.url_host = host, port, url_host
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file: Path | None = None
        self._ssl: ssl.SSLContext | None = None
        binding = None
        if tls or tls_cert:
            cert_path, key_path = tls_cert, tls_key
            if cert_path is None or key_path is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="exchange-fake-")
                self.ca_file, cert_path, key_path = auth.test_certificate(Path(self._tmp.name),
                                                                          url_host)
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(str(cert_path), str(key_path))
            binding = auth.tls_end_point_binding(Path(cert_path).read_bytes())
        self._acceptor = auth.Acceptor(self.keytab, channel_binding=binding)
        self._inject = _Inject()
        self._stats = Stats()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exchange-fake")
        self._shells: dict[str, Shell] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._sessions: weakref.WeakKeyDictionary[Any, auth.Session] = weakref.WeakKeyDictionary()
        self._thread = LoopThread("exchange-fake")
        self._runner: web.AppRunner | None = None
        self.requests = 0

    # ---- lifecycle (thread-safe) --------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{self.url_host}:{self.port}/PowerShell"

    def start(self) -> None:
        """Listen (again on the same port after ``stop``)."""
        self._call(self._start())

    def stop(self) -> None:
        """Close the port and every connection (the server is unreachable); shells survive."""
        if self._thread.running:
            self._call(self._stop())

    def restart(self) -> None:
        """Forget every shell and pipeline (an IIS recycle)."""
        if self._thread.running:
            self._call(self._forget())

    def close(self) -> None:
        if self._thread.running:
            self._call(self._stop())
            self._call(self._forget())
            self._thread.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ExchangePsrpFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any) -> Any:
        return self._thread.call(coro)

    async def _start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=3600, handle_signals=False)
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
            await asyncio.sleep(0.05)  # let the closed connections' transports finish

    async def _forget(self) -> None:
        shells, self._shells = self._shells, {}
        for shell in shells.values():
            shell.close()
        for event in self._events.values():
            event.set()
        self._events = {}

    # ---- injections and counters --------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        with self._inject.lock:
            self._inject.fail.extend([status] * n)

    def garbage_next(self, n: int = 1) -> None:
        with self._inject.lock:
            self._inject.garbage += n

    def delay_next(self, n: int = 1, seconds: float = 1.0) -> None:
        """The next ``n`` operations are answered ``seconds`` late (an HTTP read timeout)."""
        with self._inject.lock:
            self._inject.delays.extend([seconds] * n)

    @property
    def peak_concurrency(self) -> int:
        return self._stats.peak

    @property
    def pipelines_run(self) -> int:
        return self._stats.pipelines

    def reset_peak(self) -> None:
        self._stats.reset_peak()

    @property
    def shell_count(self) -> int:
        return len(self._shells)

    # ---- HTTP -------------------------------------------------------------------------------

    def _challenge(self, text: str = "") -> web.Response:
        response = web.Response(status=401, text=text)
        for name, value in self._acceptor.challenge_headers():
            response.headers.add(name, value)
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if request.method != "POST" or request.path.lower() not in ("/powershell", "/wsman"):
            return web.Response(status=404, text="Not found")
        connection = request.transport
        header = request.headers.get("Authorization")
        session: auth.Session | None = (self._sessions.get(connection)
                                        if connection is not None else None)
        if not header and session is None:
            return self._challenge()  # the body of a stranger is not even read
        headers: dict[str, str] = {}
        if header:
            try:
                accepted, value = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._acceptor.accept, header)
            except auth.AuthFailed:
                return self._challenge()
            session = accepted
            if connection is not None:
                self._sessions[connection] = accepted
            headers["WWW-Authenticate"] = value
        if session is None:
            return self._challenge()
        body = await request.read()
        if not body:
            return web.Response(status=200, headers=headers)
        content_type = request.headers.get("Content-Type", "")
        protocol: str | None = None
        if auth.is_encrypted(content_type):
            try:
                soap, protocol = auth.unwrap(session, content_type, body)
            except auth.BadEncryption as exc:
                log.info("exchange fake: undecryptable message: %s", exc)
                return web.Response(status=400, text="Bad Request", headers=headers)
        elif self._ssl is None:
            return web.Response(status=400, text="Unencrypted traffic is disabled.", headers=headers)
        else:
            soap = body
        injected = await self._injected()
        if injected is not None:
            return injected
        status = 200
        try:
            reply = await self._dispatch(wsman.parse(soap), session, request)
        except wsman.WSManFault as fault:
            status = 500
            reply = wsman.fault_envelope(wsman.message_id(soap), fault, MACHINE)
        except Exception:  # a bug or an unparseable PSRP payload: a fault, never a traceback
            log.exception("exchange fake: request failed")
            status = 500
            reply = wsman.fault_envelope(wsman.message_id(soap), wsman.WSManFault(
                wsman.INVALID_MESSAGE, "w:InternalError",
                "The WS-Management service cannot process the request.", sender=False), MACHINE)
        if protocol is not None:
            reply, headers["Content-Type"] = auth.wrap(session, protocol, reply)
        else:
            headers["Content-Type"] = "application/soap+xml;charset=UTF-8"
        return web.Response(status=status, body=reply, headers=headers)

    async def _injected(self) -> web.Response | None:
        with self._inject.lock:
            delay = self._inject.delays.pop(0) if self._inject.delays else 0.0
        if delay:
            await asyncio.sleep(delay)
        with self._inject.lock:
            if self._inject.fail:
                status = self._inject.fail.pop(0)
                return web.Response(status=status, text=f"HTTP Error {status}")
            if self._inject.garbage:
                self._inject.garbage -= 1
                return web.Response(status=200, body=GARBAGE, content_type="text/html")
        return None

    # ---- WSMan operations ---------------------------------------------------------------------

    def _shell(self, req: wsman.Request) -> Shell:
        shell = self._shells.get(req.shell_id)
        if shell is None:
            raise wsman.shell_not_found(req.selectors.get("ShellId", ""))
        return shell

    def _notifier(self, shell_id: str) -> Any:
        loop = asyncio.get_running_loop()

        def wake() -> None:
            event = self._events.get(shell_id)
            if event is not None:
                event.set()
                self._events[shell_id] = asyncio.Event()

        return lambda: loop.call_soon_threadsafe(wake)

    async def _dispatch(self, req: wsman.Request, session: auth.Session,
                        request: web.Request) -> bytes:
        if req.action == "Create":
            return self._create(req, session, request)
        if req.action == "Get":
            shell = self._shell(req)
            return wsman.get_response(req, wsman.shell_element(
                shell.shell_id, wsman.POWERSHELL_URI + CONFIGURATION, shell.principal,
                request.remote or "", state="Connected"))
        shell = self._shell(req)
        if req.action == "Command":
            command_id, data = wsman.command_line(req)
            shell.feed(data, command_id)
            return wsman.command_response(req, command_id)
        if req.action == "Send":
            for _name, target, chunk in wsman.send_streams(req):
                if target and not shell.knows(target):
                    raise wsman.pipeline_not_found(target)
                shell.feed(chunk, target)
            return wsman.simple_response(req, "SendResponse")
        if req.action == "Receive":
            return await self._receive(req, shell)
        if req.action == "Signal":
            command_id, code = wsman.signal(req)
            if code.endswith("terminate"):
                shell.terminate(command_id)
            elif code.lower().endswith("crtl_c") or code.lower().endswith("ctrl_c"):
                shell.stop(command_id)
            return wsman.simple_response(req, "SignalResponse")
        # Delete
        self._shells.pop(shell.shell_id, None)
        event = self._events.pop(shell.shell_id, None)
        shell.close()
        if event is not None:
            event.set()
        return wsman.simple_response(req, "DeleteResponse")

    def _create(self, req: wsman.Request, session: auth.Session, request: web.Request) -> bytes:
        expected = wsman.POWERSHELL_URI + CONFIGURATION
        if req.resource_uri.lower() != expected.lower():
            raise wsman.WSManFault(
                wsman.BAD_RESOURCE_URI, "w:InvalidResourceURI",
                "The WS-Management service cannot process the request because the resource URI "
                f"{req.resource_uri!r} is not a session configuration of this server.")
        data = wsman.creation_xml(req)
        assert req.body is not None
        shell_id = (req.body.get("ShellId") or str(uuid.uuid4())).upper()
        shell = Shell(shell_id, org=self.org, principal=session.principal, executor=self._executor,
                      stats=self._stats, notify=self._notifier(shell_id))
        self._events[shell_id] = asyncio.Event()
        try:
            shell.feed(data)
        except Exception as exc:
            log.info("exchange fake: bad creationXml: %s", exc)
            raise wsman.WSManFault(wsman.INVALID_MESSAGE, "w:InvalidMessageInformationHeader",
                                   "The creationXml is not a valid PSRP runspace pool.") from exc
        self._shells[shell_id] = shell
        return wsman.create_response(req, self.url, wsman.shell_element(
            shell_id, expected, session.principal, request.remote or ""), shell_id)

    async def _receive(self, req: wsman.Request, shell: Shell) -> bytes:
        target = wsman.receive_target(req)
        if target is not None and not shell.knows(target):
            raise wsman.pipeline_not_found(target)
        # What fits the client's MaxEnvelopeSize once base64-encoded, with room for the envelope.
        limit = max(4096, min(RECEIVE_LIMIT, (req.max_envelope - 4096) * 3 // 4))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(req.operation_timeout, 120.0)
        while True:
            event = self._events.get(shell.shell_id)
            chunks, done = shell.take(target, limit)
            if chunks or done:
                return wsman.receive_response(
                    req, [(c, target) for c in chunks],
                    done_command=target if done else None,
                    running_command=target if target and not done else None)
            if shell.closed or event is None:
                raise wsman.shell_not_found(shell.shell_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise wsman.timed_out()
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass


if __name__ == "__main__":
    import sys

    from mdm.devfakes.exchange_psrp_cli import main

    sys.exit(main(ExchangePsrpFake))
