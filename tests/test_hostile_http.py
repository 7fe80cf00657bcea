"""Hostile input that used to end in a 500 (and a traceback in the log), each over a real socket:
an unknown XML encoding declaration in a plist, a client that leaves mid-upload, broken body
framing or content encoding, and JSON numbers with thousands of digits on the admin API.

Each must be a 4xx or a quiet close: no 500 counted, no ERROR record logged, the server still
answers afterwards, and nothing written.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from ios_support import new_phone, sign
from raw_http import db_rows as snapshot
from raw_http import exchange

from mdm.config import Config
from mdm.core import metrics
from mdm.db.engine import Database
from mdm.ios.messages import MessageError, load_plist
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


def _port(server: Server, listener: str, tls: bool = True) -> int:
    return int(listener_url(server, listener, tls=tls).rsplit(":", 1)[1])


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def tls(config: Config) -> ssl.SSLContext:
    return client_ssl_context(config)


# ---- plists with an unknown encoding ------------------------------------------------------------
ENCODINGS = ["bogus", "rot13", "base64", "hex", "zlib", "uu", "quopri", "bz2", "mbcs", "x" * 300]


def _declared(encoding: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>'
        '<plist version="1.0"><dict><key>Status</key><string>Idle</string></dict></plist>'
    ).encode()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_unknown_xml_encoding_is_a_message_error(encoding: str) -> None:
    with pytest.raises(MessageError, match="malformed property list"):
        load_plist(_declared(encoding))


async def test_unknown_xml_encoding_over_http_is_400(
    ios: httpx.AsyncClient, server: Server, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    before = await snapshot(db)
    for encoding in ("bogus", "rot13", "zlib"):
        body = _declared(encoding)
        for path in ("/mdm/checkin", "/mdm/server"):
            headers = {"Mdm-Signature": sign(body, phone.cert, phone.key)}
            r = await ios.put(path, content=body, headers=headers)
            assert r.status_code == 400, (encoding, path, r.text)
            assert r.json()["error"]["code"] == "invalid_message"
    assert await snapshot(db) == before
    assert _errors(caplog) == []


# ---- a client that leaves mid-upload -------------------------------------------------------------
DROPS = {
    "ios-content-length": (
        "ios",
        b"PUT /mdm/server HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n<?xml",
    ),
    "ios-checkin-chunked": (
        "ios",
        b"PUT /mdm/checkin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n<?xml ver",
    ),
    "admin-json": (
        "admin",
        b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{\"name\": ",
    ),
}


@pytest.mark.parametrize("case", sorted(DROPS))
async def test_client_leaving_mid_upload_is_counted_apart_not_a_500(
    case: str,
    server: Server,
    db: Database,
    tls: ssl.SSLContext,
    admin_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    listener, request = DROPS[case]
    request = request.replace(b"{token}", admin_token.encode())
    gone_before = _sample("mdm_http_client_disconnects_total", listener=listener)
    errors_before = _sample("mdm_http_requests_total", listener=listener, status="500")
    before = await snapshot(db, skip=("events", "api_tokens"))
    await exchange(_port(server, listener), request, tls=tls, leave_after=0.2)
    async with asyncio.timeout(10):
        while _sample("mdm_http_client_disconnects_total", listener=listener) == gone_before:
            await asyncio.sleep(0.05)
    assert _sample("mdm_http_client_disconnects_total", listener=listener) == gone_before + 1
    assert _sample("mdm_http_requests_total", listener=listener, status="500") == errors_before
    assert _errors(caplog) == []
    gone = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert gone and all(r.levelno == logging.INFO and not r.exc_info for r in gone)
    assert await snapshot(db, skip=("events", "api_tokens")) == before
    # Still serving.
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await exchange(_port(server, "admin"), healthz, tls=tls)
    assert answer.statuses == [200]


# ---- broken framing or content encoding inside the body -----------------------------------------
FRAMING = {
    "gzip-garbage": b"PUT /mdm/server HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
    b"Content-Length: 5\r\n\r\nabcde",
    "deflate-garbage": b"PUT /mdm/checkin HTTP/1.1\r\nHost: x\r\nContent-Encoding: deflate\r\n"
    b"Content-Length: 5\r\n\r\nabcde",
    "chunk-size": b"PUT /mdm/server HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk-overrun": b"PUT /mdm/server HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nabcdefgh\r\n0\r\n\r\n",
    "chunk-extension": b"PUT /mdm/server HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=\x01\r\nabc\r\n0\r\n\r\n",
    "trailer-nul": b"PUT /mdm/server HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\nX: \x00\r\n\r\n",
    "gzip-json": b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    b"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n{}{}",
}


@pytest.mark.parametrize("case", sorted(FRAMING))
async def test_broken_body_framing_is_400_without_a_traceback(
    case: str,
    server: Server,
    db: Database,
    tls: ssl.SSLContext,
    admin_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = FRAMING[case].replace(b"{token}", admin_token.encode())
    listener = "admin" if b"/api/" in request else "ios"
    before = await snapshot(db, skip=("events", "api_tokens"))
    answer = await exchange(_port(server, listener), request, tls=tls)
    assert answer.statuses == [400], answer.data[:300]
    assert answer.closed_by_server  # nothing after a broken body is trusted
    assert _errors(caplog) == []
    assert await snapshot(db, skip=("events", "api_tokens")) == before


# ---- JSON numbers the API cannot hold ------------------------------------------------------------
HUGE = "9" * 5000
RAW = '{"devices": "all", "type": "Raw", "args": {"RequestType": "DeviceInformation", "n": %s}}'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/users", f'{{"name": {HUGE}}}'),
        ("/api/v1/users", f'{{"name": "n", "email": -{HUGE}}}'),
        ("/api/v1/commands", f'{{"devices": [{HUGE}], "type": "Block"}}'),
        ("/api/v1/commands", f'{{"devices": [{"1" * 25}], "type": "Block"}}'),
        ("/api/v1/groups", f'{{"name": "g", "parent_id": 1{"0" * 4299}}}'),
        ("/api/v1/commands", RAW % "1e999"),
        ("/api/v1/commands", RAW % "NaN"),
        ("/api/v1/commands", RAW % "-Infinity"),
        ("/api/v1/commands", RAW % f"0.{HUGE}"),
    ],
)
async def test_json_numbers_out_of_range_are_400(
    api: httpx.AsyncClient, db: Database, path: str, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = await snapshot(db, skip=("events", "api_tokens"))
    r = await api.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_argument"
    assert "Traceback" not in r.text
    assert _errors(caplog) == []
    assert await snapshot(db, skip=("events", "api_tokens")) == before


async def test_ordinary_64_bit_numbers_still_parse(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/groups", json={"name": "g", "parent_id": 2**62})
    assert r.status_code == 404, r.text  # parsed and validated; there is just no such parent
    r = await api.post("/api/v1/groups", content='{"name": "g", "parent_id": 1e0}',
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 404, r.text  # an ordinary float literal is still a number


# ---- Expect headers aiohttp cannot echo (found by tests/test_http_fuzz.py) ----------------------
@pytest.mark.parametrize(
    ("listener", "tls", "path"),
    [
        ("web", True, "/e/" + "A" * 43),
        ("web", False, "/ca/root.pem"),
        ("admin", True, "/healthz"),
        ("admin", True, "/no/such/route"),
        ("ios", True, "/mdm/server"),
        ("kes", True, "/"),
    ],
)
async def test_non_ascii_expect_is_417_not_500(
    listener: str, tls: bool, path: str, server: Server, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    context = client_ssl_context(config) if tls else None
    port = _port(server, listener, tls)

    def request(expect: bytes) -> bytes:
        head = b"GET %s HTTP/1.1\r\nHost: x\r\nExpect: %s\r\n" % (path.encode(), expect)
        return head + b"Connection: close\r\n\r\n"

    for value in (b"\x80", b"100-continue\xff", b"\xc3\xa9t\xc3\xa9"):
        answer = await exchange(port, request(value), tls=context)
        assert answer.statuses == [417], answer.data[:300]
        assert value not in answer.data
    # ASCII values keep aiohttp's behaviour: 100-continue continues, anything else is 417.
    assert (await exchange(port, request(b"x"), tls=context)).statuses == [417]
    answer = await exchange(port, request(b"100-continue"), tls=context)
    assert answer.statuses[0] == 100 and all(s < 500 for s in answer.statuses), answer.data[:300]
    assert _errors(caplog) == []
