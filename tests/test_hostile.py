"""Hostile input: plans, templates, files and state stores built to exhaust or break planctl.

Every case runs planctl as a real process, under an address-space limit (so that a case
that regresses fails with a MemoryError instead of starving the machine) and a timeout
(so that one that hangs fails instead of blocking the suite). The rule checked is the
project's: bad input gives a one-line error and a documented exit code, never exit 70.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

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
