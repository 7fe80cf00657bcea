"""Commit-time invalidation of cached bindings (``mdm.core.identity``), for every platform.

A transaction that deletes a device, changes its status (checked out, removed, wiped, ...) or
re-binds or deletes the device's row in a platform's binding table drops the device's cached
binding at commit in this process, and on PostgreSQL sends ``NOTIFY <channel>, '<device ids>'``
(the platform's channel) so that every other replica drops it as well (``identity_notify``).

A platform declares its binding table once with ``watch_bindings`` and hands each of its
``BindingCache`` objects to ``track_bindings``.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, object_session

from mdm.core.identity import BindingCache
from mdm.core.store_identity import notify_devices
from mdm.db.models import Base, Device, Protocol

BINDING_KEY = "mdm_binding_devices"  # dropped in this process at commit
BINDING_NOTIFY_KEY = "mdm_binding_notify"  # channel -> device ids, sent to other replicas at flush

# The binding caches of each engine (one per server in a process; tests run two "replicas" in one
# process, and a commit on one must not reach the other except through NOTIFY).
_BINDING_CACHES: weakref.WeakKeyDictionary[Engine, weakref.WeakSet[BindingCache]] = (
    weakref.WeakKeyDictionary()
)
# The NOTIFY channel of each platform that declared a binding table.
_CHANNELS: dict[Protocol, str] = {}
_WATCHED: set[type[Base]] = set()


def track_bindings(engine: Engine, cache: BindingCache) -> None:
    """Drop ``cache``'s entries for devices whose binding a transaction on ``engine`` ended."""
    _BINDING_CACHES.setdefault(engine, weakref.WeakSet()).add(cache)


def drop_bindings(bind: Engine | Connection | None, device_ids: set[int]) -> None:
    engine = bind.engine if isinstance(bind, Connection) else bind
    if engine is None:
        return
    for cache in list(_BINDING_CACHES.get(engine, ())):
        for device_id in device_ids:
            cache.drop_device(device_id)


def _changed(target: Any, device_id: int, channel: str | None) -> None:
    session = object_session(target)
    if session is None:
        return
    session.info.setdefault(BINDING_KEY, set()).add(device_id)
    if channel is not None:
        session.info.setdefault(BINDING_NOTIFY_KEY, {}).setdefault(channel, set()).add(device_id)


def watch_bindings(
    protocol: Protocol,
    table: type[Base],
    *,
    channel: str,
    device_id: str = "device_id",
    fingerprint: str = "cert_fingerprint",
) -> None:
    """Declare ``table`` as ``protocol``'s binding table (one row per bound device, with the
    bound certificate's fingerprint); idempotent."""
    _CHANNELS[protocol] = channel
    if table in _WATCHED:
        return
    _WATCHED.add(table)

    def rebound(_mapper: Any, _connection: Any, target: Any) -> None:
        if getattr(inspect(target).attrs, fingerprint).history.has_changes():
            _changed(target, getattr(target, device_id), channel)

    def unbound(_mapper: Any, _connection: Any, target: Any) -> None:
        _changed(target, getattr(target, device_id), channel)

    event.listen(table, "after_update", rebound)
    event.listen(table, "after_delete", unbound)


def _channel_of(device: Device) -> str | None:
    try:
        return _CHANNELS.get(Protocol(device.protocol))
    except ValueError:
        return None


@event.listens_for(Device, "after_update")
def _device_updated(_mapper: Any, _connection: Any, target: Device) -> None:
    if inspect(target).attrs.status.history.has_changes():
        _changed(target, target.id, _channel_of(target))


@event.listens_for(Device, "after_delete")
def _device_deleted(_mapper: Any, _connection: Any, target: Device) -> None:
    _changed(target, target.id, _channel_of(target))


@event.listens_for(Session, "after_flush")
def _notify_replicas(session: Session, _context: Any) -> None:
    by_channel: dict[str, set[int]] | None = session.info.pop(BINDING_NOTIFY_KEY, None)
    if not by_channel:
        return
    connection = session.connection()
    for channel, device_ids in sorted(by_channel.items()):
        notify_devices(connection, channel, device_ids)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    ended = session.info.pop(BINDING_KEY, None)
    if ended:
        drop_bindings(session.bind, ended)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(BINDING_KEY, None)
    session.info.pop(BINDING_NOTIFY_KEY, None)
