"""One Exchange server's PowerShell Remoting connection: a long-lived pypsrp runspace pool, and
running typed cmdlets on it. Everything here is synchronous and runs in the runner's worker
threads (``runner.py`` owns the threads, the retries and the failover).

Thread safety. One pool serves up to ``concurrency`` pipelines at once, from as many threads,
over one pypsrp ``WSMan`` (one pool = one WSMan; a WSMan per thread would be a pool per thread).
- HTTPS: requests from several threads run at once. The requests session (urllib3's pool is
  thread-safe) opens a keep-alive connection per concurrent request and each connection does
  its own Kerberos exchange (HTTP Negotiate authenticates a connection); nothing of that context
  is used afterwards, because TLS protects the messages.
- HTTP: messages are wrapped with the Kerberos context (``WinRMEncryption``), and pypsrp keeps ONE
  such context per WSMan, bound to the first connection; a second connection would authenticate
  with a new context the first one's wrapping does not match, and a GSSAPI context's sequence
  numbers may not be used from two threads. So every request goes through one lock
  (``_SerialWSMan``): one connection, one context, one request at a time, as WinRM's client
  does. Pipelines still run concurrently on the server: a thread sends its Command, then polls
  with a short WSMan OperationTimeout (``HTTP_POLL_SECONDS``) rather than one long Receive, so the
  lock is held for a poll at most and the other pipelines' Receives interleave.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any, cast

import requests
import spnego.exceptions
from pypsrp.complex_objects import PSInvocationState, RunspacePoolState
from pypsrp.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from mdm.eas import cmdlets as C
from mdm.eas.cmdlets import Cmdlet, Naming
from mdm.eas.config import EasConfig
from mdm.eas.credentials import KerberosLogin
from mdm.eas.errors import (
    CmdletFailed,
    ExchangeAuthError,
    ExchangeError,
    ExchangeProtocolError,
    ExchangeTimeout,
    ExchangeUnavailable,
)
from mdm.eas.faults import clean_message, fault_error
from mdm.eas.records import PSRecord
from mdm.eas.runner_convert import RecordSerializer, error_info, parameter_value, to_record

log = logging.getLogger(__name__)

# WSMan OperationTimeout of one Receive: how long the server may hold it when there is no output.
POLL_SECONDS = 1.0
HTTP_POLL_SECONDS = 0.2  # under the HTTP lock: short, so that the pool's pipelines interleave
_SHELL_NOT_FOUND = (2150858843, 2150858832)  # w:InvalidSelectors / shell gone after a restart
STOP_SECONDS = 2.0  # what stopping a pipeline past its deadline may take (Signal)
# An HTTP request may outlive the call's deadline by this much: a Receive whose WSMan
# OperationTimeout ends at the deadline is answered then, and the pipeline is then stopped
# cleanly (the pool kept) rather than its connection cut.
ANSWER_GRACE = 1.0
# The deadline of the call the current thread runs (``ServerConnection.run``): every HTTP request
# of it waits at most until then (``_SerialWSMan``), so a server that stops answering ends the
# call at its budget rather than after requests' read timeouts and pypsrp's own retries.
_CALL = threading.local()


def mark(error: ExchangeError, *, after_send: bool | None = None,
         pool_ok: bool | None = None) -> ExchangeError:
    """Note on an error whether the server had accepted the pipeline (a retry could run it twice)
    and whether the pool is still good (a cmdlet error, a stopped pipeline)."""
    if after_send is not None:
        vars(error)["after_send"] = after_send
    if pool_ok is not None:
        vars(error)["pool_ok"] = pool_ok
    return error


def after_send(error: ExchangeError) -> bool:
    return bool(vars(error).get("after_send", False))


def _pool_ok(error: ExchangeError) -> bool:
    return bool(vars(error).get("pool_ok", False))


class _SerialWSMan(WSMan):
    """pypsrp's WSMan with every request under one lock (see the module's docstring), each
    request bounded by the current call's deadline (``_CALL``), and no retry of its own (pypsrp
    retries a Receive that timed out five times, sleeping up to a minute: the runner retries)."""

    def __init__(self, *args: Any, serial: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_lock: threading.Lock | None = threading.Lock() if serial else None
        transport: Any = self.transport
        send = transport._send_request

        def bounded(request: requests.PreparedRequest, timeout: Any = None) -> bytes:
            return cast(bytes, send(request, timeout=_bounded(
                timeout, transport.connection_timeout, transport.read_timeout)))

        transport._send_request = bounded

    def invoke(self, *args: Any, **kwargs: Any) -> ET.Element:
        kwargs["retries_on_read_timeout"] = 0
        if self._request_lock is None:
            return super().invoke(*args, **kwargs)
        with self._request_lock:
            return super().invoke(*args, **kwargs)


def _bounded(timeout: Any, connect: float, read: float) -> Any:
    """requests' (connect, read) timeout of one HTTP request, cut to the call's time left."""
    deadline: float | None = getattr(_CALL, "deadline", None)
    if deadline is None:
        return timeout
    if isinstance(timeout, tuple):
        connect, read = timeout
    elif timeout is not None:
        connect = read = timeout
    left = deadline + ANSWER_GRACE - time.monotonic()
    if left <= 0:
        raise requests.exceptions.ReadTimeout("the call's time budget is spent")
    return (min(connect, left), min(read, left))


def classify(exc: BaseException, *, server: str, principal: str) -> ExchangeError:
    """A failure of pypsrp, requests or Kerberos as the ``ExchangeError`` the service sees."""
    if isinstance(exc, ExchangeError):
        return exc
    if isinstance(exc, AuthenticationError):
        return ExchangeAuthError(f"{server} refused the Kerberos authentication of {principal} "
                                 "(HTTP 401)", server=server)
    if isinstance(exc, spnego.exceptions.SpnegoError):
        detail = clean_message(str(exc), limit=300)
        return ExchangeAuthError(f"Kerberos to HTTP/{server} as {principal} failed: {detail}",
                                 server=server)
    if isinstance(exc, WSManFaultError):
        message = clean_message(exc.message or str(exc), limit=300)
        if exc.code in _SHELL_NOT_FOUND:
            return ExchangeUnavailable(f"the server no longer knows our session (restarted?): "
                                       f"{message}", server=server)
        return ExchangeUnavailable(f"WS-Management fault {exc.code}: {message}", server=server)
    if isinstance(exc, WinRMTransportError):
        if exc.code >= 500:
            return ExchangeUnavailable(f"HTTP {exc.code} from the server", server=server)
        if exc.code == 401:
            return ExchangeAuthError(f"{server} refused {principal} (HTTP 401)", server=server)
        return ExchangeProtocolError(f"HTTP {exc.code} from the WSMan endpoint", server=server)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return ExchangeTimeout("the server did not answer in time (read timeout)", server=server)
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.ConnectTimeout):
        return ExchangeUnavailable(f"cannot reach the server: {_root_cause(exc)}", server=server)
    if isinstance(exc, ET.ParseError):
        return ExchangeProtocolError("the server's answer is not WS-Management XML", server=server)
    if isinstance(exc, WinRMError):
        return ExchangeProtocolError(f"unexpected WSMan answer: {clean_message(str(exc), limit=300)}",
                                     server=server)
    return ExchangeProtocolError(
        f"unexpected answer ({type(exc).__name__}: {clean_message(str(exc), limit=200)})",
        server=server)


def _root_cause(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Name or service not known",
                   "No route to host", "timed out", "Remote end closed", "Connection aborted"):
        if marker in text:
            return marker.lower()
    return clean_message(text, limit=200)


class ServerConnection:
    """The runspace pool of one configured server, opened lazily and reopened after a failure."""

    def __init__(self, entry: str, config: EasConfig, login: KerberosLogin) -> None:
        self.entry = entry
        self.host, self.port = config.endpoint(entry)
        self.config = config
        self.login = login
        scheme = config.transport
        self.url = f"{scheme}://{self.host}:{self.port}/{config.path.lstrip('/')}"
        self._lock = threading.Lock()  # opening and closing
        self._poll = HTTP_POLL_SECONDS if config.transport == "http" else POLL_SECONDS
        self._pool: RunspacePool | None = None
        self._naming: Naming | None = None

    @property
    def connected(self) -> bool:
        return self._pool is not None

    # ---- the pool ---------------------------------------------------------------------------

    def _open(self) -> tuple[RunspacePool, Naming]:
        with self._lock:
            if self._pool is not None and self._naming is not None:
                return self._pool, self._naming
            cfg = self.config
            credential = self.login.credential()
            wsman = _SerialWSMan(
                self.host, serial=cfg.transport == "http", port=self.port, path=cfg.path.lstrip("/"),
                ssl=cfg.transport == "https", auth="kerberos",
                # pyspnego takes a credential object where pypsrp types a user name: the private
                # ccache (credentials.py), never a password.
                username=cast(str, credential),
                cert_validation=cast(bool, cfg.ca_file) if cfg.ca_file else True,
                connection_timeout=max(1, math.ceil(cfg.connect_timeout_seconds)),
                read_timeout=max(30, math.ceil(cfg.connect_timeout_seconds) + 10),
                operation_timeout=20, encryption="auto", no_proxy=True,
                negotiate_service="HTTP", reconnection_retries=0,
            )
            pool = RunspacePool(wsman, configuration_name=cfg.configuration_name,
                                min_runspaces=1, max_runspaces=cfg.concurrency)
            serializer = RecordSerializer()
            pool._serializer = serializer  # keep DateTime/TimeSpan types (runner_convert)
            pool._fragmenter.serializer = serializer
            try:
                pool.open()
                probe = self._invoke(pool, [C.get_command(C.NAMING_PROBE)], Naming.EXCHANGE_2010,
                                     time.monotonic() + cfg.connect_timeout_seconds + 30)
            except BaseException:
                self._discard(pool)
                raise
            naming = Naming.EXCHANGE_2013 if probe else Naming.EXCHANGE_2010
            self._pool, self._naming = pool, naming
            log.info("eas: runspace pool open on %s (%s names, %d runspaces)", self.url,
                     naming.value, cfg.concurrency)
            return pool, naming

    def reset(self, pool: RunspacePool | None = None) -> None:
        """Drop the pool (only if it is still ``pool``): the next call opens a new one."""
        with self._lock:
            if self._pool is None or (pool is not None and self._pool is not pool):
                return
            old, self._pool, self._naming = self._pool, None, None
        self._discard(old)

    def close(self) -> None:
        with self._lock:
            old, self._pool, self._naming = self._pool, None, None
        if old is not None:
            try:
                old.close()
            except Exception as exc:
                log.debug("eas: closing the pool on %s: %s", self.url, exc)
            old.connection.close()

    def _discard(self, pool: RunspacePool) -> None:
        """Forget a broken pool. Its shell may still live on the server (after a 5xx, garbage or
        a timeout) and counts against the account's Exchange runspace budget until it idles
        out, so it is deleted, best effort, in a daemon thread of its own: a hung server must not
        hold a worker (the request is bounded by the WSMan timeouts)."""

        def delete() -> None:
            try:
                if pool.state == RunspacePoolState.OPENED:
                    pool.close()
            except Exception as exc:
                log.debug("eas: deleting a broken pool's shell on %s: %s", self.url, exc)
            finally:
                pool.connection.close()

        threading.Thread(target=delete, name=f"eas-discard-{self.host}", daemon=True).start()

    def naming(self) -> Naming:
        try:
            return self._open()[1]
        except BaseException as exc:
            raise classify(exc, server=self.host, principal=self.login.principal) from exc

    # ---- running ----------------------------------------------------------------------------

    def run(self, cmdlets: Sequence[Cmdlet], deadline: float) -> list[PSRecord]:
        """Run ``cmdlets`` as the statements of one pipeline (after Set-AdServerSettings
        -ViewEntireForest when the scope is the forest). Raises an ``ExchangeError``; one that
        happened after the server accepted the pipeline has ``after_send = True``."""
        pool: RunspacePool | None = None
        _CALL.deadline = deadline
        try:
            # Renews the ticket ahead of expiry: an open pool may still need it for a new
            # connection (HTTPS opens one per concurrent request), long after the pool opened.
            self.login.credential()
            pool, naming = self._open()
            statements = list(cmdlets)
            if self.config.scope == "forest":
                statements.insert(0, C.set_ad_server_settings(view_entire_forest=True))
            return self._invoke(pool, statements, naming, deadline)
        except CmdletFailed:
            raise  # the cmdlet ran and said no: the pool is fine
        except BaseException as exc:
            error = classify(exc, server=self.host, principal=self.login.principal)
            if error.server is None:
                error.server = self.host
            if isinstance(error, ExchangeAuthError):
                self.login.invalidate()
            if not _pool_ok(error):
                self.reset(pool)
            raise error from (None if exc is error else exc)
        finally:
            _CALL.deadline = None

    def _invoke(self, pool: RunspacePool, statements: Sequence[Cmdlet], naming: Naming,
                deadline: float) -> list[PSRecord]:
        ps = PowerShell(pool)
        for index, cmdlet in enumerate(statements):
            if index:
                ps.add_statement()  # ends the previous statement: the next is a new one
            ps.add_cmdlet(cmdlet.name(naming))
            for key, value in cmdlet.parameters_for(naming):
                ps.add_parameter(key, parameter_value(value))
            for switch in cmdlet.switches:
                ps.add_parameter(switch, True)  # a SwitchParameter bound to $true
        sent = False
        try:
            if time.monotonic() >= deadline:
                raise ExchangeTimeout("no time left to start the pipeline", server=self.host)
            ps.begin_invoke()
            sent = True
            while ps.state == PSInvocationState.RUNNING:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stop(ps, statements)
                # pypsrp writes the timeout as "PT<value>S": a fraction of a second is valid.
                ps.poll_invoke(timeout=cast(int, max(0.05, min(self._poll, left))))
        except ExchangeError as exc:
            raise mark(exc, after_send=sent) from None
        except BaseException as exc:
            error = classify(exc, server=self.host, principal=self.login.principal)
            raise mark(error, after_send=sent) from exc
        self._finish(ps)
        return self._result(ps, statements, naming)

    def _stop(self, ps: PowerShell, statements: Sequence[Cmdlet]) -> None:
        what = statements[-1].logical_name
        _CALL.deadline = time.monotonic() + STOP_SECONDS  # the Signal gets a moment of its own
        try:
            ps.stop()
        except Exception as exc:
            error = ExchangeTimeout(f"{what} did not finish in time; stopping it failed too "
                                    f"({type(exc).__name__})", server=self.host)
            raise error from exc
        raise mark(ExchangeTimeout(f"{what} did not finish in time; its pipeline was stopped",
                                   server=self.host), pool_ok=True)

    def _finish(self, ps: PowerShell) -> None:
        """Release the finished pipeline on the server (Signal terminate); best effort, and
        given a moment even when the call's budget ran out as its output arrived."""
        deadline: float | None = getattr(_CALL, "deadline", None)
        if deadline is not None:
            _CALL.deadline = max(deadline, time.monotonic() + STOP_SECONDS)
        try:
            ps.close()
        except Exception as exc:
            log.debug("eas: closing a finished pipeline on %s: %s", self.url, exc)
        finally:
            _CALL.deadline = deadline

    def _result(self, ps: PowerShell, statements: Sequence[Cmdlet],
                naming: Naming) -> list[PSRecord]:
        if ps.streams.error:
            info = error_info(ps.streams.error[0])
            error = fault_error(
                cmdlet=self._which(info.command, statements, naming), message=info.message,
                error_id=info.error_id, category=info.category,
                exception_type=info.exception_type, target=info.target, server=self.host)
            raise mark(error, after_send=True, pool_ok=True)
        if ps.had_errors or ps.state == PSInvocationState.FAILED:
            what = statements[-1].logical_name
            raise mark(CmdletFailed(f"{what} failed without an error record", cmdlet=what,
                                    server=self.host), after_send=True, pool_ok=True)
        return [to_record(obj) for obj in ps.output]

    @staticmethod
    def _which(command: str | None, statements: Sequence[Cmdlet], naming: Naming) -> str:
        """The logical name of the statement that wrote the error (the last one if unknown)."""
        if command:
            for cmdlet in statements:
                if cmdlet.name(naming).lower() == command.strip().lower():
                    return cmdlet.logical_name
        return statements[-1].logical_name
