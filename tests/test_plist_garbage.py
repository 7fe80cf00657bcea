"""A device's plist is parsed without garbage for the cycle collector (``mdm.core.plist_parse``).

plistlib's XML parser leaves a reference cycle per parse (its expat parser's handlers are bound
methods of the parser object). In a check-in storm those were nearly all the cyclic garbage: each
young collection freed thousands of expat parsers at once and stopped the event loop for
100-600 ms while SQLite's write queue waited behind the stalled holder."""

from __future__ import annotations

import gc
import plistlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from mdm.core import plist_parse
from mdm.ios.messages import MessageError, load_plist

MESSAGE = {
    "MessageType": "TokenUpdate", "UDID": "0000-1111", "Topic": "com.apple.mgmt.External.x",
    "Token": b"\x01" * 32, "PushMagic": "6F6E2D8A-3B6C-4D4A-9E8B-2C1D0F1E2A3B",
    "UnlockToken": b"\x02" * 100,
    "Nested": {"List": [1, 2.5, True, "x", {"Deep": datetime(2026, 1, 2, 3, 4, 5)}]},
}
XML = plistlib.dumps(MESSAGE)
BINARY = plistlib.dumps(MESSAGE, fmt=plistlib.FMT_BINARY)


def _cyclic_garbage(parse: Callable[[bytes], Any], body: bytes, times: int = 50) -> int:
    """Objects the cycle collector finds after ``times`` parses (none but theirs: it is off)."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(times):
            parse(body)
        return gc.collect()
    finally:
        gc.enable()


def test_plistlib_leaves_a_cycle_per_xml_parse() -> None:
    # (why this module exists: if a Python release fixes it, the wrapper can go)
    assert _cyclic_garbage(plistlib.loads, XML) >= 50


@pytest.mark.parametrize("body", [XML, BINARY], ids=["xml", "binary"])
def test_a_device_message_leaves_no_cyclic_garbage(body: bytes) -> None:
    assert _cyclic_garbage(load_plist, body) == 0
    assert _cyclic_garbage(plist_parse.loads, body) == 0


@pytest.mark.parametrize("body", [
    XML, BINARY, b"<plist version='1.0'><array><integer>1</integer></array></plist>",
    b"\xef\xbb\xbf" + XML, XML.replace(b"<?xml", b"<!-- -->"), b"<plist><dict><key>a</key></plist>",
    b"bplist00garbage", b"<?xml version='1.0'?><plist><data>!!!</data></plist>", b"", b"junk",
])
def test_the_same_results_and_errors_as_plistlib(body: bytes) -> None:
    def outcome(parse: Callable[[bytes], Any]) -> Any:
        try:
            return parse(body)
        except Exception as exc:
            return type(exc), str(exc)

    assert outcome(plist_parse.loads) == outcome(plistlib.loads)


def test_invalid_messages_are_still_refused() -> None:
    with pytest.raises(MessageError):
        load_plist(b"<plist><dict><key>a</key></plist>")


def test_without_plistlibs_private_parser_it_is_plain_plistlib(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.delattr(plistlib, "_PlistParser")
    try:
        fallback = importlib.reload(plist_parse)
        body = plistlib.dumps({"MessageType": "Idle", "UDID": "u"})
        assert fallback._PARSER is None
        assert fallback.loads(body) == {"MessageType": "Idle", "UDID": "u"}
    finally:
        monkeypatch.undo()
        restored = importlib.reload(plist_parse)
    assert restored._PARSER is not None
