"""How a simulated device rejects a command: malformed arguments, missing rights, unsupervised."""

from __future__ import annotations

from typing import Any

from mdm.sim.state import DeviceState


class CommandFailed(Exception):
    """The device ran the command and it failed: ``Status = Error`` with an ErrorChain."""

    def __init__(self, *chain: tuple[str, int, str]) -> None:
        super().__init__(chain[0][2])
        self.chain = [
            {
                "ErrorCode": code,
                "ErrorDomain": domain,
                "LocalizedDescription": text,
                "USEnglishDescription": text,
            }
            for domain, code, text in chain
        ]


class FormatError(Exception):
    """The command is malformed (missing or mistyped keys): ``Status = CommandFormatError``."""


_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "data": bytes,
    "integer": int,
    "boolean": bool,
    "array": list,
    "dictionary": dict,
    "real": (int, float),
}


def arg(command: dict[str, Any], key: str, kind: str, *, required: bool = False) -> Any:
    value = command.get(key)
    if value is None:
        if required:
            raise FormatError(f"{command.get('RequestType')}: required key {key} is missing")
        return None
    expected = _TYPES[kind]
    if not isinstance(value, expected) or (kind == "integer" and isinstance(value, bool)):
        raise FormatError(f"{command.get('RequestType')}: {key} must be <{kind}>")
    return value


def require_rights(state: DeviceState, right: int, request: str) -> None:
    if not state.has(right):
        raise CommandFailed(
            ("MCMDMErrorDomain", 12007, f"The MDM server is not authorized to perform “{request}”.")
        )


def require_supervised(state: DeviceState, request: str) -> None:
    if not state.supervised:
        raise CommandFailed(
            (
                "MCMDMErrorDomain",
                12078 if state.lost_mode else 12007,
                f"“{request}” is available only on supervised devices.",
            ),
            ("MCChaperoneErrorDomain", 29000, "The device is not supervised."),
        )
