"""Middleware shared by every listener: request ids, access log, and errors as JSON (never a
traceback to the client).

Two kinds of bad input are not errors of ours and are never answered as 500: a client that closes
the connection before its request was read (routine on mobile networks: an INFO line and
``mdm_http_client_disconnects_total``), and a body whose framing or content encoding is broken (400,
connection closed). Requests that aiohttp's parser refuses before routing get its own 400; the
traceback it would log for each is replaced by one INFO line and ``mdm_http_malformed_requests_total``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web, web_urldispatcher
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from mdm.core import metrics
from mdm.core.errors import ServiceError
from mdm.db import errors as db_errors
from mdm.logs import request_id_var

log = logging.getLogger("mdm.http")
access_log = logging.getLogger("mdm.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# nginx's "client closed request": only in our access log and metrics, never sent (nobody listens).
CLIENT_CLOSED = 499


class InFlight:
    """Counts requests between arrival and response so that shutdown can wait for them first:
    once aiohttp starts closing connections it stops reading request bodies still on their way."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self._idle.set()

    async def wait_idle(self, grace: float) -> bool:
        """True when no request is in flight (any more), False when ``grace`` seconds passed first."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUEST_ID_KEY = web.RequestKey("request_id", str)
# Set by a handler that has already logged (or deliberately counted) the refusal it raises, so
# that a flood of refused requests is not logged twice per request.
REFUSAL_LOGGED_KEY = web.RequestKey("mdm_refusal_logged", bool)
ACCESS_LOG_KEY = web.AppKey("mdm_access_log", bool)
LISTENER_KEY = web.AppKey("mdm_listener", str)
IN_FLIGHT_KEY = web.AppKey("mdm_in_flight", InFlight)


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    err["request_id"] = request_id_var.get()
    return {"error": err}


def json_error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response(error_body(code, message, **details), status=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# A per-process random prefix and a counter: unique across replicas and restarts without an
# os.urandom call per request.
_REQUEST_ID_PREFIX = secrets.token_hex(5)
_request_numbers = itertools.count(1)


def _new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):06x}"


@functools.cache
def _request_counter(listener: str, status: int) -> Any:
    return metrics.HTTP_REQUESTS.labels(listener, str(status))


@functools.cache
def _latency_histogram(listener: str) -> Any:
    return metrics.HTTP_LATENCY.labels(listener)


@functools.cache
def _client_gone_counter(listener: str) -> Any:
    return metrics.HTTP_CLIENT_GONE.labels(listener)


def _client_gone(request: web.Request) -> bool:
    """The peer closed the connection (aiohttp drops the transport when the connection is lost)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _first_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    lines = [line for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


class _ParserErrorFilter(logging.Filter):
    """aiohttp answers a request its parser refuses (bad request line, header, chunk size,
    oversized line) with 400 itself, and logs each at ERROR with a traceback. Anyone can send
    those, so each becomes one INFO line and a counter; real errors pass through untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.WARNING or exc is None:
            return True
        bad_request = isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500
        if not (bad_request or isinstance(exc, RequestPayloadError)):
            return True
        metrics.HTTP_MALFORMED.inc()
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
        log.info("malformed HTTP request from %s refused: %s", peer, _first_line(exc))
        return False


PARSER_ERROR_FILTER = _ParserErrorFilter()
logging.getLogger("aiohttp.server").addFilter(PARSER_ERROR_FILTER)

_aiohttp_expect_handler = web_urldispatcher._default_expect_handler


async def _expect_handler(request: web.Request) -> None:
    """aiohttp answers an unknown ``Expect`` with 417 whose text repeats the value, before any
    middleware runs; a value that is not ASCII (surrogate-escaped bytes) cannot be encoded and
    becomes a 500 with a logged traceback. Such a value gets a 417 that does not repeat it.
    Installed as aiohttp's default expect handler (no public hook runs that early): every route,
    including the not-found one, takes it when it is created, which is after this import."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if not expect.isascii():
        raise web.HTTPExpectationFailed(text="Unknown Expect header value")
    await _aiohttp_expect_handler(request)


web_urldispatcher._default_expect_handler = _expect_handler


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id (from a well-formed X-Request-Id, else new), access log, JSON errors."""
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if _REQUEST_ID.match(incoming) else _new_request_id()
    token = request_id_var.set(rid)
    request[REQUEST_ID_KEY] = rid
    started = time.perf_counter()
    status = 500
    in_flight = request.config_dict.get(IN_FLIGHT_KEY)
    if in_flight is not None:
        in_flight.enter()
    try:
        try:
            response = await handler(request)
        except ServiceError as exc:
            if not request.get(REFUSAL_LOGGED_KEY):
                log.info("request refused: %s", exc.message, extra={"code": exc.code})
            response = json_error(exc.status, exc.code, exc.message, **exc.details)
            if exc.status == 401:
                challenge = getattr(exc, "www_authenticate", None)  # KES: Negotiate (kcd)
                response.headers["WWW-Authenticate"] = challenge or 'Bearer realm="mdm"'
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            response = json_error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message)
            for header in ("Allow", "WWW-Authenticate", "Retry-After"):
                if header in exc.headers:
                    response.headers[header] = exc.headers[header]
        except RequestPayloadError as exc:
            # Broken chunked framing or content encoding inside the body: what follows on this
            # connection cannot be trusted, so answer and close. The body is marked read so that
            # aiohttp does not linger on it (and log the same error again).
            log.info("malformed request body in %s %s: %s", request.method, request.path, _first_line(exc))
            request.content.feed_eof()
            response = json_error(
                400, "malformed_body", "malformed request body (broken framing or content encoding)"
            )
            response.force_close()
        except Exception as exc:
            if isinstance(exc, ConnectionResetError) and _client_gone(request):
                status = CLIENT_CLOSED
                log.info("client closed the connection during %s %s", request.method, request.path)
                return web.Response(status=CLIENT_CLOSED)
            if db_errors.unavailable(exc):  # not a bug of ours: the client may try again
                log.warning("database unavailable for %s %s: %s", request.method, request.path,
                            _first_line(exc))
                response = json_error(503, "database_unavailable",
                                      "the database cannot serve this request now; try again later")
                response.headers["Retry-After"] = str(db_errors.RETRY_AFTER_SECONDS)
            else:
                log.exception("unhandled error in %s %s", request.method, request.path)
                response = json_error(500, "internal",
                                      "internal error; see the server log for this request id")
        status = response.status
        response.headers["X-Request-Id"] = rid
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if in_flight is not None:
            in_flight.leave()
        listener = request.app.get(LISTENER_KEY, "-")
        elapsed = time.perf_counter() - started
        if status == CLIENT_CLOSED:
            _client_gone_counter(listener).inc()
        else:
            _request_counter(listener, status).inc()
            _latency_histogram(listener).observe(elapsed)
        if request.app.get(ACCESS_LOG_KEY, True):
            access_log.info(
                "%s %s %s %.1fms",
                request.method,
                request.rel_url.path,
                status,
                elapsed * 1000,
                extra={"peer": request.remote},
            )
        request_id_var.reset(token)

