"""HTTP client of the admin API for the CLI: where the server is, which token, which CA, and
every failure turned into one line an operator can act on."""

from __future__ import annotations

import argparse
import os
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mdm.cli.common import CliError
from mdm.config import Config, ConfigError, load_config

TOKEN_ENV = "MDM_API_TOKEN"  # noqa: S105 - a variable name, not a secret
DEFAULT_TOKEN_FILE = "~/.config/mdm/token"  # noqa: S105
_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # noqa: S104 - compared with, not bound to


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None
    token_source: str
    token_file: Path
    ca_file: Path | None
    timeout: float = 30.0


def server_options() -> argparse.ArgumentParser:
    """The options every command that talks to a running server takes (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("server connection")
    g.add_argument("--data-dir", metavar="DIR", help="data directory whose mdm.toml [client] and CA to use")
    g.add_argument("--url", help="admin API base URL (default: client.url or https://127.0.0.1:<admin port>)")
    g.add_argument("--token", help="API token (default: $MDM_API_TOKEN, then client.token_file)")
    g.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return p


def load_client_config(args: argparse.Namespace) -> Config:
    try:
        return load_config(getattr(args, "data_dir", None))
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None


def default_url(config: Config) -> str:
    admin = config.listeners.admin
    host = "127.0.0.1" if admin.bind in _ANY_ADDRESS else admin.bind
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if admin.mode == "tls" else "http"
    return f"{scheme}://{host}:{admin.port}"


def token_file_of(config: Config) -> Path:
    return Path(config.client.token_file or DEFAULT_TOKEN_FILE).expanduser()


def read_token_file(path: Path) -> str | None:
    """The stored token, or None if there is none; refuses a file others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(
            f"token file {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing to use it: run `chmod 600 {path}`"
        )
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}") from None
    return token or None


def write_token_file(path: Path, token: str) -> None:
    """Store the token readable by its owner only (directory 0700, file 0600)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(token + "\n")
    except OSError as exc:
        raise CliError(f"cannot write token file {path}: {exc.strerror}") from None


def settings_from(args: argparse.Namespace, *, need_token: bool = True) -> Settings:
    config = load_client_config(args)
    url = (getattr(args, "url", None) or config.client.url or default_url(config)).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise CliError(f"--url {url}: must start with https:// or http://", exit_code=2)
    token_file = token_file_of(config)
    token: str | None = getattr(args, "token", None)
    source = "--token"
    if not token and os.environ.get(TOKEN_ENV):
        token, source = os.environ[TOKEN_ENV], TOKEN_ENV
    if not token and need_token:
        token, source = read_token_file(token_file), str(token_file)
    if not token and need_token:
        raise CliError(
            f"no API token: pass --token, set {TOKEN_ENV}, or run `mdm login --token TOKEN` "
            f"(stores it in {token_file})"
        )
    return Settings(url, token.strip() if token else None, source, token_file, _ca_file(config))


def _ca_file(config: Config) -> Path | None:
    """client.ca_file, else the server's root CA in the data directory, else None (system store)."""
    if config.client.ca_file:
        return Path(config.client.ca_file).expanduser()
    default = config.ca_dir / "root.pem"
    try:
        return default if default.exists() else None
    except PermissionError:
        return default  # reported precisely when the TLS context is built


class ApiClient:
    """A small synchronous client: one request at a time is all a CLI command needs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        headers = {"Accept": "application/json", "User-Agent": "mdm-cli"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        self._http = httpx.Client(
            base_url=settings.url, headers=headers, timeout=settings.timeout, verify=self._verify()
        )

    def _verify(self) -> ssl.SSLContext | bool:
        if not self.settings.url.startswith("https://"):
            return False
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

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

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
    ) -> httpx.Response:
        """The raw response, whatever its status; transport failures become one-line CliErrors."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            return self._http.request(method, path, params=clean, json=json)
        except httpx.HTTPError as exc:
            raise CliError(self._transport_message(exc)) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

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

    def _transport_message(self, exc: httpx.HTTPError) -> str:
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
        if any(isinstance(c, ConnectionRefusedError) for c in chain) or "refused" in str(exc).lower():
            return (
                f"cannot connect to {url}: connection refused (is `mdm serve` running? "
                "check --url / client.url and listeners.admin.port)"
            )
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer from {url} within {self.settings.timeout:.0f}s ({type(exc).__name__})"
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"{url} closed the connection or did not speak HTTP ({exc}); does --url match the scheme?"
        return f"cannot reach {url}: {exc or type(exc).__name__}"


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def error_line(response: httpx.Response) -> str:
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
