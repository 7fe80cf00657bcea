"""Executing the commands of a sync answer as an agent does, with realistic results.

Each command leaves the device in its new state and produces the result the next sync reports
(``protocol.result``): lock/unlock/reset_password change the state; locate reports a position with
its time; mugshot takes a real PNG and uploads it; install_apk downloads the APK and checks its
SHA-256 (a mismatch fails the command and installs nothing); wipe and wipe_corporate leave the
device wiped, after which the agent stops once the result is reported.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mdm.sim.kes.facts import App
from mdm.sim.kes.media import CONTENT_TYPE as PNG_TYPE
from mdm.sim.kes.media import png
from mdm.sim.kes.state import AgentState, Location

# (command id, picture bytes, content type) -> uploaded (raises on refusal)
Upload = Callable[[str, bytes, str], Awaitable[Any]]
Download = Callable[[str], Awaitable[bytes]]
MAX_APK_BYTES = 256 * 1024 * 1024


class CommandFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Outcome:
    """A command's result: ``result`` when it succeeded, ``error`` (code, message) when it failed."""

    command_id: str
    type: str
    result: dict[str, Any] | None = None
    error: tuple[str, str] | None = None
    # False when the command completes otherwise than by a result (a mugshot: by its picture).
    report: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor:
    def __init__(self, state: AgentState, upload: Upload, download: Download,
                 rng: random.Random | None = None) -> None:
        self.state = state
        self.upload = upload
        self.download = download
        self.rng = rng or random.Random()  # noqa: S311 - simulation data
        self.executed: list[Outcome] = []

    async def run(self, command: dict[str, Any]) -> Outcome:
        cid, kind = str(command.get("id", "")), str(command.get("type", ""))
        args = command.get("args") or {}
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            outcome = Outcome(cid, kind, error=("unsupported_command", f"this agent cannot {kind!r}"))
        else:
            try:
                outcome = Outcome(cid, kind, result=await handler(cid, args))
                outcome.report = kind != "mugshot"
            except CommandFailed as exc:
                outcome = Outcome(cid, kind, error=(exc.code, exc.message))
        self.executed.append(outcome)
        return outcome

    # ---- device state -------------------------------------------------------------------------

    async def _lock(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        self.state.locked = True
        self.state.lock_message = str(args.get("message", ""))
        return {"locked": True}

    async def _unlock(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        self.state.locked = False
        self.state.lock_message = ""
        return {"locked": False}

    async def _reset_password(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        self.state.password_resets += 1  # the password itself is neither kept nor echoed
        return {"password_set": bool(args.get("password"))}

    async def _alarm(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        self.state.alarms += 1
        return {"duration_seconds": int(args.get("duration_seconds", 10))}

    async def _locate(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        base = self.state.location
        lat = base.latitude if base else self.rng.uniform(-60, 60)
        lon = base.longitude if base else self.rng.uniform(-170, 170)
        self.state.location = Location(round(lat + self.rng.uniform(-1e-3, 1e-3), 6),
                                       round(lon + self.rng.uniform(-1e-3, 1e-3), 6),
                                       round(self.rng.uniform(5, 40), 1), datetime.now(UTC))
        return self.state.location.as_dict()

    async def _mugshot(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        picture = png(rng=self.rng)
        try:
            await self.upload(cid, picture, PNG_TYPE)
        except Exception as exc:  # the command fails with why the upload did
            raise CommandFailed("upload_failed", f"{type(exc).__name__}: {exc}") from None
        self.state.mugshots += 1
        return {"content_type": PNG_TYPE, "size": len(picture),
                "sha256": hashlib.sha256(picture).hexdigest()}

    # ---- applications ------------------------------------------------------------------------

    async def _install_apk(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        url, expected = str(args.get("url", "")), str(args.get("sha256", "")).lower()
        if not url.startswith("https://"):
            raise CommandFailed("bad_url", "the APK URL must be https")
        try:
            data = await self.download(url)
        except Exception as exc:  # any download failure fails the command
            raise CommandFailed("download_failed", f"{type(exc).__name__}: {exc}") from None
        self.state.downloads.append(url)
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, expected):
            raise CommandFailed("sha256_mismatch", f"the APK's SHA-256 is {actual}, not {expected}")
        package = str(args.get("package") or url.rsplit("/", 1)[-1].removesuffix(".apk"))
        apps = [a for a in self.state.facts.apps if a.package != package]
        apps.append(App(package, package, "1.0", actual))
        self.state.facts.apps = apps
        return {"package": package, "sha256": actual, "size": len(data)}

    async def _remove_apk(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        package = str(args.get("package", ""))
        before = len(self.state.facts.apps)
        self.state.facts.apps = [a for a in self.state.facts.apps if a.package != package]
        if len(self.state.facts.apps) == before:
            raise CommandFailed("not_installed", f"{package} is not installed")
        return {"package": package}

    async def _inventory(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"inventory": inventory(self.state)}

    # ---- the end of management ---------------------------------------------------------------

    async def _wipe(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        self.state.wiped = "full"
        return {"wiped": "full"}

    async def _wipe_corporate(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        self.state.wiped = "corporate"
        self.state.facts.apps = [a for a in self.state.facts.apps if not a.sha256]  # the managed ones
        return {"wiped": "corporate"}

    async def _unenroll(self, cid: str, args: dict[str, Any]) -> dict[str, Any]:
        self.state.unenrolled = True
        return {"unenrolled": True}


def inventory(state: AgentState) -> dict[str, Any]:
    """The device's information and its installed applications, as inventory parts."""
    apps = [a.as_dict() for a in state.facts.apps]
    return {"device_info": state.facts.device_info(), "apps": {"items": apps}}
