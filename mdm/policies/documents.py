"""Checking what an administrator hands in: setting keys and values, documents' sizes, tags, and
profile activation conditions (the out-of-office schedule with its time zone). Pure: no I/O.

What the API's schema says is refused there (400 ``invalid_argument``); what it cannot say (an
unknown time zone, an interval that ends before it starts, nesting, null values reaching the
service) is refused here with 422 and a specific code.

A settings document is ``{key: {"value": JSON, "locked": bool}}``: flat keys such as
``"password.min_length"``; a value is a JSON string, number, boolean, array or object (not null:
to drop a setting, unset it; null inside an array or object is fine), nested at most
``MAX_DEPTH`` deep.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mdm.core.errors import ServiceError
from mdm.policies.seams import PolicySetting

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
MAX_SETTINGS = 500
MAX_DOCUMENT_BYTES = 65_536  # a policy's or a profile's settings, as compact JSON
MAX_DEPTH = 8
MAX_TAGS = 32
MAX_INTERVALS = 28
MAX_PROFILES = 32  # per policy
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class InvalidSetting(ServiceError):
    status = 422
    code = "invalid_setting"


class DocumentTooLarge(ServiceError):
    status = 413
    code = "document_too_large"


class InvalidTag(ServiceError):
    status = 422
    code = "invalid_tag"


class InvalidSchedule(ServiceError):
    status = 422
    code = "invalid_schedule"


class InvalidTimezone(ServiceError):
    status = 422
    code = "invalid_timezone"


def _depth_ok(value: Any, where: str) -> None:
    if value is None:
        raise InvalidSetting(f"setting {where!r}: null is not a setting value (unset the key instead)")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | str | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidSetting(f"setting {where!r}: {item} is not a JSON number")
            continue
        if isinstance(item, list | dict):
            if depth >= MAX_DEPTH:
                raise InvalidSetting(f"setting {where!r}: nested deeper than {MAX_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            if isinstance(item, dict) and not all(isinstance(k, str) for k in item):
                raise InvalidSetting(f"setting {where!r}: object keys must be strings")
            stack.extend((c, depth + 1) for c in children)
            continue
        raise InvalidSetting(f"setting {where!r}: {type(item).__name__} is not a JSON value")


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise InvalidSetting(
            f"setting key {str(key)[:80]!r} must be 1-128 letters, digits, '.', '_' or '-' (not first)",
            key=str(key)[:128],
        )
    return key


def check_value(key: str, value: Any) -> Any:
    _depth_ok(value, key)
    return value


def check_document(settings: Mapping[str, PolicySetting], what: str) -> dict[str, dict[str, Any]]:
    """The stored form of a whole settings document, after every check (count, keys, values,
    size); raises before anything is written."""
    if len(settings) > MAX_SETTINGS:
        raise DocumentTooLarge(f"{what} holds {len(settings)} settings; at most {MAX_SETTINGS}")
    stored: dict[str, dict[str, Any]] = {}
    for key, setting in settings.items():
        check_key(key)
        stored[key] = {"value": check_value(key, setting.value), "locked": bool(setting.locked)}
    size = len(json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(f"{what} is {size} bytes as JSON; at most {MAX_DOCUMENT_BYTES}", size=size)
    return dict(sorted(stored.items()))


def parse_document(stored: Mapping[str, Any]) -> dict[str, PolicySetting]:
    """The stored form back as settings (written by ``check_document``)."""
    return {k: PolicySetting(v["value"], bool(v["locked"])) for k, v in stored.items()}


def check_tags(tags: list[str]) -> list[str]:
    unique = sorted(set(tags))
    if len(unique) > MAX_TAGS:
        raise InvalidTag(f"{len(unique)} tags; at most {MAX_TAGS}")
    for tag in unique:
        if not isinstance(tag, str) or not TAG.fullmatch(tag):
            raise InvalidTag(f"tag {str(tag)[:80]!r} must be 1-64 letters, digits, '.', '_', ':' or '-'")
    return unique


def check_profile_name(name: str) -> str:
    if not PROFILE_NAME.fullmatch(name):
        raise InvalidSetting(f"profile name {name[:80]!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


# ---- the out-of-office schedule -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Interval:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # exclusive; 1440 = midnight at the end of the day


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly office hours in a time zone; ``out_of_office(now)`` is true outside all of them."""

    zone: ZoneInfo
    intervals: tuple[Interval, ...]

    def out_of_office(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        return not any(day in i.days and i.start <= minute < i.end for i in self.intervals)


def _minutes(text: Any, where: str) -> int:
    if not isinstance(text, str) or not re.fullmatch(r"\d\d:\d\d", text):
        raise InvalidSchedule(f"{where}: {str(text)[:20]!r} is not HH:MM")
    if text == "24:00":
        return 1440
    try:
        parsed = time.fromisoformat(text)
    except ValueError:
        raise InvalidSchedule(f"{where}: {text!r} is not a time of day") from None
    return parsed.hour * 60 + parsed.minute


def parse_schedule(raw: Any) -> Schedule:
    """``{"timezone": "Europe/Berlin", "office_hours": [{"days": ["mon", ...], "start": "09:00",
    "end": "17:00"}]}``; an interval does not cross midnight (end after start, "24:00" allowed)."""
    if not isinstance(raw, dict) or set(raw) - {"timezone", "office_hours"}:
        raise InvalidSchedule("out_of_office takes exactly timezone and office_hours")
    zone_name = raw.get("timezone")
    if not isinstance(zone_name, str) or not zone_name or len(zone_name) > 64 or ".." in zone_name:
        raise InvalidTimezone(f"time zone {str(zone_name)[:64]!r} is not an IANA time zone name")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidTimezone(
            f"unknown time zone {zone_name!r} (an IANA name such as Europe/Berlin)"
        ) from None
    hours = raw.get("office_hours")
    if not isinstance(hours, list) or not hours or len(hours) > MAX_INTERVALS:
        raise InvalidSchedule(f"office_hours must be a list of 1-{MAX_INTERVALS} intervals")
    intervals = []
    for n, item in enumerate(hours):
        where = f"office_hours[{n}]"
        if not isinstance(item, dict) or set(item) != {"days", "start", "end"}:
            raise InvalidSchedule(f"{where} takes exactly days, start and end")
        days = item["days"]
        if (not isinstance(days, list) or not days or any(d not in DAYS for d in days)
                or len(set(days)) != len(days)):
            raise InvalidSchedule(f"{where}.days must list distinct days among {', '.join(DAYS)}")
        start, end = _minutes(item["start"], f"{where}.start"), _minutes(item["end"], f"{where}.end")
        if start >= 1440 or end <= start:
            raise InvalidSchedule(f"{where}: end must come after start on the same day (split at midnight)")
        intervals.append(Interval(frozenset(DAYS.index(d) for d in days), start, end))
    return Schedule(zone, tuple(intervals))


@dataclass(frozen=True, slots=True)
class Conditions:
    """All the given conditions must hold: at least one of ``tags_any`` (if any), every one of
    ``tags_all``, and being out of office (if a schedule is given). None given: always."""

    tags_any: frozenset[str] = frozenset()
    tags_all: frozenset[str] = frozenset()
    office: Schedule | None = None

    @property
    def tags(self) -> frozenset[str]:
        return self.tags_any | self.tags_all

    def holds(self, tags: frozenset[str], out_of_office: bool) -> bool:
        if self.tags_any and not (self.tags_any & tags):
            return False
        if not self.tags_all <= tags:
            return False
        return self.office is None or out_of_office


def parse_conditions(raw: Mapping[str, Any]) -> Conditions:
    unknown = set(raw) - {"tags_any", "tags_all", "out_of_office"}
    if unknown:
        raise InvalidSchedule(f"unknown condition(s): {', '.join(sorted(unknown))}")
    office = raw.get("out_of_office")
    return Conditions(
        frozenset(check_tags(list(raw.get("tags_any") or []))),
        frozenset(check_tags(list(raw.get("tags_all") or []))),
        None if office is None else parse_schedule(office),
    )


def stored_conditions(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of conditions (checked first)."""
    parse_conditions(raw)
    return {
        "tags_any": check_tags(list(raw.get("tags_any") or [])),
        "tags_all": check_tags(list(raw.get("tags_all") or [])),
        "out_of_office": raw.get("out_of_office"),
    }
