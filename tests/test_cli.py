"""Tests of planner.cli for validate, graph and schema: exit codes and what is printed."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from seedplan import signal_when

from planner import cli
from planner._version import __version__
from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
name: add-vm
vars:
  vm: vm-42
  disks: [disk0, disk1]
commands:
  - id: add_vm
    run: {command: [./store, create-vm, "{{ vm }}"]}
    inverse: {command: [./store, remove-vm, "{{ vm }}"]}
    children:
      - id: clone
        for_each: "{{ disks }}"
        as: disk
        run: {command: [./store, copy-image, "{{ disk }}"]}
        inverse: {command: [./store, remove-image, "{{ disk }}"]}
  - id: start_vm
    needs: add_vm
    run: {command: [./store, start-vm, "{{ vm }}"]}
"""

BAD = """\
name: add-vm
commands:
  - id: add_vm
    run: {command: [./store, create-vm, "{{ vn }}"]}
    invers: {command: [./store, remove-vm]}
"""

_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (error|warning): \S")


def planctl(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point, as a user's shell would."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "planner", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


# -- the real console entry ----------------------------------------------------------------


def test_entry_validate_of_a_valid_plan(good: Path) -> None:
    """`planctl validate` of a valid plan exits 0 and summarises it, warnings included."""
    done = planctl("validate", str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{good}: valid (4 commands, 5 steps, 1 warning)\n"
    assert done.stderr.startswith(f"{good}:17:5: warning: commands[1].run: ")


def test_entry_validate_of_a_broken_plan(bad: Path) -> None:
    """A broken plan exits 3 with one located line per problem and no traceback."""
    done = planctl("validate", str(bad))
    assert done.returncode == 3
    lines = done.stderr.splitlines()
    assert lines == [
        f"{bad}:5:5: error: commands[0].invers: unknown key `invers` (did you mean `inverse`?)",
    ]
    assert all(_LOCATED.match(line) for line in lines)
    assert done.stdout == ""


def test_entry_unknown_flag_is_a_usage_error(good: Path) -> None:
    """An unknown option exits 3 with one line naming it, not a traceback."""
    done = planctl("validate", "--no-such-flag", str(good))
    assert done.returncode == 3
    assert done.stderr == ("planctl: error: no such option: --no-such-flag "
                           "(see: planctl validate --help)\n")


@pytest.mark.parametrize(("args", "message"), [
    (["-j", "0"], "-j/--max-parallel: 0 is not in the range x>=1"),
    (["--max-parallel", "abc"], "-j/--max-parallel: 'abc' is not a whole number"),
    (["--lock-timeout", "soon"], "--lock-timeout: 'soon' is not a number of seconds or a "
                                 "duration (30, 2.5, 5m, 1m30s)"),
    (["-o", "xml"], "-o/--output: 'xml' is not one of 'text', 'json'"),
    (["--outpt", "json"], "no such option: --outpt; did you mean --output?"),
])
def test_entry_a_bad_option_value_is_one_line_naming_the_option(
        good: Path, args: list[str], message: str) -> None:
    """A value click refuses is one `planctl: error:` line naming the option as it is
    written, exit 3, nothing run."""
    done = planctl("apply", str(good), *args, "--state", str(good.parent / "state.db"))
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == f"planctl: error: {message} (see: planctl apply --help)\n"
    assert not (good.parent / "state.db").exists()


def test_entry_a_bad_value_from_the_environment_names_the_variable(good: Path) -> None:
    """A value click refuses from an environment variable names that variable too."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), "PLANCTL_OUTPUT": "xml"}
    done = subprocess.run([sys.executable, "-m", "planner", "apply", str(good)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3
    assert done.stderr.startswith(
        "planctl: error: -o/--output (from $PLANCTL_OUTPUT): 'xml' is not one of ")


def test_entry_counts_show_the_metavar_n(good: Path) -> None:
    """-j and --limit show N in their help, not click's type name."""
    for command, option in (("apply", "-j, --max-parallel N"), ("plan", "-j, --max-parallel N"),
                            ("runs", "-n, --limit N")):
        done = planctl(command, "--help")
        assert option in done.stdout and "int range" not in done.stdout, done.stdout


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "json"])
def test_entry_graph_formats(good: Path, fmt: str) -> None:
    """`planctl graph` draws parents as clusters around their looped children."""
    done = planctl("graph", str(good), "--format", fmt)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    if fmt == "mermaid":
        assert out.startswith("flowchart TD\n")
        assert 'subgraph c0["add_vm"]' in out
        assert '["clone[disk0]"]' in out and '["clone[disk1]"]' in out
        assert out.count(" --> ") == 5
    elif fmt == "dot":
        assert out.startswith("digraph plan {")
        assert "subgraph cluster_0 {" in out and 'label="add_vm";' in out
        assert '[label="clone[disk1]"]' in out
        assert out.count(" -> ") == 5
    else:
        document = json.loads(out)
        assert [c["id"] for c in document["commands"]] == [
            "add_vm", "clone[disk0]", "clone[disk1]", "start_vm",
        ]
        assert document["commands"][1]["parent"] == "add_vm"
        assert {s["key"]: s["kind"] for s in document["steps"]}["add_vm:end"] == "end"
        assert ["add_vm:end", "start_vm"] in document["edges"]
        assert len(document["edges"]) == 5


def test_graph_json_renders_names_and_entities_as_a_run_would(tmp_path: Path) -> None:
    """`graph -f json` gives each command's `name` and `entity` rendered from vars and loop
    variables, with the entity as written under `entity_template`; an entity that needs
    the run's id renders to null there."""
    path = tmp_path / "named.yaml"
    path.write_text(GOOD.replace(
        "  - id: add_vm\n", '  - id: add_vm\n    name: "Create {{ vm }}"\n'
        '    entity: "vm/{{ vm }}"\n').replace(
        "        as: disk\n", '        as: disk\n        entity: "image/{{ vm }}-{{ disk }}"\n'
    ).replace("    needs: add_vm\n", '    needs: add_vm\n    entity: "boot/{{ run_id }}"\n'),
        encoding="utf-8")
    done = planctl("graph", str(path), "-f", "json")
    assert done.returncode == 0, done.stderr
    commands = {c["id"]: c for c in json.loads(done.stdout)["commands"]}
    assert {k: commands["add_vm"][k] for k in ("name", "entity", "entity_template")} == {
        "name": "Create vm-42", "entity": "vm/vm-42", "entity_template": "vm/{{ vm }}"}
    assert commands["clone[disk1]"]["entity"] == "image/vm-42-disk1"
    assert commands["clone[disk1]"]["name"] is None
    assert (commands["start_vm"]["entity"], commands["start_vm"]["entity_template"]) == (
        None, "boot/{{ run_id }}")


def test_entry_schema_is_the_shipped_json_schema() -> None:
    """`planctl schema` prints a valid 2020-12 JSON Schema equal to the shipped file."""
    done = planctl("schema")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(printed)
    shipped = json.loads((ROOT / "planner" / "schemas" / "plan.schema.json").read_text("utf-8"))
    assert printed == shipped


def test_the_schema_for_editors_is_the_packaged_schema() -> None:
    """schemas/plan.schema.json (for editors) has the content of the packaged schema."""
    editors = ROOT / "schemas" / "plan.schema.json"
    packaged = ROOT / "planner" / "schemas" / "plan.schema.json"
    assert editors.read_bytes() == packaged.read_bytes()


# -- in process ----------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the version and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"planctl {__version__}\n"


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`planctl` alone shows the help listing the commands, and exits 0."""
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: planctl")
    assert all(name in out for name in ("validate", "graph", "schema"))


def test_the_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """`planctl --help` and `planctl apply --help` list the exit codes, 70 (internal error,
    traceback in a file) included."""
    for args in (["--help"], ["apply", "--help"]):
        assert main(args) == 0
        text = " ".join(capsys.readouterr().out.split())
        for code in ("0 succeeded", "1 failed", "2 failed", "3 invalid plan or usage",
                     "4 entity locked", "70 internal error", "130 interrupted"):
            assert code in text, (args, code)
        assert "traceback" in text


def test_validate_reports_every_plan(good: Path, bad: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """With several plans, each is checked; one broken plan makes the exit code 3."""
    assert main(["validate", str(bad), str(good)]) == 3
    out, err = capsys.readouterr()
    assert f"{good}: valid" in out
    assert f"{bad}:5:5: error:" in err


def test_strict_turns_warnings_into_failure(good: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`--strict` fails a plan that has warnings only."""
    assert main(["validate", "--strict", str(good)]) == 3
    assert "warning" in capsys.readouterr().err


def test_quiet_prints_problems_only(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--quiet` omits the summary line of valid plans."""
    assert main(["validate", "-q", str(good)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "warning" in err


def test_var_overrides_reach_the_plan(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--var disks=[a, b, c]` is read as YAML and expands the loop three times."""
    assert main(["graph", str(good), "-f", "json", "--var", "disks=[a, b, c]"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in document["commands"]][1:4] == ["clone[a]", "clone[b]", "clone[c]"]


def test_an_unknown_var_is_a_usage_error(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--var disk=x` for a plan declaring `disks` exits 3 suggesting the name."""
    assert main(["validate", str(good), "--var", "disk=x"]) == 3
    err = capsys.readouterr().err
    assert err == (f"{good}: error: --var disk: the plan declares no variable `disk`; "
                   "did you mean `disks`?\n")
    assert main(["graph", str(good), "--var", "disk=x"]) == 3  # one plan: not located
    assert capsys.readouterr().err.startswith("planctl: error: --var disk: ")


def test_an_unknown_var_from_a_file_names_the_file(
        good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A variable the plan does not declare, given in a --vars-file, is reported with that
    file, not as a --var; the same name given again with --var is reported as the --var."""
    values = tmp_path / "vars.json"
    values.write_text('{"disk": "x"}', encoding="utf-8")
    assert main(["validate", str(good), "--vars-file", str(values)]) == 3
    assert capsys.readouterr().err == (
        f"{good}: error: --vars-file {values}: disk: the plan declares no variable `disk`; "
        "did you mean `disks`?\n")
    assert main(["validate", str(good), "--vars-file", str(values), "--var", "disk=y"]) == 3
    assert capsys.readouterr().err.startswith(f"{good}: error: --var disk: ")


def test_a_var_given_as_text_for_a_list_is_refused_before_anything_runs(
        good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--var disks=d1,d2` for a var whose default is a list is exit 3, naming the --var and
    showing the YAML list to write; apply writes no state store. From a --vars-file the
    message names the file and gives no --var to write."""
    assert main(["validate", str(good), "--var", "disks=d1,d2"]) == 3
    assert capsys.readouterr().err == (
        f"{good}: error: --var disks: the plan's default is a list, so the value must be "
        "one; got the text 'd1,d2' (write it as YAML: --var 'disks=[d1, d2]')\n")
    state = tmp_path / "state.db"
    assert main(["apply", str(good), "-s", str(state), "--var", "disks={a: 1}"]) == 3
    assert "got a mapping (write it as YAML: --var 'disks=[a, b]')" in capsys.readouterr().err
    assert not state.exists()
    values = tmp_path / "vars.yaml"
    values.write_text("disks: 3\n", encoding="utf-8")
    assert main(["validate", str(good), "--vars-file", str(values)]) == 3
    assert capsys.readouterr().err == (
        f"{good}: error: --vars-file {values}: disks: the plan's default is a list, so the "
        "value must be one; got the value 3\n")
    assert main(["validate", str(good), "--var", "disks=[d1]"]) == 0


def test_entry_validate_reports_an_unknown_var_per_plan_and_checks_them_all(
        good: Path, bad: Path, tmp_path: Path) -> None:
    """With several plans, a --var one of them does not declare is reported at that plan
    (FILE: error: ...), the others are still checked and reported, and the exit is 3."""
    other = tmp_path / "other.yaml"
    other.write_text("name: other\ncommands:\n  - {id: a, run: {command: [true]}, "
                     "changes: false}\n", encoding="utf-8")
    done = planctl("validate", str(other), str(good), str(bad), "--var", "vm=vm-7")
    assert done.returncode == 3
    assert done.stdout == f"{good}: valid (4 commands, 5 steps, 1 warning)\n"
    lines = done.stderr.splitlines()
    assert lines[0] == (f"{other}: error: --var vm: the plan declares no variable `vm` "
                        "(declared: none)")
    assert any(line.startswith(f"{bad}:5:5: error: ") for line in lines), lines
    assert not any(line.startswith("planctl:") for line in lines), lines


def test_entry_the_validate_help_examples_work_from_the_repository() -> None:
    """The examples of `planctl validate --help`, run by a shell at the repository root,
    validate its plans."""
    text = planctl("validate", "--help").stdout
    examples = [line.strip() for line in text.splitlines()
                if line.strip().startswith("planctl validate ")]
    assert len(examples) == 2, text
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    for example in examples:
        command = example.replace("planctl", f"{shlex.quote(sys.executable)} -m planner", 1)
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{example}: {done.stdout}{done.stderr}"



def test_entry_help_examples_are_printed_whole() -> None:
    """Each example a command's docstring gives is one line of its --help, so that it runs
    as copied: click rewraps help text to 78 columns at most, which cut the graph example
    (`... | dot -Tsvg` then `> plan.svg` on a line of its own)."""
    import typer.core
    import typer.main

    group = typer.main.get_command(cli.app)
    assert isinstance(group, typer.core.TyperGroup)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    for name, command in group.commands.items():
        examples = [line.strip() for line in (command.help or "").splitlines()
                    if line.strip().startswith("planctl ")]
        assert examples, name
        done = subprocess.run([sys.executable, "-m", "planner", name, "--help"], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        shown = [line.strip() for line in done.stdout.splitlines()]
        assert [e for e in examples if e not in shown] == [], (name, done.stdout)


def test_entry_a_long_option_with_one_dash_is_a_usage_error(tmp_path: Path) -> None:
    """Terraform's `-state=x.db` is not read as `-s tate=x.db`, which ran the plan with a
    state file named `tate=x.db`: it exits 3 naming the option, nothing run or written;
    with -o json as an error object. A value that starts with a dash is still a value."""
    plan = tmp_path / "touch.yaml"
    plan.write_text("name: touch\nvars: {who: x}\ncommands:\n  - id: t\n    changes: false\n"
                    "    run: {command: [touch, made]}\n", encoding="utf-8")
    done = planctl("apply", str(plan), "-state=x.db", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == ("planctl: error: -state=x.db: long options take two dashes: "
                           "--state=x.db\n")
    done = planctl("apply", str(plan), "-o", "json", "-junit", "r.xml", cwd=tmp_path)
    assert done.returncode == 3
    error = json.loads(done.stdout)
    assert (error["error"], error["message"]) == ("usage", "-junit: long options take two "
                                                 "dashes: --junit")
    assert done.stderr == ("planctl: error: -junit: long options take two dashes: --junit "
                           "(see: planctl apply --help)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["touch.yaml"]
    done = planctl("-version", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (3, "planctl: error: -version: long options "
                                              "take two dashes: --version (see: planctl "
                                              "--help)\n")
    done = planctl("apply", str(plan), "--var", "who=-state", "-s", "s.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "made").exists()


def test_entry_a_state_directory_names_the_file_meant(tmp_path: Path) -> None:
    """`--state .planctl` (the directory, not .planctl/state.db in it) exits 3 naming the
    file to give, for a command reading the store and for `plan`; a directory without
    one says what --state takes. Nothing runs."""
    plan = tmp_path / "touch.yaml"
    plan.write_text("name: touch\ncommands:\n  - id: t\n    changes: false\n"
                    "    run: {command: [touch, made]}\n", encoding="utf-8")
    assert planctl("apply", str(plan), cwd=tmp_path).returncode == 0
    (tmp_path / "made").unlink()
    meant = "planctl: error: .planctl: a directory; --state names the SQLite file: " \
            "--state .planctl/state.db\n"
    for args in (["runs"], ["rollback", "--last"], ["plan", str(plan)]):
        done = planctl(*args, "--state", ".planctl", cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (3, "", meant), args
    (tmp_path / "elsewhere").mkdir()
    done = planctl("apply", str(plan), "-s", "elsewhere", "-o", "json", cwd=tmp_path)
    assert done.returncode == 3
    assert json.loads(done.stdout)["message"] == (
        "elsewhere: a directory; --state names the SQLite file, e.g. .planctl/state.db")
    assert not (tmp_path / "made").exists() and not any((tmp_path / "elsewhere").iterdir())


def test_entry_a_missing_state_store_says_it_came_from_planctl_state(tmp_path: Path) -> None:
    """A state path taken from PLANCTL_STATE (exported long ago, maybe) is named as such
    when there is no store there; one given with --state is not."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), "PLANCTL_STATE": "old.db"}
    for args, source in ((["runs"], " (from $PLANCTL_STATE)"), (["runs", "-s", "new.db"], ""),
                         (["rollback", "--last"], " (from $PLANCTL_STATE)")):
        done = subprocess.run([sys.executable, "-m", "planner", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        path = "new.db" if "-s" in args else "old.db"
        assert (done.returncode, done.stderr) == (3, (
            f"planctl: error: no state store at {path}{source}: nothing has run here yet "
            "(see --state)\n")), args
    assert list(tmp_path.iterdir()) == []


def _mountinfo(tmp_path: Path, *mounts: tuple[str, str]) -> str:
    """A /proc/self/mountinfo text: (mount point as written, type) per line, in order."""
    lines = [f"{i} 1 0:{i} / {point} rw,relatime shared:{i} - {kind} src{i} rw"
             for i, (point, kind) in enumerate(mounts, 20)]
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_the_file_system_of_a_store_is_read_from_mountinfo(tmp_path: Path) -> None:
    """The deepest mount holding the store's directory decides; of two mounted at one place,
    the later (on top); mountinfo's \\040 is a space; unreadable: unknown (None)."""
    from planner.sqlite_store import network_filesystem

    info = _mountinfo(tmp_path, ("/", "ext4"), ("/mnt/share", "nfs4"),
                      ("/mnt/share/local", "ext4"), ("/mnt/my\\040disk", "cifs"),
                      ("/srv", "ext4"), ("/srv", "fuse.sshfs"), ("/srvx", "ext4"))
    assert network_filesystem("/mnt/share/state.db", info) == "nfs4"
    assert network_filesystem("/mnt/share/a/b/state.db", info) == "nfs4"
    assert network_filesystem("/mnt/share/local/state.db", info) is None
    assert network_filesystem("/mnt/sharex/state.db", info) is None
    assert network_filesystem("/mnt/my disk/state.db", info) == "cifs"
    assert network_filesystem("/srv/state.db", info) == "fuse.sshfs"
    assert network_filesystem("/srvx/state.db", info) is None
    assert network_filesystem("/mnt/share/state.db", str(tmp_path / "absent")) is None
    assert network_filesystem(tmp_path / "state.db") is None  # this machine's own /proc


def test_entry_a_store_on_a_network_file_system_is_warned_about(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite's locks and WAL mode do not hold on NFS: a command opening a store there warns
    on stderr, once, and goes on."""
    from planner import sqlite_store

    plan = tmp_path / "plan.yaml"
    plan.write_text("name: nfs\ncommands:\n  - id: touch\n    run: {shell: 'touch done'}\n"
                    "    inverse: {shell: 'rm done'}\n")
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "share" / "state.db"
    real = os.path.realpath(tmp_path)
    monkeypatch.setattr(sqlite_store, "MOUNTINFO", _mountinfo(
        tmp_path, ("/", "overlay"), (f"{real}/share", "nfs4")))
    assert main(["runs", "--state", str(tmp_path / "state.db")]) == 3  # local: no warning
    assert "warning" not in capsys.readouterr().err
    assert main(["apply", str(plan), "--state", str(state)]) == 0
    assert (tmp_path / "done").exists()
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and (
        f"planctl: warning: {state} is on a network file system (nfs4), where SQLite's locks "
        "and WAL mode are not reliable") in err, err


def test_entry_a_state_store_of_a_newer_planctl_says_what_to_do(tmp_path: Path) -> None:
    """A store a newer planctl wrote is refused, exit 3, saying which schema this planctl
    reads and what to use instead; its schema is left as it was."""
    import sqlite3

    from planner.sqlite_store import SCHEMA_VERSION

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    done = planctl("runs", "--state", str(path), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (3, (
        f"planctl: error: {path}: written by a newer planctl (schema {SCHEMA_VERSION + 1}; "
        f"this one reads schema {SCHEMA_VERSION} and older): use that planctl or a newer "
        "one, or another --state\n"))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_entry_a_vars_file_that_is_no_mapping_says_what_it_holds(tmp_path: Path) -> None:
    """An empty --vars-file is not called "the plan file" (nor told to start with `name:`);
    one written as Terraform's .tfvars or a .env file says what it was read as. Exit 3."""
    plan = tmp_path / "touch.yaml"
    plan.write_text("name: touch\nvars: {who: x}\ncommands:\n  - id: t\n    changes: false\n"
                    "    run: {command: [touch, made]}\n", encoding="utf-8")
    expected = "(YAML `name: value` lines or a JSON object)"
    for name, text, got in (("empty.yml", "", "nothing"),
                            ("comments.yml", "# who: y\n\n", "nothing"),
                            ("vars.tfvars", 'who = "y"\n', "the str 'who = \"y\"'")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        done = planctl("apply", str(plan), "--vars-file", name, cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (3, "", (
            f"planctl: error: --vars-file {name}: expected a mapping of names to values "
            f"{expected}, got {got}\n")), name
    assert not (tmp_path / "made").exists() and not (tmp_path / ".planctl").exists()


def test_entry_a_plan_given_where_a_run_goes_says_so(tmp_path: Path) -> None:
    """`planctl rollback plan.yaml`, as `terraform destroy` is typed, exits 3 saying a
    run id (or --last) is wanted, and undoes nothing."""
    plan = tmp_path / "touch.yaml"
    plan.write_text("name: touch\ncommands:\n  - id: t\n    run: {command: [touch, made]}\n"
                    "    inverse: {command: [rm, made]}\n", encoding="utf-8")
    assert planctl("apply", "touch.yaml", cwd=tmp_path).returncode == 0
    for verb in ("rollback", "resume", "show", "events"):
        done = planctl(verb, "touch.yaml", cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (3, "", (
            "planctl: error: unknown run 'touch.yaml'; touch.yaml is a plan, not a run: give "
            "a run id (`planctl runs` lists them) or --last\n")), verb
    assert (tmp_path / "made").exists()


def test_entry_a_var_list_that_is_not_yaml_is_a_usage_error(good: Path) -> None:
    """`--var 'disks=[a[1]]'` (meant as a list, not YAML) exits 3 with one line saying why,
    before the plan is looked at; `--var 'disks=a[1]'` is text, as before."""
    done = planctl("apply", str(good), "--var", "disks=[a[1]]",
                   "--state", str(good.parent / "state.db"))
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == ("planctl: error: --var disks: not valid YAML: while parsing a flow "
                           "sequence did not find expected ',' or ']' (to pass it as text, "
                           """quote it: --var 'disks="..."')\n""")
    assert not (good.parent / "state.db").exists()
    done = planctl("graph", str(good), "-f", "json", "--var", "disks=a[1]")
    assert done.returncode == 3 and done.stderr == (  # text, where the plan has a list
        "planctl: error: --var disks: the plan's default is a list, so the value must be one;"
        " got the text 'a[1]' (write it as YAML: --var 'disks=[a, b]')\n")


def test_vars_files_are_read(good: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """`--vars-file` supplies variables from YAML; a non-mapping file is a usage error."""
    values = tmp_path / "vars.yaml"
    values.write_text("disks: [z]\n", encoding="utf-8")
    assert main(["graph", str(good), "-f", "json", "--vars-file", str(values)]) == 0
    assert "clone[z]" in capsys.readouterr().out
    values.write_text("[1, 2]\n", encoding="utf-8")
    assert main(["graph", str(good), "--vars-file", str(values)]) == 3
    assert "expected a mapping" in capsys.readouterr().err


def test_a_json_vars_file_keeps_json_numbers(tmp_path: Path) -> None:
    """A --vars-file that is a JSON object is read as JSON: 1e-05 (what json.dump writes for
    0.00001) is a number, where YAML 1.1 reads it as text. A YAML file is read as before."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: nums\nvars: {ratio: 0.5, big: 1}\ncommands:\n  - id: show\n"
                    "    run: {shell: 'echo {{ ratio * 2 }} {{ big is number }} > out'}\n")
    (tmp_path / "vars.json").write_text('{"ratio": 1e-05, "big": 1E+20}')
    (tmp_path / "vars.yaml").write_text("ratio: 1e-05\nbig: 1.0e+20\n")
    done = planctl("apply", str(plan), "--vars-file", "vars.json", "-s", "s.db", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out").read_text() == "2e-05 true\n"
    done = planctl("apply", str(plan), "--vars-file", "vars.yaml", "-s", "s.db", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out").read_text() == "1e-051e-05 true\n"  # YAML 1.1: text, as before


@pytest.mark.parametrize("text", ['{"ratio": 1, "ratio": 2}', '{"ratio": NaN}'])
def test_a_vars_file_that_is_not_strict_json_is_read_as_yaml(tmp_path: Path, text: str
                                                             ) -> None:
    """Duplicate keys and NaN are not taken from JSON: the YAML reader says what it says
    of them (a located duplicate key; NaN as text)."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: nums\nvars: {ratio: 0}\ncommands:\n  - id: show\n"
                    "    run: {shell: 'echo {{ ratio }} > out'}\n")
    (tmp_path / "vars.json").write_text(text)
    done = planctl("apply", str(plan), "--vars-file", "vars.json", "-s", "s.db", cwd=tmp_path)
    if "NaN" in text:
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "out").read_text() == "NaN\n"
    else:
        assert done.returncode == 3
        assert done.stderr == ("vars.json:1:14: error: ratio: duplicate key 'ratio' "
                               "(each key may appear once)\n")


def test_graph_of_a_broken_plan_exits_3(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`planctl graph` of an invalid plan prints the located errors, as validate does."""
    assert main(["graph", str(bad)]) == 3
    err = capsys.readouterr().err
    assert f"{bad}:5:5: error:" in err
    assert all(_LOCATED.match(line) for line in err.splitlines()), err  # no count line


@pytest.mark.parametrize("errors", [1, 2])
def test_entry_a_plan_error_is_printed_alike_by_every_command(tmp_path: Path,
                                                             errors: int) -> None:
    """validate, plan, apply and graph print an invalid plan's errors the same way: one
    line each, nothing more, exit 3, nothing run."""
    plan = tmp_path / "broken.yaml"
    names = " ".join(f"{{{{ v{n} }}}}" for n in range(errors))
    plan.write_text(f'name: x\ncommands:\n  - {{id: a, changes: false, '
                    f'run: {{shell: "touch made {names}"}}}}\n', encoding="utf-8")
    seen = set()
    for command in ("validate", "plan", "apply", "graph"):
        done = planctl(command, str(plan), "--state", str(tmp_path / "state.db")) \
            if command in ("plan", "apply") else planctl(command, str(plan))
        assert (done.returncode, done.stdout) == (3, ""), (command, done.stdout)
        lines = done.stderr.splitlines()
        assert len(lines) == errors and all(_LOCATED.match(line) for line in lines), lines
        seen.add(done.stderr)
    assert len(seen) == 1
    assert not (tmp_path / "state.db").exists() and not (tmp_path / "made").exists()


def test_a_missing_plan_file_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan path that does not exist is reported, not raised."""
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 3
    assert "cannot read plan" in capsys.readouterr().err


def test_a_plan_directory_or_misspelt_file_names_the_plan_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory given as the plan, or a plan path one letter off, says which file was
    meant; a directory without any YAML file says that a plan is one."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "vm"
    folder.mkdir()
    (folder / "plan.yaml").write_text("name: x\ncommands: []\n", encoding="utf-8")
    plan = folder / "plan.yaml"
    assert main(["apply", str(folder)]) == 3
    assert capsys.readouterr().err.splitlines() == [
        f"{folder}: error: cannot read plan: Is a directory (did you mean `{plan}`?)"]
    assert main(["validate", str(folder / "plan.yml")]) == 3
    assert capsys.readouterr().err.splitlines() == [
        f"{folder}/plan.yml: error: cannot read plan: No such file or directory "
        f"(did you mean `{plan}`?)"]
    assert main(["validate", str(tmp_path)]) == 3
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path}: error: cannot read plan: Is a directory "
        "(a plan is a YAML file, and there is none in this directory)"]
    assert main(["validate", str(folder / "other.yaml")]) == 3
    assert capsys.readouterr().err.splitlines() == [
        f"{folder}/other.yaml: error: cannot read plan: No such file or directory"]
    assert not (tmp_path / ".planctl").exists()


def test_an_internal_error_is_logged_not_shown(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A bug exits 70 with one line pointing at a crash log holding the traceback."""
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr("planner.loader.load_plan", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(cli.tempfile, "tempdir", str(tmp_path))
    assert main(["validate", str(good)]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "planctl: internal error: RuntimeError: kaput" in err
    (log,) = tmp_path.glob("planctl-crash-*.log")
    assert "Traceback" in log.read_text(encoding="utf-8")


HELLO = Path(__file__).resolve().parents[1] / "plans" / "hello-world.yaml"


def test_an_internal_error_after_the_run_began_names_the_run_in_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    """With --output json, the `error` object of a bug that struck once the run existed
    carries that run's id (null is for an error before any run)."""
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr("planner.reporters.Reporting.finish", boom)
    monkeypatch.setattr(cli.tempfile, "tempdir", str(tmp_path))
    assert main(["apply", str(HELLO), "--var", f"file={tmp_path / 'h.txt'}",
                 "--state", str(tmp_path / "state.db"), "--output", "json"]) == 70
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    error = objects[-1]
    assert (error["kind"], error["error"], error["exit_code"]) == ("error", "internal", 70)
    assert error["run_id"] is not None and error["run_id"] == objects[0]["run_id"]


@pytest.mark.parametrize("form", ["{path}", "sqlite:///{rel}", "sqlite:///{path}",
                                  "file://{path}"])
def test_state_may_be_a_path_or_a_url(form: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--state takes a path, sqlite:///RELATIVE, sqlite:////ABSOLUTE or file:///ABSOLUTE;
    each names the same SQLite file, which `runs` then reads back."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "dir" / "state.db"
    state = form.format(path=db, rel="dir/state.db")
    assert main(["apply", str(HELLO), "--var", f"file={tmp_path / 'h.txt'}",
                 "--state", state]) == 0
    assert db.exists()
    capsys.readouterr()
    assert main(["runs", "--state", state]) == 0
    assert "hello-world" in capsys.readouterr().out


@pytest.mark.parametrize(("state", "message"), [
    ("postgres://db/planctl", "planctl keeps its state in SQLite"),
    ("sqlite://state.db", "expected sqlite:///RELATIVE/PATH"),
])
def test_a_state_url_of_another_kind_is_a_usage_error(
        state: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A URL planctl cannot store state in is exit 3 before anything runs or is written."""
    monkeypatch.chdir(tmp_path)
    assert main(["apply", str(HELLO), "--var", f"file={tmp_path / 'h.txt'}",
                 "--state", state]) == 3
    assert f"planctl: error: --state {state}: {message}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_runs_with_a_limit_past_64_bits_lists_every_run(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """`planctl runs -n N` with an N SQLite cannot take (past 2**63 - 1) lists every run,
    exit 0, rather than an internal error (exit 70)."""
    state = tmp_path / "state.db"
    assert main(["apply", str(HELLO), "--var", f"file={tmp_path / 'h.txt'}",
                 "--state", str(state)]) == 0
    capsys.readouterr()
    assert main(["runs", "-n", "9" * 20, "--state", str(state)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(out.splitlines()) == 2 and "hello-world" in out, out


def test_an_ambiguous_run_prefix_lists_the_runs_it_matches(tmp_path: Path) -> None:
    """A RUN prefix matching several runs exits 3 saying it is ambiguous and listing up to
    three of them, newest first; a prefix matching none is an unknown run."""
    from planner.sqlite_store import SQLiteStore
    from planner.store import RunRecord

    db = tmp_path / "state.db"
    store = SQLiteStore(db)
    ids = ["20261130-100000-aaaaa0", "20261130-100001-aaaaa1", "20261130-100002-aaaaa2",
           "20261130-110000-bbbbbb"]
    for n, run_id in enumerate(ids):
        store.create_run(RunRecord(run_id, "p", "p.yaml", "SUCCEEDED", 1_796_000_000.0 + n,
                                   {}, {}), [])
    store.close()
    done = planctl("show", "20261130-1000", "--state", str(db))
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == ("planctl: error: run id prefix '20261130-1000' is ambiguous: it "
                           f"matches 3 runs ({ids[2]}, {ids[1]}, {ids[0]})\n")
    done = planctl("rollback", "2026", "--state", str(db), "-o", "json")
    assert done.returncode == 3
    assert json.loads(done.stdout)["message"] == (
        "run id prefix '2026' is ambiguous: it matches 4 runs "
        f"({ids[3]}, {ids[2]}, {ids[1]}, ...)")
    done = planctl("show", "x", "--state", str(db))
    assert (done.returncode, done.stderr) == (3, "planctl: error: unknown run 'x'\n")
    assert planctl("show", "20261130-11", "--state", str(db)).returncode == 0


def test_a_run_prefix_finds_a_run_older_than_the_newest_thousand(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A RUN prefix is matched against every recorded run, not only the 1,000 most recent
    (they once were: the oldest run of 1,001 was an unknown run)."""
    from planner.sqlite_store import SQLiteStore
    from planner.store import RunRecord

    db = tmp_path / "state.db"
    store = SQLiteStore(db)
    for n in range(1001):
        store.create_run(RunRecord(f"20261130-{n:06d}-abcdef", "p", "p.yaml", "SUCCEEDED",
                                   1_796_000_000.0 + n, {}, {}), [])
    store.close()
    assert main(["show", "20261130-000000", "--state", str(db)]) == 0
    assert "run      20261130-000000-abcdef\n" in capsys.readouterr().out


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_ctrl_c_before_a_run_says_interrupted(tmp_path: Path) -> None:
    """Ctrl-C while a big plan is read (here by `validate`) ends planctl with exit 130 and
    'planctl: interrupted', not a traceback. Before, typer turned the KeyboardInterrupt
    into an exit 130 that said nothing."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    try:
        from workloads import big_plan
    finally:
        sys.path.pop(0)
    plan = tmp_path / "big.yaml"
    plan.write_text(big_plan(100_000))  # several seconds of CPU to read and check
    proc = subprocess.Popen([sys.executable, "-m", "planner", "validate", str(plan)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Past the interpreter's start (a fraction of a CPU second): reading the plan.
    code, out, err = signal_when(proc, "planctl to be reading the plan",
                                 lambda: _cpu_seconds(proc.pid) > 1.0, signal.SIGINT)
    assert code == 130, out + err
    assert err == "planctl: interrupted\n", err
    assert out == ""


def test_a_junit_report_that_cannot_be_written_is_refused_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--junit naming a directory, or a path under a file, is exit 3 before anything runs
    or is written (before, the plan ran and the report was a warning at the end); folders
    that do not exist yet are made when the report is written, as pytest does."""
    monkeypatch.chdir(tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: j\ncommands:\n  - {id: a, run: {command: [touch, made]}, "
                    "inverse: {command: [rm, made]}}\n", encoding="utf-8")
    (tmp_path / "afile").write_text("", encoding="utf-8")
    for junit, message in (("afile/r.xml", f"{tmp_path / 'afile'} is not a directory"),
                           (".", "is a directory; name the report's file")):
        for args in (["apply", str(plan)], ["resume", "--last"], ["rollback", "--last"]):
            assert main([*args, "-s", "s.db", "--junit", junit]) == 3
            assert capsys.readouterr().err == f"planctl: error: --junit {junit}: {message}\n"
    assert not (tmp_path / "made").exists() and not (tmp_path / "s.db").exists()
    assert main(["apply", str(plan), "-s", "s.db", "--junit", "reports/ci/r.xml"]) == 0
    assert (tmp_path / "reports/ci/r.xml").read_text(encoding="utf-8").startswith("<?xml")


def test_a_lock_timeout_is_seconds_or_a_duration_and_nothing_else(
        good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--lock-timeout takes seconds or a duration as plans write them (5m, as
    settings.lock_timeout does); nan (which passed a minimum of 0 and was refused as the
    API's ApplyOptions), a negative number, inf or a word are exit 3 naming the option,
    and nothing is written."""
    from planner.cli import _seconds

    assert [_seconds(t) for t in ("30", "2.5", ".5", "5m", "1m30s", "0")] == \
        [30.0, 2.5, 0.5, 300.0, 90.0, 0.0]
    state = tmp_path / "s.db"
    for text in ("nan", "-1", "inf", "soon", ""):
        assert main(["apply", str(good), "-s", str(state), "--lock-timeout", text]) == 3
        assert capsys.readouterr().err == (
            f"planctl: error: --lock-timeout: {text!r} is not a number of seconds or a "
            "duration (30, 2.5, 5m, 1m30s) (see: planctl apply --help)\n")
    assert not state.exists()


def test_a_command_pauses_full_collections_and_gives_the_thresholds_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What `rollback --dry-run` (and every command) builds lives to its end: no automatic
    full collection scans it while the command runs; the thresholds are as they were
    after it, also when it fails."""
    import gc

    from planner import report

    plan = tmp_path / "plan.yaml"
    plan.write_text("name: two\ncommands:\n"
                    "  - id: a\n    run: {command: ['true']}\n    inverse: {command: ['true']}\n"
                    "  - id: b\n    needs: a\n    run: {command: ['true']}\n"
                    "    inverse: {command: ['true']}\n")
    state = str(tmp_path / "state.db")
    assert main(["apply", str(plan), "-s", state]) == 0
    capsys.readouterr()
    seen: list[tuple[int, ...]] = []
    table = report.format_rollback_plan

    def heard(runner: object) -> str:
        seen.append(gc.get_threshold())
        return table(runner)

    monkeypatch.setattr(report, "format_rollback_plan", heard)
    before = gc.get_threshold()
    gc.set_threshold(50, 7, 9)
    try:
        assert main(["rollback", "--last", "--dry-run", "-s", state]) == 0
        assert seen == [(50, 7, 1 << 30)]
        assert gc.get_threshold() == (50, 7, 9)
        assert main(["rollback", "no-such-run", "-s", state]) == 3
        assert gc.get_threshold() == (50, 7, 9)
    finally:
        gc.set_threshold(*before)
    out = capsys.readouterr().out
    assert out.count("would run inverse") == 2
