"""Structured logging: text or JSON lines, a request id on every line, secrets never printed."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Values of these keys (in ``extra=`` or in messages as key=value) are replaced by "***".
_SECRET_KEYS = ("token", "password", "passphrase", "secret", "authorization", "challenge", "unlock")
_SECRET_PATTERN = re.compile(
    r"(?i)\b(" + "|".join(_SECRET_KEYS) + r")[a-z_]*(\s*[=:]\s*)(\S+)",
)
_QUOTED_SECRET = re.compile(r'(?i)("(?:' + "|".join(_SECRET_KEYS) + r')[a-z_]*"\s*:\s*)"(?:[^"\\]|\\.)*"')
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic|negotiate)\s+[A-Za-z0-9._~+/=-]+")
_API_TOKEN = re.compile(r"\bmdm_([0-9a-f]{8})_[A-Za-z0-9_-]+")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """Mask what looks like a secret: key=value / "key": "value" pairs with a secret-ish key,
    credentials after an auth scheme, API tokens, and passwords inside URLs."""
    text = _QUOTED_SECRET.sub(lambda m: f'{m.group(1)}"***"', text)
    text = _CREDENTIALS.sub(lambda m: f"{m.group(1)} ***", text)
    text = _API_TOKEN.sub(lambda m: f"mdm_{m.group(1)}_***", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}***@", text)
    return _SECRET_PATTERN.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _RESERVED or key.startswith("_"):
            continue
        if any(s in key.lower() for s in _SECRET_KEYS):
            value = "***"
        elif isinstance(value, str):
            value = redact(value)
        out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": request_id_var.get(),
            "msg": redact(record.getMessage()),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = request_id_var.get()
        extras = _extras(record)
        extras.pop("request_id", None)
        line = redact(super().format(record))
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


WIRE_LOGGERS = ("httpcore", "httpx", "h2", "hpack")


def setup_logging(json_lines: bool = False, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log duplicates ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The HTTP clients' wire loggers write request and answer headers at DEBUG (a core server's
    # session token, Authorization): never below INFO, whatever the service's level.
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def reconfigure_logging(json_lines: bool, level: str) -> None:
    """A reload: the new level and format on the handlers ``setup_logging`` installed."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter | TextFormatter):
            handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
