"""The command library (DESIGN §3): one vocabulary across protocols, and the registry where
protocol packages plug in their translations.

A protocol package registers a ``CommandTranslator`` for its protocol. At enqueue time the
translator validates the arguments and produces the protocol payload (an iOS command dict, a
KES JSON command, an EAS cmdlet description) that is stored with the command; the protocol's
command channel delivers that payload. Until a translator is registered for a protocol, commands
are queued with their arguments only and translated when a handler exists.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as TypingProtocol

from mdm.core.errors import InvalidArgument, Unsupported
from mdm.db.models import Device, Protocol

IOS, KES, EAS = Protocol.IOS, Protocol.KES, Protocol.EAS


@dataclass(frozen=True)
class CommandType:
    name: str
    description: str
    protocols: frozenset[Protocol]
    # Higher runs first; destructive/security commands jump the queue.
    priority: int = 0
    arg_names: tuple[str, ...] = field(default=())


def _t(name: str, description: str, protocols: set[Protocol], priority: int = 0) -> CommandType:
    return CommandType(name, description, frozenset(protocols), priority)


LIBRARY: dict[str, CommandType] = {
    c.name: c
    for c in (
        _t("Block", "Lock the device", {IOS, KES}, priority=50),
        _t("Unblock", "Unlock the device / clear its passcode", {IOS, KES}, priority=40),
        _t("ResetPassword", "Reset the device passcode", {IOS, KES}, priority=40),
        _t("Wipe", "Factory reset / erase the device", {IOS, KES, EAS}, priority=100),
        _t("SoftWipe", "Remove corporate data only", {IOS, KES}, priority=60),
        _t("Locate", "Report the device location", {IOS, KES}, priority=30),
        _t("Alarm", "Play a sound on the device", {IOS, KES}, priority=30),
        _t("Mugshot", "Take a photo with the front camera", {KES}, priority=30),
        _t("InstallConfProf", "Install a configuration profile", {IOS}),
        _t("DeleteConfProf", "Remove a configuration profile", {IOS}),
        _t("InstallProvProf", "Install a provisioning profile", {IOS}),
        _t("DeleteProvProf", "Remove a provisioning profile", {IOS}),
        _t("InstallApplication", "Install an application", {IOS, KES}),
        _t("DeleteApplication", "Remove an application", {IOS, KES}),
        _t("EnterRedemptionCode", "Apply an app redemption code", {IOS}),
        _t("EditRoamingSettings", "Change voice/data roaming", {IOS}),
        _t("RefreshDeviceInfo", "Refresh inventory", {IOS, KES, EAS}, priority=10),
        _t("Remove", "Stop managing the device", {IOS, KES, EAS}, priority=20),
        _t("Raw", "A protocol command given verbatim (power users)", {IOS}),
        # Exchange ActiveSync: these act on the mailbox of the device's owner (Set-CASMailbox).
        _t("EnableActiveSync", "Allow ActiveSync for the owner's mailbox", {EAS}, priority=20),
        _t("DisableActiveSync", "Block ActiveSync for the owner's mailbox", {EAS}, priority=50),
        _t("AssignEasPolicy", "Assign an ActiveSync mailbox policy to the owner's mailbox", {EAS}),
    )
}


class CommandTranslator(TypingProtocol):
    """Turns a library command into the protocol's payload; raises InvalidArgument/Unsupported.

    A translator may also define ``public_args(command_type, args) -> dict``: the arguments as
    stored with the command and shown in its log, with secrets (passwords, keys) masked. The
    payload keeps them; it is what the device needs.

    It may also define ``arg_schema(command_type) -> dict | None``: the JSON Schema of the
    command's arguments on its protocol, published by ``GET /api/v1/command-types?args=true``.

    And ``bulk_key(command_type, args) -> BulkKey | None``: what the translation of this command
    depends on, so that a bulk operation translates once per *variant* (devices with the same key
    get the same payload) instead of once per device. None (or no ``bulk_key``): the translation
    reads per-device detail (inventory...), and a bulk operation translates each device.
    ``check_args(command_type, args)`` validates the arguments alone (InvalidArgument), before a
    bulk operation is recorded.
    """

    def translate(self, command_type: str, args: dict[str, Any], device: Device) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """The few columns of a device that a bulk variant key may read (read with Core, no ORM).
    ``attributes`` is read only when the key asks for it (``BulkKey.attributes``), else empty."""

    id: int
    protocol: int
    os_name: str | None
    model: str | None
    attributes: Mapping[str, Any]

    def as_device(self) -> Device:
        """A transient (never added) device with these facts, to translate a variant with."""
        return Device(id=self.id, protocol=self.protocol, os_name=self.os_name, model=self.model,
                      attributes=dict(self.attributes), inventory={})


@dataclass(frozen=True, slots=True)
class BulkKey:
    """``key(facts)``: devices with equal keys get the same payload (and the same error)."""

    key: Callable[[DeviceFacts], Hashable]
    attributes: bool = False  # the key reads ``facts.attributes``


def _protocol_only(facts: DeviceFacts) -> Hashable:
    return None


class Translators:
    """The command translators by protocol, registered by platform plugins at start-up and passed
    to whatever enqueues or delivers commands (``ServerContext.translators``)."""

    def __init__(self) -> None:
        self._by_protocol: dict[Protocol, CommandTranslator] = {}

    def register(self, protocol: Protocol, translator: CommandTranslator) -> None:
        self._by_protocol[protocol] = translator

    def unregister(self, protocol: Protocol) -> None:
        self._by_protocol.pop(protocol, None)

    def get(self, protocol: Protocol | int) -> CommandTranslator | None:
        return self._by_protocol.get(Protocol(protocol))

    def public_args(self, command_type: CommandType, args: dict[str, Any], device: Device) -> dict[str, Any]:
        """The arguments to store and show: secrets masked when the translator knows which they are."""
        mask = getattr(self.get(device.protocol), "public_args", None)
        return dict(mask(command_type.name, args)) if callable(mask) else args

    def translate(self, command_type: CommandType, args: dict[str, Any], device: Device) -> dict[str, Any]:
        """The protocol payload, or {} when no translator is registered yet for the protocol."""
        check_supported(command_type, device)
        translator = self.get(device.protocol)
        if translator is None:
            return {}
        return translator.translate(command_type.name, args, device)

    def bulk_key(self, command_type: CommandType, args: dict[str, Any], protocol: Protocol) -> BulkKey | None:
        """What the translation of this command on ``protocol`` depends on (see
        ``CommandTranslator``); without a translator the payload is {} for every device."""
        translator = self.get(protocol)
        if translator is None:
            return BulkKey(_protocol_only)
        describe = getattr(translator, "bulk_key", None)
        key: BulkKey | None = describe(command_type.name, args) if callable(describe) else None
        return key

    def check_args(self, command_type: CommandType, args: dict[str, Any]) -> None:
        """Validate the arguments alone, before a bulk operation: InvalidArgument (the first
        protocol's) when no protocol of the command takes them. A protocol whose translator cannot
        check them alone (no ``check_args``) takes anything; devices of a protocol that refuses
        them are skipped with the reason when the operation reaches them."""
        first: InvalidArgument | None = None
        for protocol in sorted(command_type.protocols):
            check = getattr(self.get(protocol), "check_args", None)
            if not callable(check):
                return
            try:
                check(command_type.name, args)
            except InvalidArgument as exc:
                first = first or exc
            else:
                return
        if first is not None:
            raise first

    def arg_schema(self, command_type: str, protocol: Protocol) -> dict[str, Any] | None:
        """The JSON Schema of the command's arguments on ``protocol``, when its translator
        describes it (``arg_schema``)."""
        describe = getattr(self.get(protocol), "arg_schema", None)
        schema: dict[str, Any] | None = describe(command_type) if callable(describe) else None
        return schema


def lookup(name: str) -> CommandType:
    try:
        return LIBRARY[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown command type {name!r}", allowed=sorted(LIBRARY)
        ) from None


def check_supported(command_type: CommandType, device: Device) -> None:
    protocol = Protocol(device.protocol)
    if protocol not in command_type.protocols:
        raise Unsupported(
            f"{command_type.name} is not supported on {protocol.name.lower()} devices",
            supported=sorted(p.name.lower() for p in command_type.protocols),
        )
