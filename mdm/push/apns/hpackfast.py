"""HPACK for many small, alike header blocks (the APNs client and its fake; ``mdm.push.apns.h2conn``).

- ``LiteralEncoder`` replaces hpack's encoder: every field a literal *without indexing*
  (RFC 7541 §6.2.2; a static-table name index where there is one, no Huffman, no dynamic table),
  and the encoding of the constant fields (method, scheme, authority, topic, push type, priority)
  cached. Any HPACK decoder reads it; it costs a few dict look-ups instead of hpack's table
  searches, and the per-push fields (path, apns-id, expiration) never evict anything.
- ``FastDecoder`` reads such blocks (literals without indexing or never indexed, static
  indexes, no Huffman) directly and hands every other block, untouched, to hpack's decoder:
  those representations change no decoder state, so both paths agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, HeaderTuple
from hpack.table import HeaderTable

MAX_CACHED = 256

# The static table (RFC 7541 Appendix A): name -> first index, (name, value) -> index.
_STATIC = [(bytes(n), bytes(v)) for n, v in HeaderTable.STATIC_TABLE]
_NAME_INDEX: dict[bytes, int] = {}
_PAIR_INDEX: dict[tuple[bytes, bytes], int] = {}
for _i, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _NAME_INDEX.setdefault(_name, _i)
    _PAIR_INDEX.setdefault((_name, _value), _i)


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) in a byte whose high bits are ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _name_part(name: bytes) -> bytes:
    index = _NAME_INDEX.get(name)
    if index is not None:
        return _integer(index, 4)  # literal without indexing, indexed name
    return b"\x00" + _integer(len(name), 7) + name


def literal(name: bytes, value: bytes) -> bytes:
    """One field as ``LiteralEncoder.encode`` writes a field that is not constant: a literal
    without indexing (a static-table name index where there is one), no Huffman."""
    return _name_part(name) + _integer(len(value), 7) + value


class LiteralEncoder:
    CONSTANT = frozenset({b":method", b":scheme", b":authority", b":status", b"apns-topic",
                          b"apns-push-type", b"apns-priority", b"content-type"})

    def __init__(self) -> None:
        self._names: dict[bytes, bytes] = {}
        self._pairs: dict[tuple[bytes, bytes], bytes] = {}
        self._table_size = 4096

    # h2 sets this when the peer changes SETTINGS_HEADER_TABLE_SIZE: nothing is ever indexed here.
    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_size = value

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        out = bytearray()
        pairs, names = self._pairs, self._names
        for pair in headers:
            # (keys are bytes pairs: a str pair never hits, and is encoded below)
            cached = pairs.get(pair) if isinstance(pair, tuple) else None
            if cached is not None:
                out += cached
                continue
            name, value = pair
            name = name if isinstance(name, bytes) else name.encode()
            value = value if isinstance(value, bytes) else value.encode()
            part = names.get(name)
            if part is None:
                part = _name_part(name)
                if len(names) < MAX_CACHED:
                    names[name] = part
            if name in self.CONSTANT:
                index = _PAIR_INDEX.get((name, value))
                field = _integer(index, 7, 0x80) if index else part + _integer(len(value), 7) + value
                if len(pairs) < MAX_CACHED:
                    pairs[(name, value)] = field
                out += field
                continue
            out += part
            if len(value) < 0x7F:
                out.append(len(value))
            else:
                out += _integer(len(value), 7)
            out += value
        return bytes(out)


class _Fallback(Exception):
    pass


def _read_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise _Fallback
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fast_decode(data: bytes) -> list[HeaderTuple]:
    out: list[HeaderTuple] = []
    append = out.append
    new = tuple.__new__  # HeaderTuple(name, value) without its Python-level __new__
    pos, end = 0, len(data)
    while pos < end:
        first = data[pos]
        if first & 0x80:  # indexed field: static table only
            index, pos = _read_int(data, pos, 7)
            if not 0 < index <= len(_STATIC):
                raise _Fallback
            append(new(HeaderTuple, _STATIC[index - 1]))
            continue
        if first & 0xE0 != 0:  # incremental indexing, table size update: state changes
            raise _Fallback
        # without indexing (0000) or never indexed (0001)
        if first & 0x0F != 0x0F:
            index, pos = first & 0x0F, pos + 1
        else:
            index, pos = _read_int(data, pos, 4)
        if index:
            if index > len(_STATIC):
                raise _Fallback
            name = _STATIC[index - 1][0]
        else:
            if pos >= end:
                raise _Fallback
            length = data[pos]
            if length & 0x80:
                raise _Fallback  # Huffman
            if length != 0x7F:
                pos += 1
            else:
                length, pos = _read_int(data, pos, 7)
            name = data[pos:pos + length]
            pos += length
        if pos >= end:
            raise _Fallback
        length = data[pos]
        if length & 0x80:
            raise _Fallback  # Huffman
        if length != 0x7F:
            pos += 1
        else:
            length, pos = _read_int(data, pos, 7)
        value = data[pos:pos + length]
        pos += length
        if pos > end:
            raise _Fallback
        append(new(HeaderTuple, (name, value)))
    return out


class FastDecoder(Decoder):
    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        if raw and len(data) <= self.max_header_list_size:
            try:
                return _fast_decode(data)
            except (_Fallback, IndexError):
                pass
        return super().decode(data, raw=raw)
