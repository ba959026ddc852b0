"""Crash soak: kill planctl at random moments, recover, and check that nothing is left.

Not a benchmark and not run in CI at full size (tests/test_bench_smoke.py runs a few
iterations). Each iteration, in a directory of its own:

1. creates a file that exists before the run (it must survive);
2. applies a plan whose commands create a directory and files (shell programs that take
   a while), start a daemon (a process that outlives its command, with an inverse that
   stops it) and create resources through asynchronous HTTP jobs on a server on
   127.0.0.1 (this process), polled until done; some iterations make a command fail,
   so that apply rolls back by itself;
3. stops it at a random wall-clock moment: SIGKILL mostly, else SIGTERM or SIGINT (once,
   or twice in a row), or SIGTERM then SIGKILL;
4. recovers with `planctl resume` or `planctl rollback` (chosen at random while the run
   is unfinished), each of which may be killed again the same way, until the run has
   ended; a run that SUCCEEDED is checked complete and then rolled back (that rollback
   may be killed too);
5. checks: the run is ROLLED_BACK and `planctl rollback` again has nothing to undo;
   nothing the run created is left (files, directory, daemon, HTTP resources); the
   pre-existing file is intact; no lock is left; nothing was created twice and no
   inverse removed the same thing twice (each program appends to a log, the server
   keeps its own); no process of the run is left running; no planctl invocation
   printed a traceback or exited 70; a run whose rollback started never ends SUCCEEDED.

    python bench/crash_soak.py --iterations 300 --jobs 2
    python bench/crash_soak.py --iterations 20 --seed 7 --dir /tmp/soak --keep

Prints each iteration that broke an invariant (its directory, kept, with the output of
every planctl invocation, and what was done to it), then ``RESULT iterations=N
failures=F ...``; exits 1 if any iteration failed. The same seed makes the same choices
(not the same moments: they are wall-clock).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PLAN = """\
name: crash-soak
vars:
  base: ""
  url: ""
  tag: ""
  files: [a, b, c]
  jobs: [j1, j2]
  sleeps: {a: 0.1, b: 0.1, c: 0.1}
  job_seconds: 0.3
  probe_sleep: 0
  fail_file: ""
  fail_job: ""
  fail_last: false
defaults:
  timeout: 30s
commands:
  - id: dir
    entity: "dir/{{ tag }}"
    exists: {command: [test, -d, "out"]}
    run: {shell: "mkdir out && echo created dir >> log"}
    inverse: {shell: "rmdir out && echo removed dir >> log"}
    children:
      - id: file
        for_each: "{{ files }}"
        as: f
        entity: "file/{{ tag }}/{{ f }}"
        exists:
          shell: >-
            if [ "$PLANCTL_EXECUTION_REASON" = ROLLBACK_FLOW ]; then sleep {{ probe_sleep }}; fi;
            test -e out/{{ f }}
        run:
          shell: >-
            sleep {{ sleeps[f] }};
            if [ -e out/{{ f }} ]; then echo DOUBLE file {{ f }} >> log; exit 1; fi;
            echo data > out/{{ f }}.tmp && mv out/{{ f }}.tmp out/{{ f }}
            && echo created file {{ f }} >> log;
            if [ {{ f }} = {{ fail_file }} ]; then echo failing after creating >&2; exit 3; fi
        inverse:
          shell: >-
            rm out/{{ f }} && echo removed file {{ f }} >> log
      - id: daemon
        entity: "daemon/{{ tag }}"
        exists: {command: [test, -e, "out/daemon.pid"]}
        run:
          shell: >-
            if [ -e out/daemon.pid ]; then echo DOUBLE daemon >> log; exit 1; fi;
            env -u PLANCTL_RUN_ID SOAK_TAG={{ tag }} setsid sh -c
            'echo $$ > out/daemon.pid.tmp; mv out/daemon.pid.tmp out/daemon.pid;
            exec sleep 3600'
            </dev/null >/dev/null 2>&1 &
            until [ -e out/daemon.pid ]; do sleep 0.01; done;
            echo created daemon >> log
        inverse:
          shell: >-
            kill $(cat out/daemon.pid) 2>/dev/null; rm -f out/daemon.pid
            && echo removed daemon >> log
      - id: job
        for_each: "{{ jobs }}"
        as: j
        entity: "res/{{ tag }}/{{ j }}"
        exists: {http: {url: "{{ url }}/res/{{ tag }}/{{ j }}"}}
        run:
          http:
            method: POST
            url: "{{ url }}/res/{{ tag }}/{{ j }}"
            json: {duration: "{{ job_seconds }}", fail: "{{ j == fail_job }}"}
          async:
            handle: "{{ result.json.id }}"
            poll: {http: {url: "{{ url }}/jobs/{{ handle }}"}}
            until: "{{ poll.json.status == 'done' }}"
            failed_when: "{{ poll.json.status in ['failed', 'cancelled'] }}"
            interval: 0.05s
            max_interval: 0.1s
            timeout: 1m
        inverse: {http: {method: DELETE, url: "{{ url }}/res/{{ tag }}/{{ j }}"}}
  - id: last
    needs: [dir]
    changes: false
    run: {shell: "sleep 0.05; test {{ fail_last }} != True"}
"""

SIGNALS = ["KILL"] * 12 + ["TERM", "INT", "TERM2", "INT2", "TERM_KILL", "TERM_INT"]


@dataclass
class Resource:
    state: str  # creating, ready
    job: str


@dataclass
class Job:
    id: str
    tag: str
    name: str
    done_at: float
    fail: bool
    status: str = "running"  # running, done, failed, cancelled


@dataclass
class Server:
    """The HTTP side: resources made by asynchronous jobs, with a log of what it did."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    resources: dict[tuple[str, str], Resource] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    log: dict[str, list[str]] = field(default_factory=dict)
    count: int = 0

    def settle(self) -> None:
        """Under the lock: jobs whose time has come end, making (or not) their resource."""
        now = time.monotonic()
        for job in self.jobs.values():
            if job.status == "running" and now >= job.done_at:
                res = self.resources.get((job.tag, job.name))
                if job.fail:
                    job.status = "failed"
                    if res is not None and res.job == job.id:
                        del self.resources[(job.tag, job.name)]
                        self.log[job.tag].append(f"failed res {job.name}")
                else:
                    job.status = "done"
                    if res is not None and res.job == job.id:
                        res.state = "ready"
                        self.log[job.tag].append(f"created res {job.name}")

    def left(self, tag: str) -> list[str]:
        with self.lock:
            self.settle()
            return [name for (t, name) in self.resources if t == tag]


class Handler(BaseHTTPRequestHandler):
    server_state: Server
    protocol_version = "HTTP/1.1"
    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_request()

    def do_POST(self) -> None:
        self.handle_request()

    def do_DELETE(self) -> None:
        self.handle_request()

    def handle_request(self) -> None:
        st = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        parts = self.path.strip("/").split("/")
        with st.lock:
            st.settle()
            if parts[0] == "jobs" and len(parts) == 2 and self.command == "GET":
                job = st.jobs.get(parts[1])
                if job is None:
                    return self.send(404, {"error": "no such job"})
                return self.send(200, {"id": job.id, "status": job.status})
            if parts[0] != "res" or len(parts) != 3:
                return self.send(404, {"error": "no route"})
            tag, name = parts[1], parts[2]
            log = st.log.setdefault(tag, [])
            res = st.resources.get((tag, name))
            if self.command == "GET":
                if res is None:
                    return self.send(404, {"error": "absent"})
                return self.send(200, {"state": res.state, "job": res.job})
            if self.command == "DELETE":
                if res is None:
                    return self.send(404, {"error": "absent"})
                job = st.jobs[res.job]
                if job.status == "running":
                    job.status = "cancelled"
                del st.resources[(tag, name)]
                log.append(f"removed res {name}")
                return self.send(200, {"removed": name})
            key = self.headers.get("Idempotency-Key", "")
            if key in st.keys:
                job = st.jobs[st.keys[key]]
                log.append(f"repeat res {name}")
                return self.send(200, {"id": job.id, "status": job.status})
            if res is not None:
                log.append(f"DOUBLE res {name}")
                return self.send(409, {"error": "exists"})
            st.count += 1
            assert isinstance(body, dict)
            job = Job(f"job-{st.count}", tag, name,
                      time.monotonic() + float(body.get("duration", 0)),
                      str(body.get("fail")) == "True")
            st.jobs[job.id] = job
            st.keys[key] = job.id
            st.resources[(tag, name)] = Resource("creating", job.id)
            log.append(f"started res {name}")
            return self.send(202, {"id": job.id, "status": job.status})

    def send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Quiet(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a killed planctl resets its connections: not news


def start_server() -> tuple[Server, ThreadingHTTPServer]:
    state = Server()
    handler = type("H", (Handler,), {"server_state": state})
    httpd = Quiet(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return state, httpd


@dataclass
class Iteration:
    number: int
    base: Path
    rng: random.Random
    env: dict[str, str]
    tag: str
    history: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def planctl(it: Iteration, args: list[str], stop: str | None, after: float) -> int:
    """Run planctl; with ``stop``, signal it ``after`` seconds in (if it still runs)."""
    out = open(it.base / f"out-{len(it.history)}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "planner", *args], cwd=it.base,
                            env=it.env, stdout=out, stderr=subprocess.STDOUT)
    if stop is not None:
        try:
            proc.wait(after)
        except subprocess.TimeoutExpired:
            gap = it.rng.uniform(0.0, 0.3)
            first = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "INT2": signal.SIGINT,
                     }.get(stop, signal.SIGTERM)
            proc.send_signal(first)
            if stop in ("TERM2", "INT2", "TERM_KILL", "TERM_INT"):
                time.sleep(gap)
                if proc.poll() is None:
                    second = {"TERM2": signal.SIGTERM, "INT2": signal.SIGINT,
                              "TERM_KILL": signal.SIGKILL, "TERM_INT": signal.SIGINT}[stop]
                    proc.send_signal(second)
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        it.problems.append(f"planctl {args[0]} hung for 120 s")
    out.close()
    text = (it.base / f"out-{len(it.history)}.log").read_text(errors="replace")
    it.history.append(f"{args[0]} stop={stop} after={after:.2f} -> {code}")
    if code == -signal.SIGINT and text.rstrip().endswith("KeyboardInterrupt"):
        pass  # SIGINT during Python's start-up, before planctl's handler exists
    elif "Traceback" in text or code == 70:
        it.problems.append(f"planctl {args[0]} crashed (exit {code}): {text[-800:]}")
    if code not in (0, 1, 2, 130, -signal.SIGKILL) and stop is None:
        it.problems.append(f"planctl {args[0]} exited {code}: {text[-400:]}")
    return code


def run_status(it: Iteration) -> str | None:
    db = it.base / "state.db"
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = con.execute("select status from runs order by started_at desc limit 1"
                          ).fetchone()
    except sqlite3.OperationalError:
        return None  # killed before the schema was committed
    finally:
        con.close()
    return None if row is None else str(row[0])


def locks_left(it: Iteration) -> list[tuple[str, str]]:
    con = sqlite3.connect(f"file:{it.base / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        return [(str(e), str(r)) for e, r in con.execute("select entity, run_id from locks")]
    finally:
        con.close()


def rolled_back(it: Iteration) -> bool:
    """Whether the run's rollback has started (its event log says ROLLING_BACK)."""
    con = sqlite3.connect(f"file:{it.base / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("select data from events where kind = 'run'").fetchall()
    finally:
        con.close()
    return any(json.loads(data).get("status") == "ROLLING_BACK" for (data,) in rows)


def maybe_stop(it: Iteration, chance: float, within: float) -> tuple[str | None, float]:
    """A signal and when to send it (seconds after start: Python's start-up and planctl's
    imports take about 0.3 s), or None."""
    if it.rng.random() >= chance:
        return None, 0.0
    return it.rng.choice(SIGNALS), it.rng.uniform(0.2, within)


def processes_of(tag: str, run_env: str) -> list[str]:
    """Live processes with the iteration's tag or run id in their environment."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state in ("Z", "X"):
            continue
        if f"SOAK_TAG={tag}".encode() in raw or (
                run_env and f"PLANCTL_RUN_ID={run_env}\0".encode() in raw):
            found.append(entry)
    return found


def run_id_of(it: Iteration) -> str:
    db = it.base / "state.db"
    if not db.exists():
        return ""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = con.execute("select id from runs order by started_at desc limit 1").fetchone()
    except sqlite3.OperationalError:
        return ""
    finally:
        con.close()
    return "" if row is None else str(row[0])


def iteration(number: int, seed: int, root: Path, server: Server, url: str) -> Iteration:
    rng = random.Random(seed * 100003 + number)
    base = root / f"it{number:05d}"
    base.mkdir()
    tag = f"t{seed}-{number}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANCTL_")}
    env.update(PLANCTL_STATE=str(base / "state.db"), NO_COLOR="1")
    it = Iteration(number, base, rng, env, tag)
    (base / "plan.yaml").write_text(PLAN)
    (base / "pre-existing").write_text("keep me\n")
    variables = {
        "base": str(base), "url": url, "tag": tag,
        "sleeps": {f: round(rng.uniform(0.0, 0.4), 2) for f in "abc"},
        "job_seconds": round(rng.uniform(0.05, 0.6), 2),
        "probe_sleep": rng.choice([0, 0, 0.1, 0.5]),
        "fail_file": rng.choice(["", "", "", "", "b"]),
        "fail_job": rng.choice(["", "", "", "", "j2"]),
        "fail_last": rng.random() < 0.15,
    }
    (base / "vars.json").write_text(json.dumps(variables))
    args = ["apply", "plan.yaml", "--vars-file", "vars.json"]
    if rng.random() < 0.2:
        args.append("--no-rollback")
    if rng.random() < 0.2:
        args.append("--cancel-inflight")
    if rng.random() < 0.2:
        args += ["-j", "1"]
    stop, after = maybe_stop(it, 0.9, 1.6)
    planctl(it, args, stop, after)
    # Recover until the run has ended; each recovery may be stopped too.
    for attempt in range(10):
        status = run_status(it)
        if status is None:
            break  # killed before the run was recorded: nothing was done
        if status == "ROLLED_BACK":
            if not locks_left(it):
                break
            # Killed after it recorded ROLLED_BACK and before it released its locks:
            # a rollback ends it (docs/state.md).
            command = "rollback"
        elif status == "SUCCEEDED":
            if rolled_back(it):
                it.problems.append("SUCCEEDED after its rollback had started")
                break
            check_complete(it, server)
            command = "rollback"
        elif status in ("STOPPED", "ROLLBACK_FAILED"):
            command = "rollback"
        else:  # RUNNING, INTERRUPTED, ROLLING_BACK
            command = "resume" if rng.random() < 0.6 else "rollback"
        stop, after = maybe_stop(it, 0.5 if attempt < 5 else 0.0, 1.2)
        planctl(it, [command, "--last"], stop, after)
    else:
        it.problems.append(f"run did not end: {run_status(it)}")
    check_end(it, server)
    return it


def check_complete(it: Iteration, server: Server) -> None:
    out = it.base / "out"
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    if names != ["a", "b", "c", "daemon.pid"]:
        it.problems.append(f"SUCCEEDED but out/ holds {names}")
    if sorted(server.left(it.tag)) != ["j1", "j2"]:
        it.problems.append(f"SUCCEEDED but the server holds {server.left(it.tag)}")


def check_end(it: Iteration, server: Server) -> None:
    status = run_status(it)
    if status not in (None, "ROLLED_BACK"):
        it.problems.append(f"run ended {status}")
    if status is not None:
        code = planctl(it, ["rollback", "--last"], None, 0.0)
        text = (it.base / f"out-{len(it.history) - 1}.log").read_text()
        if code != 0 or "nothing to undo" not in text:
            it.problems.append(f"a second rollback did something (exit {code}): {text[-400:]}")
    if status is not None and locks_left(it):
        it.problems.append(f"locks left: {locks_left(it)}")
    if (it.base / "out").exists():
        it.problems.append(f"left behind: out/ {sorted(os.listdir(it.base / 'out'))}")
    if (it.base / "pre-existing").read_text() != "keep me\n":
        it.problems.append("the pre-existing file was changed")
    left = server.left(it.tag)
    if left:
        it.problems.append(f"left on the server: {left}")
    log = (it.base / "log").read_text().splitlines() if (it.base / "log").exists() else []
    log += server.log.get(it.tag, [])
    counts = Counter(log)
    for line, n in counts.items():
        if line.startswith("DOUBLE"):
            it.problems.append(f"done twice: {line}")
        elif n > 1 and not line.startswith("repeat"):
            it.problems.append(f"{line} x{n}")
    for line in counts:
        if line.startswith("started res"):
            name = line.split()[-1]
            if counts[f"removed res {name}"] + counts[f"failed res {name}"] > 1:
                it.problems.append(f"res {name} removed more than once")
    # Programs still running (a daemon, or a program of the run) once all has ended.
    deadline = time.monotonic() + 2.0
    running = processes_of(it.tag, run_id_of(it))
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = processes_of(it.tag, run_id_of(it))
    if running:
        it.problems.append(f"processes left running: {running}")
        for pid in running:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2, help="iterations run at once")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--keep", action="store_true",
                        help="keep every iteration's directory (failing ones always are)")
    parser.add_argument("--dir", help="where iterations run (default: a temporary one)")
    options = parser.parse_args()
    root = Path(options.dir or tempfile.mkdtemp(prefix="crash-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    server, httpd = start_server()
    host, port = httpd.server_address[:2]
    url = f"http://{host!s}:{port}"
    failures = 0
    stops: Counter[str] = Counter()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(options.jobs) as pool:
            futures = [pool.submit(iteration, n, options.seed, root, server, url)
                       for n in range(options.iterations)]
            for future in futures:
                it = future.result()
                for line in it.history:
                    stops[line.split()[1]] += 1
                if it.problems:
                    failures += 1
                    print(f"iteration {it.number} ({it.base}):", flush=True)
                    for problem in it.problems:
                        print(f"  {problem}", flush=True)
                    print(f"  history: {it.history}", flush=True)
                elif not options.keep:
                    shutil.rmtree(it.base, ignore_errors=True)
    finally:
        httpd.shutdown()
    if not options.keep and not failures and not options.dir:
        shutil.rmtree(root, ignore_errors=True)
    stopped = sum(n for k, n in stops.items() if k != "stop=None")
    print(f"RESULT iterations={options.iterations} failures={failures} seed={options.seed} "
          f"invocations={sum(stops.values())} stopped={stopped} "
          f"seconds={time.monotonic() - started:.0f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
