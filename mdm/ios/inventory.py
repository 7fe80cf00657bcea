"""Command answers that describe the device become its inventory (DESIGN §3, issue item 6).

Each part is stored as ``Device.inventory[part] = {"refreshed_at": iso, "values"|"items": ...}``;
DeviceInformation also fills the device's columns (name, model, OS, serial, IMEI, phone number).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from cryptography import x509

from mdm.db.models import Device, utcnow
from mdm.ios.messages import to_json_safe
from mdm.pki.x509_errors import CERTIFICATE_ERRORS

# Report key holding the answer, per RequestType.
ANSWER_KEYS = {
    "DeviceInformation": "QueryResponses",
    "SecurityInfo": "SecurityInfo",
    "InstalledApplicationList": "InstalledApplicationList",
    "ManagedApplicationList": "ManagedApplicationList",
    "ProfileList": "ProfileList",
    "CertificateList": "CertificateList",
}
PART_NAMES = {
    "DeviceInformation": "device_info",
    "SecurityInfo": "security",
    "InstalledApplicationList": "apps",
    "ManagedApplicationList": "managed_apps",
    "ProfileList": "profiles",
    "CertificateList": "certificates",
}
MDM_PAYLOAD_TYPE = "com.apple.mdm"
_COLUMN_LIMITS = {
    "name": 255,
    "model": 255,
    "os_version": 64,
    "build_version": 64,
    "serial_number": 128,
    "imei": 64,
    "phone_number": 64,
    "os_name": 64,
}


def request_type_of(result: dict[str, Any], payload_type: str | None) -> str | None:
    """The RequestType this answer belongs to: the command's own, else guessed from the keys."""
    if payload_type:
        return payload_type
    declared = result.get("RequestType")
    if isinstance(declared, str):
        return declared
    for request_type, key in ANSWER_KEYS.items():
        if key in result:
            return request_type
    return None


def os_name_for(product: str | None, os_version: str | None) -> str | None:
    if not product:
        return None
    major = 0
    if os_version:
        head = os_version.split(".", 1)[0]
        major = int(head) if head.isdigit() else 0
    if product.startswith("iPad"):
        return "iPadOS" if major >= 13 else "iOS"
    if product.startswith(("iPhone", "iPod")):
        return "iOS"
    if product.startswith(("AppleTV",)):
        return "tvOS"
    if product.startswith("Watch"):
        return "watchOS"
    if product.startswith(("RealityDevice",)):
        return "visionOS"
    if "Mac" in product:
        return "macOS"
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def set_column(device: Device, column: str, value: Any) -> None:
    text = _str(value)
    if text is not None:
        setattr(device, column, text[: _COLUMN_LIMITS[column]])


def _fact_columns(facts: dict[str, Any]) -> dict[str, str]:
    """The columns (but ``os_name``) that ``facts`` set, whatever the device held: those whose
    value is a non-empty string, cut to the column's length."""
    given = {
        "name": facts.get("DeviceName"),
        "model": facts.get("ProductName") or facts.get("Model"),
        "os_version": facts.get("OSVersion"),
        "build_version": facts.get("BuildVersion"),
        "serial_number": facts.get("SerialNumber"),
        "imei": facts.get("IMEI"),
        "phone_number": facts.get("PhoneNumber"),
    }
    cut = {column: _str(value) for column, value in given.items()}
    return {column: text[: _COLUMN_LIMITS[column]] for column, text in cut.items() if text is not None}


def _fact_attributes(facts: dict[str, Any]) -> dict[str, str]:
    """The ``attributes`` keys that ``facts`` set (the others are kept)."""
    keys = (("MEID", "meid"), ("ModelName", "model_name"), ("Model", "model_number"))
    return {attr: str(facts[key])[:255] for key, attr in keys if _str(facts.get(key))}


def apply_device_facts(device: Device, facts: dict[str, Any]) -> None:
    """Authenticate and DeviceInformation share the key names of the facts they carry."""
    for column, value in _fact_columns(facts).items():
        setattr(device, column, value)
    os_name = os_name_for(_str(facts.get("ProductName")) or device.model, device.os_version)
    if os_name:
        device.os_name = os_name
    attributes = dict(device.attributes or {})
    attributes.update(_fact_attributes(facts))
    device.attributes = attributes


def _certificate_item(entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "common_name": _str(entry.get("CommonName")),
        "is_identity": bool(entry.get("IsIdentity", False)),
    }
    data = entry.get("Data")
    if isinstance(data, bytes):
        try:
            cert = x509.load_der_x509_certificate(data)
            item.update(
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                serial=format(cert.serial_number, "x"),
                not_before=cert.not_valid_before_utc.isoformat(),
                not_after=cert.not_valid_after_utc.isoformat(),
            )
        except CERTIFICATE_ERRORS:
            item["error"] = "certificate data is not valid DER"
    return item


def _profile_item(entry: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "PayloadIdentifier",
        "PayloadUUID",
        "PayloadDisplayName",
        "PayloadDescription",
        "PayloadOrganization",
        "PayloadVersion",
        "IsManaged",
        "IsEncrypted",
        "HasRemovalPasscode",
        "PayloadRemovalDisallowed",
    )
    item = {k: to_json_safe(entry[k]) for k in keep if k in entry}
    content = entry.get("PayloadContent")
    payloads = []
    if isinstance(content, list):
        for p in content:
            if isinstance(p, dict):
                payloads.append(
                    {
                        k: to_json_safe(p[k])
                        for k in ("PayloadType", "PayloadIdentifier", "PayloadDisplayName", "PayloadUUID")
                        if k in p
                    }
                )
    item["payloads"] = payloads
    return item


def _dict_items(answer: Any) -> list[Any]:
    return [a for a in answer if isinstance(a, dict)] if isinstance(answer, list) else []


def _apps(answer: Any) -> dict[str, Any]:
    return {"items": [to_json_safe(a) for a in _dict_items(answer)]}


def _managed_apps(answer: Any) -> dict[str, Any]:
    items = []
    if isinstance(answer, dict):
        for bundle, info in answer.items():
            entry = {"Identifier": bundle}
            if isinstance(info, dict):
                entry.update(to_json_safe(info))
            items.append(entry)
    return {"items": items}


def _profiles(answer: Any) -> dict[str, Any]:
    return {"items": [_profile_item(p) for p in _dict_items(answer)]}


def _certificates(answer: Any) -> dict[str, Any]:
    return {"items": [_certificate_item(c) for c in _dict_items(answer)]}


def _values(answer: Any) -> dict[str, Any]:
    return {"values": to_json_safe(answer) if isinstance(answer, dict) else {}}


_BUILDERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "DeviceInformation": _values,
    "SecurityInfo": _values,
    "InstalledApplicationList": _apps,
    "ManagedApplicationList": _managed_apps,
    "ProfileList": _profiles,
    "CertificateList": _certificates,
}


def mdm_profile_identifier(device: Device) -> str | None:
    """The identifier of the installed profile that carries the com.apple.mdm payload."""
    known = (device.attributes or {}).get("mdm_profile_identifier")
    if isinstance(known, str):
        return known
    profiles = ((device.inventory or {}).get("profiles") or {}).get("items") or []
    for profile in profiles:
        if any(p.get("PayloadType") == MDM_PAYLOAD_TYPE for p in profile.get("payloads", [])):
            ident = profile.get("PayloadIdentifier")
            return ident if isinstance(ident, str) else None
    return None


# The device columns an inventory answer may change (besides ``inventory`` itself).
FACT_COLUMNS = (
    "name", "model", "os_name", "os_version", "build_version", "serial_number", "imei", "phone_number",
    "attributes",
)


@dataclass(frozen=True, slots=True)
class InventoryUpdate:
    """What an acknowledged inventory answer writes: ``inventory[part] = entry`` and the device
    columns whose values change (``changes``, only those); ``count`` for the event."""

    part: str
    entry: dict[str, Any]
    count: int
    changes: dict[str, Any]


def _entry(request_type: str, result: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """(the answer's part of ``result``, the inventory entry it makes); None when the
    RequestType is not inventory."""
    builder = _BUILDERS.get(request_type)
    if builder is None:
        return None
    answer = result.get(ANSWER_KEYS[request_type])
    entry = builder(answer)
    entry["refreshed_at"] = utcnow().isoformat()
    return answer, entry


def answer_update(
    current: Mapping[str, Any], request_type: str, result: dict[str, Any]
) -> InventoryUpdate | None:
    """The update an acknowledged answer makes to a device whose ``FACT_COLUMNS`` hold
    ``current``; None when the RequestType is not inventory. Nothing is written here: the caller
    writes the part and the changed columns (one UPDATE) and emits ``INVENTORY_UPDATED``."""
    built = _entry(request_type, result)
    if built is None:
        return None
    answer, entry = built
    record = SimpleNamespace(**{column: current[column] for column in FACT_COLUMNS})
    device = cast(Device, record)  # apply_device_facts reads and sets these attributes only
    if request_type == "DeviceInformation" and isinstance(answer, dict):
        apply_device_facts(device, answer)
    if request_type == "ProfileList":
        for profile in entry["items"]:
            if any(p.get("PayloadType") == MDM_PAYLOAD_TYPE for p in profile["payloads"]):
                attributes = dict(device.attributes or {})
                attributes["mdm_profile_identifier"] = profile.get("PayloadIdentifier")
                device.attributes = attributes
    changes = {
        column: value for column in FACT_COLUMNS if (value := getattr(record, column)) != current[column]
    }
    count = len(entry.get("items", entry.get("values", {})))
    return InventoryUpdate(PART_NAMES[request_type], entry, count, changes)


@dataclass(frozen=True, slots=True)
class BlindUpdate:
    """What an acknowledged inventory answer writes whatever the device's row holds now:
    ``inventory[part] = entry``, the columns in ``columns`` set to their values, and the keys of
    ``attributes`` (None: nothing) merged into the device's ``attributes``."""

    part: str
    entry: dict[str, Any]
    count: int
    columns: dict[str, str]
    attributes: dict[str, Any] | None


def blind_update(request_type: str, result: dict[str, Any]) -> BlindUpdate | None:
    """``answer_update`` for a statement that writes without reading the device first (the
    database merges ``attributes`` and the part under the row's lock): the same row results
    whatever the device held. None when the RequestType is not inventory, or when the answer
    leaves ``os_name`` to the stored model or OS version (no ProductName or Model; an iPad's
    answer without OSVersion): only ``answer_update`` on the row read can say."""
    built = _entry(request_type, result)
    if built is None:
        return None
    answer, entry = built
    columns: dict[str, str] = {}
    attributes: dict[str, Any] | None = None
    if request_type == "DeviceInformation" and isinstance(answer, dict):
        columns = _fact_columns(answer)
        product = _str(answer.get("ProductName")) or columns.get("model")
        version = columns.get("os_version")
        if product is None or (version is None and product.startswith("iPad")):
            return None
        os_name = os_name_for(product, version)
        if os_name:
            columns["os_name"] = os_name
        attributes = _fact_attributes(answer)
    if request_type == "ProfileList":
        for profile in entry["items"]:
            if any(p.get("PayloadType") == MDM_PAYLOAD_TYPE for p in profile["payloads"]):
                attributes = {"mdm_profile_identifier": profile.get("PayloadIdentifier")}
    count = len(entry.get("items", entry.get("values", {})))
    return BlindUpdate(PART_NAMES[request_type], entry, count, columns, attributes)
