"""The PowerShell side of the Exchange fake: one psrpcore ``ServerRunspacePool`` per WSMan shell.

Behaves as Exchange's ``Microsoft.Exchange`` endpoint does:

- NoLanguage: a pipeline with a script (``IsScript``) fails as a whole with "The syntax is not
  supported by this runspace..." (FullyQualifiedErrorId ``ScriptsNotAllowed``); only commands by
  name run.
- The statements of one pipeline (``add_statement()``) run in order in one ``SessionState``
  created for that pipeline; an ``ExchangeFault`` of one statement becomes an ErrorRecord on the
  error stream (message, FullyQualifiedErrorId, CategoryInfo with category, activity and target,
  the exception's type name) and the next statement still runs.
- Output objects are PSObjects with the ``PSOut``'s type names, its properties as adapted
  properties (typed: String, Int32/Int64, Boolean, DateTime, TimeSpan, lists) and ToString.
- Pipelines run in worker threads (``org.execute`` may sleep); at most ``MaxRunspaces`` of one
  pool at once, the rest wait as a real pool queues them. A pipeline stops writing when its
  unread output passes ``BACKLOG_BYTES`` until the client has received some (bounded memory).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any

from psrpcore import ServerPipeline, ServerRunspacePool
from psrpcore._events import (
    CreatePipelineEvent,
    GetAvailableRunspacesEvent,
    ResetRunspaceStateEvent,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
)
from psrpcore._payload import PSRPPayload, StreamType
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSInvocationState,
)

from mdm.devfakes.exchange_clixml import psout_clixml, queue_output
from mdm.devfakes.exchange_org import ExchangeFault, Organisation, SessionState
from mdm.devfakes.exchange_pipeline import read_create_pipeline

log = logging.getLogger(__name__)

FRAGMENT = 32 * 1024
BACKLOG_BYTES = 4 * 1024 * 1024
NO_LANGUAGE = ("The syntax is not supported by this runspace. This can occur if the runspace is in "
               "no-language mode.")


class Stats:
    """Counters shared by every shell of one fake (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.pipelines = 0

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.pipelines += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self._lock:
            self.running -= 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.running


def plain(value: Any) -> Any:
    """A deserialized parameter value as plain Python (str, int, bool, list, timedelta...)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, value.hour, value.minute,
                        value.second, value.microsecond, tzinfo=value.tzinfo)
    if isinstance(value, timedelta):
        return timedelta(days=value.days, seconds=value.seconds, microseconds=value.microseconds)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def _category(name: str) -> ErrorCategory:
    try:
        return ErrorCategory[name]
    except KeyError:
        return ErrorCategory.NotSpecified


def _exception(type_name: str, message: str) -> NETException:
    exc = NETException(Message=message, HResult=-2146233087)
    names = [type_name] if type_name != "System.Exception" else []
    exc.PSObject.type_names = [*names, "System.Exception", "System.Object"]
    return exc


class _Pipe:
    def __init__(self, pipe: ServerPipeline, command_id: str) -> None:
        self.pipe = pipe
        self.command_id = command_id
        self.started = False
        self.done = False       # its final state message is queued
        self.stopped = False    # Ctrl+C or terminate: stop writing


class Shell:
    """A RunspacePool shell. ``notify`` is called (from any thread) when output is queued."""

    def __init__(self, shell_id: str, *, org: Organisation, principal: str, executor: Executor,
                 stats: Stats, notify: Callable[[], None]) -> None:
        self.shell_id = shell_id
        self.org = org
        self.principal = principal
        self.pool = ServerRunspacePool()
        self.lock = threading.RLock()
        self.drained = threading.Condition(self.lock)
        self.queues: dict[str | None, deque[bytes]] = {None: deque()}
        self.pipes: dict[str, _Pipe] = {}
        self.closed = False
        self._executor = executor
        self._stats = stats
        self._notify = notify
        self._slots: threading.BoundedSemaphore | None = None

    # ---- input --------------------------------------------------------------------------------

    def feed(self, data: bytes, command_id: str | None = None) -> None:
        """PSRP fragments from Create, Command or Send."""
        pid = uuid.UUID(command_id) if command_id else None
        fast = read_create_pipeline(data) if command_id else None
        with self.lock:
            new = bool(command_id and command_id not in self.pipes)
            if command_id and new and fast is not None:
                state = _Pipe(ServerPipeline(self.pool, uuid.UUID(command_id)), command_id)
                self.pipes[command_id] = state
                state.pipe.metadata = fast  # type: ignore[assignment]  # duck-typed: .commands
                state.started = True
                self._executor.submit(self._run, state)
                return
            if command_id and new:
                self.pipes[command_id] = _Pipe(ServerPipeline(self.pool, uuid.UUID(command_id)),
                                               command_id)
            try:
                self.pool.receive_data(PSRPPayload(data, StreamType.default, pid))
                while (event := self.pool.next_event()) is not None:
                    self._on_event(event)
            except Exception:
                # Unparseable fragments: drop what they started; the pool itself goes on.
                self.pool._receive_buffer = bytearray()
                self.pool._incoming_fragments.clear()
                if command_id and new:
                    self.terminate(command_id)
                raise
            finally:
                self._drain()
        self._notify()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, CreatePipelineEvent):
            command_id = str(event.pipeline_id).upper()
            state = self.pipes[command_id]
            if not state.started:
                state.started = True
                self._executor.submit(self._run, state)
        elif isinstance(event, SetMaxRunspacesEvent | SetMinRunspacesEvent | ResetRunspaceStateEvent):
            self.pool.runspace_availability_response(event.ci, True)
            self._slots = None
        elif isinstance(event, GetAvailableRunspacesEvent):
            self.pool.runspace_availability_response(event.ci, max(1, self.pool.max_runspaces))

    # ---- output -------------------------------------------------------------------------------

    def _drain(self) -> None:
        while (payload := self.pool.data_to_send(FRAGMENT)) is not None:
            target = str(payload.pipeline_id).upper() if payload.pipeline_id else None
            self.queues.setdefault(target, deque()).append(payload.data)

    def take(self, target: str | None, limit: int) -> tuple[list[bytes], bool]:
        """Up to ``limit`` bytes of queued output for the pool (None) or a pipeline, and whether
        that pipeline is done (all its output taken)."""
        with self.lock:
            queue = self.queues.get(target)
            chunks: list[bytes] = []
            size = 0
            while queue and (not chunks or size + len(queue[0]) <= limit):
                chunk = queue.popleft()
                chunks.append(chunk)
                size += len(chunk)
            if chunks:
                self.drained.notify_all()
            state = self.pipes.get(target) if target else None
            done = bool(state and state.done and not queue)
            return chunks, done

    def has_output(self, target: str | None) -> bool:
        with self.lock:
            return bool(self.queues.get(target))

    def _backlog(self, command_id: str) -> int:
        return sum(len(c) for c in self.queues.get(command_id, ()))

    # ---- control ------------------------------------------------------------------------------

    def stop(self, command_id: str) -> None:
        """Ctrl+C: the pipeline stops (state Stopped with PipelineStoppedException)."""
        with self.lock:
            state = self.pipes.get(command_id)
            if state is None:
                return
            state.stopped = True
            if state.pipe.state in (PSInvocationState.Running, PSInvocationState.Stopping):
                state.pipe.stop()
                state.done = True
                self._drain()
            self.drained.notify_all()
        self._notify()

    def terminate(self, command_id: str) -> None:
        with self.lock:
            state = self.pipes.pop(command_id, None)
            self.queues.pop(command_id, None)
            if state is not None:
                state.stopped = True
                self.pool.pipeline_table.pop(state.pipe.pipeline_id, None)
            self.drained.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for state in self.pipes.values():
                state.stopped = True
            self.drained.notify_all()
        self._notify()

    def knows(self, command_id: str) -> bool:
        with self.lock:
            return command_id in self.pipes

    # ---- running ------------------------------------------------------------------------------

    def _slot(self) -> threading.BoundedSemaphore:
        with self.lock:
            if self._slots is None:
                self._slots = threading.BoundedSemaphore(max(1, self.pool.max_runspaces or 1))
            return self._slots

    def _run(self, state: _Pipe) -> None:
        slots = self._slot()
        slots.acquire()
        self._stats.enter()
        try:
            self._run_pipeline(state)
        except Exception:  # never let a worker die silently; the client sees a failed pipeline
            log.exception("exchange fake: pipeline %s failed", state.command_id)
            self._finish(state, error=ErrorRecord(
                Exception=_exception("System.InvalidOperationException", "Internal error in the fake."),
                CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.NotSpecified),
                FullyQualifiedErrorId="FakeInternalError"))
        finally:
            self._stats.leave()
            slots.release()

    def _run_pipeline(self, state: _Pipe) -> None:
        with self.lock:
            if state.stopped or self.closed:
                return
            state.pipe.start()
            metadata = state.pipe.metadata
        commands = list(metadata.commands) if metadata is not None else []
        if any(c.is_script for c in commands):
            self._finish(state, error=ErrorRecord(
                Exception=_exception("System.Management.Automation.ParseException", NO_LANGUAGE),
                CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.ParserError,
                                               Reason="ParseException"),
                FullyQualifiedErrorId="ScriptsNotAllowed"))
            return
        statements: list[list[Any]] = [[]]
        for command in commands:
            statements[-1].append(command)
            if command.end_of_statement:
                statements.append([])
        session = SessionState()
        for statement in (s for s in statements if s):
            if state.stopped or self.closed:
                return
            self._run_statement(state, statement, session)
        self._finish(state)

    def _run_statement(self, state: _Pipe, statement: list[Any], session: SessionState) -> None:
        command = statement[0]
        name = str(command.command_text)
        if len(statement) > 1:
            self._write_fault(state, name, ExchangeFault(
                "Piping one cmdlet into another is not supported by this endpoint.",
                error_id="PipelineNotSupported", category="InvalidOperation",
                exception_type="System.Management.Automation.PSNotSupportedException"))
            return
        params: dict[str, Any] = {}
        for key, value in command.parameters:
            if key is None:
                self._write_fault(state, name, ExchangeFault(
                    f"A positional parameter cannot be found that accepts argument '{value}'.",
                    error_id=f"PositionalParameterNotFound,{name}", category="InvalidArgument",
                    exception_type="System.Management.Automation.ParameterBindingException"))
                return
            params[str(key)] = plain(value)
        try:
            outputs = self.org.execute(name, params, principal=self.principal, session=session)
        except ExchangeFault as fault:
            self._write_fault(state, name, fault)
            return
        except Exception as exc:
            log.exception("exchange fake: %s raised", name)
            self._write_fault(state, name, ExchangeFault(
                f"{type(exc).__name__}: {exc}", error_id=f"{type(exc).__name__},{name}",
                category="NotSpecified", exception_type="System.InvalidOperationException"))
            return
        for out in outputs:
            clixml = psout_clixml(out)  # outside the lock: other pipelines go on meanwhile
            with self.lock:
                while (self._backlog(state.command_id) > BACKLOG_BYTES and not state.stopped
                       and not self.closed):
                    self.drained.wait(1.0)
                if state.stopped or self.closed:
                    return
                queue_output(state.pipe, clixml)
                self._drain()
            self._notify()

    def _write_fault(self, state: _Pipe, name: str, fault: ExchangeFault) -> None:
        with self.lock:
            if state.stopped or self.closed:
                return
            state.pipe.write_error(
                _exception(fault.exception_type, fault.message),
                ErrorCategoryInfo(Category=_category(fault.category), Activity=name,
                                  Reason=fault.exception_type.rsplit(".", 1)[-1],
                                  TargetName=fault.target or "",
                                  TargetType="String" if fault.target is not None else ""),
                target_object=fault.target, fully_qualified_error_id=fault.error_id)
            self._drain()
        self._notify()

    def _finish(self, state: _Pipe, *, error: ErrorRecord | None = None) -> None:
        with self.lock:
            if state.done or state.stopped or self.closed:
                return
            if error is None:
                state.pipe.complete()
            else:
                state.pipe._change_state(PSInvocationState.Failed, error=error)
            state.done = True
            self._drain()
        self._notify()
