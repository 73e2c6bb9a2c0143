"""The agents' door: shared state, messages and results, bound to one agent's identity.

Agents reach MAOS through this module only — command agents with ``maos state …`` /
``maos msg …`` (``maos.cli.door_cmd``), Claude agents with the ``maos mcp`` server
(``maos.mcp_server``). Both build an ``AgentIdentity`` from the agent's environment
(``maos.identity``), open the store it names and call ``open_door``, which checks
``MAOS_AGENT_TOKEN`` against the run's secret (``maos.security``): a caller presenting a
token that is not the claimed agent's is refused with ``PermissionDenied`` and a
``door_refused`` event in the run's log. Every call is then
bound to the agent's task attempt by ``MAOS_TASK_TOKEN`` (or the warm agent's task file),
which also carries the grants of the task's role, and checked against them
(``maos.permissions``, ``Door._authorize``): any refusal is a ``PermissionDenied`` and a
``door_refused`` event naming the action and resource. The resulting
``Door`` acts as that agent and nobody else: it is the sender of every message, the reader
of its own inbox, the writer in the log.

API::

    identity = AgentIdentity.from_env()        # maos.identity; DoorError names a missing variable
    store = await open_agent_store(identity)
    door = await open_door(store, identity, via="cli")
    await door.state_get(key) -> StateEntry | None
    await door.state_set(key, value) -> int
    await door.state_cas(key, expected_version, value) -> CasResult
    await door.state_list(prefix="") -> list[StateEntry]
    await door.send_message(to, content, *, priority="normal", type="text") -> Message
    await door.broadcast(topic, content, *, priority="normal", type="text") -> Message
    await door.subscribe(topic) -> bool
    await door.read_messages(*, count=10, wait_s=None, ack=True) -> list[Delivery]
    await door.ack_messages(receipts) -> int
    await door.publish_result(summary, files=()) -> PublishedResult
    await door.read_result(task_id) -> PublishedResult | None

The audit trail: every call that changes something appends an event to the run's log
(under ``asyncio.shield``): ``state_written``, ``message_sent``, ``topic_subscribed``,
``messages_read`` (only when there were messages), ``messages_acked``, ``result_published``,
and ``door_refused`` for a refused caller. A write and its event are recorded together or not
at all (write-ahead order): everything that can refuse a call — the token, the task file, the
key, the value, sizes, numbers, receipts, the event itself — is checked before anything is
written. Writes of shared state and results then go into the store in one ``Store.transact``
with their event's append; the bus's writes (messages, subscriptions, acknowledgements) are
the bus's own transactions, so their event follows them, and only a store outage between the
two can leave a write without its event. Reads of shared state
(``state_get``, ``state_list``) change nothing and are not logged: an agent polling a key
would flood the log.

Start-up cost matters here (agent scripts call ``maos state get`` in loops), so the bus and
the event models — both built on pydantic — are imported on first use: a state read never
loads them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from maos.agents.task_env import ENV_RUN_ID, ENV_STORE, ENV_TASK_FILE, ENV_TASK_ID, ENV_TASK_TOKEN
from maos.documents import DocumentError, read_text
from maos.errors import DoorError, PermissionDenied, StateConflict, StoreDataError
from maos.identity import ID_RE, AgentIdentity
from maos.numbers import MAX_INT64, NumberError, check_float, check_int
from maos.permissions import DEFAULT_GRANTS, Action, Grants, check, narrower, resolve
from maos.results import PublishedResult, read_result
from maos.security import TaskClaim, load_run_secret, read_task_token, verify_token
from maos.state import DEFAULT_MAX_VALUE_BYTES, SharedState, StateEntry, check_key
from maos.store import keys
from maos.store.base import AppendOp, CasOp, CasResult, Store, WriteOp

if TYPE_CHECKING:
    from maos.bus import Bus, Delivery, Message
    from maos.eventlog import EventLog
    from maos.events import Event
    from maos.model import Plan, RunState

__all__ = ["Door", "open_door"]

log = logging.getLogger("maos.door")


MAX_SUMMARY_CHARS: Final = 65536
MAX_RESULT_FILES: Final = 1000
MAX_FILE_CHARS: Final = 4096
LOGGED_FILES: Final = 100
"""Files named in a ``result_published`` event (the store keeps all of them)."""
LOGGED_MESSAGE_IDS: Final = 100
MAX_READ_COUNT: Final = 1000
"""Most messages one ``read_messages`` returns."""
MAX_RECEIPTS: Final = 10_000
"""Most receipts one ``ack_messages`` takes."""
MAX_WAIT_S: Final = 3600.0
"""Longest wait of ``read_messages`` and ``add_task``."""
VIA_HTTP: Final = "mcp-http"
"""``via`` of calls through the host's MCP endpoint (``maos.mcp_http``)."""
_TASK_FILE_MAX_BYTES: Final = 4096  # a task id and a token
_WRITE_ATTEMPTS: Final = 100
"""Tries of an unconditional write (a compare-and-set with its event) under contention."""


async def open_door(store: Store, identity: AgentIdentity, *, via: str = "") -> Door:
    """The door of ``identity``'s agent, once its tokens check out.

    Raises ``PermissionDenied`` if the run has no secret in ``store`` (no such run there), the
    agent token is not the claimed agent's, or the task token is not the agent's for the task
    its environment names (checked at every call for a warm agent, whose task changes); the
    latter two are logged as ``door_refused`` (``via`` names the entrance: ``cli``, ``mcp``).
    """
    secret = await load_run_secret(store, identity.run_id)
    if secret is None:
        raise PermissionDenied(
            f"cannot check the token of agent {identity.agent_id}: run {identity.run_id!r} has no "
            f"agent secret in store {store.url} (is {ENV_RUN_ID} right, and {ENV_STORE} the run's store?)"
        )
    door = Door(
        store,
        identity.run_id,
        identity.agent_id,
        identity.task_id,
        task_file=identity.task_file,
        secret=secret,
        task_token=identity.task_token,
        via=via,
    )
    if not verify_token(secret, identity.run_id, identity.agent_id, identity.token):
        owner = await _token_owner(store, secret, identity)
        reason = f"token does not belong to agent {identity.agent_id}" + (
            f" (it is the token of agent {owner})" if owner is not None else ""
        )
        await door._refuse(identity.task_id, reason, token_owner=owner)
    if not identity.task_file:
        await door._bind()  # a cold agent's task cannot change: check its token once, up front
    return door


async def _token_owner(store: Store, secret: bytes, identity: AgentIdentity) -> str | None:
    """Whose token was presented, among the run's agents (for the audit trail), if anyone's."""
    from maos.eventlog import EventLog
    from maos.events import RunStarted

    try:
        first = await EventLog(store, identity.run_id).read(count=1)
    except StoreDataError:
        return None
    if not first or not isinstance(first[0][1], RunStarted):
        return None
    for agent in first[0][1].agents:
        if verify_token(secret, identity.run_id, agent.id, identity.token):
            return agent.id
    return None


def _check_result(summary: str, files: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(summary, str):
        raise DoorError(f"summary must be a string, not {type(summary).__name__}")
    if len(summary) > MAX_SUMMARY_CHARS:
        raise DoorError(
            f"summary is {len(summary)} characters, above the limit of {MAX_SUMMARY_CHARS}; "
            "put the details in a file and name it in files"
        )
    if isinstance(files, str) or len(files) > MAX_RESULT_FILES:
        raise DoorError(f"files must be a list of at most {MAX_RESULT_FILES} paths")
    for n, item in enumerate(files):
        if not isinstance(item, str) or not item or len(item) > MAX_FILE_CHARS:
            raise DoorError(f"files[{n}] must be a path of 1-{MAX_FILE_CHARS} characters, not {item!r}")
        _check_text(f"files[{n}]", item)
    _check_text("summary", summary)
    return tuple(files)


def _check_text(what: str, text: str) -> None:
    """Text the store keeps as UTF-8: a lone surrogate (``\\udcff`` from an undecodable
    command-line byte, or an escape in JSON) has no UTF-8 form."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise DoorError(f"{what} is not valid Unicode text (character {exc.start}: {bad!r})") from None


def _check_content(content: Any) -> None:
    """A message's content as the bus will store it: JSON, finite numbers, valid Unicode."""
    try:
        json.dumps(content, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise DoorError(f"message content is not JSON the bus can store: {exc}") from None
    except RecursionError:
        raise DoorError("message content is nested too deeply") from None


def _number(check: Any, value: object, name: str, **bounds: Any) -> Any:
    try:
        return check(value, name, **bounds)
    except NumberError as exc:
        raise DoorError(str(exc)) from None


def _preview(data: bytes) -> str:
    from maos.events import DOOR_PREVIEW_CHARS

    text = data[: DOOR_PREVIEW_CHARS * 4].decode(errors="replace")
    return text if len(text) <= DOOR_PREVIEW_CHARS else text[:DOOR_PREVIEW_CHARS] + "…"


# --------------------------------------------------------------------------- the door


@dataclass(frozen=True, slots=True)
class AddTaskAnswer:
    added: bool
    task_id: str
    reason: str  # why it was refused; empty when added

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "task_id": self.task_id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """How a ``wait_task`` ended: the awaited task's state (terminal unless the wait timed
    out or the waiting attempt was stopped) and why."""

    task_id: str
    state: str
    reason: str
    waited_s: float

    @property
    def ended(self) -> bool:
        return self.state in ("succeeded", "failed", "skipped", "cancelled")

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "state": self.state,
            "ended": self.ended,
            "reason": self.reason,
            "waited_s": round(self.waited_s, 3),
        }


def _waiting_on(plan: Plan, task_id: str) -> set[str]:
    """``task_id`` and every task that depends on it, directly or not: none of them can end
    while ``task_id``'s agent waits (``wait_task`` refuses them: a certain deadlock)."""
    dependents: dict[str, list[str]] = {}
    for task in plan.tasks:
        for dep in task.depends_on:
            dependents.setdefault(dep, []).append(task.id)
    found = {task_id}
    todo = [task_id]
    while todo:
        for child in dependents.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass(frozen=True, slots=True)
class _Bound:
    """What one door call acts for: the task, its token's claim (None in-process), its grants."""

    task: str
    claim: TaskClaim | None
    grants: Grants


class _TaskView:
    """One task's record and its current attempt's door usage, folded from the run's log as
    far as the door has read it: each call reads only the entries appended since the last
    (``Door._check_current``, ``Door._within_budget``). The first entry (``run_started``: the
    run's config) is always read; after it, only the entries that name the task are decoded
    (a task's own events all carry its id, and a long log costs a scan, not a fold)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()  # concurrent calls of one door (an MCP server's) fold once
        self.task_id = ""
        self._after = "0"
        self._state: RunState | None = None
        self.attempt = 0  # the task's current attempt, whose usage is below: a new one starts from nothing
        self.calls = 0  # door events of that attempt (``DOOR_CALL_EVENTS``, added tasks)
        self.written_bytes = 0  # their size: state values, messages and added tasks written
        self.budget_refused = False  # a refusal for the spent budget is in the log

    async def fold(self, log: EventLog, task_id: str) -> RunState:
        """The run's state as far as the entries that name ``task_id`` make it, up to now."""
        from maos.eventlog import decode
        from maos.events import DOOR_CALL_EVENTS, DoorRefused, TaskAddRequested, apply
        from maos.model import RunState

        if self._state is None or task_id != self.task_id:  # a warm agent's next task
            self.task_id, self._after, self._state = task_id, "0", RunState()
            self.attempt = self.calls = self.written_bytes = 0
            self.budget_refused = False
        needle = json.dumps(task_id).encode()  # ids are ASCII: as the log writes them
        async for entry in log.entries(self._after):
            if needle in entry.record or self._after == "0":
                event = decode(entry)
                apply(self._state, event, entry.id)
                task = self._state.tasks.get(task_id)
                if task is not None and task.attempts != self.attempt:
                    self.attempt = task.attempts
                    self.calls = self.written_bytes = 0
                    self.budget_refused = False
                if isinstance(event, TaskAddRequested) and event.by_task == task_id:
                    self.calls += 1
                    self.written_bytes += len(entry.record)
                elif (
                    isinstance(event, DOOR_CALL_EVENTS)
                    and event.task == task_id
                    and (event.verified if isinstance(event, DoorRefused) else True)
                ):
                    self.calls += 1
                    self.written_bytes += getattr(event, "size_bytes", 0)
                    if isinstance(event, DoorRefused) and event.reason.startswith(BUDGET_SPENT):
                        self.budget_refused = True
            self._after = entry.id
        return self._state

    def overdrawn(self) -> str | None:
        """Why the task's attempt may make no more door calls, if it may not (the run's config)."""
        from maos.model import DOOR_BYTES_PER_ATTEMPT, DOOR_CALLS_PER_ATTEMPT

        config = self._state.config if self._state is not None else None
        calls = config.door_calls_per_attempt if config is not None else DOOR_CALLS_PER_ATTEMPT
        written = config.door_bytes_per_attempt if config is not None else DOOR_BYTES_PER_ATTEMPT
        if self.calls >= calls:
            used = f"{self.calls:,} door calls (at most {calls:,} per attempt: "
            used += "maos run --door-calls-per-attempt)"
        elif self.written_bytes >= written:
            used = (
                f"{self.written_bytes:,} bytes written "
                f"(at most {written:,} per attempt: maos run --door-bytes-per-attempt)"
            )
        else:
            return None
        return f"{BUDGET_SPENT} {self.task_id}: {used}"


BUDGET_SPENT: Final = "the door budget is spent for task"
"""How a refusal for a spent door budget starts (``RunConfig.door_calls_per_attempt``)."""
MAX_ADDED_TASK_BYTES: Final = 1 << 20
"""Largest task an agent may add (``add_task``), as the log records it: its prompt is in every
``task_added`` and checkpoint of the run."""
UNVERIFIED_REFUSALS_LOGGED: Final = 10
"""Refusals of calls with no valid task token one door logs (a ``maos mcp`` server's calls
may each bring a bad one; each refusal is a log entry and counts against no budget)."""


def _over(attempt: int, task_id: str, current: int) -> str:
    """Why a token of ``attempt`` is refused once attempt ``current`` runs the task."""
    return f"attempt {attempt} of task {task_id} is over: attempt {current} runs it now"


TASK_ADDRESS: Final = "task:"
"""``send_message(to="task:<id>")`` addresses whichever agent runs that task."""
TASK_RECEIPT: Final = "task/"


def task_inbox(task_id: str) -> str:
    """The bus inbox of a task (agent ids cannot contain ``@``'s neighbours ``:`` or ``/``)."""
    return f"task@{task_id}"


class Door:
    """The door operations of one agent in one run.

    Build it with ``open_door`` (token checked) for a caller outside MAOS; MAOS code that
    already knows the agent (an in-process tool) may build it directly.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        agent_id: str,
        task_id: str = "",
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        bus: Bus | None = None,
        task_file: str | Path | None = None,
        secret: bytes | None = None,
        task_token: str = "",
        via: str = "",
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.agent_id = agent_id
        self._task_id = task_id
        self._task_file = Path(task_file) if task_file else None
        # With the run's secret (open_door), every call is bound by a task token; without
        # (MAOS code acting for an agent it knows), the task is trusted with DEFAULT_GRANTS.
        self._secret = secret
        self._task_token = task_token
        self._via = via
        self.state = SharedState(store, run_id, max_value_bytes=max_value_bytes)
        self._bus = bus
        self._log: EventLog | None = None
        self._view = _TaskView()
        self._unverified_refusals = 0

    def __repr__(self) -> str:
        return f"Door(run_id={self.run_id!r}, agent_id={self.agent_id!r}, task_id={self._task_id!r})"

    @property
    def task_id(self) -> str:
        """The agent's task as its environment says (not checked: ``_bind`` checks it);
        with a task file (``MAOS_TASK_FILE``), the one it names now."""
        return self._task_and_token()[0]

    def _task_and_token(self) -> tuple[str, str]:
        if self._task_file is None:
            return self._task_id, self._task_token
        try:  # two short lines MAOS wrote; not a FIFO to hang on, not a huge or binary file
            lines = read_text(self._task_file, max_bytes=_TASK_FILE_MAX_BYTES).split("\n")
        except DocumentError as exc:
            raise DoorError(
                f"cannot read the agent's current task ({ENV_TASK_FILE} {self._task_file}): {exc}"
            ) from exc
        current = lines[0].strip()
        if ID_RE.fullmatch(current) is None:
            raise DoorError(f"{ENV_TASK_FILE} {self._task_file} holds no valid task id: {current[:80]!r}")
        return current, lines[1].strip() if len(lines) > 1 else ""

    async def _bind(self) -> _Bound:
        """The task this call acts for, its attempt and its grants, from the task token.
        A token that is not this agent's for that task is refused (``door_refused``)."""
        task, token = self._task_and_token()
        if self._secret is None:
            return _Bound(task, None, DEFAULT_GRANTS)
        if not token:
            where = ENV_TASK_FILE if self._task_file is not None else ENV_TASK_TOKEN
            await self._refuse(task, f"no task token ({where}) for task {task}")
        claim = read_task_token(self._secret, self.run_id, self.agent_id, token)
        if claim is None:
            await self._refuse(
                task,
                f"the task token ({ENV_TASK_TOKEN}) is not one of agent {self.agent_id}",
            )
        if claim.task_id != task:
            await self._refuse(
                task,
                f"the task token of agent {self.agent_id} is bound to task {claim.task_id}, "
                f"not to task {task} ({ENV_TASK_ID})",
                action="task",
                resource=task,
            )
        try:
            grants = resolve(Grants.from_dict(claim.grants))
        except (TypeError, ValueError) as exc:  # signed by MAOS: only a MAOS bug gets here
            raise DoorError(f"the task token carries malformed grants: {exc}") from None
        return _Bound(task, claim, grants)

    async def _authorize(self, action: Action, resource: str, *, logs: bool = True) -> _Bound:
        """Bind the call to its task (``_bind``) and check its role's grants for ``action`` on
        ``resource`` (``maos.permissions``); a refusal is logged and raises ``PermissionDenied``.
        A call that ``logs`` (adds to the run's log) is also checked against its attempt's door
        budget (``_within_budget``); one that does not (a read) needs none."""
        bound = await self._bind()
        if logs:
            await self._within_budget(bound, action, resource)
        reason = check(bound.grants, action, resource, own_task=bound.task)
        if reason is not None:
            await self._refuse(bound.task, reason, action=action.value, resource=resource, bound=bound)
        return bound

    async def _within_budget(self, bound: _Bound, action: Action, resource: str) -> None:
        """Refuse the call if it comes from an attempt that is over (a process it left behind:
        its calls would count against the attempt that runs the task now) or if its attempt has
        spent its door budget (``RunConfig.door_calls_per_attempt``, ``door_bytes_per_attempt``):
        a runaway or hostile agent cannot grow the run's log and store without bound."""
        if bound.claim is None:  # MAOS acting for an agent it knows
            return
        spent, attempt = await self._usage(bound.task)
        if bound.claim.attempt < attempt:
            await self._refuse(
                bound.task,
                _over(bound.claim.attempt, bound.task, attempt),
                action=action.value,
                resource=resource,
            )
        if spent is not None:
            await self._refuse_spent(bound.task, attempt, spent, action=action.value, resource=resource)

    async def _usage(self, task: str) -> tuple[str | None, int]:
        """Why ``task``'s current attempt may make no more door calls (``_TaskView.overdrawn``),
        and which attempt that is."""
        from maos.eventlog import EventLog

        async with self._view.lock:
            await self._view.fold(EventLog(self.store, self.run_id), task)
            return self._view.overdrawn(), self._view.attempt

    async def _refuse_spent(
        self, task: str, attempt: int, reason: str, *, action: str, resource: str
    ) -> NoReturn:
        """Refuse a call of attempt ``attempt`` of ``task``, whose budget is spent: logged (and
        audited) the first time, then not, or the refusals would grow the log in the calls'
        place."""
        from maos.eventlog import EventLog

        error = PermissionDenied(f"refused: {reason} in run {self.run_id}")
        async with self._view.lock:  # fold, test and set at once: concurrent calls log it once
            await self._view.fold(EventLog(self.store, self.run_id), task)
            if self._view.budget_refused or self._view.attempt != attempt:
                raise error
            self._view.budget_refused = True
        raise await self._logged_refusal(task, reason, action=action, resource=resource, verified=True)

    async def _authorize_current(self, action: Action, resource: str) -> _Bound:
        """``_authorize``, and for a task token whose attempt may be over, that it is not: a
        process an attempt left behind (a daemon in a session of its own) keeps the token in
        its environment, and must not write state or speak for the task while the next
        attempt runs it, or after the task ended. Tokens of the HTTP endpoint are released
        when their attempt ends (``maos.mcp_http``), so those calls skip the log replay."""
        bound = await self._authorize(action, resource)
        if bound.claim is not None and self._via != VIA_HTTP:
            await self._check_current(bound.claim, action=action)
        return bound

    async def _refuse(
        self,
        task: str,
        reason: str,
        *,
        action: str = "",
        resource: str = "",
        token_owner: str | None = None,
        bound: _Bound | None = None,
    ) -> NoReturn:
        """Log a ``door_refused`` event and raise ``PermissionDenied`` with ``reason``.

        A refusal of a call whose task token is valid for the attempt that runs the task now
        (``bound`` with its claim) counts against that attempt's door budget, and once it is
        spent the refusal is the budget's (``_refuse_spent``: logged once). Any other (a token
        that is not the caller's, or of an attempt that is over) counts against no budget,
        or an agent could spend another's; a door logs at most
        ``UNVERIFIED_REFUSALS_LOGGED`` of those."""
        claim = bound.claim if bound is not None else None
        verified = claim is not None
        if claim is not None:
            spent, attempt = await self._usage(task)
            if claim.attempt < attempt:
                verified = False
            elif spent is not None:
                await self._refuse_spent(task, attempt, spent, action=action, resource=resource)
        if not verified:
            self._unverified_refusals += 1
            if self._unverified_refusals > UNVERIFIED_REFUSALS_LOGGED:
                raise PermissionDenied(f"refused: {reason} in run {self.run_id}")
        raise await self._logged_refusal(
            task, reason, action=action, resource=resource, token_owner=token_owner, verified=verified
        )

    async def _logged_refusal(
        self,
        task: str,
        reason: str,
        *,
        action: str,
        resource: str,
        verified: bool,
        token_owner: str | None = None,
    ) -> PermissionDenied:
        """Append the ``door_refused`` event of a refusal; the error to raise."""
        from maos.events import DoorRefused

        await self._record(
            DoorRefused(
                claimed_agent=self.agent_id,
                task=task,
                reason=reason,
                via=self._via,
                token_owner=token_owner,
                action=action,
                resource=resource[:256],
                verified=verified,
            )
        )
        return PermissionDenied(f"refused: {reason} in run {self.run_id}")

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            from maos.bus import Bus

            self._bus = Bus(self.store, self.run_id)
        return self._bus

    async def _record(self, event: Event) -> None:
        """Append ``event`` to the run's log; a cancellation cannot drop it half way. Every
        event of the door but those written with their data (``_write``) goes through here."""
        if self._log is None:
            from maos.eventlog import EventLog

            self._log = EventLog(self.store, self.run_id)
        await asyncio.shield(self._log.append(event))

    async def _write(
        self,
        store_key: str,
        data: bytes,
        event: Callable[[int, int], Event],
        expected_version: int | None = None,
    ) -> CasResult:
        """Write ``data`` to ``store_key`` and append ``event(new_version)`` to the run's log in
        one transaction: both or neither. With ``expected_version`` a compare-and-set (a
        conflict writes nothing and returns the current version); without, an unconditional
        write, done as compare-and-sets retried against the version each conflict reports.
        The event is built and encoded before anything is written: ``event(new_version,
        conflicts)``, with the compare-and-sets lost to other writers so far."""
        from maos.events import event_to_json

        stream = keys.events(self.run_id)
        if expected_version is None:
            current = await self.store.get(store_key)
            version = 0 if current is None else current.version
        else:
            version = expected_version
        delay_s = 0.001
        for conflicts in range(_WRITE_ATTEMPTS):
            try:
                record = event_to_json(event(version + 1, conflicts))
            except ValueError as exc:  # pydantic's errors are ValueErrors
                raise DoorError(f"cannot record the write of {store_key!r}: {exc}") from exc
            ops: list[WriteOp] = [CasOp(store_key, version, data), AppendOp(stream, record)]
            result = await asyncio.shield(self.store.transact(ops))
            if result.ok:
                return CasResult(True, result.versions[0])
            if expected_version is not None:
                return CasResult(False, result.versions[0])
            version = result.versions[0]  # another writer won: write over its version
            await asyncio.sleep(random.uniform(0, delay_s))
            delay_s = min(delay_s * 2, 0.05)
        raise StateConflict(
            f"{store_key!r} changed under {_WRITE_ATTEMPTS} attempts in a row to write it; nothing written",
            key=store_key,
            attempts=_WRITE_ATTEMPTS,
        )

    # ------------------------------------------------------------------ shared state

    async def state_get(self, key: str) -> StateEntry | None:
        await self._authorize(Action.STATE_READ, key, logs=False)
        return await self.state.get(key)

    async def state_list(self, prefix: str = "") -> list[StateEntry]:
        """The entries under ``prefix`` that the agent's role may read (others are left out)."""
        bound = await self._bind()
        entries = await self.state.list(prefix)
        return [e for e in entries if check(bound.grants, Action.STATE_READ, e.key) is None]

    async def state_set(self, key: str, value: Any) -> int:
        """Write ``key``; return its new version."""
        result = await self._state_write(key, None, value)
        return result.version

    async def state_cas(self, key: str, expected_version: int, value: Any) -> CasResult:
        """Write ``key`` only if it is at ``expected_version`` (0: only if absent)."""
        expected = _number(check_int, expected_version, "expected_version", max_value=MAX_INT64 - 1)
        return await self._state_write(key, expected, value)

    async def _state_write(self, key: str, expected_version: int | None, value: Any) -> CasResult:
        from maos.events import StateCasFailed, StateWritten

        data = self.state.encode(key, value)
        task = (await self._authorize_current(Action.STATE_WRITE, key)).task  # before anything is written
        preview = "" if self.state.sealed else _preview(data)  # an encrypted value stays out of the log

        def written(version: int, conflicts: int) -> Event:
            return StateWritten(
                agent_id=self.agent_id,
                task=task,
                key=key,
                version=version,
                size_bytes=len(data),
                preview=preview,
                cas_conflicts=conflicts,
            )

        store_key = keys.state_key(self.run_id, check_key(key))
        result = await self._write(store_key, self.state.seal(store_key, data), written, expected_version)
        if not result.ok and expected_version is not None:
            # Nothing was written; the log still says so (maos_cas_conflicts_total counts it).
            await self._record(
                StateCasFailed(
                    agent_id=self.agent_id,
                    task=task,
                    key=key,
                    expected_version=expected_version,
                    version=result.version,
                )
            )
        return result

    # ------------------------------------------------------------------ messages
    #
    # The bus writes a message (its seq counter and its stream) in a transaction of its own,
    # so the door cannot add its event to it. Everything that can refuse the call is checked
    # first (the task file, the recipient, the content); after the bus's write only a store
    # outage can keep its event from the log.

    async def send_message(
        self, to: str, content: Any, *, priority: str = "normal", type: str = "text"
    ) -> Message:
        """Put a message in agent ``to``'s inbox, from this agent. ``to`` may also name a task,
        ``task:<id>``: the message waits in that task's inbox for whichever agent runs it."""
        if not isinstance(to, str):
            raise DoorError(f"the recipient must be an agent id or task:<id>, not {to!r}")
        _check_content(content)
        task = (await self._authorize_current(Action.MESSAGE_SEND, to)).task
        inbox = task_inbox(to.removeprefix(TASK_ADDRESS)) if to.startswith(TASK_ADDRESS) else to
        message = await self.bus.send(self.agent_id, inbox, content, priority=priority, type=type)
        await self._message_sent(message, task)
        return message

    async def broadcast(
        self, topic: str, content: Any, *, priority: str = "normal", type: str = "text"
    ) -> Message:
        """Publish a message on ``topic``, from this agent, to every current subscriber."""
        _check_content(content)
        task = (await self._authorize_current(Action.MESSAGE_BROADCAST, topic)).task
        message = await self.bus.broadcast(self.agent_id, topic, content, priority=priority, type=type)
        await self._message_sent(message, task)
        return message

    async def _message_sent(self, message: Message, task: str) -> None:
        from maos.events import MessageSent

        await self._record(
            MessageSent(
                agent_id=self.agent_id,
                task=task,
                message_id=message.id,
                to=message.to,
                topic=message.topic,
                priority=message.priority.value,
                seq=message.seq,
                size_bytes=len(message.to_json()),
                cas_conflicts=self.bus.seq_conflicts(message.id),
            )
        )

    async def subscribe(self, topic: str) -> bool:
        """Receive what is broadcast on ``topic`` from now on; False if already subscribed."""
        from maos.events import TopicSubscribed

        task = (await self._authorize(Action.TOPIC_SUBSCRIBE, topic)).task  # the bus checks the topic
        added = await self.bus.subscribe(self.agent_id, topic)
        if added:
            await self._record(TopicSubscribed(agent_id=self.agent_id, task=task, topic=topic))
        return added

    async def read_messages(
        self, *, count: int = 10, wait_s: float | None = None, ack: bool = True
    ) -> list[Delivery]:
        """Up to ``count`` messages for this agent, high priority first, waiting up to
        ``wait_s`` for one. With ``ack`` they are acknowledged at once; without, they stay
        pending until ``ack_messages`` and come back after the bus lease if never acked."""
        count = _number(check_int, count, "count", min_value=1, max_value=MAX_READ_COUNT)
        if wait_s is not None:
            wait_s = _number(check_float, wait_s, "wait_s", max_value=MAX_WAIT_S)
        bound = await self._authorize(Action.MESSAGE_READ, self.agent_id)
        task = bound.task
        if task and bound.claim is not None:
            # The task's inbox is for the attempt that runs it: one that is over (a process
            # it left behind) must not take the messages meant for the next.
            await self._check_current(bound.claim, action=Action.MESSAGE_READ)
        deliveries = await self._read_inboxes(count, wait_s, task)
        if not deliveries:
            return deliveries
        read_at = time.time()
        latency_s = tuple(
            round(max(0.0, read_at - d.message.timestamp), 6)
            for d in deliveries[:LOGGED_MESSAGE_IDS]
            if d.deliveries == 1
        )
        if ack:
            await self._ack((d.receipt for d in deliveries), task)
        from maos.events import MessagesRead

        await self._record(
            MessagesRead(
                agent_id=self.agent_id,
                task=task,
                count=len(deliveries),
                message_ids=tuple(d.message.id for d in deliveries[:LOGGED_MESSAGE_IDS]),
                acked=ack,
                latency_s=latency_s,
            )
        )
        return deliveries

    async def _read_inboxes(self, count: int, wait_s: float | None, task: str) -> list[Delivery]:
        """The agent's own inbox, then its task's (receipts of the latter prefixed ``task/``)."""
        task_box = task_inbox(task) if task else None
        deadline = time.monotonic() + (wait_s or 0.0)
        waiting = False
        while True:
            found = await self.bus.read(self.agent_id, count=count)
            if task_box is not None and len(found) < count:
                more = await self.bus.read(task_box, count=count - len(found))
                found += [replace(d, receipt=TASK_RECEIPT + d.receipt) for d in more]
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            if not waiting:  # a message sent from now on is what this read waits for
                log.debug("%s has no message: waiting up to %.3g s for one", self.agent_id, left)
                waiting = True
            # Wait on the agent's own inbox briefly, then look at the task's again.
            found = await self.bus.read(self.agent_id, count=count, block_s=min(left, 0.25))
            if found:
                return found

    async def _ack(self, receipts: Iterable[str], task: str) -> int:
        own: list[str] = []
        task_receipts: list[str] = []
        for receipt in receipts:
            if receipt.startswith(TASK_RECEIPT):
                task_receipts.append(receipt.removeprefix(TASK_RECEIPT))
            else:
                own.append(receipt)
        acked = await self.bus.ack(self.agent_id, own) if own else 0
        if task_receipts and task:
            acked += await self.bus.ack(task_inbox(task), task_receipts)
        return acked

    async def ack_messages(self, receipts: Iterable[str]) -> int:
        """Acknowledge messages this agent read, by receipt; return how many were pending."""
        from maos.bus import check_receipt

        if isinstance(receipts, str | bytes):
            raise DoorError("receipts must be a list of receipts, not one string")
        items = list(receipts)
        bound = await self._authorize(Action.MESSAGE_READ, self.agent_id)
        task = bound.task
        if len(items) > MAX_RECEIPTS:
            raise DoorError(f"at most {MAX_RECEIPTS} receipts at a time, not {len(items)}")
        for n, receipt in enumerate(items):
            if not isinstance(receipt, str):
                raise DoorError(f"receipts[{n}] must be a receipt string, not {receipt!r}")
            check_receipt(receipt.removeprefix(TASK_RECEIPT), self.store.url)
        if not items:
            return 0
        if task and bound.claim is not None and any(item.startswith(TASK_RECEIPT) for item in items):
            await self._check_current(bound.claim, action=Action.MESSAGE_READ)
        acked = await self._ack(items, task)
        from maos.events import MessagesAcked

        await self._record(MessagesAcked(agent_id=self.agent_id, task=task, count=len(items), acked=acked))
        return acked

    # ------------------------------------------------------------------ results

    async def publish_result(self, summary: str, files: Sequence[str] = ()) -> PublishedResult:
        """Store this task's result (a later publish replaces it) for children and the report."""
        from maos.events import DOOR_PREVIEW_CHARS, ResultPublished

        if not self.task_id:
            raise DoorError(f"publish_result needs the agent's task ({ENV_TASK_ID})")
        checked = _check_result(summary, files)
        bound = await self._authorize(Action.RESULT_PUBLISH, self.task_id)
        task = bound.task
        if bound.claim is not None:
            await self._check_current(bound.claim, action=Action.RESULT_PUBLISH)
        result = PublishedResult(
            task_id=task,
            agent_id=self.agent_id,
            summary=summary,
            files=checked,
            published_at=time.time(),
        )
        event = ResultPublished(
            agent_id=self.agent_id,
            task=task,
            summary=summary[:DOOR_PREVIEW_CHARS],
            files=checked[:LOGGED_FILES],
        )
        await self._write(keys.task_result(self.run_id, task), result.to_json(), lambda _v, _lost: event)
        return result

    # ------------------------------------------------------------------ dynamic subtasks

    async def add_task(
        self, spec: Mapping[str, Any], *, blocks: Sequence[str] = (), wait_s: float = 30.0
    ) -> AddTaskAnswer:
        """Ask the orchestrator for a new task (FR-1.2) and wait for its decision.

        ``spec`` is a plan task (``id``, ``prompt``, ``depends_on``, ``command``, …); it may
        depend on this agent's own task (it then runs after it) or on any other. ``blocks``:
        tasks not started yet that must also wait for the new one. The answer says whether
        the task was added and, if not, why (a bad field, an unknown id, a cycle, a quota).
        """
        from maos.eventlog import EventLog
        from maos.events import TaskAdded, TaskAddRefused, TaskAddRequested, event_to_json

        if not isinstance(spec, Mapping):
            raise DoorError("add_task needs a task object (id, prompt, depends_on, …)")
        wait_s = _number(check_float, wait_s, "wait_s", min_value=0.1, max_value=MAX_WAIT_S)
        if isinstance(blocks, str | bytes) or not all(isinstance(item, str) for item in blocks):
            raise DoorError(f"blocks must be a list of task ids, not {blocks!r}"[:200])
        runtime = "command" if spec.get("command") is not None else "claude-code"
        bound = await self._authorize(Action.TASK_ADD, runtime)
        spec = await self._capped(spec, bound)
        request_id = secrets.token_hex(8)
        try:
            request = TaskAddRequested(
                request_id=request_id,
                agent_id=self.agent_id,
                by_task=bound.task,
                spec=dict(spec),
                blocks=tuple(blocks),
            )
            encoded = event_to_json(request)  # what cannot be logged is refused before it is sent
        except ValueError as exc:  # pydantic's errors are ValueErrors
            raise DoorError(f"add_task: the task cannot be recorded: {exc}"[:1000]) from None
        if len(encoded) > MAX_ADDED_TASK_BYTES:
            raise DoorError(
                f"add_task: the task is {len(encoded):,} bytes as JSON; at most {MAX_ADDED_TASK_BYTES:,} "
                "(put a long prompt in shared state or a file and point to it)"
            )
        log = EventLog(self.store, self.run_id)
        after = await self.store.last_id(log.stream)
        await self._record(request)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            for event_id, event in await log.read(after, block_s=min(left, 1.0)):
                after = event_id
                if isinstance(event, TaskAdded) and event.request_id == request_id:
                    return AddTaskAnswer(added=True, task_id=event.task.id, reason="")
                if isinstance(event, TaskAddRefused) and event.request_id == request_id:
                    return AddTaskAnswer(added=False, task_id=str(spec.get("id", "")), reason=event.reason)
        return AddTaskAnswer(
            added=False,
            task_id=str(spec.get("id", "")),
            reason=f"no answer from the orchestrator within {wait_s:g}s",
        )

    async def wait_task(self, task_id: str, *, wait_s: float = MAX_WAIT_S) -> TaskEnd:
        """Wait until task ``task_id`` of this run has ended, at most ``wait_s`` seconds.

        While it waits, the run's wait-for graph has the edge "this agent's task waits for
        ``task_id``" (``task_waiting`` events, ``maos.deadlock``): a wait that closes a cycle
        (e.g. for a task that needs a resource this task holds) is a deadlock, which the
        orchestrator resolves; the answer then says how (the awaited task failed, or this
        attempt was stopped). Needs the grant to read ``task_id``'s result."""
        from maos.eventlog import EventLog
        from maos.events import TaskWaiting, apply
        from maos.model import RunState

        wait_s = _number(check_float, wait_s, "wait_s", min_value=0.0, max_value=MAX_WAIT_S)
        if not isinstance(task_id, str) or ID_RE.fullmatch(task_id) is None:
            raise DoorError(f"wait_task needs a task id, not {task_id!r}"[:200])
        bound = await self._authorize(Action.RESULT_READ, task_id)
        attempt = bound.claim.attempt if bound.claim is not None else 0
        log = EventLog(self.store, self.run_id)
        state = await log.replay(RunState())
        if task_id not in state.tasks:
            raise DoorError(f"no task {task_id!r} in run {self.run_id}")
        if bound.task not in state.tasks:
            raise DoorError(f"no task {bound.task!r} in run {self.run_id}")
        if state.plan is not None and task_id in _waiting_on(state.plan, bound.task):
            how = "is this task" if task_id == bound.task else "depends on this task"
            raise DoorError(f"{task_id!r} {how} ({bound.task!r}): it cannot end while this one waits")
        attempt = attempt or state.tasks[bound.task].attempts
        started = time.monotonic()
        edge = TaskWaiting(agent_id=self.agent_id, task=bound.task, attempt=attempt, on=task_id)
        await self._record(edge)
        try:
            deadline = started + wait_s
            while True:
                awaited = state.tasks[task_id]
                own = state.tasks[bound.task]
                if awaited.state.terminal:
                    return TaskEnd(task_id, awaited.state.value, awaited.reason, time.monotonic() - started)
                if own.attempts != attempt or own.state.terminal or own.state.value in ("ready", "pending"):
                    reason = f"this attempt ({attempt}) of {bound.task} no longer runs: {own.reason}"
                    return TaskEnd(task_id, awaited.state.value, reason, time.monotonic() - started)
                left = deadline - time.monotonic()
                if left <= 0:
                    return TaskEnd(task_id, awaited.state.value, "timed out", time.monotonic() - started)
                for event_id, event in await log.read(state.last_event_id, block_s=min(left, 1.0)):
                    apply(state, event, event_id)
        finally:
            await self._record(edge.model_copy(update={"waiting": False, "ts": time.time()}))

    async def read_result(self, task_id: str) -> PublishedResult | None:
        """The result published for ``task_id`` in this run (e.g. a parent's), or None."""
        await self._authorize(Action.RESULT_READ, str(task_id), logs=False)
        return await read_result(self.store, self.run_id, task_id)

    async def _capped(self, spec: Mapping[str, Any], bound: _Bound) -> Mapping[str, Any]:
        """``spec`` with the grants its task will have: those it names, the rest the adding
        task's; more than the adding task has is refused (no escalation through add_task)."""
        asked = spec.get("grants")
        try:
            own = Grants.from_dict(asked) if asked is not None else None
        except (TypeError, ValueError) as exc:
            raise DoorError(f"add_task: field 'grants': {exc}") from None
        grants = resolve(own, bound.grants)
        wider = narrower(grants, bound.grants)
        if wider is not None:
            await self._refuse(
                bound.task, f"add_task: grants {wider}", action=Action.TASK_ADD.value, bound=bound
            )
        return {**spec, "grants": grants.as_dict()}

    async def _check_current(self, claim: TaskClaim, *, action: Action) -> None:
        """Refuse a task token whose attempt is over: a later attempt took the task, or the
        attempt ended. Read from the run's log, so only for the calls that need it: publishing
        the task's result, its inbox, state writes and messages (a process an attempt left
        behind would act for the next). Only the entries that name the task are decoded: a
        task's own events all carry its id, and a long log costs a scan, not a fold. A door
        that serves many calls (``maos mcp``) reads only what the log gained since its last
        check (``_TaskView``): an agent's thousandth call costs what its first did."""
        from maos.eventlog import EventLog
        from maos.model import TaskState

        async with self._view.lock:
            state = await self._view.fold(EventLog(self.store, self.run_id), claim.task_id)
            task = state.tasks.get(claim.task_id)
            if task is None:  # the token is MAOS's, so the task was in the run when it was issued
                return
            if task.attempts > claim.attempt:
                reason = _over(claim.attempt, claim.task_id, task.attempts)
            elif task.attempts == claim.attempt and task.state not in (TaskState.ASSIGNED, TaskState.RUNNING):
                reason = f"attempt {claim.attempt} of task {claim.task_id} already ended ({task.state.value})"
            else:
                return
        await self._refuse(claim.task_id, reason, action=action.value, resource=claim.task_id)
