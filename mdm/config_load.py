"""Loading the configuration: ``DATA_DIR/mdm.toml`` read, overridden by environment variables,
validated into ``mdm.config.Config`` and the feature sections.

Validation happens once, at load, and every problem is reported as ``key: what was wrong
(allowed: ...)`` so that an administrator can fix the file without reading code.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mdm.config import CONFIG_FILE, DEFAULT_DATA_DIR, Config, ConfigError, Sections

# §11 contract: environment variable -> dotted config key.
ENV_OVERRIDES: dict[str, str] = {
    "MDM_DATABASE_URL": "database.url",
    "MDM_HOSTNAME": "hostname",
    "MDM_IOS_PORT": "listeners.ios.port",
    "MDM_KES_PORT": "listeners.kes.port",
    "MDM_WEB_HTTP_PORT": "listeners.web.http_port",
    "MDM_WEB_HTTPS_PORT": "listeners.web.https_port",
    "MDM_ADMIN_PORT": "listeners.admin.port",
    "MDM_LOG_JSON": "logging.json",
    "MDM_LOG_LEVEL": "logging.level",
    "MDM_CA_PASSPHRASE": "pki.passphrase",
}


NO_SECTIONS = Sections()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: cannot override, {part} is not a table")
        node = child
    node[leaf] = value


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Dotted key (and table) -> line number in a TOML text, to say where a bad value is.

    Hand-written because neither tomllib nor tomlkit exposes source positions. It follows table
    headers and ``key =`` lines, which is what mdm.toml holds; a value spanning lines (a multi-line
    array) is found at its first line, and lines inside it are skipped unless they look like keys.
    """
    found: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE.match(line)
        if header:
            table = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
            found.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            name = ".".join(part.strip().strip("\"'") for part in key.group(1).split("."))
            found.setdefault(f"{table}.{name}" if table else name, number)
    return found


def _format_errors(
    exc: ValidationError,
    prefix: str = "",
    sources: Mapping[str, str] | None = None,
    lines: Mapping[str, int] | None = None,
) -> str:
    """``key: problem (got value)``; a key set by an environment variable names the variable, a
    key from the file names its line."""
    out = []
    for err in exc.errors():
        dotted = prefix + ".".join(str(p) for p in err["loc"])
        key = dotted = dotted.rstrip(".") or "(top level)"
        if sources and key in sources:
            key = f"{key} (set by {sources[key]})"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the commented mdm.toml written by mdm init)"
        value = err.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict | list) and value is not None else ""
        where = ""
        if lines and not (sources and dotted in sources):
            line = lines.get(dotted) or lines.get(dotted.rsplit(".", 1)[0] if "." in dotted else "")
            where = f" [line {line}]" if line else ""
        out.append(f"{key}: {message}{shown}{where}")
    return "; ".join(out)


def load_config(
    data_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    require_file: bool = False,
    *,
    sections: Sections = NO_SECTIONS,
) -> Config:
    """Read ``DATA_DIR/mdm.toml`` (if present), apply environment overrides and validate; the
    feature tables are validated by ``sections`` (any other table is an unknown key)."""

    env = os.environ if env is None else env
    directory = Path(data_dir or env.get("MDM_DATA_DIR") or DEFAULT_DATA_DIR)
    path = directory / CONFIG_FILE
    raw: dict[str, Any] = {}
    text = ""
    if path.exists():
        try:
            text = path.read_text()
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    elif require_file:
        raise ConfigError(f"{path} does not exist; run `mdm init --data-dir {directory}` first")
    raw["data_dir"] = str(directory)
    from_env: dict[str, str] = {}
    for var, key in ENV_OVERRIDES.items():
        if var in env and env[var] != "":
            _set_dotted(raw, key, env[var])
            from_env[key] = var

    extension_raw = {name: raw.pop(name) for name in list(raw) if name in sections}
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = _format_errors(exc, sources=from_env, lines=key_lines(text))
        raise ConfigError(f"invalid configuration in {path}: {problems}") from None
    for name, model in sections:
        try:
            config.extensions[name] = model.model_validate(extension_raw.get(name, {}))
        except ValidationError as exc:
            problems = _format_errors(exc, prefix=name + ".", lines=key_lines(text))
            raise ConfigError(f"invalid configuration in {path}: {problems}") from None
    for section in config.extensions.values():
        try:
            section.check(config)
        except ValueError as exc:
            raise ConfigError(f"invalid configuration in {path}: [{section.name}] {exc}") from None
    return config
