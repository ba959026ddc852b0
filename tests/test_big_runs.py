"""Output of big and long runs through the real CLI: summaries, step summaries and the live
tree stay bounded at thousands of commands, and plain lines show a sign of life while
nothing else happens."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from terminal import on_terminal

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
OPS = '''
def noop():
    pass


def fail():
    raise RuntimeError("planned failure")
'''


def _chain(tmp: Path, n: int, *, entity: str = "", name: str = "chain") -> Path:
    """A plan of ``n`` python no-ops with inverses, each needing the one before; the last
    one fails."""
    (tmp / "ops.py").write_text(OPS)
    lines = [f"name: {name}", "commands:"]
    for i in range(n):
        lines += [f"  - id: c{i}",
                  f"    run: {{python: 'ops:{'fail' if i == n - 1 else 'noop'}'}}",
                  "    inverse: {python: 'ops:noop'}"]
        if entity:
            lines.append(f"    entity: {entity}/c{i}")
        if i:
            lines.append(f"    needs: c{i - 1}")
    plan = tmp / "plan.yaml"
    plan.write_text("\n".join(lines) + "\n")
    return plan


def _no_inverses(tmp: Path, n: int, *, name: str = "no-inverses") -> Path:
    """``n`` independent python no-ops without an inverse, then a read-only check that
    needs them all and fails: a rollback can undo none of them."""
    (tmp / "ops.py").write_text(OPS)
    lines = [f"name: {name}", "commands:"]
    for i in range(n):
        lines += [f"  - id: c{i}", "    run: {python: 'ops:noop'}"]
    lines += ["  - id: check", "    changes: false",
              f"    needs: [{', '.join(f'c{i}' for i in range(n))}]",
              "    run: {python: 'ops:fail'}"]
    plan = tmp / "plan.yaml"
    plan.write_text("\n".join(lines) + "\n")
    return plan


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GITHUB_STEP_SUMMARY", "PLANCTL_OUTPUT", "PLANCTL_PROGRESS_INTERVAL")}
    env.update({"PLANCTL_STATE": str(tmp / "state.db"), "NO_COLOR": "1", **extra})
    return env


def _planctl(tmp: Path, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "planner", *args], cwd=tmp,
                          env=env or _env(tmp), capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _after(text: str, marker: str) -> list[str]:
    return text[text.index(marker):].splitlines()


def test_the_summary_of_thousands_of_leftovers_lists_a_few_and_points_to_show(
        tmp_path: Path) -> None:
    """A failed run of 2,000 commands left behind (--no-rollback) ends with a summary of a
    few dozen lines, not 2,000: the first leftovers, how many more and where to see them
    all; the JSON outcome still lists every one of them, for tools."""
    plan = _chain(tmp_path, 2000)
    done = _planctl(tmp_path, "apply", str(plan), "--no-rollback")
    assert done.returncode == 2, done.stderr
    summary = _after(done.stdout, "STOPPED in ")
    assert len(summary) < 30, summary[:40]
    run_id = json.loads(_planctl(tmp_path, "events", "--last").stdout.splitlines()[0])["run_id"]
    assert summary[1] == "leftovers (changed by this run and still there):"
    assert summary[2] == "  - c0 [SUCCEEDED]: changed by the run"
    assert f"  ... and 1980 more: planctl rollback {run_id} --dry-run lists them all" in summary
    assert summary[-1] == f"undo them with: planctl rollback {run_id}"

    done = _planctl(tmp_path, "apply", str(plan), "--no-rollback", "-o", "json",
                    env=_env(tmp_path, PLANCTL_STATE=str(tmp_path / "json.db")))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) < 30
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["kind"] == "outcome" and len(outcome["leftovers"]) == 2000


def test_advice_about_many_leftovers_no_rollback_can_undo_stays_one_short_line(
        tmp_path: Path) -> None:
    """When hundreds of commands have no inverse, the closing advice names a few and says
    how to give --gone, instead of one command line of hundreds of options."""
    plan = _no_inverses(tmp_path, 300)
    done = _planctl(tmp_path, "apply", str(plan))
    assert done.returncode == 2, done.stderr
    last = done.stdout.splitlines()[-1]
    assert len(last) < 300, last
    assert last.startswith("planctl cannot undo 300 commands (c0, c1, c2, ...)"), last
    assert re.search(r"then, with one --gone per command: planctl rollback \S+ --gone ID$",
                     last), last


def test_the_github_step_summary_of_a_huge_run_stays_far_below_githubs_limit(
        tmp_path: Path) -> None:
    """GitHub refuses a step summary over 1 MiB (and shows none): 2,000 leftovers with
    long entities write a few hundred rows at most, and say how many are not shown."""
    plan = _chain(tmp_path, 2000, entity="file/" + "deep/" * 120)
    summary = tmp_path / "summary.md"
    done = _planctl(tmp_path, "apply", str(plan), "--no-rollback",
                    env=_env(tmp_path, GITHUB_ACTIONS="true", CI="true",
                             GITHUB_STEP_SUMMARY=str(summary)))
    assert done.returncode == 2, done.stderr
    text = summary.read_text(encoding="utf-8")
    assert len(text.encode()) < 512 * 1024, len(text.encode())
    assert "**Leftovers** (changed by this run and still there):" in text
    assert re.search(r"^_… and \d+ more leftovers; `planctl rollback \S+ --dry-run` lists "
                     r"them all\._$",
                     text, re.M), text[-2000:]
    assert text.rstrip().endswith("`")  # the advice, last as ever


def _on_terminal(tmp: Path, rows: int, cols: int, *args: str) -> tuple[int, str]:
    """Run `planctl ARGS` on a pseudo-terminal of ``rows`` x ``cols``; exit code, output."""
    env = _env(tmp, TERM="xterm-256color")
    env.pop("NO_COLOR")
    return on_terminal(tmp, env, *args, rows=rows, cols=cols, timeout=120)


def test_the_live_tree_on_a_narrow_terminal_keeps_to_its_height_and_whole_commands(
        tmp_path: Path) -> None:
    """At 40 columns and 12 rows, a plan with a long name and 200 commands: the last frame
    keeps the title on one line and the `… more commands` line within the screen, and the
    closing command to copy is never broken by a line break planctl wrote."""
    plan = _no_inverses(tmp_path, 199,
                        name="a-plan-whose-name-is-longer-than-forty-columns")
    code, text = _on_terminal(tmp_path, 12, 40, "apply", str(plan))
    assert code == 2, text
    plain = ANSI.sub("", text).replace("\r", "")
    final = plain[plain.rindex("planctl apply a"):]
    frame = final[:final.index("ROLLBACK_FAILED in ")].splitlines()
    assert len(frame) <= 12, frame
    assert "ROLLBACK_FAILED" in frame[0], frame
    assert re.match(r"… \d+ more commands: ", frame[-1]), frame
    assert re.search(r"^planctl cannot undo 199 commands .* planctl rollback \S+ --gone ID$",
                     final, re.M), final


def _sleepy(tmp: Path) -> Path:
    plan = tmp / "sleepy.yaml"
    plan.write_text("name: sleepy\ncommands:\n"
                    "  - id: quick\n    changes: false\n    run: {shell: 'true'}\n"
                    "  - id: slow_copy\n    changes: false\n    needs: quick\n"
                    "    run: {shell: 'sleep 1.5'}\n")
    return plan


def test_plain_lines_say_what_is_still_running_when_nothing_else_happens(
        tmp_path: Path) -> None:
    """A CI log needs a sign of life: when no event was printed for
    PLANCTL_PROGRESS_INTERVAL seconds, a line names what is still running and for how
    long. With JSON on stdout, the line goes to stderr (what a CI log shows when stdout
    goes to a file) and stdout stays JSON alone."""
    plan = _sleepy(tmp_path)
    done = _planctl(tmp_path, "apply", str(plan),
                    env=_env(tmp_path, PLANCTL_PROGRESS_INTERVAL="0.4"))
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stdout.splitlines() if "still running" in line]
    assert progress, done.stdout
    assert re.match(r"^\s+\d+\.\d\ds  still running  1 command: slow_copy \d+\.\d\ds"
                    r"; 1 of 2 done$", progress[0]), progress

    done = _planctl(tmp_path, "apply", str(plan), "-o", "json",
                    env=_env(tmp_path, PLANCTL_PROGRESS_INTERVAL="0.4"))
    assert done.returncode == 0, done.stderr
    assert "still running" not in done.stdout
    assert all(json.loads(line) for line in done.stdout.splitlines())
    progress = [line for line in done.stderr.splitlines() if "still running" in line]
    assert progress, done.stderr
    assert re.match(r"^\s+\d+\.\d\ds  still running  1 command: slow_copy \d+\.\d\ds"
                    r"; 1 of 2 done$", progress[0]), progress


def test_progress_lines_can_be_turned_off_and_a_bad_interval_is_a_usage_error(
        tmp_path: Path) -> None:
    """PLANCTL_PROGRESS_INTERVAL=0 prints no progress line; a value that is not a number
    of seconds exits 3 before anything runs or the state store is created."""
    plan = _sleepy(tmp_path)
    done = _planctl(tmp_path, "apply", str(plan),
                    env=_env(tmp_path, PLANCTL_PROGRESS_INTERVAL="0"))
    assert done.returncode == 0, done.stderr
    assert "still running" not in done.stdout
    bad = _env(tmp_path, PLANCTL_PROGRESS_INTERVAL="soon",
               PLANCTL_STATE=str(tmp_path / "bad.db"))
    done = _planctl(tmp_path, "apply", str(plan), env=bad)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "PLANCTL_PROGRESS_INTERVAL" in done.stderr
    assert not (tmp_path / "bad.db").exists(), "a usage error must write nothing"
    for verb in ("rollback", "resume"):  # an existing store: refused before it is opened
        done = _planctl(tmp_path, verb, "--last", env=_env(tmp_path,
                                                            PLANCTL_PROGRESS_INTERVAL="-1"))
        assert done.returncode == 3, done.stdout + done.stderr
        assert "PLANCTL_PROGRESS_INTERVAL" in done.stderr


def test_apply_and_plan_show_a_few_plan_warnings_and_count_the_rest(tmp_path: Path) -> None:
    """A generated plan of 300 commands without an inverse: apply and plan print the first
    warnings and a line counting the others (`planctl validate` lists every one)."""
    plan = _no_inverses(tmp_path, 300)
    for args in (["apply"], ["plan"]):
        done = _planctl(tmp_path, *args, str(plan))
        warnings = [line for line in done.stderr.splitlines() if ": warning: " in line]
        assert 0 < len(warnings) <= 10, done.stderr[:3000]
        assert f"{plan}: {300 - len(warnings)} more warnings; `planctl validate {plan}` " \
               f"lists them all" in done.stderr.splitlines(), done.stderr[-1000:]
    done = _planctl(tmp_path, "validate", str(plan))
    assert len([line for line in done.stderr.splitlines() if ": warning: " in line]) == 300
