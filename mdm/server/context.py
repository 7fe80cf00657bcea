"""What every handler and worker can reach: configuration, database, TLS contexts, the core seams
and the services that feature plugins build at start-up under typed keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from aiohttp import web

from mdm.config import Config
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.core.status import StatusSources
from mdm.db.engine import Database
from mdm.server.tls import ReloadableContext

T = TypeVar("T")


class ServiceKey(Generic[T]):
    """A typed key of ``ServerContext.services`` (in the manner of aiohttp's ``AppKey``): the
    feature that builds the service defines the key; ``services[KEY]`` is typed by it."""

    __slots__ = ("name",)

    def __init__(self, name: str, _type: type[T] | None = None) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<ServiceKey {self.name}>"


class Services:
    """Feature services by typed key; a missing one is a wiring error that names the key."""

    def __init__(self) -> None:
        self._items: dict[ServiceKey[Any], object] = {}

    def __getitem__(self, key: ServiceKey[T]) -> T:
        try:
            return cast(T, self._items[key])
        except KeyError:
            raise LookupError(f"service {key.name} is not started (is its plugin composed?)") from None

    def __setitem__(self, key: ServiceKey[T], value: T) -> None:
        self._items[key] = value

    def __contains__(self, key: ServiceKey[Any]) -> bool:
        return key in self._items

    def get(self, key: ServiceKey[T]) -> T | None:
        return cast("T | None", self._items.get(key))

    def pop(self, key: ServiceKey[T]) -> T | None:
        return cast("T | None", self._items.pop(key, None))


@dataclass
class ServerContext:
    config: Config
    db: Database
    tls: dict[str, ReloadableContext] = field(default_factory=dict)
    services: Services = field(default_factory=Services)
    # Core seams that platform plugins fill at start-up (see docs/ARCHITECTURE.md, seams).
    translators: Translators = field(default_factory=Translators)
    pushers: Pushers = field(default_factory=Pushers)
    # Traffic lights: each feature that owns an area registers its source (GET /api/v1/status).
    status: StatusSources = field(default_factory=StatusSources)
    # Ports actually bound, by "listener:scheme" (e.g. "ios:https", "web:http"); differs from the
    # configured port when that is 0 (ephemeral). Used to build URLs handed to devices.
    bound_ports: dict[str, int] = field(default_factory=dict)


CTX = web.AppKey("mdm_ctx", ServerContext)


def ctx_of(request: web.Request) -> ServerContext:
    return request.app[CTX]
