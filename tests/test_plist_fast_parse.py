"""An XML plist of the plain shape is read by ElementTree's C parser and one walk
(``mdm.core.plist_parse``, issue 12: a DeviceInformation answer's parse was a third of a SQLite
round trip); its result is plistlib's to the value and type, and everything else (odd shapes,
entity declarations, other encodings, errors) is plistlib's parser's own outcome."""

from __future__ import annotations

import plistlib
import random
import string
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from mdm.core import plist_parse


def _outcome(parse: Callable[[bytes], Any], body: bytes) -> Any:
    try:
        value = parse(body)
    except Exception as exc:
        return ("raised", type(exc))
    return ("value", _typed(value))


def _typed(value: Any) -> list[Any]:
    """``value`` flattened, every leaf's type beside it (True == 1 must not pass for equal; NaN
    compared by its repr); iterative: deep documents are among the cases."""
    out: list[Any] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.append(("dict", len(item)))
            for key, child in reversed(list(item.items())):
                stack.extend((child, ("key", key)))
        elif isinstance(item, list):
            out.append(("list", len(item)))
            stack.extend(reversed(item))
        elif isinstance(item, tuple) and item and item[0] == "key":
            out.append(item)
        else:
            out.append((type(item).__name__, repr(item)))
    return out


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "bool", "bytes", "date"] + (["dict", "list"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "dict":
        return {_text(rng): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind == "str":
        return _text(rng)
    if kind == "int":
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randint(-10**6, 10**6)])
    if kind == "float":
        return rng.choice([0.0, -0.5, 1e300, rng.random() * 1000])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    return datetime(2020 + rng.randint(0, 10), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23))


def _text(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + " <>&'\"\t\nÉé漢字🙂"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def test_plists_written_by_plistlib_read_back_as_plistlib_reads_them() -> None:
    rng = random.Random(12)
    for _ in range(300):
        value = {"Status": "Acknowledged", "Answer": _random_value(rng)}
        body = plistlib.dumps(value, fmt=plistlib.FMT_XML)
        assert plist_parse._plain(body) == plistlib.loads(body)
        assert _outcome(plist_parse.loads, body) == _outcome(plistlib.loads, body)


ODD = [
    b"<plist><string>a<b/>c</string></plist>",  # mixed content
    b"<plist><dict><key>a</key><string>x</string><foo/><key>b</key><true/></dict></plist>",
    b"<plist><dict><key>a</key></dict></plist>",  # dangling key
    b"<plist><dict><key></key></dict></plist>",  # dangling empty key (plistlib accepts it)
    b"<plist><dict><key>a</key><key>b</key><string>x</string></dict></plist>",
    b"<plist><dict><string>x</string><key>a</key></dict></plist>",
    b"<plist><dict><key>a</key><string>1</string><key>a</key><integer>2</integer></dict></plist>",
    b"<plist><string>1</string><string>2</string></plist>",  # two values: plistlib keeps the last
    b"<plist></plist>",
    b"<plist version='1.0'><integer> 12 </integer></plist>",
    b"<plist><integer>0x1F</integer></plist>",
    b"<plist><integer>0X1f</integer></plist>",
    b"<plist><integer>1.5</integer></plist>",
    b"<plist><real>nan</real></plist>",
    b"<plist><real>1e400</real></plist>",
    b"<plist><date>2026-01-02T03:04:05Z</date></plist>",
    b"<plist><date>yesterday</date></plist>",
    b"<plist><data>AAEC</data></plist>",
    b"<plist><data>AAE</data></plist>",
    b"<plist><data> AA\nEC </data></plist>",
    b"<plist><true>text</true></plist>",
    b"<plist><string><![CDATA[<x>&]]></string></plist>",
    b"<plist><string>a<!-- c -->b<?pi x?>c</string></plist>",
    b"<plist><string>&#x41;&amp;&lt;</string></plist>",
    b"<plist><string>&undefined;</string></plist>",
    b'<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">'
    b"<plist><string>&undefined;</string></plist>",
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e "x">]><plist><string>&e;</string></plist>',
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
    b"<plist><string>&b;</string></plist>",
    b"<x:plist xmlns:x='urn:x'><x:string>a</x:string></x:plist>",
    b"<dict><key>a</key><string>bare root</string></dict>",
    b"<key>a</key>",
    b"<plist><dict><key>a<b/></key><string>x</string></dict></plist>",
    b"<plist><array><string>x</string><key>k</key></array></plist>",
    b"<plist><unknown/></plist>",
    b"<plist><dict><key>a</key><string>x</string></plist>",  # not well-formed
    b"<plist><string>\xff\xfe</string></plist>",  # not UTF-8
    b'<?xml version="1.0" encoding="ISO-8859-1"?><plist><string>\xe9</string></plist>',
    b'<?xml version="1.0" encoding="utf-8"?><plist><string>\xc3\xa9</string></plist>',
    b"\xef\xbb\xbf<plist><string>bom</string></plist>",
    "<?xml version='1.0' encoding='UTF-16'?><plist><string>é</string></plist>".encode("utf-16"),
    b"<plist>" + b"<array>" * 200 + b"</array>" * 200 + b"</plist>",
    b"<plist>" + b"<array>" * 1200 + b"</array>" * 1200 + b"</plist>",
]


@pytest.mark.parametrize("body", ODD, ids=range(len(ODD)))
def test_any_other_document_gets_plistlibs_own_outcome(body: bytes) -> None:
    assert _outcome(plist_parse.loads, body) == _outcome(plistlib.loads, body)


def test_an_entity_declaration_is_never_expanded_by_the_fast_path() -> None:
    body = b'<!DOCTYPE p [<!ENTITY e "x">]><plist><string>&e;</string></plist>'
    with pytest.raises(plistlib.InvalidFileException):
        plist_parse.loads(body)


def test_a_device_answer_takes_the_fast_path() -> None:
    answer = {
        "UDID": "X" * 40, "Status": "Acknowledged", "CommandUUID": "ABC",
        "QueryResponses": {"DeviceName": "iPhone", "BatteryLevel": 0.5, "IsSupervised": True, "Capacity": 64},
    }
    body = plistlib.dumps(answer)
    assert plist_parse._plain(body) == answer
