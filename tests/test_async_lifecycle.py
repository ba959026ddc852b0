"""The lifecycle of async tasks between their start, their handle, their polls and their
end, forward and in ROLLBACK_FLOW: a real HTTP jobs server on 127.0.0.1, real SQLite
files, `planctl` as a subprocess (killed with SIGKILL at chosen moments)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from asyncjobs import AsyncJobsServer
from seedplan import signal_when, spawn
from test_executor import apply, planctl, read_state, requests_of, write_plan


def test_a_task_whose_until_does_not_render_ends_failed_and_is_not_polled_again(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """`until` that does not render against the poll's answer fails the command, and its
    task ends FAILED with the poll counted: a later `planctl rollback` does not take it
    for a task still in flight, re-attach to it and poll the server again."""
    url = async_jobs_server.url
    rec = apply(tmp_path, f"""\
        name: until-broken
        commands:
          - id: job
            run:
              http: {{method: POST, url: "{url}/jobs", json: {{duration: 0}}}}
              async:
                handle: "{{{{ result.json.id }}}}"
                poll: {{http: {{url: "{url}/jobs/{{{{ handle }}}}"}}}}
                until: "{{{{ poll.json.no_such_key.state == 'done' }}}}"
                interval: 0.01s
            inverse: {{http: {{method: DELETE, url: "{url}/jobs/{{{{ handle }}}}"}}}}
        """)
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert "async.until" in (job.error or "")
    [task] = rec.tasks
    assert (task.status, task.polls) == ("FAILED", 1)
    task_events = [e.data["task_status"] for e in rec.events if e.kind == "task"]
    assert task_events == ["RUNNING", "FAILED"]
    gets = len(requests_of(async_jobs_server, "GET"))
    done = planctl(tmp_path, "rollback", rec.outcome.run_id, "--state", tmp_path / "state.db")
    assert "REATTACHED" not in done.stdout, done.stdout
    assert len(requests_of(async_jobs_server, "GET")) == gets




def test_a_poll_whose_own_failed_when_does_not_render_ends_the_task_failed(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """The `failed_when` of the poll operation itself does not render against an answer:
    the task ends FAILED, its poll counted, not left RUNNING for a later rollback."""
    url = async_jobs_server.url
    rec = apply(tmp_path, f"""\
        name: poll-failed-when-broken
        commands:
          - id: job
            run:
              http: {{method: POST, url: "{url}/jobs", json: {{duration: 0}}}}
              async:
                handle: "{{{{ result.json.id }}}}"
                poll:
                  http: {{url: "{url}/jobs/{{{{ handle }}}}"}}
                  failed_when: "{{{{ result.json.no_such_key.state == 'error' }}}}"
                until: "{{{{ poll.json.status == 'succeeded' }}}}"
                interval: 0.01s
            inverse: {{http: {{method: DELETE, url: "{url}/jobs/{{{{ handle }}}}"}}}}
        """)
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert "no_such_key" in (job.error or "")
    [task] = rec.tasks
    assert (task.status, task.polls) == ("FAILED", 1)
    gets = len(requests_of(async_jobs_server, "GET"))
    done = planctl(tmp_path, "rollback", rec.outcome.run_id, "--state", tmp_path / "state.db")
    assert "REATTACHED" not in done.stdout, done.stdout
    assert len(requests_of(async_jobs_server, "GET")) == gets

def test_a_timed_out_task_whose_cancel_does_not_render_ends_timed_out(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """At the async timeout, a `cancel` that does not render is reported as a cancel that
    failed, and the task is recorded TIMED_OUT, not left RUNNING for a later rollback to
    re-attach to."""
    url = async_jobs_server.url
    rec = apply(tmp_path, f"""\
        name: cancel-broken
        commands:
          - id: job
            run:
              http: {{method: POST, url: "{url}/jobs", json: {{duration: 30}}}}
              async:
                handle: "{{{{ result.json.id }}}}"
                poll: {{http: {{url: "{url}/jobs/{{{{ handle }}}}"}}}}
                until: "{{{{ poll.json.status == 'succeeded' }}}}"
                interval: 0.01s
                backoff: 1
                timeout: 0.05s
                cancel: {{http: {{method: DELETE, url: "{url}{{{{ result.json.no_such_key }}}}"}}}}
            irreversible: true
        """)
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert "timed out" in (job.error or "") and "cancel failed" in (job.error or "")
    assert "no_such_key" in (job.error or "")
    [task] = rec.tasks
    assert task.status == "TIMED_OUT" and task.polls >= 1
    assert requests_of(async_jobs_server, "DELETE") == []

def test_a_handle_that_does_not_render_keeps_what_run_returned_for_the_inverse(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """The job was created but the handle template does not render: the command fails as
    possibly changed, and what `run` returned is recorded, so the rollback's inverse,
    once `exists` says the job is there, can name it and remove it."""
    url = async_jobs_server.url
    rec = apply(tmp_path, f"""\
        name: handle-broken
        commands:
          - id: job
            exists: {{http: {{url: "{url}/jobs/job-1"}}}}
            run:
              http: {{method: POST, url: "{url}/jobs", json: {{duration: 30}}}}
              async:
                handle: "{{{{ result.json.no_such_key }}}}"
                poll: {{http: {{url: "{url}/jobs/{{{{ handle }}}}"}}}}
                until: "{{{{ poll.json.status == 'succeeded' }}}}"
            inverse: {{http: {{method: DELETE, url: "{url}{{{{ result.json.href }}}}"}}}}
        """)
    job = rec.commands["job"]
    [failed] = [e for e in rec.command_events("job") if e.data["status"] == "FAILED"]
    assert "async.handle" in failed.data["error"]
    assert job.result is not None and job.result["json"]["id"] == "job-1"
    assert job.status == "REVERTED", (job.status, job.error)
    assert rec.outcome.status == "ROLLED_BACK"
    assert requests_of(async_jobs_server, "DELETE") == ["/jobs/job-1"]
    assert async_jobs_server.jobs["job-1"].cancelled



def test_a_handle_that_renders_null_is_empty_not_the_text_none(tmp_path: Path) -> None:
    """A start that answered without an id (`{"id": null}`): the handle is empty, which
    fails the command at once, not the text "None" polled as if it were a task's id."""
    rec = apply(tmp_path, """\
        name: null-handle
        commands:
          - id: job
            run:
              command: [echo, '{"id": null}']
              async:
                handle: "{{ result.json.id }}"
                poll: {command: [sh, -c, 'echo "$0" >> polled.log; echo running', "{{ handle }}"]}
                until: "{{ poll.stdout | trim == 'done' }}"
                interval: 0.01s
                backoff: 1
                timeout: 1s
            irreversible: true
        """)
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert job.error == "async.handle rendered empty"
    assert rec.tasks == []
    assert not (tmp_path / "polled.log").exists()

def test_an_async_inverse_resumed_after_kill_polls_its_own_task(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """An async inverse whose `poll` names `result` (the href its start returned), killed
    with SIGKILL while polling: `resume` re-attaches to the inverse's own job, polled at
    the href the inverse's start returned, not at the one `run` returned, and the server
    sees the inverse's job started once."""
    url = async_jobs_server.url
    write_plan(tmp_path, f"""\
        name: async-inverse
        commands:
          - id: vm
            run: {{http: {{method: POST, url: "{url}/jobs", json: {{duration: 0, name: make}}}}}}
            inverse:
              http: {{method: POST, url: "{url}/jobs", json: {{duration: 60, name: undo}}}}
              async:
                handle: "{{{{ result.json.id }}}}"
                poll: {{http: {{url: "{url}{{{{ result.json.href }}}}"}}}}
                until: "{{{{ poll.json.status == 'succeeded' }}}}"
                interval: 0.02s
                backoff: 1
          - id: check
            needs: vm
            changes: false
            run: {{command: [sh, -c, "exit 1"]}}
        """)
    proc = spawn(tmp_path, "apply", "plan.yaml",
                 env={**os.environ, "NO_COLOR": "1"})
    signal_when(proc, "the inverse's job polled",
                lambda: "/jobs/job-2" in requests_of(async_jobs_server, "GET"),
                signal.SIGKILL)
    async_jobs_server.jobs["job-2"].duration = 0  # the undo job ends
    seen = len(async_jobs_server.requests)
    done = planctl(tmp_path, "resume", "--last")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "REATTACHED" in done.stdout
    polled = [path for method, path, _ in async_jobs_server.requests[seen:] if method == "GET"]
    assert polled and set(polled) == {"/jobs/job-2"}, polled
    assert [job.name for job in async_jobs_server.jobs.values()] == ["make", "undo"]
    _, commands, tasks, _ = read_state(tmp_path / ".planctl" / "state.db")
    assert commands["vm"].status == "REVERTED"
    [task] = tasks
    assert (task.execution_reason, task.handle, task.status) == (
        "ROLLBACK_FLOW", "job-2", "SUCCEEDED")


# A job kept in files: `start` prints its id, `status` prints running/done, the first
# `cancel` hangs (it is interrupted), a later one marks the job cancelled.
JOBS = """\
#!/bin/sh
mkdir -p jobs
echo "$*" >> calls.log
case "$1" in
  start) echo running > jobs/j1; echo j1 ;;
  status) cat "jobs/$2" ;;
  cancel)
    if [ -e cancel-started ]; then echo cancelled > "jobs/$2"
    else touch cancel-started; sleep 30; fi ;;
esac
"""


def test_a_resumed_failed_run_applied_with_cancel_inflight_cancels_the_task(
        tmp_path: Path) -> None:
    """`apply --cancel-inflight`: another command failed and the job's `cancel` was
    running when SIGINT stopped the run. `resume`, which keeps the option and only
    finishes what was in flight, cancels the job again rather than polling it until it
    ends (here: until its timeout)."""
    jobs = tmp_path / "jobs.sh"
    jobs.write_text(JOBS, encoding="utf-8")
    jobs.chmod(0o755)
    write_plan(tmp_path, """\
        name: cancel-on-resume
        commands:
          - id: job
            run:
              command: [./jobs.sh, start]
              async:
                handle: "{{ result.stdout | trim }}"
                poll: {command: [./jobs.sh, status, "{{ handle }}"]}
                until: "{{ poll.stdout | trim == 'done' }}"
                interval: 0.02s
                backoff: 1
                timeout: 4s
                cancel: {command: [./jobs.sh, cancel, "{{ handle }}"]}
            irreversible: true
          - id: check
            changes: false
            run: {command: [sh, -c, "until grep -q status calls.log; do sleep 0.02; done; exit 1"]}
        """)
    proc = spawn(tmp_path, "apply", "--cancel-inflight", "plan.yaml",
                 env={**os.environ, "NO_COLOR": "1"})
    code, out, err = signal_when(proc, "the job's cancel running",
                                 lambda: (tmp_path / "cancel-started").exists(), signal.SIGINT)
    assert code == 130, out + err
    done = planctl(tmp_path, "resume", "--last")
    assert done.returncode == 1, done.stdout + done.stderr
    _, commands, tasks, _ = read_state(tmp_path / ".planctl" / "state.db")
    [task] = tasks
    assert task.status == "CANCELLED", (task.status, commands["job"].error)
    assert "another command failed" in (commands["job"].error or "")
    assert (tmp_path / "jobs" / "j1").read_text(encoding="utf-8").strip() == "cancelled"


def test_a_cancel_that_fails_once_is_retried_within_its_retries(tmp_path: Path) -> None:
    """`cancel` is an operation like the others: at the timeout, a cancel that fails once
    is tried again within its `retries`, and the job ends cancelled."""
    jobs = tmp_path / "jobs.sh"
    jobs.write_text(JOBS.replace("touch cancel-started; sleep 30", "touch cancel-started; exit 1"),
                    encoding="utf-8")
    jobs.chmod(0o755)
    rec = apply(tmp_path, """\
        name: cancel-retried
        commands:
          - id: job
            run:
              command: [./jobs.sh, start]
              async:
                handle: "{{ result.stdout | trim }}"
                poll: {command: [./jobs.sh, status, "{{ handle }}"]}
                until: "{{ poll.stdout | trim == 'done' }}"
                interval: 0.01s
                backoff: 1
                timeout: 0.05s
                cancel: {command: [./jobs.sh, cancel, "{{ handle }}"], retries: 2, delay: 0.01s}
            irreversible: true
        """)
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert "timed out" in (job.error or "") and "cancel ran" in (job.error or ""), job.error
    [task] = rec.tasks
    assert task.status == "TIMED_OUT"
    assert (tmp_path / "jobs" / "j1").read_text(encoding="utf-8").strip() == "cancelled"
    calls = (tmp_path / "calls.log").read_text(encoding="utf-8").splitlines()
    assert calls.count("cancel j1") == 2
