"""The sync (``POST /kes/v1/sync``): the device's report in, its work out, in one transaction.

In: status, inventory deltas, events, command results, the applied policy version, local
settings. Out: up to ``max_commands_per_sync`` commands (priority, then age), the effective policy
when its version changed, the sync interval and whether to renew the certificate.

Order of a sync: a repeat of the device's last request id is answered from memory (same body) or
refused (409 ``request_id_reused``); a device syncing again within ``min_sync_spacing_seconds``
is refused (429) without touching the database. A sync that brings nothing (an idle one) is
answered from caches when the queue-empty hint holds and the policy is current; otherwise one
transaction locks the device's ``kes_devices`` row (so syncs of one device run one at a time),
checks the request id against the stored one, checks every result, applies everything, claims the
commands and stores the answer with the request id. Any refusal rolls the whole sync back.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, events, library
from mdm.core.errors import NotFound, ServiceError
from mdm.core.library import Translators
from mdm.core.security_events import RejectionLog
from mdm.db.engine import Database
from mdm.db.models import Command, Protocol, Severity, utcnow
from mdm.kes import inventory, longpoll, store_sync, sync_results
from mdm.kes.commands import KES_TYPES, delivered_form
from mdm.kes.config import KesConfig
from mdm.kes.event_types_sync import KES_AGENT_EVENT, KES_INVENTORY_UPDATED, KES_SYNC_REJECTED
from mdm.kes.longpoll import LongPolls
from mdm.kes.messages import PROTOCOL_VERSION
from mdm.kes.peer import KesPeer
from mdm.kes.sync_errors import DeviceNotManaged, RequestIdReused, SyncTooFrequent
from mdm.kes.sync_state import LastSync, QueueHint, Replies, Spacing, StateCache
from mdm.policies.event_types import POLICY_APPLIED
from mdm.policies.seams import EffectivePolicy, PolicyResolver

log = logging.getLogger("mdm.kes.sync")

# How long "no queued command" and a device's agent state are trusted (seconds).
HINT_SECONDS = 30.0
STATE_SECONDS = 30.0
_INPUT_KEYS = ("status", "inventory", "events", "results", "local_settings")
_SEVERITIES = {s.value for s in Severity}


def body_hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


class SyncService:
    def __init__(
        self,
        db: Database,
        config: KesConfig,
        translators: Translators,
        policies: PolicyResolver | None,
        longpolls: LongPolls,
        rejections: RejectionLog,
    ) -> None:
        self.db = db
        self.config = config
        self.translators = translators
        self.policies = policies
        self.longpolls = longpolls
        self.rejections = rejections
        size = config.identity_cache_size
        self.hint = QueueHint(HINT_SECONDS, size)
        self.states = StateCache(STATE_SECONDS, size)
        self.replies = Replies(size)
        self.spacing = Spacing(size)
        self._policy_session: AsyncSession | None = None
        self._policy_session_busy = False
        self.last_sync = LastSync()

    # ---- the entry point ------------------------------------------------------------------------
    async def sync(self, peer: KesPeer, message: dict[str, Any], digest: bytes) -> dict[str, Any]:
        device_id = peer.device_id
        request_id = str(message["request_id"])
        last = self.replies.get(device_id)
        if last is not None and last[0] == request_id:
            if last[1] == digest:
                return last[2]  # a repeat: the same answer, nothing applied again
            raise RequestIdReused(f"request id {request_id} was used with another body")
        wait = self.spacing.check(device_id, self.config.min_sync_spacing_seconds)
        if wait > 0:
            raise SyncTooFrequent(f"syncs of this device closer than {self.config.min_sync_spacing_seconds}s",
                                  retry_after=max(1, math.ceil(wait)))
        self.last_sync.touch(device_id)
        if await self._has_input(device_id, message):
            answer = await self._exchange(peer, message, digest)
        else:
            answer = await self._idle_or_wait(peer, message, digest)
        self.replies.put(device_id, request_id, digest, answer)
        return answer

    async def _has_input(self, device_id: int, message: Mapping[str, Any]) -> bool:
        """Whether the sync brings anything to write (an applied version already recorded does not)."""
        if any(message.get(key) for key in _INPUT_KEYS):
            return True
        applied = message.get("applied_policy_version")
        if applied is None:
            return False
        return bool((await self._state(device_id))["policy_applied_version"] != applied)

    async def _idle_or_wait(self, peer: KesPeer, message: dict[str, Any], digest: bytes) -> dict[str, Any]:
        seconds = min(float(message.get("wait") or 0), self.config.long_poll_max_seconds)
        if seconds <= 0:
            return await self._idle(peer, message, digest)
        async with self.longpolls.slot(peer.device_id) as waiter:
            answer = await self._idle(peer, message, digest)
            if waiter is None or answer["commands"] or answer["policy"] is not None:
                return answer
            if not await longpoll.wait(waiter, seconds):
                return answer
        # Woken: work arrived (or a newer long poll of the device took over); look again.
        return await self._idle(peer, message, digest)

    async def _idle(self, peer: KesPeer, message: dict[str, Any], digest: bytes) -> dict[str, Any]:
        device_id = peer.device_id
        state = await self._state(device_id)
        if state["last_request_id"] == message["request_id"]:
            return await self._exchange(peer, message, digest)  # the stored answer decides
        effective = await self._effective(device_id, state)
        if not self._policy_due(effective, state, message.get("applied_policy_version")):
            if self.hint.known_empty(device_id):
                return self._answer(peer, state, [], None)
            generation = self.hint.generation
            if not await store_sync.deliverable_any(self.db.engine, device_id, utcnow()):
                self.hint.mark_empty(device_id, generation)
                return self._answer(peer, state, [], None)
        return await self._exchange(peer, message, digest)

    # ---- caches -------------------------------------------------------------------------------
    async def _state(self, device_id: int) -> dict[str, Any]:
        state = self.states.get(device_id)
        if state is None:
            state = await store_sync.read_state(self.db.engine, device_id)
            if state is None:
                raise DeviceNotManaged("this device has no KES agent state")
            self.states.put(device_id, state)
        return state

    async def _effective(self, device_id: int, state: Mapping[str, Any]) -> EffectivePolicy | None:
        if self.policies is None:
            return None
        # The resolver caches (``mdm.policies.resolver``: its freshness check reads the database
        # at most once a second per process, not per sync). One session serves the idle syncs, one
        # at a time (a cache hit does not yield): a session made per sync cost more than the rest
        # of an idle sync. While the resolver reads the database with it, the others make their
        # own rather than wait. It is closed (its connection returned) whenever it was used.
        group_id = state["group_id"]
        if self._policy_session_busy:
            async with self.db.session() as own:
                return await self.policies.effective(own, device_id, group_id)
        session = self._policy_session
        if session is None:
            session = self._policy_session = self.db.sessionmaker()
        self._policy_session_busy = True
        try:
            return await self.policies.effective(session, device_id, group_id)
        finally:
            self._policy_session_busy = False
            if session.in_transaction() or session.identity_map:
                await session.close()

    async def close(self) -> None:
        if self._policy_session is not None:
            await self._policy_session.close()
            self._policy_session = None

    def woken(self, device_id: int) -> None:
        """Work or a new policy for the device (a wake-up, here or on another replica): the next
        sync looks in the database again."""
        self.hint.invalidate(device_id)
        self.states.drop(device_id)

    def forget_all(self) -> None:
        """Wake-ups from other replicas may have been lost: trust no cached "nothing to do"."""
        self.hint.clear()

    @staticmethod
    def _policy_due(
        effective: EffectivePolicy | None, state: Mapping[str, Any], reported: str | None
    ) -> bool:
        """Send the policy when its version differs from what the device reported applied, or,
        when it reports nothing, from what was last sent."""
        if effective is None:
            return False
        base = reported if reported is not None else state["policy_sent_version"]
        return effective.version != (base or "")

    def _answer(
        self, peer: KesPeer, state: Mapping[str, Any], out: list[dict[str, Any]],
        policy: EffectivePolicy | None,
    ) -> dict[str, Any]:
        # A renewal is asked of the certificate that was current when it was requested: a device
        # that renewed already presents another one, however old the cached state is.
        renew = state["renew_requested_at"] is not None and state["cert_serial"] == peer.cert_serial
        return {
            "v": PROTOCOL_VERSION,
            "commands": out,
            "policy": None if policy is None else policy.document(),
            "sync_interval": state["sync_interval"] or self.config.sync_interval_seconds,
            "renew_certificate": renew,
        }

    # ---- the transaction ----------------------------------------------------------------------
    async def _exchange(self, peer: KesPeer, message: dict[str, Any], digest: bytes) -> dict[str, Any]:
        device_id = peer.device_id
        request_id = str(message["request_id"])
        generation = self.hint.generation
        async with self.db.transaction(inline=True) as session:
            state = await store_sync.lock_state(session, device_id)
            if state is None:
                raise DeviceNotManaged("this device has no KES agent state")
            if state["last_request_id"] == request_id:
                if state["last_request_hash"] != digest:
                    raise RequestIdReused(f"request id {request_id} was used with another body")
                stored: dict[str, Any] = state["last_answer"] or self._answer(peer, state, [], None)
                return stored
            now = utcnow()
            results = sync_results.unique(message.get("results") or [])
            due = await sync_results.check(session, device_id, results)
            await self._apply(session, device_id, message, due, now)
            applied = message.get("applied_policy_version")
            changed = applied is not None and applied != state["policy_applied_version"]
            if changed and applied is not None:
                if self.policies is not None:
                    await self.policies.record_applied(session, device_id, applied)
                events.emit(session, POLICY_APPLIED, device_id=device_id, version=str(applied),
                            previous=state["policy_applied_version"])
            out = await self._claim(session, device_id, now)
            effective = None
            if self.policies is not None:
                effective = await self.policies.effective(session, device_id, state["group_id"])
            policy = effective if self._policy_due(effective, state, applied) else None
            answer = self._answer(peer, state, out, policy)
            await store_sync.save_exchange(
                session, device_id, request_id=request_id, body_hash=digest, answer=answer, now=now,
                sent=policy.version if policy is not None else state["policy_sent_version"],
                applied=applied if applied is not None else state["policy_applied_version"],
            )
        self.states.drop(device_id)
        if not out:
            self.hint.mark_empty(device_id, generation)
        return answer

    async def _apply(
        self, session: AsyncSession, device_id: int, message: Mapping[str, Any],
        due: list[tuple[Command, Mapping[str, Any]]], now: datetime,
    ) -> None:
        parts = message.get("inventory") or {}
        status, local = message.get("status"), message.get("local_settings")
        wants_device = bool(parts or status is not None or local is not None) or any(
            c.type in ("Locate", "RefreshDeviceInfo") for c, _ in due
        )
        current: dict[str, Any] = {}
        if wants_device:
            current = await store_sync.lock_device_columns(session, device_id, inventory.FACT_COLUMNS) or {}
        update = inventory.DeviceUpdate()
        await sync_results.apply(session, device_id, due, now, update, current)
        if parts:
            inventory.apply_parts(current, parts, now, update)
        inventory.apply_status(current, status, local, now, update)
        if update:
            await store_sync.write_device(session, device_id, update.parts, update.changes)
        if update.parts:
            events.emit(session, KES_INVENTORY_UPDATED, device_id=device_id, parts=sorted(update.parts))
        for item in message.get("events") or ():
            severity = item.get("severity")
            events.emit(
                session, KES_AGENT_EVENT, device_id=device_id,
                severity=Severity(severity) if severity in _SEVERITIES else None,
                agent_type=str(item["type"]), at=str(item["at"]), body=item.get("body"),
            )

    async def _claim(self, session: AsyncSession, device_id: int, now: datetime) -> list[dict[str, Any]]:
        """Claim up to ``max_commands_per_sync`` commands (priority, then age; none delivered and
        unanswered within ``command_redelivery_seconds``), each marked delivered."""
        out: list[dict[str, Any]] = []
        again = now + timedelta(seconds=self.config.command_redelivery_seconds)
        for _ in range(self.config.max_commands_per_sync * 4):  # bounded: failures are skipped
            if len(out) >= self.config.max_commands_per_sync:
                break
            found, command = await commands.claim_next(session, device_id, ready_only=True)
            if not found:
                break
            if command is None:
                continue  # a concurrent request claimed it (cannot happen under the row lock)
            payload = await self._payload(session, command)
            if payload is None:
                continue
            await commands.delivered(session, command)
            await store_sync.redeliver_after(session, [command.id], again)
            out.append(delivered_form(command.guid, payload))
        return out

    async def _payload(self, session: AsyncSession, command: Command) -> dict[str, Any] | None:
        payload = dict(command.payload or {})
        if payload.get("type") not in KES_TYPES:
            payload = await self._late_translation(session, command)
        if payload.get("type") in KES_TYPES:
            return payload
        problem = f"no KES translation for {command.type}; it cannot be sent"
        log.warning("command %s not sent: %s", command.guid, problem)
        commands.unclaim(command)
        await commands.complete(session, command, success=False, info=problem)
        return None

    async def _late_translation(self, session: AsyncSession, command: Command) -> dict[str, Any]:
        """Commands queued before the KES translator was registered are translated at delivery."""
        device = await store_sync.device(session, command.device_id)
        translator = self.translators.get(device.protocol) if device is not None else None
        if device is None or translator is None:
            return {}
        try:
            ctype = library.lookup(command.type)
            library.check_supported(ctype, device)
            payload = translator.translate(ctype.name, dict(command.args or {}), device)
        except ServiceError as exc:
            log.info("late translation of %s failed: %s", command.guid, exc.message)
            return {}
        command.payload = payload
        return payload

    # ---- the admin API ------------------------------------------------------------------------
    async def agent_state(self, device_id: int) -> dict[str, Any]:
        """What the agent of a KES device last told and was told (``GET /api/v1/kes/devices/{id}``)."""
        async with self.db.session() as session:
            found = await store_sync.agent_state(session, device_id)
            if found is None or found[0].protocol != Protocol.KES:
                raise NotFound(f"no KES device {device_id}")
            device, kes = found
            desired = None
            if self.policies is not None:
                desired = (await self.policies.effective(session, device_id, device.group_id)).version
        return {
            "device_id": device_id,
            "status": device.status,
            "agent_version": kes.agent_version if kes else None,
            "registered_at": kes.registered_at if kes else None,
            "bound": bool(kes and kes.cert_fingerprint),
            "last_sync_at": kes.last_sync_at if kes else None,
            "sync_interval": (kes.sync_interval if kes else None) or self.config.sync_interval_seconds,
            "policy_desired_version": desired,
            "policy_sent_version": kes.policy_sent_version if kes else None,
            "policy_applied_version": kes.policy_applied_version if kes else None,
            "renew_requested_at": kes.renew_requested_at if kes else None,
            "long_polling": self.longpolls.waiting(device_id),
            "agent_status": (device.attributes or {}).get(inventory.STATUS_ATTRIBUTE),
            "location": (device.inventory or {}).get(inventory.LOCATION_PART),
        }

    # ---- refusals ----------------------------------------------------------------------------
    async def rejected(self, exc: ServiceError, *, device_id: int, path: str, peer: str | None) -> None:
        """A bound device's message was refused: a log line, and a security event (the first few
        per source and reason; the rest counted, ``RejectionLog``)."""
        log.info("kes device %d: %s refused: %s", device_id, path, exc.message, extra={"code": exc.code})
        sample = {"device_id": device_id, "path": path, "message": exc.message[:300]}
        if not self.rejections.admit(KES_SYNC_REJECTED.name, peer, exc.code, sample):
            return
        async with self.db.transaction() as session:
            events.emit(session, KES_SYNC_REJECTED, device_id=device_id, reason=exc.code,
                        message=exc.message[:500], path=path, peer=peer)
