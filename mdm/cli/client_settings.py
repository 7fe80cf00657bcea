"""Where the CLI finds the admin API, its token and the CA to trust: the connection options,
``mdm.toml``'s ``[client]`` section and admin listener, the token file (0600).

Cheap to import (the parsers of every client command use ``server_options``), and reading the
configuration does not load the pydantic model unless something in it needs explaining.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdm.cli.common import CliError

if TYPE_CHECKING:
    from mdm.config import Config


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


@dataclass(frozen=True)
class ClientView:
    """What the CLI needs of the configuration: where the admin API listens, the [client] section
    and the data directory (for the CA)."""

    data_path: Path
    url: str
    token_file: str
    ca_file: str
    admin_bind: str
    admin_port: int
    admin_mode: str

    @classmethod
    def of(cls, config: Config) -> ClientView:
        admin = config.listeners.admin
        return cls(config.data_path, config.client.url, config.client.token_file, config.client.ca_file,
                   admin.bind, admin.port, admin.mode)


# mdm.config's defaults and the one §11 variable the CLI reads (tests/test_cli_fast.py keeps
# them equal to what load_config gives).
DEFAULT_DATA_DIR = "/var/lib/mdm"
DEFAULT_ADMIN = {"bind": "0.0.0.0", "port": 13299, "mode": "tls"}  # noqa: S104 - compared with


def quick_view(data_dir: str | None, env: Mapping[str, str] | None = None) -> ClientView | None:
    """The ClientView read straight from mdm.toml when what the CLI uses is plainly valid, or None:
    then the full configuration model (pydantic, a third of a second to import) is loaded and
    reports whatever is wrong with the precise message. Other sections are not checked here."""
    env = os.environ if env is None else env
    directory = Path(data_dir or env.get("MDM_DATA_DIR") or DEFAULT_DATA_DIR)
    raw: dict[str, Any] = {}
    try:
        text = (directory / "mdm.toml").read_text()
    except FileNotFoundError:
        text = ""
    except OSError:
        return None
    if text:
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return None
    client, listeners = raw.get("client", {}), raw.get("listeners", {})
    admin = listeners.get("admin", {}) if isinstance(listeners, dict) else None
    if not isinstance(client, dict) or not isinstance(admin, dict):
        return None
    if set(admin) - {"enabled", "bind", "port", "mode", "trusted_proxies"}:
        return None
    if admin and "port" not in admin and not env.get("MDM_ADMIN_PORT"):
        return None  # the model's default port for a section without one is the one the server uses
    if set(client) - {"url", "token_file", "ca_file"} or not all(isinstance(v, str) for v in client.values()):
        return None
    settings = {**DEFAULT_ADMIN, **{k: v for k, v in admin.items() if k in DEFAULT_ADMIN}}
    port = settings["port"]
    if env.get("MDM_ADMIN_PORT"):  # text from the environment; in the file a port is a number
        text = env["MDM_ADMIN_PORT"]
        port = int(text) if text.isascii() and text.isdigit() else None
    if not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535):
        return None
    if not isinstance(settings["bind"], str) or settings["mode"] not in ("tls", "plain"):
        return None
    return ClientView(directory, client.get("url", ""), client.get("token_file", ""),
                      client.get("ca_file", ""), settings["bind"], port, settings["mode"])


def client_view(args: argparse.Namespace) -> ClientView:
    view = quick_view(getattr(args, "data_dir", None))
    if view is not None:
        return view
    from mdm.config import ConfigError
    from mdm.config_sections import load as load_config

    try:
        return ClientView.of(load_config(getattr(args, "data_dir", None)))
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None


def default_url(view: ClientView) -> str:
    host = "127.0.0.1" if view.admin_bind in _ANY_ADDRESS else view.admin_bind
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if view.admin_mode == "tls" else "http"
    return f"{scheme}://{host}:{view.admin_port}"


def token_file_of(view: ClientView) -> Path:
    return Path(view.token_file or DEFAULT_TOKEN_FILE).expanduser()


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
    config = client_view(args)
    url = (getattr(args, "url", None) or config.url or default_url(config)).rstrip("/")
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


def _ca_file(config: ClientView) -> Path | None:
    """client.ca_file, else the server's root CA in the data directory, else None (system store)."""
    if config.ca_file:
        return Path(config.ca_file).expanduser()
    default = config.data_path / "ca" / "root.pem"
    try:
        return default if default.exists() else None
    except PermissionError:
        return default  # reported precisely when the TLS context is built
