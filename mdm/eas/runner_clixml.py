"""A fast reader of the output objects of a pipeline (PIPELINE_OUTPUT messages' CLIXML).

Why hand-written: pypsrp's generic ``Serializer`` walks every object through its type-metadata
machinery and re-serializes each nested element to a string; measured at about 2 ms of CPU per
Exchange object, it was most of the client's cost of a discovery (100,000 device statistics).
Output objects need none of that: this reads the one XML tree ElementTree parsed and fills a
``GenericComplexObject`` whose property values are already the plain values ``to_record`` keeps
(str, int, bool, aware ``datetime``, ``timedelta``, list, None; a nested object as its list or its
ToString). Everything else (error records, state messages) still goes through pypsrp.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pypsrp.complex_objects import GenericComplexObject

# CLIXML <DT>: xs:dateTime with up to 7 fractional digits and an optional offset.
_DT = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$"
)
# CLIXML <TS>: xs:duration as .NET writes a TimeSpan ("PT15M", "P1DT2H", "-PT0.5S").
_DURATION = re.compile(
    r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)

def parse_datetime(text: str) -> datetime | str:
    """A CLIXML DateTime as an aware UTC datetime (no offset: taken as UTC); else the text."""
    match = _DT.match(text.strip())
    if match is None:
        return text
    base, fraction, zone = match.groups()
    micro = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if zone in (None, "Z") else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{offset}").astimezone(UTC)
    except ValueError:
        return text


def parse_duration(text: str) -> timedelta | str:
    """A CLIXML TimeSpan (xs:duration) as a timedelta; anything else stays text."""
    match = _DURATION.match(text.strip())
    if match is None or text.strip() in ("P", "-P", "PT", "-PT"):
        return text
    negative, days, hours, minutes, seconds = match.groups()
    span = timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                     seconds=float(seconds or 0))
    return -span if negative else span


_LISTS = frozenset({"LST", "IE", "QUE", "STK"})
_INTS = frozenset({"I16", "I32", "I64", "U16", "U32", "U64", "By", "SB"})


def _text(el: ET.Element) -> str:
    return el.text or ""


def _unescape(text: str) -> str:
    """CLIXML escapes characters XML cannot carry as _xHHHH_ (pypsrp does the same)."""
    if "_x" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text.startswith("_x", i) and i + 7 <= len(text) and text[i + 6] == "_":
            try:
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 7
                continue
            except ValueError:
                pass
        out.append(text[i])
        i += 1
    return "".join(out)


_PRIMITIVES: dict[str, Callable[[ET.Element], Any]] = {
    "S": lambda el: _unescape(_text(el)),
    "ToString": lambda el: _unescape(_text(el)),
    "B": lambda el: _text(el).strip().lower() == "true",
    "DT": lambda el: parse_datetime(_text(el)),
    "TS": lambda el: parse_duration(_text(el)),
    "G": lambda el: _text(el),
    "URI": lambda el: _unescape(_text(el)),
    "Version": lambda el: _text(el),
    "C": lambda el: chr(int(_text(el))),
    "Db": lambda el: float(_text(el)),
    "Sg": lambda el: float(_text(el)),
    "D": lambda el: _text(el),
    "BA": lambda el: base64.b64decode(_text(el)),
    "Nil": lambda el: None,
    "XD": lambda el: _text(el),
    "SBK": lambda el: _unescape(_text(el)),
}


class _Reader:
    """One message's objects: ``<TN RefId>`` and ``<Obj RefId>`` are referenced within it."""

    def __init__(self) -> None:
        self.type_names: dict[str, list[str]] = {}
        self.objects: dict[str, Any] = {}

    def value(self, el: ET.Element) -> Any:
        tag = el.tag
        if tag == "Obj":
            return self.obj(el)
        if tag == "Ref":
            return self.objects.get(el.get("RefId", ""))
        if tag in _INTS:
            return int(_text(el))
        reader = _PRIMITIVES.get(tag)
        return reader(el) if reader is not None else _text(el)

    def types_of(self, el: ET.Element) -> list[str]:
        tn = el.find("TN")
        if tn is not None:
            names = [_text(t) for t in tn.findall("T")]
            self.type_names[tn.get("RefId", "")] = names
            return names
        ref = el.find("TNRef")
        return self.type_names.get(ref.get("RefId", ""), []) if ref is not None else []

    def obj(self, el: ET.Element) -> Any:
        """A nested object is its list, or its ToString; the top-level one is an object."""
        out = self.complex(el)
        listed = next((v for v in out.property_sets if isinstance(v, list)), None)
        value: Any = out
        if listed is not None and not out.adapted_properties and not out.extended_properties:
            value = listed
        self.objects[el.get("RefId", "")] = value
        return value

    def complex(self, el: ET.Element) -> GenericComplexObject:
        out = GenericComplexObject()
        out.types = self.types_of(el)
        for child in el:
            tag = child.tag
            if tag == "ToString":
                out.to_string = _unescape(_text(child))
            elif tag == "Props":
                out.adapted_properties = {p.get("N", ""): self.value(p) for p in child}
            elif tag == "MS":
                out.extended_properties = {p.get("N", ""): self.value(p) for p in child}
            elif tag in _LISTS:
                out.property_sets.append([self.value(item) for item in child])
            elif tag == "DCT":
                out.property_sets.append({_key(self, en): _val(self, en) for en in child})
            elif tag not in ("TN", "TNRef"):
                out.property_sets.append(self.value(child))
        return out


def _key(reader: _Reader, en: ET.Element) -> Any:
    key = next((c for c in en if c.get("N") == "Key"), None)
    return reader.value(key) if key is not None else None


def _val(reader: _Reader, en: ET.Element) -> Any:
    val = next((c for c in en if c.get("N") == "Value"), None)
    return reader.value(val) if val is not None else None


def read_output(text: str) -> Any:
    """One PIPELINE_OUTPUT message's object (or primitive value); ET.ParseError on bad XML."""
    # The stdlib parser, as pypsrp uses for the same messages: expat >= 2.4 caps entity
    # amplification, and the peer is the Exchange server we authenticated (Kerberos).
    root = ET.fromstring(text)  # noqa: S314
    reader = _Reader()
    if root.tag == "Obj":
        out = reader.complex(root)
        reader.objects[root.get("RefId", "")] = out
        return out
    return reader.value(root)
