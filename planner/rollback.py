"""ROLLBACK_FLOW: the run's DAG walked backwards, each change undone at most once.

The same scheduler drives it over the reversed step graph, so dependents are undone before
what they depend on, children before their parent, independent branches in parallel. An
inverse that fails blocks what it depends on (it is still in use). Every decision is taken
from persisted state, so an interrupted rollback can be continued any number of times:

* REVERTED / REVERT_SKIPPED commands are never touched again;
* ``exists`` is asked before every inverse: absent means there is nothing to remove;
* REVERTING (with its ``execution_reason``) is committed before the inverse starts, and a
  hard cap on attempts stops any loop;
* a command a dead executor left STARTING or REVERTING is decided only once the processes
  it left running for it have ended (``orphans``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from .actions import ActionContext, ActionResult
from .graph import END, CommandInstance, Step
from .model import Operation
from .status import NO_INVERSE, REGULAR_FLOW, ROLLBACK_FLOW, UNSURE, CommandStatus
from .store import TaskRecord

if TYPE_CHECKING:
    from .executor import Admitted, Leftover, Runner
    from .orphans import Orphan

__all__ = ["MAX_REVERT_ATTEMPTS", "Reverter"]

S = CommandStatus
MAX_REVERT_ATTEMPTS = 5
_UNDONE = frozenset({S.REVERTED, S.REVERT_SKIPPED})
_UNTOUCHED = frozenset({S.PENDING, S.SKIPPED, S.UNCHANGED})


class Reverter:
    """Decides, per command, whether and how its inverse runs; the Runner does the I/O."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        # Commands that may still hold a resource, with the reason, beyond REVERT_FAILED.
        self.unsure: dict[str, str] = {}

    def must_undo(self, instance: CommandInstance) -> bool:
        """Whether the run may have changed something this command's inverse removes."""
        spec = instance.spec
        status = self.runner.status[instance.id]
        if spec.run is None or not spec.changes or spec.irreversible:
            return False
        if status in _UNTOUCHED or status in _UNDONE:
            return False
        return self.runner.changed.get(instance.id) is not False

    def admit(self, step: Step) -> Admitted:
        """True/False when settled at once; else what runs the inverse (see ``_undo``)."""
        if step.kind == END:
            return True
        runner = self.runner
        instance = runner.graph.instances[step.command]
        if not self.must_undo(instance):
            return True
        iid, spec = instance.id, instance.spec
        if iid in runner.options.gone:  # removed by hand, the user says: nothing to undo
            runner._set(iid, S.REVERT_SKIPPED, execution_reason=ROLLBACK_FLOW,
                        ended_at=runner.clock(), error="removed by hand (--gone)")
            return True
        left = runner.left_running(iid)
        if left:
            return self._outlive_then_undo(step, iid, left)
        task = runner.task_in_flight(iid, REGULAR_FLOW, spec.run)
        if task is not None:
            return self._follow_then_undo(step, instance, task)
        if spec.inverse is None:
            self.unsure[iid] = NO_INVERSE
            return False  # still there: what it depends on stays too
        known = runner.changed.get(iid) is True or runner.status[iid] == S.REVERTING
        if not known and spec.exists is None:
            # The run failed part-way and nothing can say whether it left something:
            # never remove what the run may not have created. What it depends on is
            # undone all the same (the spec: every command the run changed gets its
            # inverse); it is a leftover only `--gone` settles.
            self.unsure[iid] = UNSURE
            return True
        return self._undo(instance)

    async def _follow_then_undo(self, step: Step, instance: CommandInstance,
                                task: TaskRecord) -> bool:
        """The forward task of an interrupted (or killed) run may still be running: follow
        it to its end first, as `resume` would, so that nothing it makes appears after its
        `exists` said absent. Then decide as for any command."""
        from .executor import _StepFailed

        runner = self.runner
        iid, run = instance.id, instance.spec.run
        assert run is not None and run.async_ is not None
        del runner.tasks[(iid, REGULAR_FLOW)]  # followed once, whatever its end
        context = runner._context(instance)
        context["result"] = dict(runner.results.get(iid) or {})
        try:
            names = await runner._reattach(task, run.async_, context)
            runner.changed[iid] = True  # it ended well: this run made it
            if instance.spec.outputs:  # as `resume` renders them: the inverse may read them
                outputs = runner._render(instance.spec.outputs, {**context, **names},
                                         "outputs")
                runner.outputs[iid] = outputs
                # Stored with the inverse's intent, in the same commit or before it: a
                # rollback after this one is killed runs the inverse again and reads them.
                runner.keep(iid, outputs=outputs)
        except _StepFailed:
            pass  # it failed: whether it left something is for `exists` to say
        return await self._readmit(step)

    async def _outlive_then_undo(self, step: Step, iid: str, left: list[Orphan]) -> bool:
        """A dead executor left the command STARTING or REVERTING, and its `run` (or
        inverse) still runs: wait for it to end, so that `exists` answers for finished work
        and the inverse never runs beside itself. Then decide as for any command."""
        await self.runner.outlive(iid, left)
        return await self._readmit(step)

    async def _readmit(self, step: Step) -> bool:
        """``admit`` again, once what it waited for has ended, and see it through."""
        admitted = self.admit(step)
        if callable(admitted):  # its REVERTING goes in the next commit first
            await self.runner._barrier()
            admitted = admitted()
        return admitted if isinstance(admitted, bool) else await admitted

    def _undo(self, instance: CommandInstance) -> Admitted:
        """Without an ``exists`` probe to ask first, REVERTING is recorded here, in the
        batch the driver commits before the inverse runs; the inverse then runs inline when
        it can. Otherwise the coroutine that probes, records and runs it."""
        from .executor import _StepFailed

        runner = self.runner
        iid, spec = instance.id, instance.spec
        inverse = spec.inverse
        assert inverse is not None
        attempts = runner.revert_attempts.get(iid, 0)
        if attempts >= MAX_REVERT_ATTEMPTS and spec.exists is None:
            return self._give_up(iid, attempts)
        context = runner._context(instance, ROLLBACK_FLOW)
        context.update(result=runner.results.get(iid) or {},
                       outputs=runner.outputs.get(iid) or {},
                       handle=runner.handles.get(iid, ""))
        if spec.exists is not None or (runner.status[iid] == S.REVERTING and
                                       runner.task_in_flight(iid, ROLLBACK_FLOW, inverse)):
            return self._revert(instance, context, attempts)
        try:
            args, call = self._intend(iid, inverse, context, attempts)
        except _StepFailed:
            # The inverse does not render: the general path records that, as a task.
            return self._revert(instance, context, attempts)
        return partial(self._inverse_now, instance, context, args, call)

    def _intend(self, iid: str, inverse: Operation, context: dict[str, Any], attempts: int
                ) -> tuple[Any, ActionContext]:
        """Render the inverse and record REVERTING (committed before the inverse acts)."""
        runner = self.runner
        args, call = runner._prepare(inverse, context, iid, ROLLBACK_FLOW)
        runner.revert_attempts[iid] = attempts + 1
        runner._set(iid, S.REVERTING, execution_reason=ROLLBACK_FLOW,
                    revert_attempts=attempts + 1, error=None)
        return args, call

    def _inverse_now(self, instance: CommandInstance, context: dict[str, Any], args: Any,
                     call: ActionContext) -> bool | Coroutine[Any, Any, bool]:
        """Called by the driver once REVERTING is committed; like ``Runner._act_now``."""
        from .executor import _settled_at_once, _StepFailed

        inverse = instance.spec.inverse
        assert inverse is not None
        try:
            first = self.runner._start(inverse, args, call, context)
            done = _settled_at_once(inverse, first)
            if done is not None:
                return self._reverted(instance.id, inverse, done)
        except _StepFailed as failure:
            return self._failed(instance.id, failure)
        return self._inverse(instance, context, args, call, first)

    async def _revert(self, instance: CommandInstance, context: dict[str, Any],
                      attempts: int) -> bool:
        """Re-attach to the inverse's task (resume), or ask ``exists``, record, then undo."""
        from .executor import _StepFailed, unmask_value

        runner = self.runner
        iid, spec = instance.id, instance.spec
        inverse = spec.inverse
        assert inverse is not None
        was = runner.status[iid]
        try:
            task = runner.task_in_flight(iid, ROLLBACK_FLOW, inverse)
            if was == S.REVERTING and task is not None and inverse.async_ is not None:
                # Resume: the inverse's task was started and its handle kept; follow it,
                # with what the inverse's start returned as `result`, not what `run` did.
                started = task.spec.get("result") if isinstance(task.spec, dict) else None
                if started is not None:
                    context["result"] = unmask_value(started, runner.secrets)
                await runner._reattach(task, inverse.async_, context)
                runner._set(iid, S.REVERTED, execution_reason=ROLLBACK_FLOW,
                            ended_at=runner.clock())
                return True
            try:
                probe = None if spec.exists is None else await runner._ask(
                    spec.exists, context, iid, ROLLBACK_FLOW)
            except _StepFailed as failure:  # "exists probe could not answer: ..."
                return self._failed(iid, failure, prefix="")
            absent = probe is not None and not probe.ok
            if probe is not None and not absent and spec.outputs and not runner.outputs.get(iid):
                # Present, but `run` failed (or its outcome was lost) before it gave outputs:
                # the probe's answer stands in for what it returned, as after `resume`.
                context["outputs"] = runner._probe_outputs(
                    instance, {**context, "result": dict(probe.data)})
            if absent:
                # Absent: removed by our own earlier inverse, or never created.
                done = S.REVERTED if was == S.REVERTING else S.REVERT_SKIPPED
                runner._set(iid, done, execution_reason=ROLLBACK_FLOW,
                            ended_at=runner.clock())
                return True
            if attempts >= MAX_REVERT_ATTEMPTS:  # still there: the cap stops any loop
                return self._give_up(iid, attempts)
            args, call = self._intend(iid, inverse, context, attempts)
        except _StepFailed as failure:
            return self._failed(iid, failure)
        await runner._barrier()  # ROLLBACK_FLOW is durable before the inverse acts
        return await self._inverse(instance, context, args, call)

    async def _inverse(self, instance: CommandInstance, context: dict[str, Any], args: Any,
                       call: ActionContext,
                       first: ActionResult | Coroutine[Any, Any, ActionResult] | None = None
                       ) -> bool:
        """The inverse's side effect (with retries), and its async task if it has one."""
        from .executor import _StepFailed

        runner = self.runner
        iid = instance.id
        inverse = instance.spec.inverse
        assert inverse is not None
        try:
            result, _ = await runner._attempts(inverse, args, call, context, first)
            if not result.ok or inverse.async_ is None:
                return self._reverted(iid, inverse, result)
            context["result"] = dict(result.data)
            await runner._follow(instance, inverse.async_, context, ROLLBACK_FLOW)
        except _StepFailed as failure:
            return self._failed(iid, failure)
        runner._set(iid, S.REVERTED, execution_reason=ROLLBACK_FLOW, ended_at=runner.clock())
        return True

    def _give_up(self, iid: str, attempts: int) -> bool:
        error = f"gave up after {attempts} rollback attempts"
        self.runner.errors[iid] = error
        self.runner._set(iid, S.REVERT_FAILED, execution_reason=ROLLBACK_FLOW, error=error)
        return False

    def _reverted(self, iid: str, inverse: Operation, result: ActionResult) -> bool:
        """The inverse's final result, when there is no async task to follow."""
        from .executor import _StepFailed

        runner = self.runner
        if not result.ok:
            return self._failed(iid, _StepFailed(result.error or f"{inverse.action} failed"))
        runner._set(iid, S.REVERTED, execution_reason=ROLLBACK_FLOW, ended_at=runner.clock())
        return True

    def _failed(self, iid: str, failure: Exception, prefix: str = "inverse failed: ") -> bool:
        runner = self.runner
        runner.errors[iid] = str(failure)
        runner._set(iid, S.REVERT_FAILED, execution_reason=ROLLBACK_FLOW,
                    error=f"{prefix}{failure}", ended_at=runner.clock())
        return False

    def leftovers(self) -> list[Leftover]:
        """What may still be there once the walk ended."""
        from .executor import Leftover

        runner = self.runner
        out: list[Leftover] = []
        for iid, instance in runner.graph.instances.items():
            status = runner.status[iid]
            if iid in self.unsure:
                out.append(Leftover(iid, runner._entities.get(iid), status, self.unsure[iid]))
            elif status == S.REVERT_FAILED:
                out.append(Leftover(iid, runner._entities.get(iid), status,
                                    runner.errors.get(iid, "inverse failed")))
            elif self.must_undo(instance):
                out.append(Leftover(iid, runner._entities.get(iid), status,
                                    "not undone: something that depends on it was not undone"))
        return out
