"""Tests of planner.loader: model building and the static checks, all located."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from planner import actions
from planner.errors import Diagnostic, PlanError, Severity, UsageError
from planner.loader import LoadedPlan, load_plan, load_text, parse_var
from planner.model import AsyncSpec, Operation

VALID = """\
name: add-vm-from-template
description: Create a VM from a template.
vars:
  vm: vm-42
  disks: [disk0, disk1]
secrets:
  token: {env: API_TOKEN}
settings: {max_parallel: 4, on_failure: stop, lock_timeout: 30s}
defaults: {timeout: 5m, retries: 2, env: {LANG: C, DEBUG: true}}
commands:
  - id: add_vm
    name: "Create VM {{ vm }}"
    entity: "vm/{{ vm }}"
    exists: {command: [./store, vm-exists, "{{ vm }}"]}
    run: {command: [./store, create-vm, "{{ vm }}"], env: {N: 1}}
    inverse: {command: [./store, remove-vm, "{{ vm }}", "{{ outputs.uuid }}"]}
    outputs: {uuid: "{{ result.stdout | trim }}"}
    children:
      - id: clone
        for_each: "{{ disks }}"
        as: disk
        run:
          command: [./store, copy-image, "{{ disk }}", "{{ commands.add_vm.outputs.uuid }}"]
          async:
            handle: "{{ result.stdout | trim }}"
            poll: {command: [./store, task-status, "{{ handle }}"]}
            until: "{{ poll.stdout | trim == 'finished' }}"
            failed_when: "{{ poll.stdout | trim == 'failed' }}"
            interval: 500ms
            timeout: 10m
            cancel: {command: [./store, abort-task, "{{ handle }}"]}
        inverse: {command: [./store, remove-image, "{{ vm }}-{{ disk }}"]}
  - id: start_vm
    needs: [add_vm]
    run:
      http:
        method: POST
        url: "https://api/vms/{{ commands.add_vm.outputs.uuid }}/start"
        headers: {Authorization: "Bearer {{ token }}"}
    irreversible: true
"""


def load(text: str, **kw: Any) -> LoadedPlan:
    return load_text(textwrap.dedent(text), "plan.yaml", **kw)


def errors(text: str, **kw: Any) -> list[Diagnostic]:
    with pytest.raises(PlanError) as caught:
        load(text, **kw)
    return [d for d in caught.value.diagnostics if d.severity is Severity.ERROR]


def one_error(text: str, **kw: Any) -> Diagnostic:
    found = errors(text, **kw)
    assert len(found) == 1, [str(d) for d in found]
    return found[0]


def command(body: str, *, vars: str = "", extra: str = "") -> str:
    """A plan of one command ``a`` (indented body) and optional more commands."""
    head = f"name: p\n{vars}commands:\n  - id: a\n"
    return head + textwrap.indent(textwrap.dedent(body), "    ") + textwrap.dedent(extra)


# -- valid plans ---------------------------------------------------------------------------


def test_a_valid_plan_loads_into_the_model() -> None:
    """The example plan loads with its name, vars, secrets, settings and command tree."""
    loaded = load(VALID)
    plan = loaded.plan
    assert plan.name == "add-vm-from-template"
    assert plan.vars == {"vm": "vm-42", "disks": ["disk0", "disk1"]}
    assert plan.secrets["token"].env == "API_TOKEN"
    assert (plan.settings.max_parallel, plan.settings.on_failure) == (4, "stop")
    assert plan.settings.lock_timeout == 30.0
    assert [c.id for c in plan.walk()] == ["add_vm", "clone", "start_vm"]
    _, clone, start_vm = plan.walk()
    assert clone.parent == "add_vm" and clone.loop_var == "disk"
    assert start_vm.needs == ("add_vm",)
    assert loaded.warnings == ()


def test_operations_merge_defaults_and_parse_durations() -> None:
    """Defaults fill in operations; durations become seconds; env values become strings."""
    run = load(VALID).plan.commands[0].run
    assert isinstance(run, Operation)
    assert (run.action, run.timeout, run.retries) == ("command", 300.0, 2)
    assert run.env == {"LANG": "C", "DEBUG": "true", "N": "1"}


def test_defaults_reach_every_operation_not_only_run() -> None:
    """`defaults` is merged into `inverse`, `exists`, `poll` and `cancel` as into `run`."""
    add_vm = load(VALID).plan.commands[0]
    spec = add_vm.children[0].run.async_ if add_vm.children[0].run else None
    assert spec is not None and spec.cancel is not None
    for op in (add_vm.inverse, add_vm.exists, spec.poll, spec.cancel):
        assert op is not None
        assert (op.timeout, op.retries, op.env) == (300.0, 2, {"LANG": "C", "DEBUG": "true"})


def test_async_specs_are_built() -> None:
    """run.async becomes an AsyncSpec with its poll and cancel operations."""
    clone = load(VALID).plan.commands[0].children[0]
    assert clone.run is not None
    spec = clone.run.async_
    assert isinstance(spec, AsyncSpec)
    assert (spec.interval, spec.timeout) == (0.5, 600.0)
    assert spec.poll.action == "command" and spec.cancel is not None


def test_http_gets_no_subprocess_options() -> None:
    """Defaults' env and cwd apply to subprocess actions only."""
    start = load(VALID).plan.commands[1]
    assert start.run is not None
    assert (start.run.action, start.run.env, start.run.cwd) == ("http", {}, None)


def test_load_plan_reads_a_file_and_anchors_relative_paths(tmp_path: Path) -> None:
    """load_plan names the file in the plan and uses its directory as base_dir."""
    path = tmp_path / "plan.yaml"
    path.write_text(VALID, encoding="utf-8")
    plan = load_plan(path).plan
    assert plan.file == str(path)
    assert plan.base_dir == str(path.parent)


def test_a_missing_file_is_a_plan_error(tmp_path: Path) -> None:
    """A plan that cannot be read is a PlanError naming the file, not an OSError."""
    with pytest.raises(PlanError) as caught:
        load_plan(tmp_path / "nope.yaml")
    assert "cannot read plan" in str(caught.value)


# -- warnings ------------------------------------------------------------------------------


def test_a_command_without_inverse_is_warned_about_at_its_run() -> None:
    """A command that changes something but has no inverse warns, at the `run:` key."""
    loaded = load(command("run: {command: [mkdir, /tmp/x]}\n"))
    (warning,) = loaded.warnings
    assert warning.severity is Severity.WARNING
    assert "has no `inverse`" in warning.message
    assert (warning.line, warning.column) == (4, 5)


@pytest.mark.parametrize("flag", ["irreversible: true", "changes: false"])
def test_irreversible_or_read_only_commands_are_not_warned_about(flag: str) -> None:
    """`irreversible: true` or `changes: false` silences the missing-inverse warning."""
    assert load(command(f"run: {{command: [ls]}}\n{flag}\n")).warnings == ()


def test_exists_without_run_warns() -> None:
    """An `exists` probe with no `run` is never asked."""
    (warning,) = load(command("exists: {command: [test, -d, x]}\n")).warnings
    assert "never asked" in warning.message


ASYNC_UNTIL = """\
    run:
      command: [start]
      async:
        handle: "{{ result.stdout }}"
        poll: {command: [status, "{{ handle }}"]}
        until: UNTIL
    changes: false
    """


def test_an_until_that_does_not_read_poll_warns() -> None:
    """`until: "{{ result.json.state == 'done' }}"` tests what *started* the task, the same
    at every poll: the task ends at its first poll or runs into its timeout (1h). It
    passed without a word; it now warns at `until`."""
    plan = command(ASYNC_UNTIL.replace("UNTIL", "\"{{ result.stdout == 'done' }}\""))
    (warning,) = load(plan).warnings
    assert warning.message == "`until` does not read `poll`, so every poll gives it the " \
        "same answer: the task ends at its first poll or never"
    assert (warning.line, warning.column) == (9, 16)
    for fine in ("\"{{ poll.stdout == 'done' }}\"", "true", "\"{{ 'done' in poll.stdout }}\""):
        assert load(command(ASYNC_UNTIL.replace("UNTIL", fine))).warnings == ()


def test_a_var_holding_a_template_warns_that_it_is_used_as_written() -> None:
    """Ansible renders vars that refer to vars; planctl does not: `url: "https://{{ host
    }}/v1"` reaches the program with its braces. It passed without a word; it now warns at
    the var, unless --var gives the var another value."""
    plan = command("run: {command: [curl, '{{ url }}']}\nchanges: false\n",
                   vars='vars:\n  host: api.example\n  url: "https://{{ host }}/v1"\n'
                   '  hosts: [a, "{{ host }}"]\n')
    first, second = load(plan).warnings
    assert first.message == "`url` holds a template, but vars are values, not templates: " \
        "it is used as written, braces included"
    assert (first.line, first.column) == (4, 8)
    assert second.path == ("vars", "hosts")
    (only,) = load(plan, variables={"url": "https://api.example/v1"}).warnings
    assert only.path == ("vars", "hosts")


def test_an_output_from_poll_of_a_command_with_exists_warns() -> None:
    """A command found present by `exists` takes its outputs from the probe's `result`: an
    output that reads `poll` (or `handle`) is then lost, and whatever reads it downstream
    fails on the second apply ('dict object' has no attribute 'url'). It passed without a
    word; it now warns at the output, unless the template handles both."""
    body = textwrap.dedent(ASYNC_UNTIL.replace("UNTIL", "\"{{ poll.stdout == 'done' }}\"")) \
        + "exists: {command: [test, -e, x]}\noutputs: {url: OUT}\n"
    (warning,) = load(command(body.replace("OUT", "\"{{ poll.stdout }}\""))).warnings
    assert warning.path == ("commands", 0, "outputs", "url")
    assert warning.message == "output `url` reads `poll`, which a command found present by " \
        "`exists` (UNCHANGED) does not have: its outputs are then rendered from the probe's " \
        "`result`"
    both = "\"{{ poll.stdout if poll is defined else result.stdout }}\""
    assert load(command(body.replace("OUT", both))).warnings == ()
    no_probe = body.replace("exists: {command: [test, -e, x]}\n", "")
    assert load(command(no_probe.replace("OUT", "\"{{ poll.stdout }}\""))).warnings == ()


def test_warnings_do_not_fail_a_plan_with_errors_alone() -> None:
    """A plan with an error raises; its warnings are reported along with the error."""
    with pytest.raises(PlanError) as caught:
        load(command("run: {command: [mk, '{{ nope }}']}\n"))
    kinds = {d.severity for d in caught.value.diagnostics}
    assert kinds == {Severity.ERROR, Severity.WARNING}


# -- needs ---------------------------------------------------------------------------------

TWO = """\
name: p
commands:
  - id: dump
    run: {command: [dump]}
    irreversible: true
    children:
      - id: part
        run: {command: [part]}
        irreversible: true
  - id: gzip
    run: {command: [gzip]}
    irreversible: true
"""


def test_an_unknown_need_suggests_a_near_id() -> None:
    """`needs: [dumb]` is unknown, located at the item, with "did you mean `dump`?"."""
    found = one_error(TWO.replace("  - id: gzip\n", "  - id: gzip\n    needs: [dumb]\n"))
    assert found.message == "unknown command `dumb`"
    assert found.hint == "did you mean `dump`?"
    assert (found.line, found.column) == (11, 13)


def test_a_command_cannot_need_itself() -> None:
    """A self-need is one error (not also a cycle)."""
    found = one_error(TWO.replace("  - id: gzip\n", "  - id: gzip\n    needs: gzip\n"))
    assert found.message == "`gzip` cannot need itself"


def test_a_command_cannot_need_its_ancestor() -> None:
    """A child needing its parent is an error with a hint why it is not needed."""
    child = "      - id: part\n"
    found = one_error(TWO.replace(child, child + "        needs: [dump]\n"))
    assert found.message == "`dump` is an ancestor of `part`"
    assert found.path == ("commands", 0, "children", 0, "needs", 0)


def test_a_command_cannot_need_its_descendant() -> None:
    """A parent needing its child is an error with a hint why it is not needed."""
    found = one_error(TWO.replace("  - id: dump\n", "  - id: dump\n    needs: [part]\n"))
    assert found.message == "`part` is a descendant of `dump`"


def test_needing_a_child_of_another_command_is_fine() -> None:
    """`needs` may name any command that is not an ancestor or descendant."""
    loaded = load(TWO.replace("  - id: gzip\n", "  - id: gzip\n    needs: [part]\n"))
    assert loaded.graph.graph.has_edge("part", "gzip")


# -- commands.<id> references --------------------------------------------------------------

REFS = """\
name: p
commands:
  - id: add_vm
    run: {command: [mk]}
    inverse: {command: [rm]}
    outputs: {uuid: "{{ result.stdout }}"}
    children:
      - id: disk
        run: {command: [disk, "{{ commands.add_vm.outputs.uuid }}"]}
        inverse: {command: [rmdisk]}
  - id: start
    NEEDS
    run: {command: [start, "REF"]}
    irreversible: true
"""


def refs(ref: str, needs: str = "needs: [add_vm]") -> str:
    return REFS.replace("NEEDS", needs).replace("REF", ref)


def test_references_to_upstream_commands_are_fine() -> None:
    """A needed command's outputs and status, and a parent's outputs, may be read."""
    load(refs("{{ commands.add_vm.outputs.uuid }} {{ commands.add_vm.status }}"))
    load(refs("{{ commands.disk.status }}"))  # a child of what start needs has ended too


def test_a_reference_to_an_unknown_command() -> None:
    """`commands.add_wm` is unknown, with a did-you-mean, at the template."""
    found = one_error(refs("{{ commands.add_wm.outputs.uuid }}"))
    assert found.message == "`commands.add_wm`: unknown command"
    assert found.hint == "did you mean `add_vm`?"
    assert found.path == ("commands", 1, "run", "command", 1)


def test_a_reference_to_a_command_that_is_not_upstream_hints_at_needs() -> None:
    """Reading a command that may not have run yet asks to add it to `needs`."""
    found = one_error(refs("{{ commands.add_vm.outputs.uuid }}", needs="changes: true"))
    assert found.message == "`commands.add_vm` is read before `add_vm` has run"
    assert found.hint == "add `add_vm` to the needs of `start`"


def test_upstream_is_transitive() -> None:
    """A command needed by a needed command is upstream too."""
    text = refs("{{ commands.add_vm.outputs.uuid }}", needs="needs: [mid]").replace(
        "  - id: start\n",
        "  - id: mid\n    needs: add_vm\n    run: {command: [x]}\n    irreversible: true\n"
        "  - id: start\n",
    )
    load(text)


def test_a_reference_to_an_undeclared_output() -> None:
    """`outputs.id` of a command declaring only `uuid` suggests `uuid`."""
    found = one_error(refs("{{ commands.add_vm.outputs.id }}"))
    assert "declares no output `id`" in found.message
    assert found.hint == "did you mean `uuid`?"


def test_an_inverse_reading_an_undeclared_output_of_its_own_command() -> None:
    """`outputs.file` in an inverse, when the command declares only `path`, is a load
    error at the template: it used to pass validation and fail only during the rollback."""
    found = one_error(command("""\
        run: {command: [mktemp]}
        inverse: {command: [rm, "{{ outputs.file }}"]}
        outputs: {path: "{{ result.stdout | trim }}"}
        """))
    assert found.message == "`outputs.file`: `a` declares no output `file`"
    assert found.hint == "declared: path"
    assert (found.line, found.column) == (5, 29)
    found = one_error(command("""\
        run: {command: [mktemp]}
        inverse: {command: [rm, "{{ outputs['paht'] }}"]}
        outputs: {path: "{{ result.stdout | trim }}"}
        """))
    assert found.hint == "did you mean `path`?"
    found = one_error(command("""\
        run: {command: [mktemp]}
        inverse: {command: [rm, "{{ outputs.path }}"]}
        """))
    assert found.hint == "declared: none"


def test_a_command_reading_its_own_outputs_before_they_exist() -> None:
    """`commands.a.outputs.x` in a's own `run`, `exists` or `outputs` passed validation and
    failed at run time ('commands.a.outputs.x' is undefined); it is a load error there. In
    its inverse it is fine (the outputs exist then), and a child reads its parent's."""
    plan = """\
        name: p
        commands:
          - id: a
            exists: {command: [test, -e, "{{ commands.a.outputs.x }}"]}
            run: {command: [echo, "{{ commands.a.outputs.x }}"]}
            inverse: {command: [rm, "{{ commands.a.outputs.x }}"]}
            outputs: {x: "{{ result.stdout }}", y: "{{ commands.a.outputs.x }}"}
            children:
              - id: b
                changes: false
                run: {command: [echo, "{{ commands.a.outputs.x }}"]}
        """
    found = errors(plan)
    assert [(d.line, d.column) for d in found] == [(4, 34), (5, 27), (7, 44)]
    assert {d.message for d in found} == {
        "`commands.a.outputs` is read by `a` itself, before its outputs exist"}
    assert found[0].hint == "a command's outputs are known once its `run` ended: read them " \
        "in its `inverse`, as `outputs.<name>`"
    load(plan.replace('exists: {command: [test, -e, "{{ commands.a.outputs.x }}"]}', "")
         .replace('run: {command: [echo, "{{ commands.a.outputs.x }}"]}',
                  "run: {command: [echo]}")
         .replace(', y: "{{ commands.a.outputs.x }}"', ""))


LOOP_READ = """\
    name: p
    vars: {vms: [a, b], files: [x, y]}
    commands:
      - id: vm
        for_each: "{{ vms }}"
        changes: false
        run: {command: [echo]}
        outputs: {uuid: "{{ result.stdout }}"}
        children:
          - id: disk
            for_each: "{{ files }}"
            changes: false
            run: {command: [echo, "{{ commands.vm.outputs.uuid }}"]}
            outputs: {path: "{{ result.stdout }}"}
          - id: report
            needs: disk
            changes: false
            run: {command: [echo, "READ"]}
      - id: summary
        needs: vm
        changes: false
        run: {command: [echo, "{{ commands.vm.outputs | map(attribute='uuid') | list }}"]}
    """


def test_an_output_of_a_looped_command_read_as_one_value_from_outside_its_loop() -> None:
    """Outside its loop, `commands.disk.outputs` is a list (one item per instance): reading
    `.path` of it passed validation and failed at run time ('commands.disk.outputs.path'
    is undefined). It is a load error with the map() to write; inside the loop, and by
    index, it is fine."""
    found = one_error(LOOP_READ.replace("READ", "{{ commands.disk.outputs.path }}"))
    assert found.message == "`commands.disk.outputs.path`: `disk` is in a loop, so here its " \
        "outputs are a list, one item per instance"
    assert found.hint == "for every instance's `path`: {{ commands.disk.outputs | " \
        "map(attribute='path') | list }}"
    assert (found.line, found.column) == (18, 31)
    load(LOOP_READ.replace("READ", "{{ commands.disk.outputs[0].path }}"))
    load(LOOP_READ.replace("READ", "{{ commands.vm.outputs.uuid }}"))  # its own iteration
    found = one_error(LOOP_READ.replace("READ", "{{ commands.vm.outputs.uid }}"))
    assert found.hint == "did you mean `uuid`?"  # now checked inside a loop too


@pytest.mark.parametrize("test", ["commands.disk.status == 'SUCCEEDED'",
                                  "'FAILED' != commands.disk.status"])
def test_the_status_of_a_looped_command_compared_with_a_string(test: str) -> None:
    """Outside its loop, `commands.disk.status` is a list: `== 'SUCCEEDED'` was always
    false (a `when` skipped the command every time) and `!=` always true, without a word.
    It is a load error; inside the loop (one status) and `in` tests stay valid."""
    found = one_error(LOOP_READ.replace("READ", "x").replace(
        "needs: disk\n", f"needs: disk\n            when: \"{{{{ {test} }}}}\"\n"))
    assert found.message == "`commands.disk.status` is a list here, one status per instance " \
        "of looped `disk`: comparing it with a string (== or !=) always gives the same answer"
    assert found.hint == "test the list, e.g. \"{{ 'FAILED' not in commands.disk.status }}\""
    assert found.path[-1] == "when"
    load(LOOP_READ.replace("READ", "{{ 'FAILED' not in commands.disk.status }}"))
    load(LOOP_READ.replace("READ", "{{ commands.vm.status == 'SUCCEEDED' }}"))
    found = one_error(LOOP_READ.replace("READ", "x").replace(  # one error where `commands`
        "needs: disk\n", "needs: disk\n            entity: \"{{ commands.disk.status "
        "== 'x' }}\"\n"))  # is not available at all
    assert found.message == "`commands` is not available here"


def test_calling_a_method_of_outputs_reads_no_output_of_its_name() -> None:
    """`outputs.get('x', '')` and `commands.a.outputs.get(...)` call the mapping's `get`:
    no output named `get` is required (the second was refused as `declares no output get`)."""
    load("""\
        name: p
        commands:
          - id: a
            run: {command: [mktemp]}
            inverse: {command: [rm, "{{ outputs.get('path', '') }}", "{{ outputs.items() }}"]}
            outputs: {path: "{{ result.stdout | trim }}"}
          - id: b
            needs: a
            changes: false
            run: {command: [echo, "{{ commands.a.outputs.get('path', '') }}"]}
        """)


def test_a_reference_to_an_unknown_attribute() -> None:
    """A command has `outputs` and `status` only."""
    found = one_error(refs("{{ commands.add_vm.output.uuid }}"))
    assert "a command has `outputs` and `status`" in found.message
    assert found.hint == "did you mean `outputs`?"


def test_instances_is_read_from_a_looped_command_only() -> None:
    """`commands.<id>.instances` maps a looped command's instances; a command in no loop
    has none, which is said at load."""
    looped = refs("{{ commands.disk.instances | length }}").replace(
        "      - id: disk\n", "      - id: disk\n        for_each: [a, b]\n")
    load(looped)
    found = one_error(refs("{{ commands.add_vm.instances }}"))
    assert found.message == "`commands.add_vm.instances`: `add_vm` is in no loop (read its " \
        "`outputs` and `status`)"
    found = one_error(looped.replace("disk.instances", "disk.instance"))
    assert "a command has `outputs`, `status` and `instances`" in found.message
    assert found.hint == "did you mean `instances`?"


# -- names in templates --------------------------------------------------------------------


def test_result_is_not_available_in_exists() -> None:
    """`exists` runs before `run`, so `result` is not available there, and says where it is."""
    found = one_error(command("""\
        exists: {command: [probe, "{{ result.stdout }}"]}
        run: {command: [mk]}
        irreversible: true
        """))
    assert found.message == "`result` is not available here"
    assert "inverse" in (found.hint or "")
    assert (found.line, found.column) == (4, 31)


def test_result_and_handle_are_available_where_the_spec_says() -> None:
    """failed_when, outputs, async and inverse may read result; poll reads handle."""
    load(VALID)
    load(command("""\
        run: {command: [mk], failed_when: "{{ result.rc != 0 }}"}
        inverse: {command: [rm, "{{ result.stdout }}", "{{ outputs.x }}"]}
        outputs: {x: "{{ result.stdout }}"}
        """))


@pytest.mark.parametrize(("body", "where"), [
    ("when: enable_cache\nrun: {command: [mk]}\nchanges: false\n", "when"),
    ("run: {command: [mk], failed_when: result.rc > 1}\nchanges: false\n", "run.failed_when"),
    ("run:\n  command: [mk]\n  async:\n    handle: '{{ result.stdout }}'\n"
     "    poll: {command: [st, '{{ handle }}']}\n    until: poll.stdout == 'done'\n"
     "changes: false\n", "run.async.until"),
])
def test_a_condition_written_as_plain_text_is_an_error(body: str, where: str) -> None:
    """Ansible's `when: enable_cache` has no `{{ }}`: as text it was always true, so the
    command ran with enable_cache false, and `until: poll.stdout == 'done'` ended the task
    at its first poll. Now it is a load error that shows the template to write."""
    found = one_error(command(body, vars="vars: {enable_cache: false}\n"))
    assert ".".join(str(p) for p in found.path) == f"commands.0.{where}"
    key = where.rsplit(".", 1)[-1]
    assert found.message.startswith(f"`{key}: ")
    assert found.message.endswith("` is text, not a template, so it is always true")
    assert found.hint and found.hint.startswith("write the condition as a template: \"{{ ")


@pytest.mark.parametrize("value", ["true", "False", "no", "on", "0", "1", "none", "", "{{ 1 }}"])
def test_a_condition_may_be_one_of_the_words_read_as_true_or_false(value: str) -> None:
    """`when: "no"` (quoted, so a string) is read as false, as documented: no error."""
    load(command(f"when: '{value}'\nrun: {{command: [mk]}}\nchanges: false\n"))


def test_handle_outside_async_is_not_available() -> None:
    """`handle` in a plain run is reported as not available here."""
    found = one_error(command("run: {command: [mk, '{{ handle }}']}\nirreversible: true\n"))
    assert found.message == "`handle` is not available here"


def test_an_undefined_name_suggests_a_var() -> None:
    """A misspelt variable gets "did you mean" against the declared vars."""
    found = one_error(command("run: {command: [mk, '{{ vmm }}']}\nirreversible: true\n",
                              vars="vars: {vm: a}\n"))
    assert found.message == "undefined name `vmm`"
    assert found.hint == "did you mean `vm`?"


@pytest.mark.parametrize(("name", "hint"), [
    ("item", "`item` is the loop variable of `for_each`, and no loop here names it"),
    ("HOME", "environment variables are read as `env.HOME`"),
    ("var.region", "vars are read by their own names: `{{ NAME }}`, not `{{ var.NAME }}`"),
    ("lookup('env', 'HOME')", "templates have no lookup(): read the environment as "
                              "`env.NAME`, a file with a `file:` secret"),
])
def test_an_undefined_name_a_newcomer_uses_says_what_to_write(name: str, hint: str) -> None:
    """`item` outside a loop, `HOME`, Terraform's `var.x`, Ansible's lookup(): the hint
    was 'declare it under `vars:` or `secrets:`', which is not what they meant."""
    found = one_error(command(f"run: {{command: [echo, \"{{{{ {name} }}}}\"]}}\n"
                              "changes: false\n", vars="vars: {region: eu}\n"))
    assert found.message.startswith("undefined name `")
    assert found.hint == hint


def test_secrets_may_be_used_like_vars_but_not_in_for_each() -> None:
    """A secret is a template name, but a loop cannot expand over one."""
    body = """\
        for_each: "{{ token }}"
        run: {command: [mk, "{{ token }}"]}
        irreversible: true
        """
    found = one_error(command(body, vars="secrets: {token: {env: T}}\n"))
    assert found.path == ("commands", 0, "for_each")
    assert found.message == "secret `token` cannot be used here"


def test_an_entity_cannot_read_outputs_of_other_commands() -> None:
    """Entities are rendered and locked before the first step: `commands.X.outputs` in one is
    a located error saying why, not a command silently left without entity and lock."""
    found = one_error("""\
        name: p
        commands:
          - id: b
            run: {command: [mk]}
            irreversible: true
            outputs: {uuid: "{{ result.stdout }}"}
          - id: a
            entity: "vm/{{ commands.b.outputs.uuid }}"
            needs: b
            run: {command: [mk]}
            irreversible: true
        """)
    assert found.path == ("commands", 1, "entity")
    assert found.message == "`commands` is not available here"
    assert found.hint is not None and "lock keys, taken before the run starts" in found.hint


def test_a_loop_cannot_read_names_that_exist_only_at_run_time() -> None:
    """`for_each` is expanded at load time: `run_id` in it is refused with the reason."""
    found = one_error(command('for_each: "{{ [run_id] }}"\nrun: {command: [mk]}\n'
                              "irreversible: true\n"))
    assert found.path == ("commands", 0, "for_each")
    assert found.message == "`run_id` is not available here"
    assert found.hint is not None and "expanded when the plan is loaded" in found.hint


@pytest.mark.parametrize("name", ["result", "commands", "env", "handle", "poll", "outputs"])
def test_reserved_var_names_are_refused(name: str) -> None:
    """A var taking an engine-defined name is an error at its key."""
    found = one_error(command("run: {command: [mk]}\nirreversible: true\n",
                              vars=f"vars: {{{name}: 1}}\n"))
    assert found.message == f"`{name}` is a reserved name"
    assert found.path == ("vars", name)
    assert found.at_key


def test_a_name_cannot_be_both_a_var_and_a_secret() -> None:
    """The same name under vars and secrets is an error."""
    found = one_error(command("run: {command: [mk]}\nirreversible: true\n",
                              vars="vars: {t: 1}\nsecrets: {t: {env: T}}\n"))
    assert found.message == "`t` is both a var and a secret"


def test_the_loop_variable_cannot_be_reserved() -> None:
    """`as: result` is refused."""
    found = one_error(command("for_each: [a]\nas: result\nrun: {command: [mk]}\n"
                              "irreversible: true\n"))
    assert found.message == "`result` is a reserved name"


def test_template_syntax_errors_are_located_with_the_template_line() -> None:
    """A bad template in a multi-line string names its own line."""
    body = 'run:\n  shell: "echo ok\\n{{ x | }}"\nirreversible: true\n'
    found = one_error(command(body, vars="vars: {x: 1}\n"))
    assert found.message.startswith("template syntax: ")
    assert found.message.endswith("(template line 2)")


def test_a_misspelt_filter_is_a_located_error() -> None:
    """`| trm` is reported at load time with a suggestion, not when the step runs."""
    found = one_error(command("run: {command: [mk, '{{ vm | trm }}']}\nirreversible: true\n",
                              vars="vars: {vm: a}\n"))
    assert found.message == "template syntax: unknown filter `trm`; did you mean `trim`?"
    assert found.path == ("commands", 0, "run", "command", 1)


# -- operations ----------------------------------------------------------------------------


def test_two_actions_in_one_operation_point_at_the_second() -> None:
    """An operation with `command` and `shell` is reported at the second action."""
    found = one_error(command("run: {command: [a], shell: b}\nirreversible: true\n"))
    assert found.message == "one action per operation, found command, shell"
    assert found.path == ("commands", 0, "run", "shell")


def test_an_operation_without_action_lists_the_actions() -> None:
    """An operation of options only says which actions exist."""
    found = one_error(command("run: {timeout: 5s}\nirreversible: true\n"))
    assert found.message == "no action given"
    assert found.hint == "add one of: command, shell, http, python"


def test_async_keys_written_in_the_operation_itself_say_they_belong_under_async() -> None:
    """`until:` next to `http:` (async: forgotten) said only 'unknown action or option'."""
    found = errors(command("""\
        run:
          command: [start]
          handle: "{{ result.stdout }}"
          until: "{{ poll.stdout == 'done' }}"
        changes: false
        """))
    assert [(d.message, d.hint) for d in found] == [
        (f"unknown action or option `{key}`",
         f"`{key}` belongs under `async:`, which follows a task the action started")
        for key in ("handle", "until")]


def test_an_unknown_action_suggests_a_known_one() -> None:
    """`comand:` is an unknown action or option, with did-you-mean, at the key."""
    found = one_error(command("run: {comand: [a]}\nirreversible: true\n"))
    assert found.message == "unknown action or option `comand`"
    assert found.hint == "did you mean `command`?"
    assert (found.line, found.column) == (4, 11)


@pytest.mark.parametrize("option", ["cwd: /srv", "env: {A: b}", "stdin: data"])
def test_subprocess_options_do_not_apply_to_http(option: str) -> None:
    """`cwd`, `env` and `stdin` on an http operation are errors at the option."""
    found = one_error(command(f"run: {{http: {{url: 'http://x'}}, {option}}}\n"
                              "irreversible: true\n"))
    assert found.message.endswith("does not apply to the `http` action")


ASYNC = ("{command: [x], async: {handle: '{{ result.stdout }}', "
         "poll: {command: [p, '{{ handle }}']}, until: true}}")


def test_exists_cannot_be_async() -> None:
    """An async `exists` is refused at its `async` key."""
    found = one_error(command(f"run: {{command: [mk]}}\nirreversible: true\nexists: {ASYNC}\n"))
    assert found.message == "`exists` cannot be async; it must answer at once"
    assert found.path == ("commands", 0, "exists", "async")


def test_inverse_may_be_async() -> None:
    """An inverse may start a remote task and poll it, like run."""
    inverse = load(command(f"run: {{command: [mk]}}\ninverse: {ASYNC}\n")).plan.commands[0].inverse
    assert inverse is not None and inverse.async_ is not None


def test_shape_errors() -> None:
    """inverse without run, and irreversible or read-only commands with an inverse."""
    assert one_error(command("inverse: {command: [rm]}\n")).message.startswith(
        "`inverse` without `run`")
    found = one_error(command("run: {command: [a]}\ninverse: {command: [b]}\n"
                              "irreversible: true\n"))
    assert found.message == "a command with an `inverse` is not irreversible"
    found = one_error(command("run: {command: [a]}\ninverse: {command: [b]}\nchanges: false\n"))
    assert found.message == "`changes: false` contradicts the `inverse`"


def test_as_without_for_each() -> None:
    """`as` names a loop variable, so it needs `for_each`."""
    found = one_error(command("as: disk\nrun: {command: [a]}\nirreversible: true\n"))
    assert found.message.startswith("`as` names the loop variable of `for_each`")


def test_duplicate_ids_anywhere_in_the_tree() -> None:
    """An id used twice, nested or not, is an error at the second with the first line."""
    found = one_error(TWO.replace("  - id: gzip\n", "  - id: part\n"))
    assert found.message == "duplicate command id `part`"
    assert found.hint == "first used on line 7; ids are unique in the whole plan"
    assert found.line == 10


def test_a_duplicate_id_among_its_own_descendants_does_not_hang() -> None:
    """An id reused by a descendant is reported; the ancestry walk does not loop forever."""
    found = one_error("""\
        name: p
        commands:
          - id: a
            children:
              - id: b
                children:
                  - id: a
                    needs: [c]
                    run: {command: [x]}
                    irreversible: true
          - id: c
            run: {command: [y]}
            irreversible: true
        """)
    assert found.message == "duplicate command id `a`"


def test_a_duplicate_id_read_by_its_namesake_is_reported_not_an_index_error() -> None:
    """Found by test_fuzz: a command reading `commands.<its id>.outputs` where a deeper
    namesake holds the id raised IndexError (exit 70) instead of the duplicate's error."""
    with pytest.raises(PlanError) as caught:
        load_text("name: dup\ncommands:\n- id: a\n  children:\n  - id: a\n"
                  "    run: {shell: 'echo {{ commands.a.outputs.uuid }}'}\n"
                  "    children:\n    - id: a\n      outputs: {uuid: x}\n", "dup.yaml")
    messages = [d.message for d in caught.value.diagnostics]
    assert messages.count("duplicate command id `a`") == 2, messages


class _Bucket:
    name = "bucket"
    schema: Mapping[str, Any] = {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "region": {"enum": ["eu", "us"]}},
    }
    capabilities: frozenset[str] = frozenset()

    async def run(self, args: Any, context: Any) -> Any:  # pragma: no cover - never run
        raise NotImplementedError


def test_plugin_action_arguments_are_checked_against_their_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plugin's arguments are validated at load time and located in the plan."""
    monkeypatch.setattr(actions, "plugins", lambda: {"bucket": _Bucket()})
    load(command("run: {bucket: {name: b, region: eu}}\nirreversible: true\n"))
    found = one_error(command("run: {bucket: {name: b, region: asia}}\nirreversible: true\n"))
    assert found.path == ("commands", 0, "run", "bucket", "region")
    assert (found.line, found.column) == (4, 37)


def test_every_error_is_reported_in_file_order() -> None:
    """All problems of a plan come at once, sorted by position."""
    text = command("run: {command: ['{{ a }}']}\ninverse: {command: ['{{ b }}']}\n")
    found = errors(text)
    assert [d.message for d in found] == ["undefined name `a`", "undefined name `b`"]
    assert [d.line for d in found] == [4, 5]


def test_plan_error_message_counts_the_rest() -> None:
    """str(PlanError) is the first located error and how many more there are."""
    text = command("run: {command: ['{{ a }}']}\ninverse: {command: ['{{ b }}']}\n")
    with pytest.raises(PlanError) as caught:
        load(text)
    assert str(caught.value) == (
        "plan.yaml:4:21: error: commands[0].run.command[0]: undefined name `a` "
        "(declare it under `vars:` or `secrets:`) (and 1 more)"
    )


def test_very_deep_children_are_a_plan_error() -> None:
    """A tree too deep to check is a PlanError, never a RecursionError."""
    text, indent = "name: x\ncommands:\n", "  "
    for level in range(200):
        text += f"{indent}- id: c{level}\n{indent}  children:\n"
        indent += "    "
    text += f"{indent}- id: leaf\n{indent}  bogus: 1\n"
    with pytest.raises(PlanError) as caught:
        load_text(text, "deep.yaml")
    assert "nested too deeply" in str(caught.value)


# -- --var overrides -----------------------------------------------------------------------


def test_variables_override_declared_vars() -> None:
    """--var values replace the declared ones, and loops expand over them."""
    loaded = load(VALID, variables={"disks": ["d9"], "vm": "vm-7"})
    assert loaded.plan.vars == {"vm": "vm-7", "disks": ["d9"]}
    assert "clone[d9]" in loaded.graph.instances


def test_an_unknown_variable_is_a_usage_error_with_a_suggestion() -> None:
    """--var for a variable the plan does not declare is refused, suggesting a near one."""
    with pytest.raises(UsageError) as caught:
        load(VALID, variables={"disk": ["x"]})
    assert str(caught.value) == (
        "--var disk: the plan declares no variable `disk`; did you mean `disks`?"
    )


def test_a_list_variable_takes_any_sequence_but_no_scalar_or_mapping() -> None:
    """A var whose default is a list takes a tuple from the Python API, and refuses a
    string or a mapping with a UsageError naming it; a scalar var takes a list."""
    assert load(VALID, variables={"disks": ("x", "y")}).plan.vars["disks"] == ("x", "y")
    for value, got in (("x", "got the text 'x'"), ({"x": 1}, "got a mapping")):
        with pytest.raises(UsageError) as caught:
            load(VALID, variables={"disks": value})
        assert str(caught.value).startswith(
            f"--var disks: the plan's default is a list, so the value must be one; {got}")
    assert load(VALID, variables={"vm": ["a"]}).plan.vars["vm"] == ["a"]


def test_an_unknown_variable_lists_the_declared_ones() -> None:
    """Without a near miss, the message lists the declared variables (or none)."""
    with pytest.raises(UsageError, match=r"\(declared: vm, disks\)"):
        load(VALID, variables={"zzz": 1})
    with pytest.raises(UsageError, match=r"\(declared: none\)"):
        load(command("run: {command: [a]}\nirreversible: true\n"), variables={"x": 1})


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("n=3", ("n", 3)),
        ("l=[a, b]", ("l", ["a", "b"])),
        ("flag=yes", ("flag", True)),
        ("m={a: 1}", ("m", {"a": 1})),
        ("s=text with spaces", ("s", "text with spaces")),
        ("empty=", ("empty", "")),
        ("url=a=b", ("url", "a=b")),
        (" k = v ", ("k", "v")),
        ("bad={{", ("bad", "{{")),  # not YAML: kept as the raw text
    ],
)
def test_parse_var_reads_the_value_as_yaml(assignment: str, expected: tuple[str, Any]) -> None:
    """`k=v` gives the name and the value read as YAML, or the raw text if it is not YAML."""
    assert parse_var(assignment) == expected


@pytest.mark.parametrize(("assignment", "reason"), [
    ("items=[a[1]]", "while parsing a flow sequence did not find expected ',' or ']'"),
    ("items= [a, b", "while parsing a flow sequence did not find expected ',' or ']'"),
    ("m={a: 1", "while parsing a flow mapping did not find expected ',' or '}'"),
])
def test_parse_var_refuses_a_list_or_mapping_that_is_not_yaml(assignment: str,
                                                              reason: str) -> None:
    """A value that starts like a YAML list or mapping but is not YAML is a usage error
    saying why (it was meant as one), not a string; quoted, it is the string."""
    name = assignment.partition("=")[0]
    with pytest.raises(UsageError) as caught:
        parse_var(assignment)
    assert str(caught.value) == (f"--var {name}: not valid YAML: {reason} "
                                 f"""(to pass it as text, quote it: --var '{name}="..."')""")
    assert parse_var('items="[a[1]]"') == ("items", "[a[1]]")
    assert parse_var("items=a[1]") == ("items", "a[1]")  # plain words stay text


@pytest.mark.parametrize("assignment", ["novalue", "=3", " =x"])
def test_parse_var_needs_a_name_and_an_equals_sign(assignment: str) -> None:
    """A --var without NAME= is a usage error."""
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_var(assignment)
