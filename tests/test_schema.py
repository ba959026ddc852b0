"""Tests of planner.schema: the plan schema check and its friendly diagnostics."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jsonschema
import pytest

from planner import actions
from planner.actions import plan_schema
from planner.errors import Diagnostic
from planner.schema import check, did_you_mean, full_schema, validate_value


def plan(**command: Any) -> dict[str, Any]:
    """A valid one-command plan, with ``command`` merged into its command."""
    base = {"id": "dump", "run": {"command": ["pg_dump"]}, "irreversible": True}
    return {"name": "backup", "commands": [{**base, **command}]}


def only(diagnostics: list[Diagnostic]) -> Diagnostic:
    assert len(diagnostics) == 1, diagnostics
    return diagnostics[0]


def test_a_valid_plan_has_no_diagnostics() -> None:
    """A plan using every section passes the schema check."""
    data = {
        "name": "full",
        "description": "all sections",
        "vars": {"vm": "vm-1", "disks": ["a", "b"]},
        "secrets": {"token": {"env": "TOKEN"}, "key": {"file": "k.txt", "optional": True}},
        "settings": {"max_parallel": 4, "on_failure": "stop", "lock_timeout": "30s"},
        "defaults": {"timeout": "5m", "retries": 2, "delay": 1, "backoff": 2, "env": {"A": 1}},
        "commands": [
            {
                "id": "vm",
                "needs": [],
                "run": {
                    "command": ["./store", "create", "{{ vm }}"],
                    "async": {
                        "handle": "{{ result.stdout }}",
                        "poll": {"http": {"url": "http://x/{{ handle }}", "status": [200, 202]}},
                        "until": "{{ poll.status == 200 }}",
                        "interval": "500ms",
                        "timeout": "1h",
                    },
                },
                "inverse": {"shell": "rm -rf {{ vm }}", "cwd": "/tmp"},
                "children": [
                    {"id": "seed", "run": {"python": "seeds:load"}, "changes": False},
                    {"id": "seed2", "run": {"python": {"function": "seeds:load",
                                                       "kwargs": {"n": 1}}},
                     "irreversible": True},
                ],
            }
        ],
    }
    assert check(data) == []


def test_an_unknown_key_suggests_the_near_miss() -> None:
    """`invers:` is an unknown key located at the key, with "did you mean `inverse`?"."""
    found = only(check(plan(invers={"command": ["rm"]})))
    assert found.path == ("commands", 0, "invers")
    assert found.message == "unknown key `invers`"
    assert found.hint == "did you mean `inverse`?"
    assert found.at_key


def test_an_unknown_key_without_a_near_miss_lists_the_allowed_keys() -> None:
    """Without a close match, the hint lists what is allowed there."""
    data = plan()
    data["settings"] = {"colour": "red"}
    found = only(check(data))
    assert found.hint == "allowed: max_parallel, on_failure, lock_timeout"


def test_a_misspelt_required_key_is_not_also_reported_missing() -> None:
    """`comands:` gives one diagnostic, the unknown key, not also "missing `commands`"."""
    data = plan()
    data["comands"] = data.pop("commands")
    found = only(check(data))
    assert found.message == "unknown key `comands`"
    assert found.hint == "did you mean `commands`?"


def test_a_missing_required_key_is_reported_on_its_mapping() -> None:
    """A command without `id` is reported on the command itself."""
    data = plan()
    del data["commands"][0]["id"]
    found = only(check(data))
    assert (found.path, found.message) == (("commands", 0), "missing required key `id`")


def test_an_enum_mismatch_lists_the_choices_and_suggests_one() -> None:
    """`on_failure: rolback` names the allowed values and suggests `rollback`."""
    data = plan()
    data["settings"] = {"on_failure": "rolback"}
    found = only(check(data))
    assert found.path == ("settings", "on_failure")
    assert found.message == "'rolback' is not one of: rollback, stop"
    assert found.hint == "did you mean `rollback`?"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retries", "three", "expected an integer, got a string ('three')"),
        ("retries", True, "expected an integer, got a boolean"),
        ("env", ["A=1"], "expected a mapping, got a list"),
        ("command", "pg_dump -f x", "expected a list, got a string ('pg_dump -f x')"),
        ("cwd", 3, "expected a string, got a number (3)"),
    ],
)
def test_type_errors_say_what_was_expected_and_what_was_found(
    field: str, value: Any, message: str
) -> None:
    """Type mismatches read "expected an integer, got a string ('three')"."""
    run: dict[str, Any] = {"command": ["pg_dump"], field: value}
    found = only(check(plan(run=run)))
    assert found.path == ("commands", 0, "run", field)
    assert found.message == message


@pytest.mark.parametrize("duration", [0, 2.5, "500ms", "2s", "1m30s", "1h", "1.5d", " 3m "])
def test_durations_accept_numbers_and_unit_strings(duration: Any) -> None:
    """A duration is seconds as a number or a string such as 500ms, 1m30s, 1h."""
    assert check(plan(run={"command": ["x"], "timeout": duration})) == []


@pytest.mark.parametrize("duration", ["5 minutes", "-1s", "10", "1x", True, ""])
def test_bad_durations_explain_the_accepted_forms(duration: Any) -> None:
    """A bad duration gets one message that explains the accepted forms."""
    found = only(check(plan(run={"command": ["x"], "timeout": duration})))
    assert found.path == ("commands", 0, "run", "timeout")
    assert "such as 500ms, 2s, 1m30s, 1h" in found.message


def test_a_negative_duration_says_it_is_below_the_minimum() -> None:
    """When the value has the right type, the precise error of that branch is shown."""
    found = only(check(plan(run={"command": ["x"], "timeout": -3})))
    assert found.message == "-3 is less than the minimum of 0"


def test_values_are_shown_as_yaml_writes_them() -> None:
    """A boolean in a message is `true`, as the author wrote it, not Python's `True`."""
    found = only(check(plan(run={"command": ["x"], "timeout": True})))
    assert found.message.startswith("true is not valid")


def test_a_bad_id_explains_the_pattern() -> None:
    """An id starting with a digit is explained in words, not as a regular expression."""
    found = only(check(plan(id="1st")))
    assert found.message == (
        "'1st' is not valid: expected letters, digits, '_' and '-', "
        "not starting with a digit or '-'"
    )


def test_needs_of_the_wrong_type_say_an_id_or_a_list() -> None:
    """`needs: 5` is explained as wanting an id or a list of ids."""
    found = only(check(plan(needs=5)))
    assert found.path == ("commands", 0, "needs")
    assert "expected an id or a list of ids" in found.message


def test_a_bad_id_in_a_needs_list_is_located_at_the_item() -> None:
    """A need that is not an identifier is explained at its own index."""
    found = only(check(plan(needs=["ok", "1a"])))
    assert found.path == ("commands", 0, "needs", 1)
    assert "expected letters, digits" in found.message


def test_empty_and_duplicated_lists() -> None:
    """An empty command list "must not be empty"; repeated needs have duplicate entries."""
    assert only(check({"name": "x", "commands": []})).message == "must not be empty"
    assert only(check(plan(needs=["a", "a"]))).message == "has duplicate entries"


def test_http_json_and_body_together_point_at_body() -> None:
    """Giving both `json` and `body` is one error, at the `body` key."""
    http = {"url": "http://x", "json": {"a": 1}, "body": "{}"}
    found = only(check(plan(run={"http": http})))
    assert found.path == ("commands", 0, "run", "http", "body")
    assert found.message == "give either `json` or `body`, not both"
    assert found.at_key


@pytest.mark.parametrize(("key", "hint"), [
    ("depends_on", "commands this one waits for are its `needs`"),
    ("loop", "to repeat a command, use `for_each`, with `as` naming the loop variable"),
    ("register", "values kept for later commands are `outputs`, read as "
                 "`commands.<id>.outputs.<name>`"),
    ("creates", "a probe that says whether `run` is needed is `exists`"),
    ("rollback", "the operation that undoes `run` is `inverse`"),
    ("tasks", "nested commands are `children`"),
    ("timeout", "it is an option of an operation: put it under `run:`, `inverse:` or "
                "`exists:`; `defaults:` sets it for every operation"),
    ("async", "`async` goes under `run:` or `inverse:`, next to the action that starts the task"),
    ("command", "it is an action: put it under `run:`, `inverse:` or `exists:`"),
])
def test_a_key_of_another_tool_or_level_in_a_command_says_where_it_goes(
    key: str, hint: str
) -> None:
    """Terraform's depends_on, Ansible's loop and register, or `timeout` and `command` one
    level too high (a misindented `run:` body) had no near spelling: the hint listed the
    fifteen allowed keys. It now names the key that means it, or where the key goes."""
    found = only(check(plan(**{key: 1})))
    assert found.path == ("commands", 0, key)
    assert found.message == f"unknown key `{key}`"
    assert found.hint == hint


def test_top_level_keys_of_other_tools_say_where_they_go() -> None:
    """`tasks:` (Ansible) and `variables:`/`locals:` (Terraform) at the top."""
    for key, hint in [("tasks", "a plan's steps are its `commands`"),
                      ("locals", "template variables are `vars`")]:
        found = only(check({**plan(), key: {}}))
        assert (found.path, found.hint) == ((key,), hint)
    assert only(check({**plan(), "defualts": {}})).hint == "did you mean `defaults`?"
    for key in ("x-common", ".retry"):  # was "did you mean `commands`?" for x-common
        assert only(check({**plan(), key: {}})).hint == "a plan has no extension keys: " \
            "anchor the first mapping that uses the values (`run: &retry {...}`), or share " \
            "operation options with `defaults:`"


def test_a_command_with_a_name_but_no_id_says_the_id_identifies_it() -> None:
    """Ansible tasks start with `name:`; a command needs an `id`."""
    data = {"name": "x", "commands": [{"name": "b", "run": {"command": ["b"]},
                                       "changes": False}]}
    found = only(check(data))
    assert found.message == "missing required key `id`"
    assert found.hint == "`name` is a title; what identifies a command is its `id`"


@pytest.mark.parametrize(("value", "hint"), [
    ("$API_TOKEN", "to read the environment variable API_TOKEN, write: {env: API_TOKEN}"),
    ("${API_TOKEN}", "to read the environment variable API_TOKEN, write: {env: API_TOKEN}"),
    ("hunter2", "a secret names where its value is: {env: VARIABLE} or {file: PATH}"),
])
def test_a_secret_written_as_a_string_is_one_error_saying_what_to_write(
    value: str, hint: str
) -> None:
    """`token: $API_TOKEN` was two errors at one place, its type and "not valid: expected
    a secret source" (the oneOf of `required`s holds vacuously of a string); it is one,
    with the mapping to write."""
    found = only(check({**plan(), "secrets": {"token": value}}))
    assert found.path == ("secrets", "token")
    assert found.message == f"expected a mapping, got a string ({value!r})"
    assert found.hint == hint


def test_needs_written_as_a_comma_separated_string_hints_at_a_list() -> None:
    """`needs: a, c` is one string: the error shows the list to write instead."""
    found = only(check(plan(needs="db, cache")))
    assert found.path == ("commands", 0, "needs")
    assert found.hint == "to need several commands, write a list: needs: [db, cache]"
    assert only(check(plan(needs="db cache"))).hint is None


@pytest.mark.parametrize("needs", ["copy[a]", ["copy[a]"]])
def test_needing_one_instance_of_a_loop_says_needs_takes_the_id(needs: Any) -> None:
    """`needs: [copy[a]]`: instances are not needed one by one; the hint says the id."""
    found = only(check(plan(needs=needs)))
    assert found.hint == "needs names a command by its id, and waits for every instance " \
        "of a looped one: `copy`"


@pytest.mark.parametrize("http", ["http://127.0.0.1:8080/x", ["http://x"], None])
def test_http_that_is_not_a_mapping_is_one_type_error(http: Any) -> None:
    """`http: URL` (or a list, or nothing) is one error, its type; it also read "give either
    `json` or `body`, not both", for a request with neither."""
    found = only(check(plan(run={"http": http})))
    assert found.path == ("commands", 0, "run", "http")
    assert found.message.startswith("expected a mapping, got ")


@pytest.mark.parametrize("method", ["GET", "options", "Delete", "pAtCh"])
def test_an_http_method_may_be_written_in_any_case(method: str) -> None:
    """The http action upper-cases its method, so the schema takes one in any case."""
    assert check(plan(run={"http": {"url": "http://x", "method": method}})) == []


@pytest.mark.parametrize("method", ["FETCH", "get ", "", 3])
def test_an_unknown_http_method_lists_the_methods(method: Any) -> None:
    """Anything else is refused, naming the methods (or saying a string was expected)."""
    found = only(check(plan(run={"http": {"url": "http://x", "method": method}})))
    assert found.path == ("commands", 0, "run", "http", "method")
    if isinstance(method, str):
        assert found.message == (f"{method!r} is not valid: expected an HTTP method: GET, "
                                 "HEAD, POST, PUT, PATCH, DELETE or OPTIONS, in any case")
    else:
        assert found.message == "expected a string, got a number (3)"


def test_a_secret_must_name_its_source() -> None:
    """A secret with neither `env` nor `file` says where a secret may come from."""
    data = plan()
    data["secrets"] = {"token": {"optional": True}}
    found = only(check(data))
    assert found.path == ("secrets", "token")
    assert "`env: VARIABLE` or `file: PATH`" in found.message


def test_invalid_var_names_are_reported() -> None:
    """A var name that templates cannot use is refused with the name in the message."""
    data = plan()
    data["vars"] = {"my-var": 1}
    found = only(check(data))
    assert found.path == ("vars",)
    assert "'my-var'" in found.message


@pytest.mark.parametrize("name", ["A=B", "", "A\0B"])
def test_an_env_name_no_program_can_receive_is_refused(name: str) -> None:
    """An `env` name that is empty or holds `=` or NUL is a located validation error (it
    used to pass validate, then fail its step at run time, after other steps had run,
    with 'illegal environment variable name', not saying which)."""
    for data in (plan(run={"command": ["true"], "env": {name: "1"}}),
                 {**plan(), "defaults": {"env": {name: "1"}}}):
        found = only(check(data))
        assert found.message == (f"{name!r} is not valid: expected an environment variable "
                                 "name: not empty, without '=' or NUL")


def test_did_you_mean() -> None:
    """A close word is suggested in backquotes; a distant one gives None."""
    assert did_you_mean("comand", ["command", "shell"]) == "did you mean `command`?"
    assert did_you_mean("zzz", ["command", "shell"]) is None


# -- plugin-like schemas -------------------------------------------------------------------

PLUGIN: Mapping[str, Any] = {
    "type": "object",
    "required": ["bucket"],
    "additionalProperties": False,
    "properties": {
        "bucket": {"type": "string"},
        "region": {"enum": ["eu-west-1", "us-east-1"]},
        "size": {
            "oneOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": "^[0-9]+[KMG]$"},
            ]
        },
    },
}


def test_validate_value_accepts_a_conforming_value() -> None:
    """A value matching a plugin's schema gives no diagnostics."""
    assert validate_value({"bucket": "b", "region": "us-east-1", "size": "5G"}, PLUGIN) == []


def test_validate_value_reports_below_the_base_path() -> None:
    """Diagnostics of a plugin's arguments carry the path of the action in the plan."""
    base = ("commands", 3, "run", "s3")
    found = validate_value({"buckt": "b"}, PLUGIN, base)
    assert [(d.path, d.message, d.hint) for d in found] == [
        ((*base, "buckt"), "unknown key `buckt`", "did you mean `bucket`?"),
    ]


def test_validate_value_friendly_enum_and_type_messages() -> None:
    """Plugin schemas get the same enum and type wording as the plan schema."""
    found = validate_value({"bucket": 3, "region": "eu-west-2"}, PLUGIN)
    messages = {d.path: d.message for d in found}
    assert messages[("bucket",)] == "expected a string, got a number (3)"
    assert messages[("region",)] == "'eu-west-2' is not one of: eu-west-1, us-east-1"


def test_one_of_without_description_reports_the_best_branch() -> None:
    """For a `oneOf` with no description, the closest branch's own error is reported."""
    found = only(validate_value({"bucket": "b", "size": 0}, PLUGIN))
    assert found.path == ("size",)
    assert "minimum" in found.message


def test_a_frozen_plugin_schema_works() -> None:
    """A plugin may declare its schema as a read-only mapping with tuples."""
    frozen = MappingProxyType({
        "type": "object",
        "required": ("bucket",),
        "properties": MappingProxyType({"bucket": MappingProxyType({"type": "string"})}),
    })
    assert validate_value({"bucket": "b"}, frozen) == []
    assert validate_value({"bucket": 1}, frozen)[0].message == "expected a string, got a number (1)"


def test_validators_are_cached_per_schema_object() -> None:
    """The same schema object reuses its validators; an equal copy gets its own."""
    from planner import schema as module

    validate_value({"bucket": "b"}, PLUGIN)
    first = module._VALIDATORS[id(PLUGIN)]
    validate_value({"bucket": "c"}, PLUGIN)
    assert module._VALIDATORS[id(PLUGIN)] is first
    other = copy.deepcopy(dict(PLUGIN))
    assert validate_value({}, other)[0].message == "missing required key `bucket`"


# -- the full schema -----------------------------------------------------------------------


def test_full_schema_without_plugins_is_the_shipped_schema() -> None:
    """With no plugins installed, `planctl schema` prints the shipped file unchanged."""
    assert full_schema() == plan_schema()


class _FakeAction:
    name = "s3"
    schema: Mapping[str, Any] = PLUGIN
    capabilities: frozenset[str] = frozenset()

    async def run(self, args: Any, context: Any) -> Any:  # pragma: no cover - never run
        raise NotImplementedError


def test_full_schema_adds_plugin_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin's argument schema becomes `$defs/action.<name>` and an operation key."""
    monkeypatch.setattr(actions, "plugins", lambda: {"s3": _FakeAction()})
    schema = full_schema()
    assert schema["$defs"]["action.s3"] == PLUGIN
    assert schema["$defs"]["operation"]["properties"]["s3"] == {"$ref": "#/$defs/action.s3"}
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "action.s3" not in plan_schema()["$defs"]  # the shipped schema is untouched
