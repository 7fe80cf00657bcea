"""Parameter binding for the fake Exchange organisation, as PowerShell and Exchange do it: names
are case-insensitive, an unknown name or a value of the wrong type is a ParameterBindingException,
an out-of-range value a validation error, and the error records carry the ids, categories and
exception types Exchange writes (so ``mdm.eas.faults`` sees what it would see from a real server).

The ActiveSync mailbox policy settings are typed here (``POLICY_SPECS``): the 2010 cmdlets
(``*-ActiveSyncMailboxPolicy``) take and show the 2010 names (``DevicePasswordEnabled``...), the
2013+ cmdlets (``*-MobileDeviceMailboxPolicy``) the 2013 names (``PasswordEnabled``...), as on a
real server. Values are stored by their 2010 name.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mdm.devfakes.exchange_org_model import ExchangeFault

_BINDING = "System.Management.Automation.ParameterBindingException"
_VALIDATION = "System.Management.Automation.ParameterBindingValidationException"
_NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
_AMBIGUOUS = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})$")
COMMON = ("ErrorAction", "WarningAction", "Verbose", "Debug", "DomainController")
DOMAIN_CONTROLLER = "DC1"


def task_error_id(name: str) -> str:
    """A FullyQualifiedErrorId as Exchange writes it: ``<8 hex>,<task class>``."""
    task = name.replace("-", "")
    return f"{zlib.crc32(name.lower().encode()):08X},Microsoft.Exchange.Management.Tasks.{task}"


def command_not_found(name: str) -> ExchangeFault:
    return ExchangeFault(
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or "
        "operable program. Check the spelling of the name, or if a path was included, verify that "
        "the path is correct and try again.",
        error_id="CommandNotFoundException", category="ObjectNotFound",
        exception_type="System.Management.Automation.CommandNotFoundException", target=name)


def no_such_parameter(name: str, param: str) -> ExchangeFault:
    return ExchangeFault(f"A parameter cannot be found that matches parameter name '{param}'.",
                         error_id=f"NamedParameterNotFound,{name}", category="InvalidArgument",
                         exception_type=_BINDING, target=param)


def missing_parameter(name: str, param: str) -> ExchangeFault:
    return ExchangeFault(
        f"Cannot process command because of one or more missing mandatory parameters: {param}.",
        error_id=f"MissingMandatoryParameter,{name}", category="InvalidArgument",
        exception_type=_BINDING, target=param)


def parameter_set(name: str) -> ExchangeFault:
    return ExchangeFault("Parameter set cannot be resolved using the specified named parameters.",
                         error_id=f"AmbiguousParameterSet,{name}", category="InvalidArgument",
                         exception_type=_BINDING)


def conversion(name: str, param: str, value: Any, to: str) -> ExchangeFault:
    shown = type(value).__name__ if not isinstance(value, str) else value
    extra = (" Boolean parameters accept only Boolean values and numbers, such as $True, $False, "
             "1 or 0." if to == "System.Boolean" else "")
    return ExchangeFault(
        f"Cannot process argument transformation on parameter '{param}'. Cannot convert value "
        f"\"{shown}\" to type \"{to}\".{extra}",
        error_id=f"ParameterArgumentTransformationError,{name}", category="InvalidData",
        exception_type=_BINDING, target=param)


def out_of_range(name: str, param: str, value: Any, lo: Any, hi: Any) -> ExchangeFault:
    return ExchangeFault(
        f"Cannot validate argument on parameter '{param}'. The argument \"{value}\" is not within "
        f"the valid range of \"{lo}\" to \"{hi}\".",
        error_id=f"ParameterArgumentValidationError,{name}", category="InvalidData",
        exception_type=_VALIDATION, target=param)


def null_not_allowed(name: str, param: str) -> ExchangeFault:
    return ExchangeFault(
        f"Cannot validate argument on parameter '{param}'. The argument is null or empty. Provide "
        "an argument that is not null or empty, and then try the command again.",
        error_id=f"ParameterArgumentValidationErrorNullNotAllowed,{name}", category="InvalidData",
        exception_type=_VALIDATION, target=param)


def not_found(name: str, identity: str) -> ExchangeFault:
    return ExchangeFault(
        f"The operation couldn't be performed because object '{identity}' couldn't be found on "
        f"'{DOMAIN_CONTROLLER}'.",
        error_id=task_error_id(name), category="ObjectNotFound", exception_type=_NOT_FOUND,
        target=identity)


def ambiguous(name: str, identity: str) -> ExchangeFault:
    return ExchangeFault(
        f"The operation couldn't be performed because '{identity}' matches multiple entries.",
        error_id=task_error_id(name), category="InvalidArgument", exception_type=_AMBIGUOUS,
        target=identity)


def invalid(name: str, message: str, *, category: str = "InvalidArgument",
            target: str | None = None,
            exception_type: str = "Microsoft.Exchange.Configuration.Tasks.TaskException",
            ) -> ExchangeFault:
    return ExchangeFault(message, error_id=task_error_id(name), category=category,
                         exception_type=exception_type, target=target)


def bind(name: str, params: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """Parameters by their canonical name; an unknown one is a binding error."""
    canonical = {p.lower(): p for p in (*allowed, *COMMON)}
    bound: dict[str, Any] = {}
    for key, value in params.items():
        real = canonical.get(str(key).lower())
        if real is None:
            raise no_such_parameter(name, str(key))
        bound[real] = value
    return bound


def as_bool(name: str, param: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    raise conversion(name, param, value, "System.Boolean")


def as_text(name: str, param: str, value: Any) -> str:
    """A string parameter: anything but $null converts (a value is never interpreted)."""
    if value is None or value == "":
        raise null_not_allowed(name, param)
    if isinstance(value, (list, tuple)):
        raise conversion(name, param, value, "System.String")
    return str(value)


# ---- ActiveSync mailbox policy settings -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySpec:
    old: str  # 2010 parameter/property name (the storage key)
    new: str  # 2013+ name
    kind: str  # "bool", "int" or "span"
    lo: int | timedelta | None = None
    hi: int | timedelta | None = None
    unlimited: bool = False  # Unlimited<T>: accepts and shows "Unlimited"
    nullable: bool = False  # accepts $null
    default: Any = None


def _b(old: str, new: str, default: bool) -> PolicySpec:
    return PolicySpec(old, new, "bool", default=default)


POLICY_SPECS: tuple[PolicySpec, ...] = (
    _b("DevicePasswordEnabled", "PasswordEnabled", False),
    PolicySpec("MinDevicePasswordLength", "MinPasswordLength", "int", 1, 16, nullable=True),
    _b("AlphanumericDevicePasswordRequired", "AlphanumericPasswordRequired", False),
    PolicySpec("MinDevicePasswordComplexCharacters", "MinPasswordComplexCharacters", "int", 1, 4,
               default=1),
    _b("AllowSimpleDevicePassword", "AllowSimplePassword", True),
    PolicySpec("MaxInactivityTimeDeviceLock", "MaxInactivityTimeLock", "span",
               timedelta(seconds=30), timedelta(hours=1), unlimited=True, default="Unlimited"),
    PolicySpec("MaxDevicePasswordFailedAttempts", "MaxPasswordFailedAttempts", "int", 4, 16,
               unlimited=True, default="Unlimited"),
    PolicySpec("DevicePasswordExpiration", "PasswordExpiration", "span", timedelta(days=1),
               timedelta(days=730), unlimited=True, default="Unlimited"),
    PolicySpec("DevicePasswordHistory", "PasswordHistory", "int", 0, 50, default=0),
    _b("RequireDeviceEncryption", "RequireDeviceEncryption", False),
    _b("RequireStorageCardEncryption", "RequireStorageCardEncryption", False),
    _b("AllowCamera", "AllowCamera", True),
    _b("AllowStorageCard", "AllowStorageCard", True),
    _b("AllowNonProvisionableDevices", "AllowNonProvisionableDevices", True),
)
SPEC_BY_OLD = {s.old: s for s in POLICY_SPECS}


def policy_param_names(modern: bool) -> list[str]:
    return [s.new if modern else s.old for s in POLICY_SPECS]


def default_settings() -> dict[str, Any]:
    return {s.old: s.default for s in POLICY_SPECS}


def format_span(span: timedelta) -> str:
    """A TimeSpan's invariant string: ``[d.]hh:mm:ss``."""
    total = int(span.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}.{text}" if days else text


def _span(name: str, param: str, value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        match = _TIMESPAN.match(value.strip())
        if match is not None:
            days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
            if hours < 24 and minutes < 60 and seconds < 60:
                return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise conversion(name, param, value, "Microsoft.Exchange.Data.Unlimited`1[EnhancedTimeSpan]")


def convert_setting(name: str, param: str, spec: PolicySpec, value: Any) -> Any:
    """A policy parameter value as it is stored (bool, int, None, "Unlimited" or a
    ``[d.]hh:mm:ss`` string for spans; Unlimited ints are stored as their string, as Exchange
    shows an ``Unlimited<int>``)."""
    if spec.kind == "bool":
        return as_bool(name, param, value)
    if value is None:
        if spec.nullable:
            return None
        raise null_not_allowed(name, param)
    if spec.unlimited and isinstance(value, str) and value.strip().lower() == "unlimited":
        return "Unlimited"
    if spec.kind == "int":
        if isinstance(value, bool):
            raise conversion(name, param, value, "System.Int32")
        try:
            number = int(value) if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            target = "Unlimited`1[System.Int32]" if spec.unlimited else "System.Int32"
            raise conversion(name, param, value, target) from None
        assert isinstance(spec.lo, int) and isinstance(spec.hi, int)
        if not spec.lo <= number <= spec.hi:
            raise out_of_range(name, param, number, spec.lo, spec.hi)
        return str(number) if spec.unlimited else number
    span = _span(name, param, value)
    assert isinstance(spec.lo, timedelta) and isinstance(spec.hi, timedelta)
    if not spec.lo <= span <= spec.hi:
        raise out_of_range(name, param, format_span(span), format_span(spec.lo),
                           format_span(spec.hi))
    return format_span(span)


def settings_from(name: str, bound: Mapping[str, Any], modern: bool) -> dict[str, Any]:
    """The policy settings among ``bound`` parameters, converted, keyed by 2010 name."""
    out: dict[str, Any] = {}
    for spec in POLICY_SPECS:
        param = spec.new if modern else spec.old
        if param in bound:
            out[spec.old] = convert_setting(name, param, spec, bound[param])
    return out


def settings_view(settings: Mapping[str, Any], modern: bool) -> dict[str, Any]:
    """Stored settings under the names the cmdlet flavour shows."""
    return {(SPEC_BY_OLD[k].new if modern else k): v for k, v in settings.items()}
