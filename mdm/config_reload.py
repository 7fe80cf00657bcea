"""Applying an edited configuration to a running server (``mdm reload``, SIGHUP).

Each feature declares which of its keys it can take at run time, as ``HotKeys`` in its plugin:
either its code reads them from ``ctx.config`` at every use (no callback needed), or the callback
moves the new values into the service it built at start-up. A key is a dotted name (``logging.level``)
or a whole section (``enroll``). Every other changed key needs a restart: the running server keeps
its old value for it, so the configuration in use is always one that was validated as a whole.

This module does not import the server; the callbacks receive the ``ServerContext``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mdm.config import Config, ConfigError
from mdm.logs import redact

# Called with the ServerContext once ``ctx.config`` holds the new configuration.
Apply = Callable[[Any], Awaitable[None] | None]
_MISSING = object()


@dataclass(frozen=True)
class HotKeys:
    keys: tuple[str, ...]
    apply: Apply | None


def hot(*keys: str, apply: Apply | None = None) -> HotKeys:
    """``keys`` (dotted keys or whole sections) applied at run time, by ``apply`` if given."""
    return HotKeys(tuple(keys), apply)


def _covers(pattern: str, key: str) -> bool:
    return key == pattern or key.startswith(pattern + ".")


def is_hot(key: str, declared: Sequence[HotKeys]) -> bool:
    return any(_covers(p, key) for h in declared for p in h.keys)


def tree(config: Config) -> dict[str, Any]:
    """The configuration as the nested tables of mdm.toml (aliases such as ``logging.json``)."""
    out: dict[str, Any] = config.model_dump(mode="json", by_alias=True)
    for name, model in config.extensions.items():
        out[name] = model.model_dump(mode="json", by_alias=True)
    return out


def flatten(config: Config) -> dict[str, Any]:
    """Dotted key -> value for every leaf (lists are leaves)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[prefix] = node

    walk("", tree(config))
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


# Keys whose value is a secret: left out of fingerprints. A fast hash of a passphrase in a file
# that backups copy would be a shortcut past the slow KDF protecting the CA keys.
_SECRET_PARTS = ("passphrase", "password", "secret", "static_challenge", "token")


def fingerprint(config: Config) -> dict[str, str]:
    """Dotted key -> SHA-256 of its value: compares two configurations without writing values
    into the run-state file. Secret keys are left out and passwords in URLs masked first."""
    out: dict[str, str] = {}
    for key, value in flatten(config).items():
        leaf = key.rsplit(".", 1)[-1]
        if any(part in leaf for part in _SECRET_PARTS) and not leaf.endswith("_file"):
            continue
        if isinstance(value, str):
            value = redact(value)
        out[key] = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    return out


@dataclass
class Plan:
    """What a reload does: the configuration to run with, the keys applied and those that wait
    for a restart, and the callbacks of the features whose keys changed."""

    config: Config
    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    callbacks: list[Apply] = field(default_factory=list)


def plan(old: Config, new: Config, declared: Sequence[HotKeys]) -> Plan:
    applied: list[str] = []
    restart: list[str] = []
    callbacks: list[Apply] = []
    for key in changed_keys(old, new):
        owners = [h for h in declared if any(_covers(p, key) for p in h.keys)]
        if not owners:
            restart.append(key)
            continue
        applied.append(key)
        for owner in owners:
            if owner.apply is not None and owner.apply not in callbacks:
                callbacks.append(owner.apply)
    config = _merge(old, new, applied) if restart else new
    return Plan(config, applied, restart, callbacks)


def _merge(old: Config, new: Config, keys: list[str]) -> Config:
    """``old`` with the values of ``keys`` taken from ``new``, validated again."""
    merged, source = tree(old), tree(new)
    for key in keys:
        *parents, leaf = key.split(".")
        src: Any = source
        dst: Any = merged
        for part in parents:
            src = src.get(part, {}) if isinstance(src, dict) else {}
            dst = dst.setdefault(part, {})
        if isinstance(src, dict) and leaf in src:
            dst[leaf] = src[leaf]
        else:
            dst.pop(leaf, None)
    models = {name: type(section) for name, section in old.extensions.items()}
    sections = {name: merged.pop(name, {}) for name in list(merged) if name in models}
    try:
        config = Config.model_validate(merged)
        for name, model in models.items():
            config.extensions[name] = model.model_validate(sections.get(name, {}))
    except ValidationError as exc:
        # Only a validator that ties a hot key to one that needs a restart gets here.
        raise ConfigError(
            "the changed keys cannot be applied without the ones that need a restart "
            f"({exc.error_count()} problem(s)); restart the server"
        ) from None
    return config


async def run_callbacks(callbacks: list[Apply], ctx: Any) -> list[str]:
    """Run each callback; a failing one is reported (by its name), the others still run."""
    problems: list[str] = []
    for callback in callbacks:
        try:
            result = callback(ctx)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            problems.append(f"{getattr(callback, '__qualname__', callback)}: {exc}")
    return problems
