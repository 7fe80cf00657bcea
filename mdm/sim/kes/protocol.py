"""The agent's side of the messages of ``docs/kes-protocol.md`` (version 1): what it sends, and
the error answers it reads. Every POST carries a fresh ``request_id`` (a UUID); a resend of the
same request keeps it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mdm.sim.kes.commands import Outcome, inventory
from mdm.sim.kes.facts import AGENT_VERSION
from mdm.sim.kes.state import AgentState

VERSION = 1
JSON = "application/json"
INFO, REGISTER, CERTIFICATE = "/kes/v1/info", "/kes/v1/register", "/kes/v1/certificate"
SYNC, MUGSHOT, UNENROLL = "/kes/v1/sync", "/kes/v1/mugshot", "/kes/v1/unenroll"


class KesError(Exception):
    """The server refused a request: its status and machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


def error_of(status: int, body: bytes, headers: dict[str, str]) -> KesError:
    try:
        err = json.loads(body)["error"]
        return KesError(status, str(err.get("code", "")), str(err.get("message", "")), headers)
    except (ValueError, KeyError, TypeError):
        return KesError(status, "", body[:200].decode("utf-8", "replace"), headers)


def new_id() -> str:
    return str(uuid.uuid4())


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def register(state: AgentState, token: str) -> dict[str, Any]:
    f = state.facts
    device = {"device_id": f.android_id, "manufacturer": f.manufacturer, "model": f.model,
              "os_version": f.os_version, "serial": f.serial_number, "imei": f.imei,
              "agent_version": AGENT_VERSION}
    return {"v": VERSION, "request_id": new_id(), "token": token, "device": device, "fcm_token": f.fcm_token}


def certificate(csr_pem: str, token: str | None, android_id: str) -> dict[str, Any]:
    """A certificate request: with the enrollment token and the Android id the first time; a
    renewal (over mutual TLS with the current certificate) has neither."""
    message: dict[str, Any] = {"v": VERSION, "request_id": new_id(), "csr": csr_pem}
    if token is not None:
        message["token"] = token
        message["device_id"] = android_id
    return message


def result(outcome: Outcome) -> dict[str, Any]:
    out: dict[str, Any] = {"command_id": outcome.command_id,
                           "at": datetime.now(UTC).isoformat()}
    if outcome.error is None:
        out["status"] = "completed"
        if outcome.result:
            out["data"] = outcome.result
    else:
        out["status"] = "failed"
        out["error"] = f"{outcome.error[0]}: {outcome.error[1]}"[:1000]
    return out


@dataclass
class Report:
    """What the next sync carries: results, events, an inventory, and the status and local
    settings when they changed since they were last reported (a sync without any of them is an
    idle one, the only kind the server holds open as a long poll)."""

    results: list[dict[str, Any]]
    events: list[dict[str, Any]]
    send_inventory: bool
    send_status: bool = True
    send_local_settings: bool = True


def sync(state: AgentState, report: Report, wait: float = 0.0) -> dict[str, Any]:
    message: dict[str, Any] = {"v": VERSION, "request_id": new_id()}
    if report.send_status:
        message["status"] = state.status()
    if state.applied_policy_version:
        message["applied_policy_version"] = state.applied_policy_version
    if report.results:
        message["results"] = report.results
    if report.events:
        message["events"] = report.events
    if report.send_inventory:
        message["inventory"] = inventory(state)
    if state.local_settings and report.send_local_settings:
        message["local_settings"] = state.local_settings
    if wait > 0:
        message["wait"] = wait
    return message


def unenroll(reason: str = "user") -> dict[str, Any]:
    return {"v": VERSION, "request_id": new_id(), "reason": reason}
