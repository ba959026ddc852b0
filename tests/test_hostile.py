"""Hostile input: plans, templates, files and state stores built to exhaust or break planctl.

Every case runs planctl as a real process, under an address-space limit (so that a case
that regresses fails with a MemoryError instead of starving the machine) and a timeout
(so that one that hangs fails instead of blocking the suite). The rule checked is the
project's: bad input gives a one-line error and a documented exit code, never exit 70.
"""

from __future__ import annotations

import http.server
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MEMORY_LIMIT = 2 * 1024**3  # bytes of address space for each planctl process
TIMEOUT = 120  # seconds: a runaway case fails the test instead of hanging the suite

OK_COMMANDS = "commands:\n  - {id: a, changes: false, run: {command: [echo, hi]}}\n"


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def planctl(cwd: Path, *args: str | Path,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planner", *map(str, args)], cwd=cwd, capture_output=True,
        text=True, timeout=TIMEOUT, preexec_fn=_limited,
        env={**os.environ, "NO_COLOR": "1", **(env or {})}, check=False)


def one_error(done: subprocess.CompletedProcess[str], code: int = 3) -> str:
    """The single error line of a refused input; fails on a traceback or exit 70."""
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    return errors[0]


# -- YAML and files ------------------------------------------------------------------------


def test_aliases_of_a_long_string_count_its_characters(tmp_path: Path) -> None:
    """A 1 MB string aliased 10,000 times through two levels (10 GB expanded, few nodes)
    is refused when the plan is read, before a run would serialise it."""
    aliases = ",".join(["*s"] * 100)
    lists = ",".join(["*l1"] * 100)
    (tmp_path / "p.yaml").write_text(
        f"name: t\nvars:\n  s: &s '{'a' * 1_000_000}'\n  l1: &l1 [{aliases}]\n"
        f"  l2: [{lists}]\n{OK_COMMANDS}")
    for args in (("validate", "p.yaml"), ("apply", "p.yaml")):
        line = one_error(planctl(tmp_path, *args))
        assert line.startswith("p.yaml:1:1: error: the plan expands through aliases to over")
        assert "characters" in line
    assert not (tmp_path / ".planctl").exists()


def test_a_plan_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """A plan larger than 64 MiB (here one endless file, /dev/zero) is refused at once,
    located, rather than read until memory runs out."""
    line = one_error(planctl(tmp_path, "validate", "/dev/zero"))
    assert line == "/dev/zero:1:1: error: the plan file is larger than 64 MiB"


def test_a_vars_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(f"name: t\nvars: {{x: 1}}\n{OK_COMMANDS}")
    line = one_error(planctl(tmp_path, "validate", "p.yaml", "--vars-file", "/dev/zero"))
    assert line == "planctl: error: --vars-file /dev/zero: larger than 64 MiB"


def test_a_secret_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: t\nsecrets: {key: {file: /dev/zero}}\n"
        "commands:\n  - {id: a, changes: false, run: {command: [echo, '{{ key }}']}}\n")
    line = one_error(planctl(tmp_path, "apply", "p.yaml"))
    assert line == "planctl: error: secret `key`: file /dev/zero is larger than 1 MiB"


def test_an_unreadable_number_is_quoted_short(tmp_path: Path) -> None:
    """A 100,000-digit integer is an error that quotes its start, not the whole number."""
    (tmp_path / "p.yaml").write_text(f"name: t\nvars:\n  x: {'9' * 100_000}\n{OK_COMMANDS}")
    line = one_error(planctl(tmp_path, "validate", "p.yaml"))
    assert line.startswith("p.yaml:3:6: error: vars.x: cannot read '99999")
    assert len(line) < 400


# -- templates -----------------------------------------------------------------------------

# Each builds gigabytes from a few characters, or loops or recurses without end.
RUNAWAY_TEMPLATES = {
    "'a' * 10**10": "builds more than 10,000,000",
    "[1] * 10**9": "builds more than 10,000,000",
    "['a' * 1000] * 10**6": "builds more than 10,000,000",
    "2 ** (10**10)": "builds a number of more than 100,000 bits",
    "'a' | center(10**10)": "builds more than 10,000,000",
    "'x' | indent(10**10)": "builds more than 10,000,000",
    "'%10000000000s' | format(1)": "builds more than 10,000,000",
    "'%10000000000s' % 1": "builds more than 10,000,000",
    "'{:>10000000000}'.format(1)": "builds more than 10,000,000",
    "'a'.ljust(10**10)": "builds more than 10,000,000",
    "('a' * 1000) | replace('a', 'a' * 1000000)": "builds more than 10,000,000",
    # a field, a %(key)s or a character repeated, each giving a long value
    "('{0}' * 100000).format('x' * 1000000)": "builds more than 10,000,000",
    "('{a}' * 100000).format_map({'a': 'x' * 1000000})": "builds more than 10,000,000",
    "('%(a)s' * 100000) % {'a': 'x' * 1000000}": "builds more than 10,000,000",
    "('%(a)s' * 100000) | format(a='x' * 1000000)": "builds more than 10,000,000",
    "('a' * 100000).translate({97: 'x' * 1000000})": "builds more than 10,000,000",
    # a list holding one list ten times, four levels deep, as text: 10**10 characters
    **{"{% set b = 'x' * 1000000 %}" + "{% set b = [b, b, b, b, b, b, b, b, b, b] %}" * 4
       + shown: "builds more than 10,000,000"
       for shown in ["{{ b }}", "{{ b | string }}", "{{ b | to_json }}", "{{ '%s' % [b] }}",
                     "{{ '{}'.format(b) }}", "{{ b | trim }}"]},
    "('x' * 10**6).join('y' * 10**6)": "builds more than 10,000,000",
    "range(100000) | map('string') | join('x' * 1000)": "builds more than 10,000,000",
    "[1] | batch(10**10, 'x')": "builds more than 10,000,000",
    "range(3) | slice(10**10)": "builds more than 10,000,000",
    "lipsum(10**9)": "builds more than 10,000,000",
    "range(100000) | list | tojson(indent=10**6)": "builds more than 10,000,000",
    "{% set a = 'x' * 10**6 %}{% set a = a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a %}"
    "{{ a }}": "builds more than 10,000,000",
    "{% for i in range(100) %}{{ 'x' * 10**6 }}{% endfor %}": "builds more than 10,000,000",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}":
        "more than 1,000,000 loop iterations and calls",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
    "{{ f(60) }}": "more than 1,000,000 loop iterations and calls",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}": "recurses too deeply",
}


@pytest.mark.parametrize("template", list(RUNAWAY_TEMPLATES))
def test_a_runaway_template_fails_its_step_within_bounds(tmp_path: Path, template: str) -> None:
    """The step fails with a message naming the bound (the run rolls back, exit 1), rather
    than planctl eating the machine's memory, hanging, or ending in exit 70."""
    source = template if "{%" in template else "{{ " + template + " }}"
    quoted = source.replace("\\", "\\\\").replace('"', '\\"')
    (tmp_path / "p.yaml").write_text(
        f'name: t\ncommands:\n  - id: a\n    changes: false\n'
        f'    run: {{command: [echo, "{quoted}"]}}\n')
    done = planctl(tmp_path, "apply", "p.yaml")
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stdout.splitlines() if "FAILED " in line]
    assert len(failed) == 1 and RUNAWAY_TEMPLATES[template] in failed[0], done.stdout


@pytest.mark.parametrize(("template", "error"), [
    ("{{ '{x}'.format() }}", "'x'"),
    ("{{ '{0}'.format() }}", "tuple index out of range"),
    ("{{ '%(x)s' % {} }}", "'x'"),
    ("{{ [] | random }}", "No random item, sequence was empty"),
    ("{{ {'a': 1} | dictsort(by='x') }}", "You can only sort by either"),
    ("{{ [1] | map('nosuchfilter') | list }}", "No filter named 'nosuchfilter'"),
])
def test_a_template_that_raises_fails_its_step(tmp_path: Path, template: str,
                                              error: str) -> None:
    """A KeyError or IndexError of a str method, or an error Jinja raises for a bad filter
    argument, fails the step with its message (they used to end planctl in exit 70)."""
    quoted = template.replace('"', '\\"')
    (tmp_path / "p.yaml").write_text(
        f'name: t\ncommands:\n  - id: a\n    changes: false\n'
        f'    run: {{command: [echo, "{quoted}"]}}\n')
    done = planctl(tmp_path, "apply", "p.yaml")
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stdout.splitlines() if "FAILED " in line]
    assert len(failed) == 1 and error in failed[0], done.stdout


def test_the_template_bounds_leave_ordinary_work_alone(tmp_path: Path) -> None:
    """Text of a million characters, a 1,000 x 100 loop, a list built by `+` and `*`, and
    an exact power of two still render."""
    (tmp_path / "p.yaml").write_text(
        "name: t\ncommands:\n  - id: a\n    changes: false\n"
        "    run: {command: [echo, ok]}\n"
        "    outputs:\n"
        "      long: \"{{ ('ab' * 500000) | length }}\"\n"
        "      loops: \"{% for i in range(1000) %}{% for j in range(100) %}{% endfor %}"
        "{% endfor %}{{ 'done' }}\"\n"
        "      list: \"{{ ([1, 2] + [3] * 3) | join(',') }}\"\n"
        "      power: \"{{ 2 ** 64 }}\"\n"
        "      json: \"{{ {'a': [1, {'b': 2}]} | tojson(indent=2) | length }}\"\n"
        "      padded: \"{{ '{:>5}'.format(7) }}|{{ '%-4s' % 'x' }}|{{ 'a' | center(5) }}\"\n")
    done = planctl(tmp_path, "apply", "p.yaml", "-o", "json")
    assert done.returncode == 0, done.stderr
    shown = planctl(tmp_path, "show", "--last", "a")
    assert "long: 1000000" in shown.stdout
    assert "loops: done" in shown.stdout
    assert "list: 1,2,3,3,3" in shown.stdout
    assert "power: 18446744073709551616" in shown.stdout
    assert "json: 48" in shown.stdout  # tojson(indent=2): eight lines, as plain Jinja
    assert 'padded: "    7|x   |  a  "' in shown.stdout


# -- the state store -----------------------------------------------------------------------


def _tables(path: Path) -> tuple[list[str], str]:
    db = sqlite3.connect(path)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master ORDER BY name")]
        return names, db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("schema", ["CREATE TABLE users (id, name)", "CREATE TABLE runs (x)"])
def test_another_programs_database_is_refused_untouched(tmp_path: Path, schema: str) -> None:
    """--state naming some other program's SQLite file: refused before anything is
    written to it (no planctl tables, no WAL mode); a table named like planctl's no longer
    ends in exit 70."""
    other = tmp_path / "app.db"
    db = sqlite3.connect(other)
    db.execute(schema)
    db.commit()
    db.close()
    before = _tables(other)
    (tmp_path / "p.yaml").write_text(f"name: t\n{OK_COMMANDS}")
    for args in (("apply", "p.yaml"), ("runs",)):
        line = one_error(planctl(tmp_path, *args, "--state", other))
        assert line.startswith(f"planctl: error: {other}: not a planctl state store: it holds "
                               "tables of another program")
    assert _tables(other) == before


_OPEN_AT = """import sys, time
from planner.sqlite_store import SQLiteStore
start = float(sys.argv[2])
while time.time() < start:
    pass
SQLiteStore(sys.argv[1]).close()
"""


def test_processes_creating_one_store_at_the_same_moment_all_open_it(tmp_path: Path) -> None:
    """Parallel CI jobs starting on a fresh state file: each opens it, none mistakes the
    tables another one is creating for another program's, and none fails on the switch to
    WAL mode (SQLite answers it "busy" without waiting). Before: about one trial in four
    had a process exit with one of those errors."""
    for trial in range(12):
        path = tmp_path / f"s{trial}.db"
        start = time.time() + 0.5  # after the imports: the opens coincide
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, str(path), str(start)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()


def test_a_damaged_store_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A store whose pages were overwritten: `runs`, `show` and `events` say it is
    damaged (exit 3) instead of exit 70."""
    (tmp_path / "p.yaml").write_text(f"name: t\n{OK_COMMANDS}")
    for _ in range(3):
        assert planctl(tmp_path, "apply", "p.yaml", "--state", "s.db").returncode == 0
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray((tmp_path / "s.db").read_bytes())
    for start in range(page, len(data), page):  # every page but the header's
        data[start:start + page] = b"\xab" * page
    (tmp_path / "s.db").write_bytes(data)
    for args in (("runs",), ("show", "--last"), ("events", "--last")):
        line = one_error(planctl(tmp_path, *args, "--state", "s.db"))
        assert line == "planctl: error: s.db: the state store failed: database disk image " \
                       "is malformed"


HOLDER = """\
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
with open("holder.pid", "w") as f:
    f.write(str(os.getpid()))
os.rename("holder.pid", "held")
time.sleep(90)
"""


def test_a_store_locked_by_another_process_mid_run_is_an_error_not_a_crash(
        tmp_path: Path) -> None:
    """A command starts a process that holds a write transaction on the store: planctl's
    next commit waits its 30 s, then stops with an error that names the run to resume
    (exit 130, as an interrupted run), not exit 70."""
    (tmp_path / "holder.py").write_text(HOLDER)
    (tmp_path / "p.yaml").write_text(
        "name: t\ncommands:\n  - id: a\n    changes: false\n    run: {shell: \""
        + f"{sys.executable} holder.py s.db </dev/null >/dev/null 2>&1 &"
        + " while [ ! -e held ]; do sleep 0.05; done"
        + "\"}\n  - {id: b, needs: a, changes: false, run: {command: [echo, hi]}}\n")
    try:
        done = planctl(tmp_path, "apply", "p.yaml", "--state", "s.db")
    finally:
        if (tmp_path / "held").exists():
            os.kill(int((tmp_path / "held").read_text()), 9)
    line = one_error(done, 130)
    assert line.startswith("planctl: error: s.db: the state store failed: database is locked")
    assert "planctl resume" in line


# -- python actions and sys.path -------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering 200 to every GET."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_plan_module_named_like_a_library_does_not_replace_it(tmp_path: Path,
                                                                 web: str) -> None:
    """A helper `http.py` next to a plan that uses `python` actions: planctl's own `http`
    action, which imports Python's http package once the run is under way, still works
    (the plan's directory used to come first on sys.path and shadow it). The plan is
    not in the working directory, which `python -m` puts first on sys.path itself."""
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "http.py").write_text("def get():\n    return 'mine'\n")
    (tmp_path / "plan" / "tools.py").write_text("def f():\n    return 1\n")
    (tmp_path / "plan" / "p.yaml").write_text(
        "name: t\ncommands:\n  - {id: a, changes: false, run: {python: 'tools:f'}}\n"
        f"  - {{id: b, needs: a, changes: false, run: {{http: {{url: '{web}'}}}}}}\n")
    done = planctl(tmp_path, "apply", "plan/p.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_plan_module_named_like_pythons_own_fails_its_step_naming_both(
        tmp_path: Path) -> None:
    """A `python` action naming the plan's `http.py` gets a step failure that names both
    files, rather than a call into Python's http package or the plan's file shadowing it."""
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "http.py").write_text("def get():\n    return 'mine'\n")
    (tmp_path / "plan" / "p.yaml").write_text(
        "name: t\ncommands:\n  - {id: a, changes: false, run: {python: 'http:get'}}\n")
    done = planctl(tmp_path, "apply", "plan/p.yaml")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if "FAILED " in line]
    assert len(failed) == 1
    assert "module http is found first elsewhere (" in failed[0]
    assert f"this plan's own {tmp_path}/plan/http.py cannot take its name: rename it" \
        in failed[0]
