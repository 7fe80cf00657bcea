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
"""

from __future__ import annotations

import plistlib
from io import BytesIO
from typing import Any

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


def loads(body: bytes) -> Any:
    """``plistlib.loads(body)``, its XML parser's reference cycle broken."""
    if _PARSER is not None and _IS_XML(body[:32]):
        return _PARSER(dict_type=dict).parse(BytesIO(body))
    return plistlib.loads(body)
