"""``core.devices.count_devices`` counts exactly what ``list_devices`` pages through, for every
filter and their combinations (issue 12: the device list's total at 10^6 devices)."""

from __future__ import annotations

import pytest
from test_api_devices import make_fleet

from mdm.core import devices
from mdm.core.errors import NotFound

FILTERS: list[dict[str, object]] = [
    {},
    {"protocol": "ios"},
    {"protocol": "kes"},
    {"protocol": "eas"},
    {"status": "ok"},
    {"status": "removing"},
    {"user": "alice"},
    {"user": "nobody"},
    {"q": "sn0001"},
    {"q": "%"},
    {"protocol": "kes", "status": "ok"},
]


async def _all_pages(db, **filters: object) -> list[int]:
    ids: list[int] = []
    cursor = None
    async with db.session() as session:
        while True:
            rows, cursor = await devices.list_devices(session, limit=7, after_id=cursor, **filters)
            ids.extend(d.id for d, _ in rows)
            if cursor is None:
                return ids


async def test_count_matches_every_page(db) -> None:
    fleet = await make_fleet(db)
    cases = [
        *FILTERS,
        {"group": fleet["corp"]},
        {"group": fleet["emea"]},
        {"group": fleet["corp"], "protocol": "kes", "status": "ok", "user": "alice"},
    ]
    for filters in cases:
        listed = await _all_pages(db, **filters)
        async with db.session() as session:
            assert await devices.count_devices(session, **filters) == len(listed), filters
    async with db.session() as session:
        assert await devices.count_devices(session) == 30


async def test_count_of_an_unknown_group_is_404(db) -> None:
    async with db.session() as session:
        with pytest.raises(NotFound):
            await devices.count_devices(session, group=999_999)
