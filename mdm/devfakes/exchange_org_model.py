"""The objects of the fake Exchange organisation (``exchange_org``): what a cmdlet writes
(``PSOut``), the error record it raises (``ExchangeFault``), the per-runspace ``SessionState``,
and the stored mailboxes, device partnerships and ActiveSync mailbox policies with the properties
Exchange shows for them.

Stored entries are ``slots`` dataclasses and devices hang off their mailbox in a dict, so that an
organisation of 50,000 mailboxes and 100,000 devices stays small and a mailbox's devices are found
without a scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

CASMAILBOX_TYPES = (
    "Microsoft.Exchange.Data.Directory.Management.CASMailbox",
    "Microsoft.Exchange.Data.Directory.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "System.Object",
)
DEVICE_TYPES_2010 = (
    "Microsoft.Exchange.Management.Tasks.ActiveSyncDeviceConfiguration",
    "System.Object",
)
DEVICE_TYPES_2013 = (
    "Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration",
    "System.Object",
)
POLICY_TYPES_2010 = (
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ActiveSyncMailboxPolicy",
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "System.Object",
)
POLICY_TYPES_2013 = (
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileMailboxPolicy",
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "System.Object",
)
ACCEPTED_DOMAIN_TYPES = (
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.AcceptedDomain",
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "System.Object",
)
COMMAND_TYPES = (
    "System.Management.Automation.FunctionInfo",
    "System.Management.Automation.CommandInfo",
    "System.Object",
)
DEVICES_CONTAINER = "/ExchangeActiveSyncDevices/"


@dataclass(slots=True)
class PSOut:
    """One object a cmdlet writes to its output."""

    type_names: tuple[str, ...]
    properties: dict[str, Any]
    to_string: str


class ExchangeFault(Exception):
    """A PowerShell error record written by a cmdlet (the wire fake sends it as an ErrorRecord)."""

    def __init__(self, message: str, *, error_id: str, category: str,
                 exception_type: str = "System.Management.Automation.RuntimeException",
                 target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category
        self.exception_type = exception_type
        self.target = target


@dataclass(slots=True)
class SessionState:
    """What a runspace remembers between pipelines."""

    view_entire_forest: bool = False


class Call(NamedTuple):
    """One executed cmdlet as it arrived: who, the name as sent, the parameters as received."""

    principal: str
    name: str
    params: dict[str, Any]


@dataclass(slots=True, eq=False)
class DeviceEntry:
    """One ActiveSync partnership: a device (DeviceID) syncing one mailbox."""

    mailbox: MailboxEntry
    device_id: str
    device_type: str
    model: str | None
    os: str | None
    friendly_name: str | None
    imei: str | None
    user_agent: str | None
    first_sync: datetime | None
    last_success_sync: datetime | None
    last_sync_attempt: datetime | None
    policy_applied: str | None
    policy_status: str = "AppliedInFull"
    access_state: str = "Allowed"
    wipe_requested: datetime | None = None
    wipe_sent: datetime | None = None
    wipe_ack: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.device_type}§{self.device_id}"

    @property
    def identity(self) -> str:
        return f"{self.mailbox.identity}{DEVICES_CONTAINER}{self.key}"

    @property
    def status(self) -> str:
        if self.wipe_ack is not None:
            return "DeviceWipeSucceeded"
        if self.wipe_requested is not None:
            return "DeviceWipePending"
        return "DeviceOk"

    def out(self, modern: bool) -> PSOut:
        """As Get-ActiveSyncDeviceStatistics (``modern``: Get-MobileDeviceStatistics) shows it."""
        identity = self.identity
        props: dict[str, Any] = {
            "Identity": identity,
            "Guid": None,
            "DeviceID": self.device_id,
            "DeviceType": self.device_type,
            "DeviceModel": self.model,
            "DeviceOS": self.os,
            "DeviceFriendlyName": self.friendly_name,
            "DeviceIMEI": self.imei,
            "DeviceUserAgent": self.user_agent,
            "DeviceMobileOperator": None,
            "FirstSyncTime": self.first_sync,
            "LastSuccessSync": self.last_success_sync,
            "LastSyncAttemptTime": self.last_sync_attempt,
            "DevicePolicyApplied": self.policy_applied,
            "DevicePolicyApplicationStatus": self.policy_status,
            "DeviceAccessState": self.access_state,
            "DeviceAccessStateReason": "Global",
            "Status": self.status,
            "DeviceWipeRequestTime": self.wipe_requested,
            "DeviceWipeSentTime": self.wipe_sent,
            "DeviceWipeAckTime": self.wipe_ack,
            "LastPolicyUpdateTime": self.first_sync,
            "DeviceActiveSyncVersion": "16.1",
        }
        types = DEVICE_TYPES_2013 if modern else DEVICE_TYPES_2010
        return PSOut(types, props, identity)


@dataclass(slots=True, eq=False)
class MailboxEntry:
    """A mailbox with its Client Access settings and its device partnerships."""

    domain: str
    name: str
    display_name: str
    sam_account_name: str
    primary_smtp: str
    guid: str
    activesync_enabled: bool = True
    policy: str | None = None  # None: the organisation's default policy applies
    # Exchange sets the partnership flag with the first device and never clears it.
    has_partnership: bool = False
    devices: dict[str, DeviceEntry] = field(default_factory=dict)  # key "type§id" lower-cased

    @property
    def identity(self) -> str:
        return f"{self.domain}/Users/{self.name}"

    @property
    def distinguished_name(self) -> str:
        dcs = ",".join(f"DC={part}" for part in self.domain.split("."))
        return f"CN={self.name},CN=Users,{dcs}"

    def out(self, default_policy: str) -> PSOut:
        identity = self.identity
        props: dict[str, Any] = {
            "Identity": identity,
            "Guid": self.guid,
            "Name": self.name,
            "DisplayName": self.display_name,
            "SamAccountName": self.sam_account_name,
            "PrimarySmtpAddress": self.primary_smtp,
            "DistinguishedName": self.distinguished_name,
            "ActiveSyncEnabled": self.activesync_enabled,
            "ActiveSyncMailboxPolicy": self.policy if self.policy is not None else default_policy,
            "ActiveSyncMailboxPolicyIsDefaulted": self.policy is None,
            "HasActiveSyncDevicePartnership": self.has_partnership,
            "OWAEnabled": True,
            "EwsEnabled": True,
        }
        return PSOut(CASMAILBOX_TYPES, props, identity)


@dataclass(slots=True, eq=False)
class PolicyEntry:
    """An ActiveSync mailbox policy: its name is its identity."""

    name: str
    guid: str
    is_default: bool
    settings: dict[str, Any]  # 2010 parameter name -> stored value (see exchange_org_params)
    when_changed: datetime | None = None

    def out(self, modern: bool, settings: dict[str, Any]) -> PSOut:
        """As the 2010 (or, ``modern``, the 2013+) Get cmdlet shows it; ``settings`` are already
        under that flavour's names."""
        props: dict[str, Any] = {"Identity": self.name, "Name": self.name, "Guid": self.guid}
        if modern:
            props["IsDefault"] = self.is_default
            types = POLICY_TYPES_2013
        else:
            props["IsDefaultPolicy"] = self.is_default
            types = POLICY_TYPES_2010
        props.update(settings)
        props["WhenChanged"] = self.when_changed
        return PSOut(types, props, self.name)
