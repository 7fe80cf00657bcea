"""Exchange Management Shell cmdlets as typed objects (DESIGN §8).

A ``Cmdlet`` is a name, typed parameter values and switches. The runner turns it into a PSRP
command with ``PowerShell.add_cmdlet(name).add_parameter(k, v)``: nothing is ever built as script
text (Exchange's remote endpoint runs in NoLanguage mode, and string building is an injection
hole: a value with quotes, semicolons or ``$(...)`` must reach the server as a plain value).

Names follow the server's version: Exchange 2010 knows only the ``*-ActiveSync*`` names, 2013 and
later also the ``*-MobileDevice*`` ones. A cmdlet carries its *logical* (2010) name; ``Naming``
gives the name to send, found once per connection by the runner (``Naming.detect``).

The constructors below are the only cmdlets this service runs; they are exactly the rights the
service account needs (docs/eas.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

# A parameter value as it crosses PSRP: str, int, bool, a list of str, a TimeSpan, or $null.
ParamValue = str | int | bool | list[str] | timedelta | None


class Naming(enum.Enum):
    """Which cmdlet names the connected server has."""

    EXCHANGE_2010 = "2010"  # *-ActiveSyncDevice*, *-ActiveSyncMailboxPolicy
    EXCHANGE_2013 = "2013"  # *-MobileDevice*, *-MobileDeviceMailboxPolicy (2013 and later)


# Logical (2010) name -> the 2013+ name. Names not listed are the same on every version.
_MODERN: Mapping[str, str] = {
    "Get-ActiveSyncDeviceStatistics": "Get-MobileDeviceStatistics",
    "Remove-ActiveSyncDevice": "Remove-MobileDevice",
    "Clear-ActiveSyncDevice": "Clear-MobileDevice",
    "Get-ActiveSyncMailboxPolicy": "Get-MobileDeviceMailboxPolicy",
    "New-ActiveSyncMailboxPolicy": "New-MobileDeviceMailboxPolicy",
    "Set-ActiveSyncMailboxPolicy": "Set-MobileDeviceMailboxPolicy",
    "Remove-ActiveSyncMailboxPolicy": "Remove-MobileDeviceMailboxPolicy",
}
# The 2013+ policy cmdlets (*-MobileDeviceMailboxPolicy) also renamed these parameters (and the
# properties Get- shows): logical (2010) parameter name -> the 2013+ one.
_MODERN_POLICY_PARAMETERS: Mapping[str, str] = {
    "DevicePasswordEnabled": "PasswordEnabled",
    "MinDevicePasswordLength": "MinPasswordLength",
    "AlphanumericDevicePasswordRequired": "AlphanumericPasswordRequired",
    "MinDevicePasswordComplexCharacters": "MinPasswordComplexCharacters",
    "AllowSimpleDevicePassword": "AllowSimplePassword",
    "MaxInactivityTimeDeviceLock": "MaxInactivityTimeLock",
    "MaxDevicePasswordFailedAttempts": "MaxPasswordFailedAttempts",
    "DevicePasswordExpiration": "PasswordExpiration",
    "DevicePasswordHistory": "PasswordHistory",
}
_POLICY_CMDLETS = frozenset({"New-ActiveSyncMailboxPolicy", "Set-ActiveSyncMailboxPolicy"})
# The name whose presence tells a 2013+ server (``Get-Command -Name <probe>``).
NAMING_PROBE = _MODERN["Get-ActiveSyncDeviceStatistics"]


@dataclass(frozen=True, slots=True)
class Cmdlet:
    """One cmdlet invocation. ``logical_name`` is the 2010 name; ``name(naming)`` the one to send.
    ``parameters`` keep their order; a switch is a parameter without a value (``-Name``);
    ``destructive`` cmdlets also get ``-Confirm:$false`` (added by ``parameters_for``)."""

    logical_name: str
    parameters: tuple[tuple[str, ParamValue], ...] = ()
    switches: tuple[str, ...] = ()
    destructive: bool = False
    # For logs and the command log: parameter names whose values are not shown.
    secret_parameters: frozenset[str] = field(default_factory=frozenset)

    def name(self, naming: Naming) -> str:
        if naming is Naming.EXCHANGE_2013:
            return _MODERN.get(self.logical_name, self.logical_name)
        return self.logical_name

    def parameters_for(self, naming: Naming = Naming.EXCHANGE_2010) -> list[tuple[str, ParamValue]]:
        """The named parameters to send, ``Confirm=False`` last for destructive cmdlets; with
        2013+ names, the policy cmdlets' renamed parameters under their new names."""
        params = list(self.parameters)
        if naming is Naming.EXCHANGE_2013 and self.logical_name in _POLICY_CMDLETS:
            params = [(_MODERN_POLICY_PARAMETERS.get(k, k), v) for k, v in params]
        if self.destructive:
            params.append(("Confirm", False))
        return params

    def describe(self, naming: Naming = Naming.EXCHANGE_2010) -> str:
        """A one-line rendering for logs and the command log (never sent anywhere)."""
        parts = [self.name(naming)]
        for key, value in self.parameters_for():
            shown = "***" if key in self.secret_parameters else repr(value)
            parts.append(f"-{key} {shown}")
        parts.extend(f"-{s}" for s in self.switches)
        return " ".join(parts)


def _params(**values: ParamValue) -> tuple[tuple[str, ParamValue], ...]:
    """Named parameters, leaving out those not given (None means "not given" here; a $null
    value is passed with an explicit tuple)."""
    return tuple((k, v) for k, v in values.items() if v is not None)


# ---- session --------------------------------------------------------------------------------


def set_ad_server_settings(*, view_entire_forest: bool) -> Cmdlet:
    """Scan scope: the whole forest or the current domain (per runspace: the runner sends it as
    the first statement of every pipeline when the scope is the forest)."""
    return Cmdlet("Set-AdServerSettings", _params(ViewEntireForest=view_entire_forest))


def get_command(name: str) -> Cmdlet:
    """Does the session have this cmdlet (the naming probe)? ``-ErrorAction SilentlyContinue``:
    an unknown name gives no output instead of an error."""
    return Cmdlet("Get-Command", _params(Name=name, ErrorAction="SilentlyContinue"))


def get_accepted_domain() -> Cmdlet:
    return Cmdlet("Get-AcceptedDomain")


# ---- mailboxes ------------------------------------------------------------------------------


def get_cas_mailbox(*, identity: str | None = None, with_partnership_only: bool = False,
                    result_size: int | None = None) -> Cmdlet:
    """Client Access settings of mailboxes. ``result_size`` None: ``-ResultSize Unlimited``.
    ``with_partnership_only``: only mailboxes that have an ActiveSync device (an OPATH filter,
    which is a parameter value, not script)."""
    return Cmdlet("Get-CASMailbox", _params(
        Identity=identity,
        Filter="HasActiveSyncDevicePartnership -eq $true" if with_partnership_only else None,
        ResultSize=str(result_size) if result_size is not None else "Unlimited",
    ))


def set_cas_mailbox(identity: str, *, activesync_enabled: bool | None = None,
                    policy: str | None = None) -> Cmdlet:
    """Switch ActiveSync on or off for an account, or assign its ActiveSync mailbox policy."""
    if activesync_enabled is None and policy is None:
        raise ValueError("set_cas_mailbox needs activesync_enabled or policy")
    return Cmdlet("Set-CASMailbox", _params(
        Identity=identity, ActiveSyncEnabled=activesync_enabled, ActiveSyncMailboxPolicy=policy,
    ))


# ---- devices --------------------------------------------------------------------------------


def get_device_statistics(*, mailbox: str) -> Cmdlet:
    """Every ActiveSync device of a mailbox, with its statistics."""
    return Cmdlet("Get-ActiveSyncDeviceStatistics", _params(Mailbox=mailbox))


def clear_device(identity: str) -> Cmdlet:
    """Remote wipe. Exchange keeps wiping the device at every sync until it is removed."""
    return Cmdlet("Clear-ActiveSyncDevice", _params(Identity=identity), destructive=True)


def remove_device(identity: str) -> Cmdlet:
    """Remove the device's partnership from the mailbox."""
    return Cmdlet("Remove-ActiveSyncDevice", _params(Identity=identity), destructive=True)


# ---- ActiveSync mailbox policies ------------------------------------------------------------


def get_policy(identity: str | None = None) -> Cmdlet:
    return Cmdlet("Get-ActiveSyncMailboxPolicy", _params(Identity=identity))


def new_policy(name: str, settings: Mapping[str, ParamValue]) -> Cmdlet:
    """``settings``: Exchange parameter names to typed values (``records.PolicySettings.to_parameters``)."""
    return Cmdlet("New-ActiveSyncMailboxPolicy", (("Name", name), *settings.items()))


def set_policy(identity: str, settings: Mapping[str, ParamValue]) -> Cmdlet:
    return Cmdlet("Set-ActiveSyncMailboxPolicy", (("Identity", identity), *settings.items()))


def remove_policy(identity: str) -> Cmdlet:
    return Cmdlet("Remove-ActiveSyncMailboxPolicy", _params(Identity=identity), destructive=True)


# The rights the service account needs, by logical name (docs/eas.md lists them).
REQUIRED_CMDLETS = (
    "Get-CASMailbox", "Set-CASMailbox", "Remove-ActiveSyncDevice", "Clear-ActiveSyncDevice",
    "Get-ActiveSyncDeviceStatistics", "Get-AcceptedDomain", "Set-AdServerSettings",
    "Get-ActiveSyncMailboxPolicy", "New-ActiveSyncMailboxPolicy", "Set-ActiveSyncMailboxPolicy",
    "Remove-ActiveSyncMailboxPolicy",
)


def modern_name(logical_name: str) -> str:
    return _MODERN.get(logical_name, logical_name)


def legacy_policy_properties(rec: Mapping[str, object]) -> dict[str, object]:
    """A 2013+ policy object's properties under their 2010 names as well (parsers read those)."""
    out = dict(rec)
    for old, new in _MODERN_POLICY_PARAMETERS.items():
        if old not in out and new in out:
            out[old] = out[new]
    return out


def logical_name(name: str) -> str:
    """The logical (2010) name of a 2010 or 2013+ name (the fake and the logs use it)."""
    for old, new in _MODERN.items():
        if name.lower() == new.lower():
            return old
    return name
