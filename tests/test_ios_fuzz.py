"""Bad input on /mdm/checkin and /mdm/server: body limit (413), malformed/binary/huge/deeply nested
and cyclic plists, wrong types, missing keys, bad or truncated CMS signatures, unknown UDIDs.

Never a 500, and a rejected request changes nothing (every table compared before and after; the
only rows a rejection may add are ``security_*`` events, written in a transaction of their own).
"""

from __future__ import annotations

import base64
import plistlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ios_support import Phone, new_phone, queue_command, sign, snapshot
from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.ios.config import IosConfig
from mdm.ios.messages import MessageError, load_plist
from mdm.pki import services as pki_services
from mdm.server.runtime import Server

LIMIT = 16384
ALLOWED = {200, 400, 404, 410, 413}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def extra_config() -> str:
    # last_seen is written behind by a worker; keep it out of the "nothing changed" window.
    return f"[ios]\nmax_body_bytes = {LIMIT}\nlast_seen_flush_seconds = 300\n"


@pytest.fixture
async def ios(server: Server, config) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=listener_url(server, "ios"), verify=client_ssl_context(config), timeout=60
    ) as client:
        yield client


@pytest.fixture
async def phone(server: Server, db: Database, ios: httpx.AsyncClient) -> Phone:
    p = await new_phone(db, pki_services.ca(server.ctx))
    await p.enroll(ios)
    async with db.session() as session:
        device_id = await session.scalar(select(Device.id).where(Device.identifier == p.udid))
    assert device_id is not None
    await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    return p


async def _security_only_since(db: Database, last_id: int) -> int:
    async with db.session() as session:
        rows = (await session.scalars(select(Event).where(Event.id > last_id))).all()
    assert all(e.type.startswith("security_") for e in rows), [e.type for e in rows]
    return max([last_id, *[e.id for e in rows]])


async def _send_and_check(
    client: httpx.AsyncClient,
    db: Database,
    path: str,
    body: bytes,
    headers: dict[str, str],
    state: dict[str, Any],
) -> int:
    before = await snapshot(db)
    async with db.session() as session:
        last_event = int(await session.scalar(select(func.max(Event.id))) or 0)
    response = await client.put(path, content=body, headers=headers)
    assert response.status_code in ALLOWED, (response.status_code, response.text)
    assert response.status_code != 401
    if response.status_code != 200:
        assert await snapshot(db) == before, body[:200]
        await _security_only_since(db, last_event)
        if response.headers.get("content-type", "").startswith("application/json"):
            assert "Traceback" not in response.text
    return response.status_code


# ---- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.datetimes(),
)
plist_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
protocol_keys = st.sampled_from(
    [
        "MessageType",
        "Status",
        "UDID",
        "CommandUUID",
        "Topic",
        "Token",
        "PushMagic",
        "UnlockToken",
        "BootstrapToken",
        "Endpoint",
        "UserID",
        "QueryResponses",
        "ErrorChain",
        "RequestType",
    ]
)
protocol_values = st.one_of(
    st.sampled_from(
        [
            "Authenticate",
            "TokenUpdate",
            "CheckOut",
            "Idle",
            "Acknowledged",
            "NotNow",
            "Error",
            "CommandFormatError",
            "SetBootstrapToken",
            "GetBootstrapToken",
            "DeclarativeManagement",
            "UserAuthenticate",
            "tokens",
            "Bogus",
        ]
    ),
    plist_values,
)
messages = st.dictionaries(protocol_keys, protocol_values, max_size=8)


def _dump(value: Any, binary: bool) -> bytes:
    try:
        return plistlib.dumps(value, fmt=plistlib.FMT_BINARY if binary else plistlib.FMT_XML)
    except (TypeError, ValueError, OverflowError):
        return plistlib.dumps({"unencodable": True})


# ---- tests --------------------------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(
    message=messages,
    binary=st.booleans(),
    sign_it=st.booleans(),
    path=st.sampled_from(["/mdm/checkin", "/mdm/server"]),
    own_udid=st.booleans(),
)
async def test_fuzz_structured_messages(
    ios,
    db: Database,
    phone: Phone,
    message: dict[str, Any],
    binary: bool,
    sign_it: bool,
    path: str,
    own_udid: bool,
) -> None:
    if own_udid:
        message = {**message, "UDID": phone.udid}
    body = _dump(message, binary)
    headers = {"Mdm-Signature": sign(body, phone.cert, phone.key)} if sign_it else {}
    await _send_and_check(ios, db, path, body, headers, {"last_event": 0})


@pytest.mark.slow
@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=512).map(str.encode),
        st.binary(max_size=64).map(lambda b: b"bplist00" + b),
        st.binary(max_size=64).map(lambda b: b'<?xml version="1.0"?><plist>' + b),
    ),
    path=st.sampled_from(["/mdm/checkin", "/mdm/server"]),
)
async def test_fuzz_random_bytes(ios, db: Database, phone: Phone, body: bytes, path: str) -> None:
    await _send_and_check(
        ios, db, path, body, {"Mdm-Signature": sign(body, phone.cert, phone.key)}, {"last_event": 0}
    )


@pytest.mark.slow
@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=4000),
    flip=st.integers(min_value=0, max_value=4000),
    mode=st.sampled_from(["truncate", "flip", "append", "b64junk"]),
)
async def test_fuzz_signatures(ios, db: Database, phone: Phone, cut: int, flip: int, mode: str) -> None:
    body, headers = phone.signed({"UDID": phone.udid, "Status": "Idle"})
    der = bytearray(base64.b64decode(headers["Mdm-Signature"]))
    if mode == "truncate":
        der = der[: cut % len(der)]
    elif mode == "flip":
        der[flip % len(der)] ^= 0x41
    elif mode == "append":
        der += bytes([cut % 256]) * (flip % 64 + 1)
    header = base64.b64encode(bytes(der)).decode() if mode != "b64junk" else "%%" + str(cut)
    status = await _send_and_check(ios, db, "/mdm/server", body, {"Mdm-Signature": header}, {"last_event": 0})
    # Appended bytes after the DER may be ignored by the DER parser; anything else is refused.
    assert status == 400 or mode in ("append", "flip")


async def test_body_limit_413_by_length_and_by_stream(ios, db: Database, phone: Phone) -> None:
    before = await snapshot(db)
    big = b'<?xml version="1.0"?><plist><dict>' + b" " * LIMIT + b"</dict></plist>"
    for path in ("/mdm/checkin", "/mdm/server"):
        response = await ios.put(path, content=big)
        assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 1024

    response = await ios.put("/mdm/server", content=chunks())
    assert response.status_code == 413
    assert await snapshot(db) == before


def test_default_body_limit_is_one_mebibyte() -> None:
    assert IosConfig().max_body_bytes == 1024 * 1024


def _bplist(objects: list[bytes], top: int = 0) -> bytes:
    body = b"bplist00"
    offsets = []
    for obj in objects:
        offsets.append(len(body))
        body += obj
    table_at = len(body)
    body += bytes(offsets)
    return body + b"\x00" * 6 + struct.pack(">BBQQQ", 1, 1, len(objects), top, table_at)


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><plist><array>' * 1 + b"<array>" * 3000 + b"</array>" * 3001 + b"</plist>",
        _bplist([b"\xa1\x00"]),  # an array that contains itself
        _bplist([b"\xa2" + bytes([i + 1, i + 1]) for i in range(40)] + [b"\x09"]),  # 2^40 leaves by sharing
        _bplist([b"\xd1\x01\x00", b"\x51a"]),  # dict whose value is itself
        b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaa">]><plist><string>&a;</string></plist>',
        b"<plist><dict><key>Status</key><string>Idle\x00</string></dict></plist>",
        plistlib.dumps({"Status": "Idle", "UDID": "x\x00y"}, fmt=plistlib.FMT_BINARY),
        plistlib.dumps(["not", "a", "dict"]),
        b"",
    ],
)
def test_hostile_plists_are_message_errors(body: bytes) -> None:
    with pytest.raises(MessageError):
        load_plist(body)


async def test_hostile_plists_through_http(ios, db: Database, phone: Phone) -> None:
    state = {"last_event": 0}
    deep = b'<?xml version="1.0"?><plist>' + b"<array>" * 900 + b"</array>" * 900 + b"</plist>"
    for body in (
        deep,
        _bplist([b"\xa1\x00"]),
        _bplist([b"\xa2" + bytes([i + 1, i + 1]) for i in range(40)] + [b"\x09"]),
    ):
        for path in ("/mdm/checkin", "/mdm/server"):
            status = await _send_and_check(
                ios, db, path, body, {"Mdm-Signature": sign(body, phone.cert, phone.key)}, state
            )
            assert status == 400


async def test_wrong_types_and_unknown_udids(ios, db: Database, phone: Phone, server: Server) -> None:
    state = {"last_event": 0}
    cases = [
        {"UDID": phone.udid, "Status": 1},
        {"UDID": phone.udid, "Status": "Acknowledged"},  # no CommandUUID
        {"UDID": phone.udid, "Status": "Acknowledged", "CommandUUID": b"bytes"},
        {"UDID": ["list"], "Status": "Idle"},
        {"UDID": "0000-unknown-udid", "Status": "Idle"},
        {"UDID": phone.udid, "MessageType": "TokenUpdate", "Topic": "t", "Token": b"x", "PushMagic": 7},
        {
            "UDID": "0000-unknown-udid",
            "MessageType": "TokenUpdate",
            "Topic": "t",
            "Token": b"x",
            "PushMagic": "m",
        },
        {"UDID": "x" * 300, "MessageType": "Authenticate", "Topic": "t"},
    ]
    for message in cases:
        body, headers = phone.signed(message)
        for path in ("/mdm/server", "/mdm/checkin"):
            assert await _send_and_check(ios, db, path, body, headers, state) == 400, (path, message)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    result=st.dictionaries(st.text(min_size=1, max_size=12), plist_values, max_size=6),
    request_type=st.sampled_from(
        [
            "DeviceInformation",
            "SecurityInfo",
            "InstalledApplicationList",
            "ManagedApplicationList",
            "ProfileList",
            "CertificateList",
            "EraseDevice",
            "Settings",
        ]
    ),
    status=st.sampled_from(["Acknowledged", "Error", "CommandFormatError", "NotNow"]),
)
async def test_fuzz_answers_to_a_real_command(
    ios, db: Database, phone: Phone, result: dict[str, Any], request_type: str, status: str
) -> None:
    """Arbitrary answer contents for a command that is really in flight: stored or refused, never a 500."""
    async with db.session() as session:
        device_id = await session.scalar(select(Device.id).where(Device.identifier == phone.udid))
    assert device_id is not None
    while (response := await phone.report(ios)).content:  # drain what is queued
        guid = plistlib.loads(response.content)["CommandUUID"]
        await phone.report(ios, "Acknowledged", guid)
    guid = await queue_command(db, device_id, {"RequestType": request_type}, type_=f"F{request_type}")
    offered = await phone.report(ios)
    assert plistlib.loads(offered.content)["CommandUUID"] == guid
    message = {**result, "UDID": phone.udid, "Status": status, "CommandUUID": guid}
    body = _dump(message, binary=True)
    status_code = await _send_and_check(
        ios, db, "/mdm/server", body, {"Mdm-Signature": sign(body, phone.cert, phone.key)}, {}
    )
    assert status_code in (200, 400)
