"""HTTP client of the admin API for the CLI: one keep-alive connection, every failure turned into
one line an operator can act on. Where the server is, which token and which CA come from
``mdm.cli.client_settings`` (re-exported here).
"""

from __future__ import annotations

import json as _json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlencode, urlsplit

from mdm.cli.client_settings import (
    DEFAULT_TOKEN_FILE,
    TOKEN_ENV,
    ClientView,
    Settings,
    client_view,
    quick_view,
    read_token_file,
    server_options,
    settings_from,
    write_token_file,
)
from mdm.cli.common import CliError

if TYPE_CHECKING:
    import http.client
    import ssl

__all__ = [
    "DEFAULT_TOKEN_FILE", "TOKEN_ENV", "ApiClient", "ClientView", "Response", "Settings", "client_view",
    "error_line", "quick_view", "read_token_file", "server_options", "settings_from", "write_token_file",
]

# http.client (with the email package) and ssl are imported when a request is made: building the
# parsers for `--help` needs none of it.


@dataclass(frozen=True)
class Response:
    """What the server answered (the attribute names httpx uses)."""

    status_code: int
    reason_phrase: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)


class ApiClient:
    """A small synchronous client: one request at a time is all a CLI command needs.

    On the standard library's http.client rather than httpx: importing httpx costs 0.15-0.35 s,
    more than the start-up budget of a whole CLI command (tests/test_cli_fast.py). One
    keep-alive connection serves every request of a command (pages, --follow)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        if not parts.hostname:
            raise CliError(f"--url {settings.url}: no host name", exit_code=2)
        self._tls = parts.scheme == "https"
        self._host, self._base = parts.hostname, parts.path.rstrip("/")
        try:
            self._port = parts.port or (443 if self._tls else 80)
        except ValueError:
            raise CliError(f"--url {settings.url}: the port is not a number", exit_code=2) from None
        self._context = self._verify() if self._tls else None
        self._headers = {"Accept": "application/json", "User-Agent": "mdm-cli"}
        if settings.token:
            self._headers["Authorization"] = f"Bearer {settings.token}"
        self._conn: http.client.HTTPConnection | None = None
        self._used = 0.0

    def _verify(self) -> ssl.SSLContext:
        import ssl

        ca = self.settings.ca_file
        try:
            return ssl.create_default_context(cafile=str(ca) if ca else None)
        except FileNotFoundError:
            raise CliError(f"CA file {ca} does not exist (client.ca_file, or DATA_DIR/ca/root.pem)") from None
        except PermissionError:
            raise CliError(
                f"cannot read CA file {ca}: permission denied (point client.ca_file at a readable copy "
                "of the server's root.pem)"
            ) from None
        except ssl.SSLError as exc:
            raise CliError(f"CA file {ca} is not a PEM certificate file ({exc.reason or exc})") from None

    def _connection(self) -> http.client.HTTPConnection:
        import http.client

        if self._conn is None:
            timeout = self.settings.timeout
            proxy = _proxy_for(self._host, "https" if self._tls else "http")
            host, port = (proxy.hostname or "", proxy.port or 80) if proxy else (self._host, self._port)
            if self._tls:
                self._conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context)
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
            if proxy:
                self._conn.set_tunnel(self._host, self._port)
        return self._conn

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        response = self.send(method, path, params=params, json=json)
        if response.status_code >= 400:
            raise CliError(error_line(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{self.settings.url}{path}: the server answered {response.status_code} with a body that is "
                "not JSON; is --url the admin API?"
            ) from None

    def send(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Response:
        """The raw response, whatever its status; transport failures become one-line CliErrors."""
        import http.client

        clean = {k: str(v).lower() if isinstance(v, bool) else v for k, v in (params or {}).items()
                 if v is not None}
        target = self._base + path + (f"?{urlencode(clean)}" if clean else "")
        headers = dict(self._headers)
        body = None
        if json is not None:
            body = _json.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        if method != "GET" and self._conn is not None and time.monotonic() - self._used > 2.0:
            # The server may have closed an idle kept-alive connection (e.g. during a confirmation
            # prompt), and a write is not retried: send it on a new connection.
            self._reset()
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request(method, target, body=body, headers=headers)
                answer = conn.getresponse()
                response = Response(answer.status, answer.reason, answer.read())
                self._used = time.monotonic()
                if answer.will_close:
                    self._reset()
                return response
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._reset()
                # A kept-alive connection the server has meanwhile closed: a read goes once more on
                # a new one.
                if not (reused and attempt == 1 and method == "GET"):
                    raise CliError(self._transport_message(exc)) from None
            except (OSError, http.client.HTTPException) as exc:
                self._reset()
                raise CliError(self._transport_message(exc)) from None
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page of a cursor-paginated list, following next_cursor."""
        params = dict(params)
        while True:
            page = self.get(path, **params)
            yield page
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def _transport_message(self, exc: BaseException) -> str:
        import http.client
        import socket
        import ssl

        url = self.settings.url
        chain = _causes(exc)
        cert_error = next((c for c in chain if isinstance(c, ssl.SSLCertVerificationError)), None)
        if cert_error is not None:
            trusted = self.settings.ca_file or "the system trust store"
            return (
                f"TLS verification of {url} failed: {cert_error.verify_message or cert_error.reason}; "
                f"the CLI trusts {trusted} (use --data-dir of that server or set client.ca_file)"
            )
        tls_error = next((c for c in chain if isinstance(c, ssl.SSLError)), None)
        if tls_error is not None:
            reason = tls_error.reason or tls_error
            return f"TLS handshake with {url} failed: {reason}; is --url the admin API?"
        if any(isinstance(c, ConnectionRefusedError) for c in chain):
            return (
                f"cannot connect to {url}: connection refused (is `mdm serve` running? "
                "check --url / client.url and listeners.admin.port)"
            )
        if any(isinstance(c, TimeoutError) for c in chain):
            return f"no answer from {url} within {self.settings.timeout:.0f}s (timeout)"
        if isinstance(exc, http.client.HTTPException | ConnectionResetError | BrokenPipeError):
            detail = str(exc) or type(exc).__name__
            return (f"{url} closed the connection or did not speak HTTP ({detail}); "
                    "does --url match the scheme?")
        if isinstance(exc, socket.gaierror):
            return f"cannot reach {url}: the host name does not resolve ({exc.strerror})"
        return f"cannot reach {url}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"


def _proxy_for(host: str, scheme: str) -> SplitResult | None:
    """The proxy the environment names for this scheme (HTTPS_PROXY, ALL_PROXY ...) unless NO_PROXY
    exempts the host, as httpx and curl do; urllib is imported only when such a variable is set."""
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        return None
    import urllib.request

    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    url = proxies.get(scheme) or proxies.get("all")
    return urlsplit(url if "://" in url else f"http://{url}") if url else None


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def error_line(response: Response) -> str:
    """``409 conflict: device 3 already has ...`` from the API's JSON error body."""
    try:
        error = response.json()["error"]
        line = f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200]
        line = f"{response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")
    if response.status_code == 401:
        line += " (check --token / MDM_API_TOKEN, or run `mdm login --token TOKEN`)"
    return line
