"""Middleware shared by every listener: request ids, access log, and errors as JSON (never a
traceback to the client)."""

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

from aiohttp import web

from mdm.core.errors import ServiceError
from mdm.logs import request_id_var
from mdm.server import metrics

log = logging.getLogger("mdm.http")
access_log = logging.getLogger("mdm.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
            log.info("request refused: %s", exc.message, extra={"code": exc.code})
            response = json_error(exc.status, exc.code, exc.message, **exc.details)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="mdm"'
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            response = json_error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message)
            for header in ("Allow", "WWW-Authenticate", "Retry-After"):
                if header in exc.headers:
                    response.headers[header] = exc.headers[header]
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = json_error(500, "internal", "internal error; see the server log for this request id")
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

