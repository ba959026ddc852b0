"""Checks plan data against the JSON Schema and turns violations into friendly diagnostics."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .actions import plan_schema
from .errors import Diagnostic, Path

if TYPE_CHECKING:  # python-jsonschema is imported only to explain a plan that fails
    import jsonschema
    from jsonschema.exceptions import ValidationError

__all__ = ["check", "did_you_mean", "full_schema", "validate_value"]

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean `inverse`?`` for a near miss, else None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


# Keys of other tools (Terraform, Ansible) and keys put one level too high, with where
# their meaning lives in a plan: "did you mean" finds no near spelling for them.
_ELSEWHERE_IN_COMMAND = {
    **dict.fromkeys(("depends_on", "dependencies", "requires", "after"),
                    "commands this one waits for are its `needs`"),
    **dict.fromkeys(("loop", "with_items", "with_list", "items"),
                    "to repeat a command, use `for_each`, with `as` naming the loop variable"),
    **dict.fromkeys(("loop_var", "loop_control"), "the loop variable is named by `as`"),
    "register": "values kept for later commands are `outputs`, read as "
                "`commands.<id>.outputs.<name>`",
    **dict.fromkeys(("creates", "unless", "check", "probe"),
                    "a probe that says whether `run` is needed is `exists`"),
    **dict.fromkeys(("rollback", "undo", "revert", "destroy", "delete", "down"),
                    "the operation that undoes `run` is `inverse`"),
    **dict.fromkeys(("block", "tasks", "steps", "commands"),
                    "nested commands are `children`"),
    **dict.fromkeys(("timeout", "retries", "delay", "backoff", "env", "cwd"),
                    "it is an option of an operation: put it under `run:`, `inverse:` or "
                    "`exists:`; `defaults:` sets it for every operation"),
    **dict.fromkeys(("failed_when", "stdin"),
                    "it is an option of an operation: put it under `run:`, `inverse:` or "
                    "`exists:`"),
    "async": "`async` goes under `run:` or `inverse:`, next to the action that starts the task",
    **dict.fromkeys(("command", "shell", "http", "python"),
                    "it is an action: put it under `run:`, `inverse:` or `exists:`"),
}
_ELSEWHERE_AT_TOP = {
    **dict.fromkeys(("tasks", "steps", "resources", "jobs"), "a plan's steps are its `commands`"),
    **dict.fromkeys(("variables", "variable", "locals", "parameters"),
                    "template variables are `vars`"),
}


def _unknown_key_hint(key: str, allowed: list[str]) -> str:
    hint = did_you_mean(key, allowed)
    if "needs" in allowed and "children" in allowed:  # a command
        hint = _ELSEWHERE_IN_COMMAND.get(key.lower(), hint)
    elif "commands" in allowed and "vars" in allowed:  # the top level
        hint = _ELSEWHERE_AT_TOP.get(key.lower(), hint)
        if key.startswith(("x-", ".")):  # docker compose's and GitLab's homes for anchors
            hint = "a plan has no extension keys: anchor the first mapping that uses the " \
                "values (`run: &retry {...}`), or share operation options with `defaults:`"
    return hint or f"allowed: {', '.join(allowed)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) < 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _expected(types: str | list[str]) -> str:
    names = [_TYPE_NAMES.get(t, t) for t in ([types] if isinstance(types, str) else types)]
    return " or ".join(names)


def _describe(error: ValidationError) -> Iterator[Diagnostic]:
    path: Path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    validator = error.validator
    value: Any = error.validator_value
    instance: Any = error.instance
    if validator == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in instance if k not in allowed] if allowed else []
        for key in extra or [None]:
            if key is None:
                yield Diagnostic(path, error.message)
                continue
            yield Diagnostic(
                (*path, key),
                f"unknown key `{key}`",
                hint=_unknown_key_hint(key, allowed),
                at_key=True,
            )
    elif validator == "required":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in instance if k not in allowed] \
            if schema.get("additionalProperties") is False else []
        for key in (k for k in value if k not in instance):
            # `comands:` is reported as an unknown key with "did you mean `commands`?".
            if any(did_you_mean(e, allowed) == f"did you mean `{key}`?" for e in extra):
                continue
            hint = "`name` is a title; what identifies a command is its `id`" \
                if key == "id" and "name" in instance else None
            yield Diagnostic(path, f"missing required key `{key}`", hint)
    elif validator == "type":
        hint = None
        if len(path) == 2 and path[0] == "secrets" and isinstance(instance, str):
            # `token: $API_TOKEN`, `token: hunter2`: a secret names where its value is.
            variable = instance.strip().lstrip("$").strip("{}")
            hint = f"to read the environment variable {variable}, write: {{env: {variable}}}" \
                if instance.strip().startswith("$") and variable \
                else "a secret names where its value is: {env: VARIABLE} or {file: PATH}"
        elif isinstance(instance, str) and path and instance.strip():
            hint = _string_operation_hint(path, instance)
        yield Diagnostic(path, f"expected {_expected(value)}, got {_kind(instance)}", hint)
    elif validator in ("oneOf", "anyOf") and schema.get("type") == "object" \
            and not isinstance(instance, dict):
        return  # its branches hold of anything but a mapping: the type error says it all
    elif validator == "enum":
        options = ", ".join(str(v) for v in value)
        hint = did_you_mean(str(instance), [str(v) for v in value])
        yield Diagnostic(path, f"{_show(instance)} is not one of: {options}", hint=hint)
    elif validator == "pattern" or validator in ("oneOf", "anyOf"):
        what = schema.get("description")
        if validator != "pattern":
            best = _branch_error(error, what)
            if best is not None and best is not error:
                yield from _describe(best)
                return
        text = f"{_show(instance)} is not valid" \
            if not isinstance(instance, dict | list) else "not valid"
        hint = None
        if path and path[-1] == "needs" and isinstance(instance, str) and "," in instance:
            ids = [i.strip() for i in instance.split(",") if i.strip()]
            hint = f"to need several commands, write a list: needs: [{', '.join(ids)}]"
        elif "needs" in path[-2:] and isinstance(instance, str) and "[" in instance:
            hint = f"needs names a command by its id, and waits for every instance of a " \
                f"looped one: `{instance.split('[', 1)[0]}`"
        yield Diagnostic(path, f"{text}: expected {_lower(what)}" if what else error.message,
                         hint)
    elif validator == "propertyNames":
        yield Diagnostic(path, f"invalid name {instance!r}: {error.message}")
    elif (validator == "minItems" and value == 1) or validator == "minProperties":
        yield Diagnostic(path, "must not be empty")
    elif validator == "uniqueItems":
        yield Diagnostic(path, "has duplicate entries")
    elif validator == "not" and value == {"required": ["json", "body"]}:
        # `required` holds of anything but a mapping, so `not` fails for `http: URL` too;
        # that value's type error says it all.
        if isinstance(instance, dict):
            yield Diagnostic((*path, "body"), "give either `json` or `body`, not both",
                             at_key=True)
    else:
        yield Diagnostic(path, error.message)


_OPERATIONS = frozenset({"run", "inverse", "exists", "poll", "cancel"})


def _string_operation_hint(path: Path, text: str) -> str | None:
    """For a command line written as a string where planctl wants an argv list or an
    operation (Ansible's `command: mkdir x`, `run: mkdir x`): how to write it."""
    import shlex

    shell = f"shell: {text!r}"
    if path[-1] == "command" and len(path) >= 2 and path[-2] in _OPERATIONS:
        try:
            words = shlex.split(text)
        except ValueError:
            words = []
        argv = f"command: [{', '.join(words)}]" if words and all(
            w and not any(c in w for c in ",[]{}:#'\"") for w in words) else None
        return ("`command` takes the program and its arguments as a list"
                + (f": {argv}" if argv else "") + f"; for a shell line, write {shell}")
    if path[-1] in _OPERATIONS and len(path) >= 2:
        return f"an operation names its action: {{{shell}}}, or {{command: [program, args]}}"
    return None


def _branch_error(error: ValidationError, what: str | None) -> ValidationError | None:
    """The error of a failed ``oneOf``/``anyOf`` worth showing instead of its description.

    Branches whose type does not fit the value say nothing useful ("expected a string"
    for a number that is merely too large). When exactly one branch fits, its own error is
    the precise one; a bare pattern mismatch is better told by the description.
    """
    context = error.context or []
    fitting = [e for e in context if not (e.validator == "type" and not e.relative_path)]
    best: ValidationError | None
    if what is None:
        best = _best_match(fitting or context)
        return best
    if not fitting or len({e.relative_schema_path[0] for e in fitting}) != 1:
        return None
    best = _best_match(fitting)
    if best is None or (best.validator == "pattern" and not _description(best)):
        return None
    return best


def _description(error: ValidationError) -> str | None:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    what = schema.get("description")
    return what if isinstance(what, str) else None


def _show(value: Any) -> str:
    """A scalar as the plan author wrote it: ``true`` and ``null``, not ``True`` and ``None``."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return repr(value)


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:].rstrip(".")


def _best_match(errors: Iterable[ValidationError]) -> ValidationError | None:
    from jsonschema.exceptions import best_match

    found: ValidationError | None = best_match(errors)
    return found


# id(schema) -> (schema, fast validator or None, reference validator or None); schemas
# live as long as the process (the plan schema and plugin schemas): ids are not reused.
_VALIDATORS: dict[int, list[Any]] = {}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _entry(schema: Mapping[str, Any]) -> list[Any]:
    entry = _VALIDATORS.get(id(schema))
    if entry is None or entry[0] is not schema:
        # jsonschema-rs takes dicts and lists only; a plugin may declare a frozen mapping.
        plain = _plain(schema)
        try:
            import jsonschema_rs

            fast: Any = jsonschema_rs.Draft202012Validator(plain)
        except ImportError:  # pragma: no cover - wheel missing on an exotic platform
            fast = None
        entry = [schema, fast, None, plain]
        _VALIDATORS[id(schema)] = entry
    return entry


def _reference(entry: list[Any]) -> jsonschema.Draft202012Validator:
    if entry[2] is None:
        import jsonschema

        entry[2] = jsonschema.Draft202012Validator(entry[3])
    validator: jsonschema.Draft202012Validator = entry[2]
    return validator


def validate_value(
    value: Any, schema: Mapping[str, Any], base: Path = ()
) -> list[Diagnostic]:
    """All schema violations of ``value``, as diagnostics at paths below ``base``."""
    entry = _entry(schema)
    fast = entry[1]
    if fast is not None:
        try:
            if fast.is_valid(value):
                return []
        except Exception:  # noqa: BLE001 - fall through to the reference validator
            pass
    out: list[Diagnostic] = []
    for error in _reference(entry).iter_errors(value):
        for diagnostic in _describe(error):
            out.append(
                Diagnostic(
                    (*base, *diagnostic.path),
                    diagnostic.message,
                    diagnostic.hint,
                    at_key=diagnostic.at_key,
                )
            )
    # jsonschema reports each missing required key as an error of its own.
    return list(dict.fromkeys(out))


def check(data: Any) -> list[Diagnostic]:
    """Every violation of the plan schema in ``data`` (empty when it conforms)."""
    return validate_value(data, plan_schema())


def full_schema() -> dict[str, Any]:
    """The plan schema with the plugin actions' argument schemas added, for editors."""
    from . import actions

    schema = dict(plan_schema())
    defs = dict(schema["$defs"])
    operation = dict(defs["operation"])
    properties = dict(operation["properties"])
    for name, action in actions.plugins().items():
        defs[f"action.{name}"] = dict(action.schema)
        properties[name] = {"$ref": f"#/$defs/action.{name}"}
    operation["properties"] = properties
    defs["operation"] = operation
    schema["$defs"] = defs
    return schema
