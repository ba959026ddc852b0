"""Runs a compiled plan on one asyncio loop (REGULAR_FLOW), persisting every step write-ahead.

Write-ahead rule, enforced by one mechanism: every write goes into a pending batch, and a
step that is about to cause a side effect awaits ``_barrier()``, which makes the driver
commit the batch first. So an intent (STARTING) is durable before its action runs, a task
handle before its first poll, and an outcome before any dependent's own intent commits (they
share a transaction): a chain of commands costs one commit per command.

The intent of a step admitted by the driver is buffered at admission, so the driver's own
commit covers it; the driver then starts the step. An action that ends at once (a plain
`python` function: capability ``starts-sync``) runs inline, right after that commit, with
no task and no turn of the event loop; anything else continues as a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from . import actions, jsondata, orphans
from .actions import ActionContext, ActionResult
from .errors import LockedError, StateError, UsageError
from .graph import END, CommandInstance, PlanGraph, Step, public_env
from .loader import LoadedPlan, TooLarge, read_bounded
from .model import AsyncSpec, Operation
from .scheduler import Scheduler
from .status import (
    DONE_OK,
    REGULAR_FLOW,
    ROLLBACK_FLOW,
    TRANSITIONS,
    CommandStatus,
    RunStatus,
    check_transition,
)
from .store import (
    RUN_KEY,
    Batch,
    CommandRecord,
    EventRecord,
    LockRecord,
    RunRecord,
    Store,
    TaskEnd,
    TaskRecord,
    live_lock,
    run_key,
)
from .templates import TemplateError, render_value

__all__ = [
    "OPTIONS_KEY",
    "RUN_KEY",
    "ApplyOptions",
    "Leftover",
    "Listener",
    "RunOutcome",
    "Runner",
    "apply_plan",
    "execute",
    "live_holder",
    "load_run",
    "lock_alive",
    "lock_kept",
    "lock_lease",
    "lock_state",
    "new_run_id",
    "redact_secrets",
    "resolve_secrets",
    "resume_run",
    "rollback_run",
    "run_key",
    "still_running",
]

S = CommandStatus
Listener = Callable[[EventRecord], None]  # called with each event as it is recorded
EVENT_VERSION = 1
# What admitting a step gives the driver: its outcome when it settled at once; the
# coroutine to run as a task; or a call to make inline once the batch holding the step's
# intent is committed, which returns the outcome, or the coroutine for what is left.
Work = Coroutine[Any, Any, bool]
Inline = Callable[[], "bool | Work"]
Admitted = bool | Work | Inline
# Steps settled one after another without the driver awaiting anything, before it gives
# the event loop a turn (signals, heartbeats, tasks in flight).
INLINE_RUN = 64
# Recovery, waiting for the processes a dead executor left running: how often it looks
# whether they ended, and how often it says what it waits for.
ORPHAN_POLL = 0.15
ORPHAN_NOTE = 5.0
# The flow whose processes may still run for a command a dead executor left in flight.
_IN_FLIGHT = {S.STARTING: REGULAR_FLOW, S.REVERTING: ROLLBACK_FLOW}


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: ``20261122-045301-3fa2c1``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


# A secret is a token, a password or a key: a file larger than this is not one (/dev/zero).
MAX_SECRET_BYTES = 1024 * 1024


def resolve_secrets(loaded: LoadedPlan, environ: Mapping[str, str] | None = None
                    ) -> dict[str, str]:
    """Secret values from the environment or files; raises UsageError naming what is missing
    or why a file cannot be read."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name, spec in loaded.plan.secrets.items():
        value: str | None = None
        if spec.env is not None:
            value = environ.get(spec.env)
            missing = f"environment variable {spec.env} is not set"
        else:
            path = os.path.join(loaded.plan.base_dir, os.path.expanduser(spec.file or ""))
            try:
                text = read_bounded(path, MAX_SECRET_BYTES).decode()
                # Newlines as a text-mode read gives them: \r\n and \r become \n.
                value = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
            except TooLarge as exc:
                raise UsageError(f"secret `{name}`: file {spec.file} is {exc}") from None
            except FileNotFoundError as exc:  # missing: empty when optional
                missing = f"cannot read file {spec.file}: {exc.strerror}"
            except OSError as exc:  # there but unusable (a directory, no permission): say so
                raise UsageError(f"secret `{name}`: cannot read file {spec.file}: "
                                 f"{exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise UsageError(f"secret `{name}`: file {spec.file} is not UTF-8 text"
                                 ) from None
        if value is None:
            if not spec.optional:
                raise UsageError(f"secret `{name}`: {missing}")
            value = ""
        values[name] = value
    for value in values.values():
        if value:
            _RESOLVED.pop(value, None)  # the newest last
            _RESOLVED[value] = None
    while len(_RESOLVED) > MAX_RESOLVED:  # a host resolving new secrets for ever
        del _RESOLVED[next(iter(_RESOLVED))]
    return values


# The secret values this process resolved, newest last, so that even a crash log can leave
# them out: the last MAX_RESOLVED of them, far more than one plan holds, so that a host that
# resolves fresh tokens run after run for months does not keep every one of them.
_RESOLVED: dict[str, None] = {}
MAX_RESOLVED = 4096


def redact_secrets(text: str) -> str:
    """``text`` with every secret value resolved in this process replaced by ``***``."""
    return str(_Redactor({v: v for v in _RESOLVED})(text))


@dataclass(frozen=True)
class ApplyOptions:
    """How to run a plan, overriding its settings: the options of `planctl apply`."""

    max_parallel: int | None = None
    on_failure: str | None = None  # overrides the plan's settings.on_failure
    run_id: str | None = None
    lock_timeout: float | None = None  # overrides the plan's settings.lock_timeout
    cancel_inflight: bool = False  # on failure, cancel polled tasks that declare `cancel`
    # Rollback: commands the user says are gone (removed by hand): REVERT_SKIPPED without
    # asking `exists` or running the inverse. Not kept for a resume.
    gone: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Options the CLI would refuse are a UsageError here too, before anything runs
        (``max_parallel=-1`` started nothing and waited for ever)."""
        def bad(name: str, value: object, want: str) -> UsageError:
            return UsageError(f"ApplyOptions({name}={value!r}): {want}")

        parallel = self.max_parallel
        if parallel is not None and (type(parallel) is not int or parallel < 1):
            raise bad("max_parallel", parallel, "a whole number of steps, 1 or more")
        if self.on_failure is not None and self.on_failure not in ("rollback", "stop"):
            raise bad("on_failure", self.on_failure, "'rollback' or 'stop'")
        timeout = self.lock_timeout
        if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):
            raise bad("lock_timeout", timeout, "seconds, 0 or more")
        if self.run_id is not None and type(self.run_id) is not str:
            raise bad("run_id", self.run_id, "a string")


# The key, in a run's recorded variables, of the options of its apply that its resume
# keeps (no var can take it: var names are identifiers).
OPTIONS_KEY = "planctl:options"


def _lasting(options: ApplyOptions) -> dict[str, Any]:
    """The options given to an apply that must hold for the whole run, resumes included."""
    kept: dict[str, Any] = {}
    if options.on_failure is not None:
        kept["on_failure"] = options.on_failure
    if options.max_parallel is not None:
        kept["max_parallel"] = options.max_parallel
    if options.cancel_inflight:
        kept["cancel_inflight"] = True
    return kept


def _recorded(options: ApplyOptions, run: RunRecord) -> ApplyOptions:
    """``options`` for a recorded run: what the caller gave wins, then its apply's."""
    kept = run.variables.get(OPTIONS_KEY)
    if not isinstance(kept, Mapping):
        return options
    return dataclasses.replace(
        options,
        on_failure=options.on_failure or kept.get("on_failure"),
        max_parallel=options.max_parallel or kept.get("max_parallel"),
        cancel_inflight=options.cancel_inflight or bool(kept.get("cancel_inflight")))


def lock_lease() -> float:
    """Seconds a lock stays valid without a heartbeat (PLANCTL_LOCK_LEASE, default 30);
    UsageError unless a positive number: 0 or less would make every holder look dead at
    once (and its heartbeat spin), NaN none ever."""
    text = os.environ.get("PLANCTL_LOCK_LEASE", "").strip()
    if not text:
        return 30.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"PLANCTL_LOCK_LEASE={text!r}: expected seconds, more than 0 "
                         f"(the default is 30)")
    return seconds


@dataclass(frozen=True, slots=True)
class Leftover:
    """Something the run changed that is still there (or may be)."""

    command: str
    entity: str | None
    status: str
    reason: str


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: final statuses, and what was left behind."""

    run_id: str
    status: str
    statuses: Mapping[str, str]
    leftovers: tuple[Leftover, ...] = ()
    entities: Mapping[str, str | None] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 succeeded, 1 failed and fully rolled back, 2 leftovers remain, 130 interrupted."""
        if self.status == RunStatus.SUCCEEDED:
            return 0
        if self.status == RunStatus.ROLLED_BACK:
            return 1
        if self.status == RunStatus.INTERRUPTED:
            return 130
        return 2


def _answered(result: ActionResult) -> bool:
    """Whether a failed action still gave an answer (``exit 1``, ``404``) rather than not
    running at all (not found, killed, timed out, unreachable, 5xx, an exception)."""
    data = result.data
    if data.get("timed_out"):
        return False
    if "rc" in data:
        rc = data["rc"]
        return isinstance(rc, int) and 0 <= rc < 126
    if "status" in data:
        status = data["status"]
        return isinstance(status, int) and status < 500
    return "value" in data and "exception" not in data


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Sleep ``timeout`` seconds, or less if ``event`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def lock_alive(lock: LockRecord, now: float, lease: float) -> bool:
    """Whether the holder of a lock still runs: by its pid on this host, else by heartbeat."""
    if now - lock.heartbeat_at >= lease:
        return False
    if lock.host == socket.gethostname():
        return _pid_alive(lock.pid)
    return True


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs. A zombie does not: a planctl killed with
    -9 stays one until its parent (a shell, a CI runner) reaps it, and its run must be
    resumable at once."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    found = orphans.stat(pid)  # None without /proc (not Linux): the signal check stands
    return found is None or found[1] not in orphans.ENDED


def live_holder(store: Store, run_id: str, now: float, lease: float) -> LockRecord | None:
    """A lock by which a live executor holds ``run_id``, if one does."""
    return live_lock(store.list_locks(), run_id, partial(lock_alive, now=now, lease=lease))


def still_running(holder: LockRecord, now: float) -> str:
    return (f"run {holder.run_id} is still running (pid {holder.pid} on {holder.host}, "
            f"heartbeat {now - holder.heartbeat_at:.0f}s ago)")


def lock_kept(lock: LockRecord) -> bool:
    """Whether a run that ended kept this lock (for its leftovers, or until it is resumed):
    it has no holder, and its heartbeat was set to 0 when the run ended."""
    return lock.heartbeat_at == 0


def lock_freed(lock: LockRecord, run_status: str | None, now: float, lease: float) -> bool:
    """Whether apply frees ``lock`` and goes on (``Runner._free_unrecorded``): its holder
    is dead, and either never recorded its run (``run_status`` None) or saw it end with
    nothing left, so nothing happens under it any more."""
    return (not lock_kept(lock) and not lock_alive(lock, now, lease)
            and run_status in (None, RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK))


def lock_state(lock: LockRecord, now: float, lease: float, run_status: str | None) -> str:
    """How `planctl locks` shows a lock's holder; ``run_status`` is its run's status."""
    if lock_kept(lock):
        return "kept until resumed" if run_status == RunStatus.INTERRUPTED \
            else "kept for leftovers"
    if lock_alive(lock, now, lease):
        return "alive"
    return f"dead ({now - lock.heartbeat_at:.0f}s ago)"


def _locked_message(lock: LockRecord, now: float, lease: float,
                    run_status: str | None = None) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lock.acquired_at))
    run, entity = lock.run_id, lock.entity
    if lock_kept(lock):
        text = f"entity {entity} is kept locked by run {run} (since {since}), "
        if run_status == RunStatus.INTERRUPTED:
            return text + (f"which was interrupted: `planctl resume {run}` or `planctl "
                           f"rollback {run}` releases it, or `planctl unlock {entity}`")
        return text + (f"which ended {run_status or 'earlier'} with leftovers: `planctl "
                       f"rollback {run}` undoes them and releases it, or `planctl unlock "
                       f"{entity}`")
    text = (f"entity {entity} is locked by run {run} (pid {lock.pid} on "
            f"{lock.host}, since {since})")
    if not lock_alive(lock, now, lease):
        return text + (f"; that run is not alive (heartbeat {now - lock.heartbeat_at:.0f}s "
                       f"ago): `planctl resume {run}`, `planctl rollback {run}` "
                       f"or `planctl unlock {entity}`")
    return text + "; wait for it with --lock-timeout"


SHORT_SECRET = 4  # a secret shorter than this is masked with a warning: *** hides more
SECRET_MARK = "\u00absecret:{}\u00bb"  # «secret:NAME», where a stored handle held one
_SECRET_MARK_START = SECRET_MARK.partition("{")[0]
# What a «secret: that was there before any placeholder (a program printed it) is stored
# as: a later run must not take it for a placeholder and put a secret in its place.
_ESCAPED_MARK = _SECRET_MARK_START + "\u00ab"


def _each_text(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` made to every text in it, through lists and mappings (keys
    too: a JSON response's keys are its data as well); numbers, booleans and None as they
    are, and anything else as its text, which is what the store would keep."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list | tuple):
        return [_each_text(v, change) for v in value]
    if isinstance(value, Mapping):
        return {change(k) if isinstance(k, str) else k: _each_text(v, change)
                for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float):
        return value
    return change(str(value))


def unmask_value(value: Any, secrets: Mapping[str, str]) -> Any:
    """``unmask`` through the lists and mappings of a stored value (outputs, a result);
    ``value`` itself when the plan has no secrets: nothing it holds was escaped."""
    if not secrets:
        return value
    return _each_text(value, lambda text: unmask(text, secrets))


def unmask(text: str, secrets: Mapping[str, str]) -> str:
    """A stored task handle with its secret placeholders replaced by the secrets' values
    (a placeholder whose secret is not resolved stays as it is)."""
    if _SECRET_MARK_START not in text:
        return text
    for name, value in secrets.items():
        text = text.replace(SECRET_MARK.format(name), value)
    return text.replace(_ESCAPED_MARK, _SECRET_MARK_START)


# What a record of planctl's own (an event's data, a command's row update, a leftover, a
# command's params) holds besides user data: its keys, and these fields, which take their
# values from planctl's vocabulary (statuses, flows, signals) or name what the plan names
# (the plan, a command, its entity, an action), never from what ran. A secret is never in
# them (secrets cannot be used in `entity`), so masking them would only garble them: a
# secret `status` or `e` would turn the key `status` or the value `REVERTED` into ***.
_OWN_FIELDS = frozenset({"status", "previous", "execution_reason", "task_status", "signal",
                         "plan", "command", "entity", "action"})
# Fields whose values are records of planctl's in turn (a mapping, or a list of them).
_RECORD_FIELDS = frozenset({"params", "leftovers"})
# Fields of a command's row that a later run reads back into templates.
_READ_BACK = frozenset({"outputs", "result"})


def _spellings(secret: str) -> set[str]:
    """How planctl itself may write ``secret`` other than as it is: quoted for a shell (a
    `shell` template, the `quote` filter, a command line `plan` shows), escaped in a Python
    or JSON string (the repr an error message quotes), its runs of white space made one
    space (a one-line excerpt). Masked as the value is: each is the secret, readable."""
    forms = {
        secret.replace("'", "'\"'\"'"),  # shlex.quote
        secret.replace("'", "'\\''"),  # inside '...' of a `shell` template
        _DQ_ESCAPED.sub(r"\\\1", secret),  # inside "..."
        _HEREDOC_ESCAPED.sub(r"\\\1", secret),  # in a here-document
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        " ".join(secret.split()),
    }
    return {form for form in forms
            if form != secret and len(form) >= min(len(secret), SHORT_SECRET)}


_DQ_ESCAPED = re.compile(r'([\\$`"])')  # what a backslash escapes inside "..."
_HEREDOC_ESCAPED = re.compile(r"([\\$`])")  # ... in a here-document


class _Redactor:
    """Replaces secret values with ``***`` in anything about to be stored or shown."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so that a secret holding another is replaced whole.
        self.names = sorted(((v, k) for k, v in secrets.items() if v),
                            key=lambda pair: len(pair[0]), reverse=True)
        # The secrets as planctl may have quoted or escaped them, masked too.
        self.spellings = sorted({form for value, _ in self.names for form in _spellings(value)},
                                key=len, reverse=True)
        self.values = sorted([value for value, _ in self.names] + self.spellings,
                             key=len, reverse=True)

    def naming(self, text: str) -> str:
        """``text`` with each secret value replaced by a placeholder naming the secret,
        for a task handle: stored without the secret, and made whole again on resume
        (``unmask``) from the secrets resolved then. A placeholder already in ``text``
        is escaped, so that ``unmask`` gives it back as it was, not a secret's value."""
        text = text.replace(_SECRET_MARK_START, _ESCAPED_MARK)
        for form in self.spellings:  # no placeholder for these: a resume could not undo it
            text = text.replace(form, "***")
        for secret, name in self.names:
            text = text.replace(secret, SECRET_MARK.format(name))
        return text

    def named(self, value: Any) -> Any:
        """``value`` with each secret replaced by a placeholder naming it, as ``naming``
        does, through lists and mappings (keys too): for what a later run reads back from
        the store (a command's outputs and result), made whole by ``unmask_value``."""
        return _each_text(value, self.naming)

    def row(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A command's row update: as ``record``, but its ``outputs`` and ``result``, which
        a later ``rollback`` or ``resume`` gives to templates, keep placeholders naming the
        secrets rather than ``***``."""
        out = self.record({k: v for k, v in fields.items() if k not in _READ_BACK})
        for key in _READ_BACK.intersection(fields):
            out[key] = self.named(fields[key])
        return out

    def record(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A record of planctl's (see ``_OWN_FIELDS``) with its user data masked: its keys
        and its own fields as they are, every other value as ``__call__`` masks it."""
        if not self.values:
            return dict(fields)
        out: dict[str, Any] = {}
        for key, value in fields.items():
            if key in _OWN_FIELDS:
                out[key] = value
            elif key in _RECORD_FIELDS and isinstance(value, Mapping):
                out[key] = self.record(value)
            elif key in _RECORD_FIELDS and isinstance(value, list | tuple):
                out[key] = [self.record(v) if isinstance(v, Mapping) else self(v)
                            for v in value]
            else:
                out[key] = self(value)
        return out

    def __call__(self, value: Any) -> Any:
        """``value``, user data (a result, rendered arguments, an error...), with every
        secret masked, in mapping keys too: a JSON response's keys are its data as well."""
        if not self.values:
            return value
        return _each_text(value, self._stars)

    def mask(self, text: str) -> str:
        """``text`` with every secret masked (``ActionContext.mask``)."""
        return self._stars(text)

    def hidden(self, value: Any, stars: str) -> Any:
        """``value`` as ``__call__`` masks it, with ``stars`` for ``***``: a word that text
        made of it (a command line quoted for display) keeps as it is."""
        return _each_text(value, lambda text: self._stars(text, stars))

    def _stars(self, text: str, stars: str = "***") -> str:
        for secret in self.values:
            text = text.replace(secret, stars)
        return text


class _CommandsView(Mapping[str, Any]):
    """``commands.<id>`` in templates: outputs and status of commands, by spec id."""

    def __init__(self, runner: Runner, instance: CommandInstance) -> None:
        self.runner = runner
        self.instance = instance

    def _one(self, iid: str) -> dict[str, Any]:
        return {"outputs": self.runner.outputs.get(iid, {}),
                "status": self.runner.status[iid]}

    def __getitem__(self, spec_id: str) -> Any:
        """One instance when the reader is inside every loop the command is in (the one
        with the same loop keys); else lists over its instances in the reader's iteration
        of the loops they share: the shape follows the plan, never the number of items."""
        graph = self.runner.graph
        ids = graph.by_spec.get(spec_id)
        if ids is None:
            if spec_id not in self.runner.spec_ids():
                raise KeyError(spec_id)
            ids = ()  # a loop over no items: empty lists
        instances = graph.instances
        scope = self.instance.scope
        if ids and all(s in scope for s in instances[ids[0]].scope):
            for iid in ids:
                if all(scope[s] == k for s, k in instances[iid].scope.items()):
                    return self._one(iid)
        same = [i for i in ids if all(instances[i].scope.get(s, k) == k
                                      for s, k in scope.items())]
        return {
            "instances": {i: self._one(i) for i in same},
            "outputs": [self.runner.outputs.get(i, {}) for i in same],
            "status": [self.runner.status[i] for i in same],
        }

    def __iter__(self) -> Any:
        return iter(self.runner.spec_ids())

    def __len__(self) -> int:
        return len(self.runner.spec_ids())


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(value)


def _raised(op: Operation, exc: BaseException) -> ActionResult:
    return ActionResult(False, {}, f"{op.action} raised {type(exc).__name__}: {jsondata.text(exc)}")


def _settled_at_once(op: Operation, first: ActionResult | Coroutine[Any, Any, ActionResult]
                     ) -> ActionResult | None:
    """``first`` when it is the operation's final result (no async task to follow, no
    retry to wait for), else None."""
    if isinstance(first, ActionResult) and op.async_ is None and (first.ok or not op.retries):
        return first
    return None


class _Ticker:
    """Sleeps of polled tasks, woken in groups: one timer per TICK-long slot of the loop's
    clock instead of one per sleep. A thousand tasks polled every 50 ms cost a thousand
    timers (and heap operations) per interval with ``asyncio.sleep``; here about ten.
    A sleep ends up to TICK late, well inside the ±10% jitter of a poll interval."""

    TICK = 0.005

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, list[asyncio.Future[None]]] = {}

    def sleep(self, delay: float) -> asyncio.Future[None]:
        slot = math.ceil((self.loop.time() + delay) / self.TICK)
        sleepers = self.slots.get(slot)
        if sleepers is None:
            sleepers = self.slots[slot] = []
            self.loop.call_at(slot * self.TICK, self._wake, slot)
        future: asyncio.Future[None] = self.loop.create_future()
        sleepers.append(future)
        return future

    def _wake(self, slot: int) -> None:
        for future in self.slots.pop(slot):
            if not future.done():  # a cancelled sleeper is done already
                future.set_result(None)


class _StepFailed(Exception):
    def __init__(self, message: str, changed: bool | None = None, attempts: int | None = None,
                 result: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.changed = changed
        self.attempts = attempts
        self.result = result  # what the failed `run` returned (stdout, stderr, rc...)


# The runs that a Runner of this process drives (on any thread), from its first lock until
# it releases them, or its execute() ends.
_driven_lock = threading.Lock()
_driven: set[str] = set()
# Plan directories runs put on sys.path, with how many runs (threads) use each: the last
# to end removes it, not the first, whose removal would leave the others without it.
_path_lock = threading.Lock()
_path_runs: dict[str, int] = {}


class Runner:
    """One run of one plan: drives the scheduler, runs steps, persists and reports."""

    def __init__(
        self,
        loaded: LoadedPlan,
        store: Store,
        *,
        options: ApplyOptions | None = None,
        listener: Listener | None = None,
        secrets: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.graph: PlanGraph = loaded.graph
        self.store = store
        self.options = options or ApplyOptions()
        self.listener = listener
        self.clock = clock
        self.rng = rng or random.Random()
        self.secrets = dict(secrets or {})
        self.redact = _Redactor(self.secrets)
        self.redacting = bool(self.redact.values)
        # Stored outputs, results and handles escape placeholders whenever the plan has
        # secrets, even empty ones: a later run with a value must not unmask a program's.
        self.placeholders = bool(self.secrets)
        self.warned_short = False  # about secrets shorter than SHORT_SECRET
        self.run_id = self.options.run_id or new_run_id()
        self.max_parallel = self.options.max_parallel or self.plan.settings.max_parallel
        self.on_failure = self.options.on_failure or self.plan.settings.on_failure
        self.status: dict[str, str] = {iid: S.PENDING for iid in self.graph.instances}
        self.changed: dict[str, bool | None] = {}
        self.outputs: dict[str, Any] = {}
        self.results: dict[str, Any] = {}  # forward results, for inverses' templates
        self.handles: dict[str, str] = {}  # forward async task handles
        self._spec_ids: frozenset[str] | None = None
        self.revert_attempts: dict[str, int] = {}
        self.tasks: dict[tuple[str, str], TaskRecord] = {}  # persisted tasks, on resume
        # Recovery: processes a dead executor left running, by (command, reason); found
        # once, after the run's locks are held (see ``_find_orphans``).
        self.orphaned: dict[tuple[str, str], list[orphans.Orphan]] | None = None
        self.errors: dict[str, str] = {}
        self.batch = Batch()
        self.seq = 0  # events of this run so far
        self.record: RunRecord | None = None  # set when rebuilt from the store
        self.running: set[asyncio.Task[bool]] = set()
        self.heartbeat: asyncio.Task[None] | None = None
        self.driving = False  # its run is in _driven, until it ends
        self.interrupted: str | None = None
        self.lost = False  # the run's lock is no longer this executor's (``_lost``)
        self.failing: asyncio.Event | None = None  # set on failure, with --cancel-inflight
        self.ticker: _Ticker | None = None  # the sleeps of polls, on the run's loop
        # Test hook for crash-recovery tests: SIGKILL ourselves at the N-th crash point
        # (a point is a status transition, just before it is buffered, or a commit, just
        # after it is durable).
        self.crash_at = int(os.environ.get("PLANCTL_CRASH_AT", "0") or 0)
        self.crash_points = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.wake: asyncio.Event | None = None
        self._entities: dict[str, str | None] = {}
        self.env = dict(os.environ)
        self.entity_env = public_env(self.plan)
        self.base_context: dict[str, Any] = {
            **self.plan.vars, **self.secrets, "env": self.env, "run_id": self.run_id,
        }

    @contextlib.contextmanager
    def importable(self) -> Iterator[None]:
        """For the run, the plan's directory on ``sys.path``: a `python` action may name a
        module kept next to the plan. Last, not first: a plan's ``http.py`` must not
        replace the package planctl's own actions import during the run."""
        base = self.plan.base_dir
        with _path_lock:
            own = base not in _path_runs and base in sys.path  # the caller's own entry
            if not own:
                if base not in _path_runs:
                    sys.path.append(base)
                _path_runs[base] = _path_runs.get(base, 0) + 1  # shared with other threads
        if own:
            yield
            return
        try:
            yield
        finally:
            with _path_lock:
                _path_runs[base] -= 1
                if not _path_runs[base]:
                    del _path_runs[base]
                    with contextlib.suppress(ValueError):
                        sys.path.remove(base)

    # -- persistence and events ----------------------------------------------------------

    def _event(self, kind: str, command_id: str | None = None, **data: Any) -> None:
        self._emit(kind, command_id, data)

    def _emit(self, kind: str, command_id: str | None, data: dict[str, Any],
              *, mask: bool = True) -> None:
        """Record and announce an event, its user data masked (``mask=False`` only for a
        message made of planctl's words and the plan's names alone)."""
        self.seq += 1
        if self.redacting and mask:
            data = self.redact.record(data)
        event = EventRecord(self.run_id, self.clock(), kind, command_id, data, self.seq)
        self.batch.events.append(event)
        if self.listener is not None:
            try:
                self.listener(event)
            except actions.FAILURES as exc:  # a listener's bug (or exit) must not change a run
                self.listener = None
                self._emit("warning", None, {"message": f"event listener removed after it "
                                             f"raised {type(exc).__name__}: {exc}"})

    def _warn_short_secrets(self) -> None:
        """Once per invocation, as it starts: name each secret so short that masking it
        hides unrelated text too (``exit st***tus 1`` for a secret ``a``)."""
        if self.warned_short:
            return
        self.warned_short = True
        for name, value in self.secrets.items():
            if 0 < len(value) < SHORT_SECRET:
                # Unmasked: masking would garble it, and it holds the name, not the value.
                self._emit("warning", None, {
                    "message": f"secret `{name}` is shorter than {SHORT_SECRET} characters: "
                               f"masking it as *** will also hide the same characters in "
                               f"unrelated text"}, mask=False)

    def _set(self, iid: str, status: str, **fields: Any) -> None:
        """The one place command statuses change: checked, buffered, announced."""
        old = self.status[iid]
        if status not in TRANSITIONS[old]:  # the check, inlined for its common case
            check_transition(iid, old, status)
        if self.crash_at:
            self._crash_point()
        self.status[iid] = status
        fields["status"] = status
        # ``fields`` is this call's own dict: it becomes the row update (masked, a copy).
        self.batch.commands.append((iid, self.redact.row(fields) if self.placeholders
                                    else fields))
        data: dict[str, Any] = {  # masked by _emit
            "status": status,
            "previous": old,
            "execution_reason": fields.get("execution_reason", REGULAR_FLOW),
            "entity": self._entities.get(iid),
        }
        error = fields.get("error")
        if error:
            data["error"] = error
        self._emit("command", iid, data)

    def keep(self, iid: str, **fields: Any) -> None:
        """Buffer a change of the command's row that is no change of status (masked as
        ``_set`` masks it)."""
        self.batch.commands.append((iid, self.redact.row(fields) if self.placeholders
                                    else fields))

    def _crash_point(self) -> None:
        if self.crash_at:
            self.crash_points += 1
            if self.crash_points == self.crash_at:
                os.kill(os.getpid(), signal.SIGKILL)

    # -- entity locks ---------------------------------------------------------------------

    async def _lock(self) -> None:
        """Hold the run and every entity of it before anything touches one; renew with a
        heartbeat. The run's own key makes a second executor of the same run (a `resume`
        or `rollback` while this one is alive) stop at once, whether it has entities or not."""
        if self.heartbeat is not None:
            return
        if not self.driving:
            # The store tells executors apart by host and pid: another thread of this
            # process driving the run is caught here.
            with _driven_lock:
                if self.run_id in _driven:
                    raise LockedError(f"run {self.run_id} is still running (pid {os.getpid()} "
                                      f"on {socket.gethostname()}: this process, another "
                                      f"thread)")
                _driven.add(self.run_id)
            self.driving = True
        entities = sorted({e for e in self._entities.values() if e})
        for entity in entities:
            if entity.startswith(RUN_KEY):
                raise UsageError(f"entity {entity}: the prefix {RUN_KEY} is reserved")
        keys = [*entities, run_key(self.run_id)]
        host, pid, lease = socket.gethostname(), os.getpid(), lock_lease()
        timeout = self.options.lock_timeout
        if timeout is None:
            timeout = self.plan.settings.lock_timeout
        deadline = self.clock() + timeout
        while True:
            if self.interrupted is not None:
                # SIGINT/SIGTERM before the locks are taken (while waiting for another
                # run's): nothing was taken or written yet (an apply has not even recorded
                # its run), so stop as Ctrl-C before a run does: exit 130.
                raise KeyboardInterrupt(f"{self.interrupted} while waiting for entity "
                                        f"locks another run holds: nothing was recorded")
            now = self.clock()
            # One transaction checks that no live executor holds this run and takes it:
            # of two `rollback`s started together, the second stops here.
            # ``seq``: nor may one that ended after this Runner read the run go unnoticed.
            others = self.store.acquire_locks(
                self.run_id, keys, host, pid, now, alive=partial(lock_alive, now=now,
                                                                 lease=lease),
                seq=self.seq if self.record is not None else None)
            twin = next((lock for lock in others if lock.run_id == self.run_id), None)
            if twin is not None:
                raise LockedError(still_running(twin, now))
            if not others:
                break
            if self._free_unrecorded(others, now, lease):
                continue
            if now >= deadline:
                holder = self.store.get_run(others[0].run_id)
                raise LockedError(_locked_message(others[0], now, lease,
                                                  holder.status if holder else None))
            pause = min(0.25, max(0.0, deadline - now))
            if self.wake is not None:
                await _wait(self.wake, pause)  # set by ``interrupt``: stop at once
            else:
                await asyncio.sleep(pause)
        self.heartbeat = asyncio.create_task(self._beat(lease / 3))

    def _free_unrecorded(self, others: Sequence[LockRecord], now: float, lease: float
                         ) -> bool:
        """Release the locks of dead executors that hold them for nothing: that never
        recorded their run (killed between taking their locks and writing the run), or
        whose run ended with nothing left (killed between recording SUCCEEDED or
        ROLLED_BACK and releasing its locks). Nothing more happens under them, and
        `resume` finds nothing to resume that would release them. True if any was."""
        statuses: dict[str, str | None] = {}
        for lock in others:
            if lock.run_id not in statuses:
                run = self.store.get_run(lock.run_id, plan=False)
                statuses[lock.run_id] = None if run is None else run.status
        stale = sorted({lock.run_id for lock in others
                        if lock_freed(lock, statuses[lock.run_id], now, lease)})
        for run_id in stale:
            self.store.release_locks(run_id)
        return bool(stale)

    async def _beat(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                held = self.store.heartbeat(self.run_id, self.clock())
            except Exception as exc:  # noqa: BLE001 - the store busy or failing for a while
                # Not the end of the heartbeat: it would leave a live run looking dead for
                # the rest of its life. A store that stays unusable fails the next commit.
                self._event("warning", None, message=f"heartbeat not recorded ({exc}): "
                            f"trying again in {every:g}s")
                continue
            if not held:
                self._lost()
                return

    def _lost(self) -> None:
        """The run's lock is no longer this executor's (another planctl took the run over
        while this one looked dead, or `planctl unlock` released it): start nothing more
        and cancel what is in flight, as SIGTERM would; the next commit raises
        LockLostError and writes nothing."""
        self.lost = True
        if self.interrupted is None:
            self.interrupted = "lost its lock"
        for task in self.running:
            task.cancel()
        if self.wake is not None:
            self.wake.set()

    def _unlock(self, keep: Sequence[str | None]) -> None:
        """The run ended: release its entities but ``keep``, which stay locked to it (with
        no live holder) until it is resumed, rolled back or unlocked."""
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None
        self.store.release_locks(self.run_id, sorted({e for e in keep if e}))
        self.undrive()

    def undrive(self) -> None:
        """This Runner no longer drives its run: another may (see ``_driven``)."""
        if self.driving:
            with _driven_lock:
                _driven.discard(self.run_id)
            self.driving = False

    # -- processes left running by a dead executor -----------------------------------------

    def _find_orphans(self) -> None:
        """Recovery, once the run's locks are held (its old executor is dead): find, in one
        pass, the processes that executor left running, if it left a command in flight."""
        if self.orphaned is not None:
            return
        self.orphaned = {}
        if self.record is not None and any(s in _IN_FLIGHT for s in self.status.values()):
            self.orphaned = orphans.scan(self.run_id, besides=os.getpid())

    def left_running(self, iid: str) -> list[orphans.Orphan]:
        """The processes a dead executor left running for ``iid``, in the flow of the state
        (STARTING or REVERTING) it left the command in; each is handed out once."""
        reason = _IN_FLIGHT.get(self.status[iid])
        if not self.orphaned or reason is None:
            return []
        return self.orphaned.pop((iid, reason), [])

    async def outlive(self, iid: str, left: list[orphans.Orphan]) -> None:
        """Wait for ``left`` to end before deciding anything about ``iid``: its `exists`
        would answer for work that has not finished. Says what it waits for now and then;
        cancelled by SIGINT/SIGTERM like any step."""
        loop = asyncio.get_running_loop()
        note = loop.time()
        while left := [p for p in left if orphans.alive(p)]:
            if loop.time() >= note:
                note += ORPHAN_NOTE
                self._event("warning", iid, message=f"waiting for {orphans.describe(left)} "
                            f"left running by the dead executor for command {iid}")
            await asyncio.sleep(ORPHAN_POLL)

    def spec_ids(self) -> frozenset[str]:
        """The ids of the plan's commands, looped or not (made once, when asked)."""
        if self._spec_ids is None:
            self._spec_ids = frozenset(spec.id for spec in self.plan.walk())
        return self._spec_ids

    def interrupt(self, signame: str) -> None:
        """SIGINT/SIGTERM: start nothing more, cancel what is in flight, stay resumable."""
        if self.interrupted is not None:
            return
        self.interrupted = signame
        if self.heartbeat is not None:  # before the run's locks are held, ``_lock`` stops
            self._event("run", status="INTERRUPTING", signal=signame)
        for task in self.running:
            task.cancel()
        if self.wake is not None:
            self.wake.set()

    def _flush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, Batch()
            self.store.commit(self.run_id, batch)
            if self.crash_at:
                self._crash_point()
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _barrier(self) -> None:
        """Return once everything written so far is committed."""
        assert self.wake is not None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.wake.set()
        await waiter

    # -- templates -----------------------------------------------------------------------

    def _context(self, instance: CommandInstance, reason: str = REGULAR_FLOW) -> dict[str, Any]:
        return {
            **self.base_context,
            **instance.loop,
            "commands": _CommandsView(self, instance),
            "execution_reason": reason,
        }

    def _render(self, value: Any, context: Mapping[str, Any], what: str) -> Any:
        try:
            return render_value(value, context)
        except TemplateError as exc:
            raise _StepFailed(f"{what}: {exc}") from None

    # -- actions -------------------------------------------------------------------------

    def _idempotency_key(self, iid: str, reason: str) -> str:
        return hashlib.sha256(f"{self.run_id}\0{iid}\0{reason}".encode()).hexdigest()[:32]

    def _prepare(self, op: Operation, context: Mapping[str, Any], iid: str, reason: str
                 ) -> tuple[Any, ActionContext]:
        action = actions.get(op.action)
        assert action is not None
        if actions.SHELL_QUOTE in action.capabilities and isinstance(op.args, str):
            from .templates import render

            try:
                args: Any = render(op.args, context, shell=True)
            except TemplateError as exc:
                raise _StepFailed(f"{op.action}: {exc}") from None
        else:
            args = self._render(op.args, context, op.action)
        key = self._idempotency_key(iid, reason)
        env: dict[str, str] = {}
        if actions.SUBPROCESS in action.capabilities:
            env = {k: str(self._render(v, context, f"env.{k}")) for k, v in op.env.items()}
            env.update(PLANCTL_RUN_ID=self.run_id, PLANCTL_COMMAND_ID=iid,
                       PLANCTL_EXECUTION_REASON=reason, PLANCTL_IDEMPOTENCY_KEY=key)
        cwd = self.plan.base_dir
        if op.cwd:
            cwd = os.path.join(self.plan.base_dir, str(self._render(op.cwd, context, "cwd")))
        stdin = None if op.stdin is None else str(self._render(op.stdin, context, "stdin"))
        mask = self.redact.mask if self.redacting else str
        return args, ActionContext(self.run_id, iid, reason, key, cwd, env, stdin, op.timeout,
                                   self.plan.base_dir, mask)

    async def _call(self, op: Operation, args: Any, call: ActionContext,
                    context: Mapping[str, Any]) -> ActionResult:
        action = actions.get(op.action)
        assert action is not None
        try:
            result = await action.run(args, call)
        except actions.FAILURES as exc:  # a plugin's bug fails its step, not the run
            return _raised(op, exc)
        return self._judge(op, result, context)

    def _start(self, op: Operation, args: Any, call: ActionContext,
               context: Mapping[str, Any]) -> ActionResult | Coroutine[Any, Any, ActionResult]:
        """One call of ``op``: its result when the action ended at once (``starts-sync``),
        else the coroutine that gets it."""
        action = actions.get(op.action)
        assert action is not None
        if actions.STARTS_SYNC not in action.capabilities:
            return self._call(op, args, call, context)
        try:
            started = cast(actions.SyncStart, action).start(args, call)
        except actions.FAILURES as exc:  # a plugin's bug fails its step, not the run
            return _raised(op, exc)
        if isinstance(started, ActionResult):
            return self._judge(op, started, context)
        return self._finish(op, started, context)

    def _repeatable(self, op: Operation, args: Any, call: ActionContext,
                    context: Mapping[str, Any]
                    ) -> Callable[[], ActionResult | Coroutine[Any, Any, ActionResult]]:
        """``_start`` of the same call, to be made many times: an action that can prepare
        it (``prepare``, with ``starts-sync``) does so once, when ``failed_when`` does not
        need to judge each result."""
        action = actions.get(op.action)
        assert action is not None
        prepare = getattr(action, "prepare", None)
        if prepare is not None and op.failed_when is None \
                and actions.STARTS_SYNC in action.capabilities:
            try:
                prepared = prepare(args, call)
            except actions.FAILURES:  # a plugin's bug: the plain way reports it
                prepared = None
            if prepared is not None:
                return self._guarded(op, prepared)
        return partial(self._start, op, args, call, context)

    def _guarded(self, op: Operation,
                 prepared: Callable[[], ActionResult | Coroutine[Any, Any, ActionResult]]
                 ) -> Callable[[], ActionResult | Coroutine[Any, Any, ActionResult]]:
        """``prepared``, with a plugin's exception as the result, as ``_start`` has it."""
        if op.action in actions.BUILTIN:
            return prepared  # built-ins turn every failure into a result themselves

        def call() -> ActionResult | Coroutine[Any, Any, ActionResult]:
            try:
                started = prepared()
            except actions.FAILURES as exc:  # a plugin's bug fails its step
                return _raised(op, exc)
            return started if isinstance(started, ActionResult) else self._finish(
                op, started, {})
        return call

    async def _finish(self, op: Operation, started: Coroutine[Any, Any, ActionResult],
                      context: Mapping[str, Any]) -> ActionResult:
        try:
            result = await started
        except actions.FAILURES as exc:  # a plugin's bug fails its step, not the run
            return _raised(op, exc)
        return self._judge(op, result, context)

    def _judge(self, op: Operation, result: ActionResult, context: Mapping[str, Any]
               ) -> ActionResult:
        """Apply ``failed_when``, if the operation has one."""
        if op.failed_when is not None:
            verdict = self._render(op.failed_when, {**context, "result": result.data},
                                   "failed_when")
            failed = _truthy(verdict)
            return ActionResult(not failed, result.data,
                                "failed_when is true" if failed else None)
        return result

    async def _attempts(self, op: Operation, args: Any, call: ActionContext,
                        context: Mapping[str, Any],
                        first: ActionResult | Coroutine[Any, Any, ActionResult] | None = None,
                        settled: Callable[[ActionResult], bool] | None = None
                        ) -> tuple[ActionResult, int]:
        """Run with the operation's retries; returns the last result and the attempts made.
        ``first`` is the first attempt when the caller made it already (see ``_start``);
        a result ``settled`` accepts ends the attempts like a success (a probe's "absent")."""
        delay = op.delay
        for attempt in range(1, op.retries + 2):
            if first is None:
                result = await self._call(op, args, call, context)
            elif isinstance(first, ActionResult):
                result, first = first, None
            else:
                result, first = await first, None
            if result.ok or attempt > op.retries or (settled is not None and settled(result)):
                return result, attempt
            self._event("retry", call.command_id, attempt=attempt, error=result.error)
            await asyncio.sleep(delay)
            delay *= op.backoff
        raise AssertionError("unreachable")

    async def _probe(self, op: Operation, context: Mapping[str, Any], iid: str, reason: str
                     ) -> bool:
        """Ask ``exists``: True when the resource is present."""
        return (await self._ask(op, context, iid, reason)).ok

    async def _ask(self, op: Operation, context: Mapping[str, Any], iid: str, reason: str
                   ) -> ActionResult:
        """Run an ``exists`` probe; a probe that could not answer is a failure of the step,
        never "absent": in a rollback that would report as removed what is still there.
        Its retries are for a probe that could not answer: "absent" is an answer."""
        args, call = self._prepare(op, context, iid, reason)
        result, _ = await self._attempts(op, args, call, context, settled=_answered)
        if not result.ok and not _answered(result):
            raise _StepFailed(f"exists probe could not answer: {result.error}")
        if result.ok and "value" in result.data and not result.data["value"]:
            return ActionResult(False, result.data, "absent")  # a python probe said falsy
        return result

    async def _follow(self, instance: CommandInstance, spec: AsyncSpec, context: dict[str, Any],
                      reason: str) -> dict[str, Any]:
        """Persist the handle, then poll until done; returns the template names it adds."""
        iid = instance.id
        rendered = self._render(spec.handle, context, "async.handle")
        handle = "" if rendered is None else str(rendered).strip()  # null: no id, not "None"
        if not handle:
            raise _StepFailed("async.handle rendered empty", changed=None)
        context = {**context, "handle": handle}
        poll_args, poll_call = self._prepare(spec.poll, context, iid, reason)
        started = self.clock()
        # The task belongs to the entity of the command, in both flows.
        spec_record = self.redact.record({"poll": poll_args})
        if reason == ROLLBACK_FLOW:
            # What the inverse's start returned (the command's row keeps what `run` did):
            # `result` of the polls a resume makes, stored as outputs and results are.
            spec_record["result"] = self.redact.named(context["result"]) \
                if self.placeholders else context["result"]
        task = TaskRecord(self.run_id, iid, reason, handle, "RUNNING",
                          self._entities.get(iid), spec_record, started, started)
        # A handle holding a secret is stored with a placeholder naming it: this process
        # polls the real one, a resume puts the secret back (``unmask``).
        self.batch.tasks.append(dataclasses.replace(task, handle=self.redact.naming(handle))
                                if self.placeholders else task)
        if reason == REGULAR_FLOW:
            self.handles[iid] = handle
            # The forward result, with the handle: a resume renders `outputs` (and an
            # inverse) from it, as what `run` printed is not asked again.
            self.results[iid] = context["result"]
            self._set(iid, S.RUNNING, execution_reason=reason, result=context["result"])
        self._event("task", iid, handle=handle, task_status="RUNNING", execution_reason=reason)
        await self._barrier()
        return await self._poll(task, spec, context, poll_args, poll_call)

    async def _poll(self, task: TaskRecord, spec: AsyncSpec, context: dict[str, Any],
                    poll_args: Any, poll_call: ActionContext) -> dict[str, Any]:
        iid, reason = task.command_id, task.execution_reason
        deadline = task.started_at + spec.timeout
        interval = spec.interval
        polls = errors = 0
        outcome, message = "FAILED", ""
        last: Mapping[str, Any] = {}
        abandon = spec.cancel is not None and reason == REGULAR_FLOW \
            and self.options.cancel_inflight
        names = dict(context)  # the template names of until/failed_when, with `poll`
        uniform, op = self.rng.uniform, spec.poll
        poll = self._repeatable(op, poll_args, poll_call, context)
        ticker = self.ticker
        if ticker is None or ticker.loop is not asyncio.get_running_loop():
            ticker = self.ticker = _Ticker(asyncio.get_running_loop())
        # Polls keep to a grid of their own: the first one ``interval`` ±10% after the task
        # started (counted from its start, not from the commit of its handle, which waits
        # for the steps admitted with it), then one every ``interval`` (with backoff) after
        # that, however long a poll takes. The jitter is drawn once: tasks started together
        # poll apart, and a task's polls do not drift, so its end is seen at most one
        # interval after it happened (per-poll jitter would add up over the polls).
        now = ticker.loop.time()
        due = now - max(0.0, self.clock() - task.started_at) + interval * uniform(0.9, 1.1)
        while True:
            pause = max(0.0, due - now)
            if abandon and self.failing is not None:
                await _wait(self.failing, pause)
                if self.failing.is_set():
                    outcome, message = "CANCELLED", "cancelled: another command failed"
                    message += await self._cancel(spec, context, iid, reason)
                    break
            else:
                await ticker.sleep(pause)
            try:
                result = poll()
                if not isinstance(result, ActionResult):
                    result = await result
            except _StepFailed as failure:  # its failed_when does not render: as below
                polls += 1
                message = str(failure)
                break
            polls += 1
            if not result.ok:
                errors += 1
                if errors > op.retries:
                    message = f"poll failed {errors} times in a row: {result.error}"
                    break
            else:
                errors = 0
                last = names["poll"] = result.data
                try:
                    if spec.failed_when is not None and _truthy(
                            self._render(spec.failed_when, names, "async.failed_when")):
                        message = "async task failed (async.failed_when is true)"
                        break
                    if _truthy(self._render(spec.until, names, "async.until")):
                        outcome = "SUCCEEDED"
                        break
                except _StepFailed as failure:  # the task's end is recorded all the same
                    message = str(failure)
                    break
            if self.clock() >= deadline:
                outcome, message = "TIMED_OUT", f"async task timed out after {spec.timeout:g}s"
                message += await self._cancel(spec, context, iid, reason)
                break
            interval = min(interval * spec.backoff, spec.max_interval)
            now = ticker.loop.time()
            due = max(due + interval, now)  # a poll slower than the interval: the next at once
        self.batch.task_ends.append(TaskEnd(iid, reason, outcome, self.clock(), polls))
        self._event("task", iid, handle=task.handle, task_status=outcome, polls=polls,
                    execution_reason=reason)
        if outcome != "SUCCEEDED":
            # The task ran remotely: whether it left something is for `exists` to say.
            raise _StepFailed(message, changed=None)
        return {"handle": task.handle, "poll": last}

    def task_in_flight(self, iid: str, reason: str, op: Operation | None
                       ) -> TaskRecord | None:
        """The task ``op`` (``run`` in REGULAR_FLOW, ``inverse`` in ROLLBACK_FLOW) started
        for ``iid``, when an earlier executor recorded its handle and not its end."""
        task = self.tasks.get((iid, reason))
        if task is None or task.status != "RUNNING" or op is None or op.async_ is None:
            return None
        return task

    async def _reattach(self, task: TaskRecord, spec: AsyncSpec, context: Mapping[str, Any]
                        ) -> dict[str, Any]:
        """Follow a task an earlier executor started (its handle committed) to its end, as
        ``_follow`` would have; raises _StepFailed as it does."""
        iid, reason = task.command_id, task.execution_reason
        self._event("task", iid, handle=task.handle, task_status="REATTACHED",
                    execution_reason=reason)
        context = {**context, "handle": task.handle}
        poll_args, poll_call = self._prepare(spec.poll, context, iid, reason)
        return await self._poll(task, spec, context, poll_args, poll_call)

    async def _cancel(self, spec: AsyncSpec, context: dict[str, Any], iid: str, reason: str
                      ) -> str:
        """Run the task's ``cancel`` operation, if declared; a note for the error message."""
        if spec.cancel is None:
            return ""
        try:
            args, call = self._prepare(spec.cancel, context, iid, reason)
        except _StepFailed as failure:  # the task's end is recorded all the same
            return f"; cancel failed: {failure}"
        cancelled, _ = await self._attempts(spec.cancel, args, call, context)
        return "; cancel ran" if cancelled.ok else f"; cancel failed: {cancelled.error}"

    # -- steps ---------------------------------------------------------------------------

    def _ancestor_skipped(self, instance: CommandInstance) -> bool:
        parent = instance.parent
        while parent is not None:
            if self.status[parent] == S.SKIPPED:
                return True
            parent = self.graph.instances[parent].parent
        return False

    def _fail(self, iid: str, failure: _StepFailed) -> None:
        error = str(failure)
        self.errors[iid] = error
        self.changed[iid] = failure.changed
        fields: dict[str, Any] = {"error": error, "ended_at": self.clock()}
        if failure.changed is not None:
            fields["changed"] = failure.changed
        if failure.attempts is not None:
            fields["attempts"] = failure.attempts
        if failure.result is not None:  # kept, for `show` (and an inverse's templates)
            fields["result"] = self.results[iid] = failure.result
        self._set(iid, S.FAILED, **fields)

    async def _guard(self, iid: str, work: Coroutine[Any, Any, bool]) -> bool:
        """Run a step's asynchronous part; a failure is recorded, never raised."""
        try:
            return await work
        except _StepFailed as failure:
            self._fail(iid, failure)
            return False

    def _begin(self, instance: CommandInstance) -> dict[str, Any] | None:
        """Decide whether the run step acts at all; None when it ended already (skipped)."""
        iid, spec = instance.id, instance.spec
        context = self._context(instance)
        if self._ancestor_skipped(instance) or (
                spec.when is not None and not _truthy(self._render(spec.when, context, "when"))):
            self._set(iid, S.SKIPPED, ended_at=self.clock())
            return None
        if spec.run is None:
            self._unchanged(instance)
            return None
        return context

    def _unchanged(self, instance: CommandInstance, context: dict[str, Any] | None = None
                   ) -> None:
        """Nothing to do (no run, or exists says present); outputs come from the probe."""
        iid = instance.id
        self.changed[iid] = False
        outputs = self._probe_outputs(instance, context) if context is not None else {}
        self.outputs[iid] = outputs
        parent = bool(instance.children)
        self._set(iid, S.RUNNING if parent else S.UNCHANGED, changed=False, outputs=outputs,
                  ended_at=None if parent else self.clock())

    def _probe_outputs(self, instance: CommandInstance, context: Mapping[str, Any]
                       ) -> dict[str, Any]:
        """The outputs of a command whose `exists` probe stands in for its `run`'s result,
        each on its own: one that reads what only `run` gives (`poll`, `handle`) is left
        out, with a warning, and does not take the others with it."""
        outputs: dict[str, Any] = {}
        missing = []
        for name, template in instance.spec.outputs.items():
            try:
                outputs[name] = render_value(template, context)
            except TemplateError as exc:
                missing.append(f"{name}: {exc}")
        if missing:
            self._event("warning", instance.id, message="outputs not available from the "
                        "exists probe: " + "; ".join(missing))
        return outputs

    def _intend(self, instance: CommandInstance, context: dict[str, Any]
                ) -> tuple[Any, ActionContext]:
        """Render the run operation and record the intent (committed before it acts)."""
        run = instance.spec.run
        assert run is not None
        args, call = self._prepare(run, context, instance.id, REGULAR_FLOW)
        self._set(instance.id, S.STARTING, execution_reason=REGULAR_FLOW,
                  params={"action": run.action, "args": args}, started_at=self.clock())
        return args, call

    async def _probe_then_act(self, instance: CommandInstance, context: dict[str, Any]) -> bool:
        spec = instance.spec
        assert spec.exists is not None
        try:
            probe = await self._ask(spec.exists, context, instance.id, REGULAR_FLOW)
        except _StepFailed as failure:
            failure.changed = False  # asked before run: nothing happened
            raise
        if probe.ok:
            self._unchanged(instance, {**context, "result": dict(probe.data)})
            return True
        args, call = self._intend(instance, context)
        await self._barrier()
        return await self._act(instance, context, args, call)

    def _act_now(self, instance: CommandInstance, context: dict[str, Any], args: Any,
                 call: ActionContext) -> bool | Work:
        """The side effect, called by the driver once the intent is committed: an action
        that ends at once (a plain `python` function) ends the step here; the rest of
        anything else runs as a task."""
        run = instance.spec.run
        assert run is not None
        try:
            first = self._start(run, args, call, context)
            done = _settled_at_once(run, first)
            if done is not None:
                return self._acted(instance, context, done, 1)
        except _StepFailed as failure:
            self._fail(instance.id, failure)
            return False
        return self._guard(instance.id, self._act(instance, context, args, call, first))

    async def _act(self, instance: CommandInstance, context: dict[str, Any], args: Any,
                   call: ActionContext,
                   first: ActionResult | Coroutine[Any, Any, ActionResult] | None = None
                   ) -> bool:
        """The side effect: run (with retries), follow its async task, keep its outputs."""
        run = instance.spec.run
        assert run is not None
        result, attempts = await self._attempts(run, args, call, context, first)
        if run.async_ is None or not result.ok:
            return self._acted(instance, context, result, attempts)
        context["result"] = dict(result.data)
        try:
            context.update(await self._follow(instance, run.async_, context, REGULAR_FLOW))
        except _StepFailed as failure:
            failure.attempts = attempts
            if failure.result is None:  # the task was started: keep what `run` returned
                failure.result = result.data
            raise
        self.results[instance.id] = result.data
        # The result went into the command's row with the handle (RUNNING): not again.
        return self._succeeded(instance, context, {"attempts": attempts})

    def _acted(self, instance: CommandInstance, context: dict[str, Any], result: ActionResult,
               attempts: int) -> bool:
        """The run operation's final result, when there is no async task to follow."""
        if not result.ok:
            run = instance.spec.run
            assert run is not None
            raise _StepFailed(result.error or f"{run.action} failed", None, attempts,
                              result.data)
        context["result"] = dict(result.data)
        self.results[instance.id] = result.data
        return self._succeeded(instance, context, {"attempts": attempts, "result": result.data})

    def _end(self, instance: CommandInstance) -> None:
        """The end step of a parent: every child ended well."""
        iid = instance.id
        if self.status[iid] == S.SKIPPED:
            return
        # Its own run found present (or absent) changed nothing; otherwise it is UNCHANGED
        # only when none of its children changed anything either.
        own_unchanged = instance.spec.run is not None and self.changed.get(iid) is False
        quiet = own_unchanged or (not self.changed.get(iid) and all(
            self.status[c] in (S.UNCHANGED, S.SKIPPED) for c in instance.children))
        self._set(iid, S.UNCHANGED if quiet else S.SUCCEEDED, ended_at=self.clock())

    # -- driver --------------------------------------------------------------------------

    def _entity(self, instance: CommandInstance) -> str | None:
        if instance.spec.entity is None:
            return None
        try:
            # Without the variables secrets are read from: an entity is never masked.
            context = self._context(instance)
            context["env"] = self.entity_env
            return str(render_value(instance.spec.entity, context))
        except TemplateError as exc:
            raise self.unrenderable_entity(instance, exc) from None

    def unrenderable_entity(self, instance: CommandInstance, exc: TemplateError
                            ) -> UsageError:
        """An entity that does not render (an unset `env.X`): the run cannot lock what the
        command touches, so it does not start (it did run unlocked, as if it had none)."""
        hidden = sorted(f"`env.{spec.env}`" for spec in self.plan.secrets.values()
                        if spec.env is not None)
        return UsageError(self.redact(
            f"command {instance.id}: its entity {str(instance.spec.entity)!r} does not "
            f"render: {exc}; an entity is the lock the run takes before it starts, made of "
            "vars, loop variables, `env` and `run_id`"
            + (f" (not {', '.join(hidden)}: secrets are read from them)" if hidden else "")))

    def _records(self) -> list[CommandRecord]:
        return [
            CommandRecord(self.run_id, i.id, i.spec.id, i.order, i.parent,
                          self._entities.get(i.id))
            for i in self.graph.instances.values()
        ]

    def _admit(self, step: Step) -> Admitted:
        """Forward: end a parent, settle a step at once, or give what acts once its intent
        is committed."""
        instance = self.graph.instances[step.command]
        if step.kind == END:
            self._end(instance)
            return True
        if self.status[instance.id] in (S.STARTING, S.RUNNING, S.UNKNOWN):
            return self._guard(instance.id, self._settle(instance))
        try:
            context = self._begin(instance)
            if context is None:
                return True
            if instance.spec.exists is not None:
                return self._guard(instance.id, self._probe_then_act(instance, context))
            args, call = self._intend(instance, context)
            return partial(self._act_now, instance, context, args, call)
        except _StepFailed as failure:
            if self.status[instance.id] == S.PENDING:
                failure.changed = False  # it failed before doing anything
            self._fail(instance.id, failure)
            return False

    async def _settle(self, instance: CommandInstance) -> bool:
        """Resume: finish a step a crashed executor left in flight, never starting it twice."""
        iid, spec = instance.id, instance.spec
        run = spec.run
        assert run is not None
        await self.outlive(iid, self.left_running(iid))
        context = self._context(instance)
        context["result"] = dict(self.results.get(iid) or {})
        task = self.task_in_flight(iid, REGULAR_FLOW, run)
        if task is not None and run.async_ is not None:
            # The handle was committed: re-attach to the remote task and keep polling.
            self.handles[iid] = task.handle
            context.update(await self._reattach(task, run.async_, context))
            return self._succeeded(instance, context, {})
        if spec.exists is not None:
            probe = await self._ask(spec.exists, context, iid, REGULAR_FLOW)
            if probe.ok:
                # It happened before the crash and what run returned is lost: the probe's
                # answer stands in for it (a probe that prints what run printed helps).
                context["result"] = dict(probe.data)
                self.results[iid] = probe.data
                return self._succeeded(instance, context, {"result": probe.data},
                                       self._probe_outputs(instance, context))
            self._set(iid, S.PENDING)
        args, call = self._intend(instance, context)
        await self._barrier()
        return await self._act(instance, context, args, call)

    def _succeeded(self, instance: CommandInstance, context: dict[str, Any],
                   fields: dict[str, Any], outputs: dict[str, Any] | None = None) -> bool:
        iid, spec = instance.id, instance.spec
        if outputs is None:
            outputs = self._render(spec.outputs, context, "outputs") if spec.outputs else {}
        self.outputs[iid] = outputs
        self.changed[iid] = True
        parent = bool(instance.children)
        self._set(iid, S.RUNNING if parent else S.SUCCEEDED, changed=True, outputs=outputs,
                  ended_at=None if parent else self.clock(), **fields)
        return True

    def _scheduler(self, reverse: bool = False) -> Scheduler:
        graph, steps = self.graph, self.graph.steps
        if reverse:
            count = len(steps)
            return Scheduler(steps, graph.successors.__getitem__,
                             graph.predecessors.__getitem__,
                             {k: count - s.order for k, s in steps.items()})
        return Scheduler(steps, graph.predecessors.__getitem__, graph.successors.__getitem__,
                         {k: s.order for k, s in steps.items()})

    @classmethod
    def from_store(cls, store: Store, run_id: str, *, loaded: LoadedPlan | None = None,
                   **kwargs: Any) -> Runner:
        """A Runner for a recorded run, rebuilt from the plan snapshot kept with it (pass
        ``loaded`` from ``load_run`` when it was needed before, e.g. for its secrets)."""
        run = store.get_run(run_id)
        if run is None:
            raise UsageError(f"unknown run {run_id!r}")
        if loaded is None:
            loaded = load_run(store, run_id)
        options = dataclasses.replace(
            _recorded(kwargs.pop("options", None) or ApplyOptions(), run), run_id=run_id)
        runner = cls(loaded, store, options=options, **kwargs)
        records = store.get_commands(run_id)
        if set(records) != set(runner.graph.instances):
            raise StateError(f"run {run_id}: its plan snapshot no longer expands to the "
                             "recorded commands (a for_each over `env` that changed?)")
        runner.record = run
        for iid, record in records.items():
            runner.status[iid] = record.status
            runner.changed[iid] = record.changed
            runner._entities[iid] = record.entity
            runner.revert_attempts[iid] = record.revert_attempts
            # Stored with placeholders naming the secrets they held: made whole.
            if record.outputs is not None:
                runner.outputs[iid] = unmask_value(record.outputs, runner.secrets)
            if record.result is not None:
                runner.results[iid] = unmask_value(record.result, runner.secrets)
            if record.error:
                runner.errors[iid] = record.error
        for task in store.get_tasks(run_id):
            if runner.placeholders:  # a handle stored with secret placeholders: made whole
                task = dataclasses.replace(task, handle=unmask(task.handle, runner.secrets))
            runner.tasks[(task.command_id, task.execution_reason)] = task
            if task.execution_reason == REGULAR_FLOW:
                runner.handles[task.command_id] = task.handle
        runner.seq = store.last_seq(run_id)
        return runner

    def nothing_to_undo(self) -> bool:
        """Nothing this run changed is left to undo, and it ended properly: no executor
        (live or dead) holds it. A run left RUNNING, INTERRUPTED or ROLLING_BACK, or one
        whose executor died before it released its locks, still needs its rollback to
        end it and free them, even with nothing to undo."""
        from .rollback import Reverter

        reverter = Reverter(self)
        if any(reverter.must_undo(i) for i in self.graph.instances.values()):
            return False
        ended = self.record is not None and self.record.status in (
            RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK, RunStatus.ROLLBACK_FAILED,
            RunStatus.STOPPED)
        held = any(lock.run_id == self.run_id and not lock_kept(lock)
                   for lock in self.store.list_locks())
        return ended and not held

    async def resume(self) -> RunOutcome:
        """Continue a run a crash or a signal interrupted, from its persisted state."""
        self.wake = asyncio.Event()
        if self.options.cancel_inflight:
            self.failing = asyncio.Event()
        await self._lock()
        self._find_orphans()
        status = self.record.status if self.record else RunStatus.RUNNING
        self.batch.run = {"status": RunStatus.RUNNING, "ended_at": None}
        self._event("run", status="RESUMED", previous=status)
        self._warn_short_secrets()
        if status in (RunStatus.ROLLING_BACK, RunStatus.ROLLBACK_FAILED) or any(
                s in (S.REVERTING, S.REVERTED, S.REVERT_SKIPPED, S.REVERT_FAILED)
                for s in self.status.values()) or (
                status == RunStatus.INTERRUPTED and self._rollback_interrupted()):
            return await self.rollback()
        steps, instances = self.graph.steps, self.graph.instances
        finished = set()
        for key, step in steps.items():
            st = self.status[step.command]
            if st in DONE_OK or (step.kind != END and instances[step.command].children
                                 and st == S.RUNNING and self.changed.get(step.command)
                                 is not None):
                finished.add(key)
        failed_before = any(s == S.FAILED for s in self.status.values())
        graph = self.graph
        if failed_before:
            if self.failing is not None:  # --cancel-inflight: the run failed already
                self.failing.set()
            # Only finish what was in flight; nothing new starts after a failure.
            inflight = [k for k, st in steps.items() if st.kind != END and k not in finished
                        and self.status[st.command] in (S.STARTING, S.RUNNING, S.UNKNOWN)]
            scheduler = Scheduler(inflight, lambda n: (), lambda n: (),
                                  {k: steps[k].order for k in inflight})
            await self._drive(scheduler, self._admit, stop_on_failure=False)
            failed = True
        else:
            scheduler = Scheduler(steps, graph.predecessors.__getitem__,
                                  graph.successors.__getitem__,
                                  {k: s.order for k, s in steps.items()}, finished=finished)
            failed = await self._drive(scheduler, self._admit,
                                       stop_on_failure=self.on_failure in ("rollback", "stop"))
        return await self._after_forward(failed)

    def rollback_asked(self) -> bool:
        """Whether the run's last rollback is one `planctl rollback` (``rollback_run``)
        began, rather than one a failed apply began (see ``rollback_asked``)."""
        return rollback_asked([e.data.get("status")
                               for e in self.store.get_events(self.run_id, kind="run")])

    def _rollback_interrupted(self) -> bool:
        """Whether the run was rolling back when a signal interrupted it. Once an inverse
        started, its command's status says so; before that (while the rollback followed
        a task, waited for a program or asked `exists`), only the run's events do: its last
        start of a flow is ROLLING_BACK."""
        flow = None
        for event in self.store.get_events(self.run_id, kind="run"):  # not every command's
            if event.data.get("status") in (RunStatus.RUNNING, "RESUMED",
                                            RunStatus.ROLLING_BACK):
                flow = event.data["status"]
        return flow == RunStatus.ROLLING_BACK

    def _interrupted(self) -> RunOutcome:
        leftovers = self._forward_leftovers() + [
            Leftover(iid, self._entities.get(iid), st, "its inverse was interrupted")
            for iid, st in self.status.items() if st in (S.REVERTING, S.REVERT_FAILED)
        ]
        return self._conclude(RunStatus.INTERRUPTED, leftovers)

    async def _after_forward(self, failed: bool) -> RunOutcome:
        if self.interrupted is not None:
            return self._interrupted()
        self._end_with_failure()
        if not failed:
            return self._conclude(RunStatus.SUCCEEDED)
        if self.on_failure == "rollback":
            return await self.rollback()
        return self._conclude(RunStatus.STOPPED)

    async def apply(self) -> RunOutcome:
        if self.options.cancel_inflight:
            self.failing = asyncio.Event()
        return await self._apply()

    async def _apply(self) -> RunOutcome:
        """Run the plan forward; on failure stop starting steps, let in-flight ones end, and
        (with on_failure: rollback) undo what the run changed."""
        self.wake = asyncio.Event()
        for instance in self.graph.instances.values():
            self._entities[instance.id] = self._entity(instance)
        if self.options.run_id is not None and self.store.get_run(self.run_id, plan=False):
            raise UsageError(f"run {self.run_id} exists already in the state store: each "
                             f"apply needs a run_id of its own")
        await self._lock()  # nothing is written when an entity is held by another run
        variables = dict(self.plan.vars)
        lasting = _lasting(self.options)
        if lasting:
            variables[OPTIONS_KEY] = lasting
        # The plan's path is kept absolute: a rollback or resume from another directory
        # (a CI job that downloaded the state) runs the commands where they ran.
        run = RunRecord(self.run_id, self.plan.name, os.path.abspath(self.plan.file),
                        RunStatus.RUNNING,
                        self.clock(), dict(self.plan.source), variables,
                        socket.gethostname(), os.getpid())
        self.store.create_run(run, self._records())
        self._event("run", status=RunStatus.RUNNING, plan=self.plan.name,
                    commands=len(self.graph.instances), version=EVENT_VERSION)
        self._warn_short_secrets()
        stop = self.on_failure in ("rollback", "stop")
        failed = await self._drive(self._scheduler(), self._admit, stop_on_failure=stop)
        return await self._after_forward(failed)

    def check_gone(self) -> None:
        """``options.gone`` names commands of this run (UsageError otherwise)."""
        unknown = [iid for iid in self.options.gone if iid not in self.graph.instances]
        if unknown:
            word = unknown[0]
            looped = [iid for iid, instance in self.graph.instances.items()
                      if instance.spec.id == word]
            if looped:  # a loop's id: each of its commands is gone, or not, on its own
                raise UsageError(f"--gone {word}: a loop in run {self.run_id}; give each of "
                                 f"its commands that is gone: {', '.join(looped)}")
            from .schema import did_you_mean

            hint = did_you_mean(word, self.graph.instances)
            raise UsageError(f"--gone {word}: run {self.run_id} has no such command"
                             + (f" ({hint})" if hint else ""))

    async def rollback(self) -> RunOutcome:
        """ROLLBACK_FLOW over the whole run: inverses in reverse topological order."""
        from .rollback import Reverter

        self.check_gone()
        if self.wake is None:
            self.wake = asyncio.Event()
        await self._lock()
        self._find_orphans()
        self.batch.run = {"status": RunStatus.ROLLING_BACK}
        self._event("run", status=RunStatus.ROLLING_BACK)
        self._warn_short_secrets()
        reverter = Reverter(self)
        await self._drive(self._scheduler(reverse=True), reverter.admit, stop_on_failure=False)
        if self.interrupted is not None:
            return self._interrupted()
        leftovers = reverter.leftovers()
        status = RunStatus.ROLLBACK_FAILED if leftovers else RunStatus.ROLLED_BACK
        return self._conclude(status, leftovers)

    async def _drive(self, scheduler: Scheduler, admit: Callable[[Step], Admitted],
                     stop_on_failure: bool) -> bool:
        """Hand out ready steps, commit, start them, collect outcomes; True if any failed."""
        assert self.wake is not None
        wake = self.wake
        running = self.running
        failed = False
        steps = self.graph.steps
        completed: deque[tuple[str, bool | None]] = deque()
        bugs: list[BaseException] = []
        unawaited = 0  # rounds since the event loop last had a turn

        def finished(task: asyncio.Task[bool], key: str) -> None:
            running.discard(task)
            if task.cancelled():
                completed.append((key, None))  # interrupted: neither done nor failed
            else:
                error = task.exception()
                if error is not None:  # a bug in planctl: the step failed, the run ends
                    bugs.append(error)  # with it below, once the others are done
                completed.append((key, error is None and task.result()))
            wake.set()

        while True:
            if self.interrupted is not None:
                scheduler.stop()
            while completed:
                key, ok = completed.popleft()
                if ok is None:
                    continue
                if ok:
                    scheduler.done(key)
                else:
                    scheduler.failed(key)
                    failed = True
                    if stop_on_failure:
                        scheduler.stop()
                        if self.failing is not None:
                            self.failing.set()  # --cancel-inflight: abandon polled tasks
            starting: list[tuple[str, Work | Inline]] = []
            for key in scheduler.ready(self.max_parallel - len(running)):
                outcome = admit(steps[key])
                if isinstance(outcome, bool):
                    completed.append((key, outcome))
                else:
                    starting.append((key, outcome))
            # One commit: outcomes so far and the intents of the steps about to start.
            self._flush()
            for key, admitted in starting:
                work: bool | Work
                if callable(admitted):  # its intent is durable now: act inline
                    try:
                        work = admitted()
                    except Exception:  # noqa: BLE001 - as a task's exception: the step failed
                        work = False
                    if isinstance(work, bool):
                        completed.append((key, work))
                        continue
                else:
                    work = admitted
                task = asyncio.create_task(work)
                running.add(task)
                task.add_done_callback(lambda t, k=key: finished(t, k))  # type: ignore[misc]
            if completed:
                unawaited += 1
                if unawaited >= INLINE_RUN:
                    unawaited = 0
                    await asyncio.sleep(0)
                continue
            unawaited = 0
            if not running and (not scheduler.has_ready() or self.interrupted is not None):
                break
            await wake.wait()
            wake.clear()
        self._flush()
        if bugs:
            raise bugs[0]  # never reported as a plain failure: exit 70, with its traceback
        return failed

    def _end_with_failure(self) -> None:
        """A parent that started and did not end well has failed, innermost first."""
        stopped: set[str] = set()  # parents failed only because the run stopped first
        for iid, instance in reversed(list(self.graph.instances.items())):
            if not instance.children or self.status[iid] not in (S.RUNNING, S.UNCHANGED):
                continue
            if any(self.status[c] not in DONE_OK for c in instance.children):
                if any(self.status[c] in (S.FAILED, S.UNKNOWN) and c not in stopped
                       for c in instance.children):
                    error = "a child failed"
                else:
                    error = "a child did not run: the run stopped first"
                    stopped.add(iid)
                self._set(iid, S.FAILED, error=error, ended_at=self.clock())
            elif self.status[iid] == S.RUNNING:
                self._end(instance)  # its END step was not handed out after a stop

    def _forward_leftovers(self) -> list[Leftover]:
        """What a stopped run changed and nobody undid: what a rollback would undo, so not
        what is `irreversible` (changed for good, nothing to undo, as for the Reverter)."""
        out = []
        for iid, instance in self.graph.instances.items():
            if (instance.spec.undoable
                    and self.status[iid] in (S.SUCCEEDED, S.RUNNING, S.FAILED, S.UNKNOWN,
                                             S.STARTING)
                    and self.changed.get(iid) is not False):
                why = "changed by the run" if self.changed.get(iid) else "may exist"
                out.append(Leftover(iid, self._entities.get(iid), self.status[iid], why))
        return out

    def _conclude(self, status: str, leftovers: list[Leftover] | None = None) -> RunOutcome:
        if self.lost:  # raises LockLostError: nothing is announced or written
            self.store.commit(self.run_id, Batch())
        if leftovers is None:
            leftovers = self._forward_leftovers() if status == RunStatus.STOPPED else []
        self._event("run", status=status,
                    leftovers=[{"command": x.command, "entity": x.entity, "status": x.status,
                                "reason": x.reason} for x in leftovers])
        self.batch.run = {"status": status, "ended_at": self.clock()}
        self._flush()
        # An interrupted run will resume: it keeps everything; otherwise leftovers only.
        self._unlock(list(self._entities.values()) if status == RunStatus.INTERRUPTED
                     else [x.entity for x in leftovers])
        errors = self.errors
        if self.redacting:  # the caller prints them: no secret in a reason or an error
            leftovers = [dataclasses.replace(x, reason=self.redact(x.reason)) for x in leftovers]
            errors = {iid: self.redact(error) for iid, error in errors.items()}
        return RunOutcome(self.run_id, status, dict(self.status), tuple(leftovers),
                          dict(self._entities), dict(errors))


async def _close_clients() -> None:
    http = sys.modules.get("planner.actions.http")  # only if a plan used it
    if http is not None:
        await http.aclose_clients()


def load_run(store: Store, run_id: str) -> LoadedPlan:
    """The plan of a recorded run, from the snapshot and vars kept with it."""
    from .loader import load_snapshot

    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"unknown run {run_id!r}")
    variables = {k: v for k, v in run.variables.items() if k != OPTIONS_KEY}
    return load_snapshot(run.snapshot, run.plan_file, variables=variables)


def rollback_asked(flows: Sequence[str | None]) -> bool:
    """Whether the last rollback in a run's ``flows`` (the statuses of its `run` events, in
    order) is one `planctl rollback` began on a run that had ended, rather than the one a
    failed apply began itself, followed back through the resumes that continued it. A
    `resume` that ends it then exits as `rollback` does (0 once nothing is left)."""
    ended = (RunStatus.SUCCEEDED, RunStatus.STOPPED, RunStatus.ROLLBACK_FAILED,
             RunStatus.ROLLED_BACK, RunStatus.INTERRUPTED)
    starts = (RunStatus.RUNNING, "RESUMED", RunStatus.ROLLING_BACK)
    i = max((k for k, f in enumerate(flows) if f == RunStatus.ROLLING_BACK), default=-1)
    while i > 0:
        before = flows[i - 1]
        if before in ended:  # a run that had ended, undone on request
            return True
        if before != "RESUMED":  # RUNNING, INTERRUPTING: a failed apply's own rollback
            return False
        # A resume: of a rollback (how did that one begin?), or of a forward flow that
        # then failed (the apply's own rollback).
        i = max((k for k in range(i - 1) if flows[k] in starts), default=-1)
        if i < 0 or flows[i] != RunStatus.ROLLING_BACK:
            return False
    return False


def off_loop(name: str) -> None:
    """``name`` runs an event loop of its own and returns when it is done: on a thread
    whose loop is running (a coroutine, Jupyter, an async web handler) it cannot, and says
    how to call it instead (UsageError) before it reads or writes anything."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UsageError(f"{name}() cannot be called from a running asyncio event loop: it runs "
                     f"one of its own; from async code, call it in a worker thread: "
                     f"await asyncio.to_thread(planner.{name}, ...)")


def execute(runner: Runner, work: Callable[[], Coroutine[Any, Any, RunOutcome]],
            handle_signals: bool = True) -> RunOutcome:
    """Run one of ``runner``'s flows (``runner.apply``, ``.rollback``, ``.resume``) to the
    end on a fresh event loop, with SIGINT/SIGTERM making it stop resumably."""
    async def main() -> RunOutcome:
        loop = asyncio.get_running_loop()
        installed: dict[signal.Signals, Any] = {}
        wakeup = -1
        if handle_signals and threading.current_thread() is threading.main_thread():
            # The loop's handlers replace the caller's wakeup fd (a GUI's, another loop's)
            # and remove it when they go: it is put back with the handlers.
            wakeup = signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM):
                installed[sig] = signal.getsignal(sig)
                loop.add_signal_handler(sig, runner.interrupt, sig.name)
        _watch_children()
        flow = asyncio.ensure_future(work())
        try:
            try:
                return await asyncio.shield(flow)
            except asyncio.CancelledError:
                # Only asyncio.run cancels this: on SIGINT, on the main thread, when nobody
                # handles it (handle_signals=False and the caller's SIGINT handler Python's
                # own). Stop the run as a signal stops it, resumably, then let asyncio.run
                # raise the caller's KeyboardInterrupt.
                if not flow.done():
                    runner.interrupt("SIGINT")
                    await flow
                raise
        finally:
            for sig, previous in installed.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)  # the caller's handlers, as they were
            if wakeup != -1:
                signal.set_wakeup_fd(wakeup)
            await _close_clients()

    try:
        with runner.importable(), _heap_frozen():
            return asyncio.run(main())
    finally:
        runner.undrive()  # a run that raised did not get to _unlock


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """For the run, the objects that exist before it (the loaded plan is most of them) are
    left out of garbage collections: a full one over a 10,000-command plan costs ~50 ms,
    and a run triggers several. Left alone if the caller froze objects itself."""
    with _full_collections_paused():
        if gc.get_freeze_count():
            yield
            return
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()


_gc_lock = threading.Lock()
_gc_runs = 0  # runs going on in this process (threads), under _gc_lock
_gc_saved = (0, 0, 0)  # the thresholds before the first of them
_gc_since = 0.0  # when full collections were paused, or last forced while runs overlap
# Runs that keep overlapping (a service applying plans on several threads) would never
# let a full collection happen: one is made at the end of a run at most this often.
FULL_COLLECTION_EVERY = 60.0


@contextlib.contextmanager
def _full_collections_paused() -> Iterator[None]:
    """No automatic full collection while any run goes on: the objects a run keeps
    (in-flight tasks, statuses) grow with it, so each full collection scans more, and
    they found nothing to free (a run's few reference cycles die young, in the young
    generations, which still collect). With 10,000 polled tasks in flight this was
    0.45-0.6 s of a 1.5 s run. The last run to end puts the thresholds back; while runs
    overlap without a break, the end of one collects in full once a minute."""
    global _gc_runs, _gc_saved, _gc_since
    with _gc_lock:
        if not _gc_runs:
            _gc_saved = gc.get_threshold()
            _gc_since = time.monotonic()
            if _gc_saved[0]:  # 0: collection is off already
                gc.set_threshold(_gc_saved[0], _gc_saved[1], 1 << 30)
        _gc_runs += 1
    try:
        yield
    finally:
        collect = False
        with _gc_lock:
            _gc_runs -= 1
            if not _gc_runs:
                if _gc_saved[0]:
                    gc.set_threshold(*_gc_saved)
            elif _gc_saved[0] and time.monotonic() - _gc_since >= FULL_COLLECTION_EVERY:
                collect, _gc_since = True, time.monotonic()
        if collect:
            gc.collect()


if sys.version_info < (3, 12):
    # Child watchers are deprecated from 3.12 (subclassing AbstractChildWatcher warns at
    # import) and gone in 3.14; from 3.12 asyncio itself watches children through a pidfd
    # where the kernel has them, so this class exists on 3.11 only.
    class _PidfdWatcher(asyncio.AbstractChildWatcher):
        """Python 3.12's child watcher on 3.11: each child is watched through a pidfd on the
        loop that started it, so no thread per subprocess and any number of loops."""

        def add_child_handler(  # type: ignore[override]
                self, pid: int, callback: Callable[..., object], *args: Any) -> None:
            loop = asyncio.get_running_loop()
            pidfd = os.pidfd_open(pid)
            loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

        @staticmethod
        def _reap(loop: asyncio.AbstractEventLoop, pid: int, pidfd: int,
                  callback: Callable[..., object], args: tuple[Any, ...]) -> None:
            loop.remove_reader(pidfd)
            try:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped by someone else
                code = 255
            os.close(pidfd)
            callback(pid, code, *args)

        def remove_child_handler(self, pid: int) -> bool:
            return True

        def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
            pass

        def close(self) -> None:
            pass

        def is_active(self) -> bool:
            return True

        def __enter__(self) -> _PidfdWatcher:
            return self

        def __exit__(self, *exc: object) -> None:
            pass


def _watch_children() -> None:
    """On Python 3.11, asyncio's default watches each child process with a thread of its
    own; put the loop-independent pidfd watcher in its place (once, and only if nobody chose
    another watcher). From 3.12 on asyncio does this itself, and so does nothing here."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    policy = asyncio.get_event_loop_policy()
    current = getattr(policy, "_watcher", None)
    if isinstance(current, _PidfdWatcher) or not (
            current is None or isinstance(current, asyncio.ThreadedChildWatcher)):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    policy.set_child_watcher(_PidfdWatcher())


def apply_plan(loaded: LoadedPlan, store: Store, *, options: ApplyOptions | None = None,
               listener: Listener | None = None, secrets: Mapping[str, str] | None = None,
               handle_signals: bool = True, **kwargs: Any) -> RunOutcome:
    """Run ``loaded`` to the end on a fresh event loop, recording it in ``store``.

    ``listener`` is called with every event as it is recorded (the ones the CLI prints),
    secrets masked; one that raises is removed and the run goes on. ``secrets`` default to
    the plan's, resolved from the environment and files as the CLI does (UsageError if a
    required one is missing). With ``handle_signals``, on the main thread, SIGINT/SIGTERM
    stop the run resumably (INTERRUPTED), and the caller's handlers are restored after;
    without, a Ctrl-C that asyncio.run turns into KeyboardInterrupt stops it so first.
    Not for a thread that runs an event loop (UsageError): call it through
    ``asyncio.to_thread``.
    ``kwargs`` (``clock``, ``rng``) go to the Runner.
    """
    off_loop("apply_plan")
    if secrets is None:
        secrets = resolve_secrets(loaded)
    runner = Runner(loaded, store, options=options, listener=listener, secrets=secrets,
                    **kwargs)
    return execute(runner, runner.apply, handle_signals)


def rollback_run(store: Store, run_id: str, *, options: ApplyOptions | None = None,
                 listener: Listener | None = None, secrets: Mapping[str, str] | None = None,
                 handle_signals: bool = True, **kwargs: Any) -> RunOutcome:
    """Undo what a recorded run changed (any run: succeeded, stopped, interrupted, partly
    rolled back), from the plan snapshot kept with it; arguments as for ``apply_plan``."""
    off_loop("rollback_run")
    loaded = load_run(store, run_id)
    if secrets is None:
        secrets = resolve_secrets(loaded)
    runner = Runner.from_store(store, run_id, loaded=loaded, options=options,
                               listener=listener, secrets=secrets, **kwargs)
    return execute(runner, runner.rollback, handle_signals)


def resume_run(store: Store, run_id: str, *, options: ApplyOptions | None = None,
               listener: Listener | None = None, secrets: Mapping[str, str] | None = None,
               handle_signals: bool = True, **kwargs: Any) -> RunOutcome:
    """Continue a run that was interrupted (crash, kill -9, SIGINT): re-attach to its
    async tasks, settle what was in flight, go on; arguments as for ``apply_plan``."""
    off_loop("resume_run")
    loaded = load_run(store, run_id)
    if secrets is None:
        secrets = resolve_secrets(loaded)
    runner = Runner.from_store(store, run_id, loaded=loaded, options=options,
                               listener=listener, secrets=secrets, **kwargs)
    return execute(runner, runner.resume, handle_signals)

