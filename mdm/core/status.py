"""Traffic lights: one light per area of the service (``GET /api/v1/status``, ``mdm status``).

A feature that owns an area registers a ``StatusSource`` on ``ServerContext.status`` at start-up;
the status endpoint asks every registered source and shows what it answers. Sources must be cheap
(indexed lookups, counters kept by the feature, ``LIMIT``-bounded reads: never a scan of a
fleet-sized table), because monitoring polls them.

The colours follow the reference product's monitoring panel:

- ``green``: working as it should;
- ``yellow``: working, but something needs attention soon (a certificate expiring, a backlog
  growing, some failures);
- ``red``: not working, or about to stop (expired certificate, core link down, push refused);
- ``light_blue``: informational: usable but not yet set up for production (a development push
  identity, no device enrolled yet);
- ``grey``: the area is not configured or not in this build (no data to judge by).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from typing import Protocol as TypingProtocol

from sqlalchemy.ext.asyncio import AsyncSession

# The areas of DESIGN.md §10, in the order they are shown.
AREAS = ("enrollment", "push", "certificates", "command_backlog", "android", "eas", "core_link")


class Light(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"
    LIGHT_BLUE = "light_blue"
    GREY = "grey"


# Worst first: the overall light of several is the first of these that any of them shows.
SEVERITY_ORDER = (Light.RED, Light.YELLOW, Light.LIGHT_BLUE, Light.GREEN, Light.GREY)


@dataclass(frozen=True)
class AreaStatus:
    area: str
    light: Light
    # Why the light is not green, in one sentence an administrator can act on (None when green).
    reason: str | None = None
    # A few figures behind the light (counts, ages, names), shown as they are.
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.light is not Light.GREEN and not self.reason:
            raise ValueError(f"{self.area}: a {self.light} light needs a reason")


class StatusSource(TypingProtocol):
    """The light of one area, computed from the database session it is handed (and whatever
    the feature keeps in memory)."""

    area: str

    async def status(self, session: AsyncSession) -> AreaStatus: ...


class StatusSources:
    """The sources registered at start-up, by area (one source per area)."""

    def __init__(self) -> None:
        self._sources: dict[str, StatusSource] = {}

    def register(self, source: StatusSource) -> None:
        if source.area not in AREAS:
            raise ValueError(f"unknown status area {source.area!r}; known: {AREAS}")
        if source.area in self._sources:
            raise ValueError(f"status area {source.area!r} already has a source")
        self._sources[source.area] = source

    def get(self, area: str) -> StatusSource | None:
        return self._sources.get(area)

    def __iter__(self) -> Iterator[StatusSource]:
        return iter(self._sources.values())


def worst(lights: list[Light]) -> Light:
    """The overall light: the worst of ``lights`` (grey only when every area is grey)."""
    for light in SEVERITY_ORDER:
        if light in lights:
            return light
    return Light.GREY
