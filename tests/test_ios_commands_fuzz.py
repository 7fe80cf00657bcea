"""Arbitrary JSON as command arguments: the translator answers with a ServiceError (a 4xx) or a
schema-valid payload, never anything else (which the API would turn into a 500)."""

from __future__ import annotations

import base64
import plistlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdm.core.errors import ServiceError
from mdm.core.library import LIBRARY
from mdm.db.models import Device, Protocol
from mdm.ios import schema
from mdm.ios.command_codec import to_plist_dict
from mdm.ios.command_steps import steps_of
from mdm.ios.commands import IosCommandTranslator

IOS_TYPES = sorted(name for name, c in LIBRARY.items() if Protocol.IOS in c.protocols)
KEYS = st.sampled_from(
    [
        "message",
        "phone_number",
        "pin",
        "profile",
        "mobileconfig_base64",
        "sign",
        "identifier",
        "uuid",
        "itunes_store_id",
        "manifest_url",
        "queries",
        "parts",
        "voice_roaming",
        "data_roaming",
        "payloads",
        "type",
        "RequestType",
        "Queries",
        "Settings",
        "Item",
        "Enabled",
        "__data__",
        "__date__",
        "x",
    ]
) | st.text(max_size=8)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)
REQUEST_TYPES = st.sampled_from([*sorted(schema.request_types()), "", "Nope"])

TRANSLATOR = IosCommandTranslator()


def device() -> Device:
    return Device(
        protocol=1,
        identifier="U",
        os_name="iOS",
        attributes={"mdm_profile_identifier": "m"},
        inventory={"profiles": {"items": [{"PayloadIdentifier": "p", "payloads": []}]}},
    )


def _check(command_type: str, args: Any) -> None:
    try:
        payload = TRANSLATOR.translate(command_type, args, device())
    except ServiceError:
        return
    for step in steps_of(payload):
        command = to_plist_dict(step, unlock_token=b"t")
        assert schema.validate_command(command, os_name=None if command_type == "Raw" else "iOS") == []
        plistlib.dumps({"CommandUUID": "U", "Command": command})  # what the channel will send


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_type=st.sampled_from(IOS_TYPES), args=st.dictionaries(KEYS, JSON, max_size=5))
def test_any_arguments(command_type: str, args: dict[str, Any]) -> None:
    _check(command_type, args)


def from_spec(spec: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values shaped by a schema key: mostly well-typed, with extreme scalars (huge integers,
    control characters, NaN) that a plist cannot carry."""
    kind = spec.get("type")
    subkeys = spec.get("subkeys") or []
    if "rangelist" in spec and kind not in ("<array>", "<dictionary>"):
        return st.sampled_from(spec["rangelist"]) | from_spec({"type": kind}, depth)
    if kind == "<string>":
        return st.sampled_from([str(k["key"]) for k in subkeys]) if subkeys else st.text(max_size=12)
    if kind == "<integer>":
        return st.integers(-(2**66), 2**66)
    if kind == "<real>":
        return st.floats()
    if kind == "<boolean>":
        return st.booleans()
    if kind == "<data>":
        return st.binary(max_size=16).map(lambda b: {"__data__": base64.b64encode(b).decode()})
    if kind == "<date>":
        return st.datetimes().map(lambda d: {"__date__": d.isoformat()})
    if depth > 4:
        return st.just([] if kind == "<array>" else {})
    if kind == "<array>":
        items = st.one_of(*[from_spec(k, depth + 1) for k in subkeys]) if subkeys else JSON
        return st.lists(items, max_size=3)
    if kind == "<dictionary>" and subkeys:
        return dictionary(subkeys, depth + 1)
    return JSON


def dictionary(keys: list[dict[str, Any]], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    named = [k for k in keys if not str(k["key"]).startswith("ANY")]
    required = {str(k["key"]): from_spec(k, depth) for k in named if k.get("presence") == "required"}
    optional = {str(k["key"]): from_spec(k, depth) for k in named if k.get("presence") != "required"}
    return st.fixed_dictionaries(required, optional=optional)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), request_type=st.sampled_from(sorted(schema.request_types())))
def test_any_raw_command_shaped_by_its_schema(data: st.DataObject, request_type: str) -> None:
    keys = schema.command_document(request_type).get("payloadkeys") or []
    body = data.draw(dictionary(keys, 0))
    _check("Raw", {**body, "RequestType": request_type})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), request_type=REQUEST_TYPES)
def test_any_raw_command(data: st.DataObject, request_type: str) -> None:
    names = []
    if request_type in schema.request_types():
        names = [str(k["key"]) for k in schema.command_document(request_type).get("payloadkeys") or []]
    keys = st.sampled_from(names) | KEYS if names else KEYS
    rest = data.draw(st.dictionaries(keys, JSON, max_size=5))
    _check("Raw", {**rest, "RequestType": request_type})


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_validator_never_crashes(value: Any) -> None:
    for request_type in ("Settings", "InstallApplication", "DeviceInformation"):
        schema.validate_command(
            {"RequestType": request_type, "Settings": value, "Configuration": value, "Queries": value}
        )
    schema.validate_profile({"PayloadContent": [value], "PayloadScope": value}, unknown_payloads=True)
