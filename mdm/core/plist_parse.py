"""``plistlib.loads`` without garbage for the cycle collector.

plistlib's XML parser keeps its expat parser (``self.parser``), whose four handlers are bound
methods of the parser object itself: every XML plist parsed leaves a reference cycle of about ten
objects (the expat parser and its buffers among them) that only the cycle collector frees. A
server parses one per check-in message, poll and answer: in a check-in storm these were nearly
all of the cyclic garbage, so each young collection (the server's threshold is 100,000 objects)
freed thousands of expat parsers at once and stopped the event loop for 100-600 ms, and every
writer in SQLite's write queue waited behind the stalled holder. Here the expat parser is
dropped when the parse ends, so reference counting frees everything at once.

Same formats, results and exceptions as ``plistlib.loads`` (XML detected first, then binary).

An XML plist is first read by the C parser of ``xml.etree.ElementTree`` (the tree built in C, then
one walk in Python): plistlib's parser calls three Python handlers per element, which made the
parse of a DeviceInformation answer a third of a SQLite round trip's CPU. The walk takes only the
plain shape plistlib writes and devices send (a ``plist`` holding one value; dicts of ``key``,
value pairs; leaves without children; UTF-8; no entity declaration), and gives exactly what
plistlib gives for it (the same conversions, plistlib's own for dates and data). Anything else,
and every error, goes to plistlib's parser, which decides as before.
"""

from __future__ import annotations

import plistlib
import re
from io import BytesIO
from typing import Any
from xml.etree.ElementTree import XMLParser

# Private names of plistlib (3.11-3.13): should a later Python drop them, ``loads`` is plain
# ``plistlib.loads`` (the cycle comes back; nothing else changes).
_XML_PARSER: Any = getattr(plistlib, "_PlistParser", None)
_IS_XML: Any = getattr(plistlib, "_is_fmt_xml", None)


def _breaking_parser(base: Any) -> Any:
    class _XmlParser(base):  # type: ignore[misc]
        def parse(self, fileobj: Any) -> Any:
            try:
                return super().parse(fileobj)
            finally:
                self.parser = None  # (the cycle: parser -> handlers -> self -> parser)

    return _XmlParser


_PARSER: Any = _breaking_parser(_XML_PARSER) if _XML_PARSER is not None and _IS_XML is not None else None


# plistlib's own conversions of a date and a data element (private, as above: without them
# every XML plist takes plistlib's parser).
_DATE: Any = getattr(plistlib, "_date_from_string", None)
_BASE64: Any = getattr(plistlib, "_decode_base64", None)
# An XML declaration naming another encoding than UTF-8 (the walk's checks read bytes as ASCII).
_OTHER_ENCODING = re.compile(rb"""^<\?xml[^>]*encoding\s*=\s*["'](?!utf-8["'])""", re.IGNORECASE)


class _NotPlain(Exception):
    """Not the plain shape the walk takes: plistlib's parser reads it."""


def _value(element: Any) -> Any:
    tag = element.tag
    if tag == "dict":
        if len(element) % 2:
            raise _NotPlain
        out: dict[str, Any] = {}
        children = iter(element)
        for key in children:
            if key.tag != "key" or len(key):
                raise _NotPlain
            out[key.text or ""] = _value(next(children))
        return out
    if tag == "array":
        return [_value(child) for child in element]
    if len(element):
        raise _NotPlain  # a leaf with elements inside
    text = element.text or ""
    if tag == "string":
        return text
    if tag == "integer":
        return int(text, 16) if text.startswith(("0x", "0X")) else int(text)
    if tag == "real":
        return float(text)
    if tag == "true":
        return True
    if tag == "false":
        return False
    if tag == "data":
        return _BASE64(text)
    if tag == "date":
        return _DATE(text)
    raise _NotPlain


def _plain(body: bytes) -> Any:
    """The plist of a plain XML ``body``; raises (anything) when it is not plain or not valid."""
    if not body.startswith(b"<") or b"<!ENTITY" in body or _OTHER_ENCODING.match(body):
        raise _NotPlain
    # No entity declaration (refused above, as plistlib refuses it); expat fetches nothing.
    parser = XMLParser()  # noqa: S314
    parser.feed(body)
    root = parser.close()
    if root.tag == "plist":
        if len(root) != 1:
            raise _NotPlain
        root = root[0]
    return _value(root)


_FAST = _DATE is not None and _BASE64 is not None


def loads(body: bytes) -> Any:
    """``plistlib.loads(body)``, its XML parser's reference cycle broken."""
    if _PARSER is not None and _IS_XML(body[:32]):
        if _FAST:
            try:
                return _plain(body)
            except Exception:  # noqa: S110 - plistlib's parser decides (and raises its own errors)
                pass
        return _PARSER(dict_type=dict).parse(BytesIO(body))
    return plistlib.loads(body)
