"""Fuzzing the loader and `planctl validate`: any input gives a plan or a located PlanError."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.errors import PlanError, UsageError
from planner.loader import load_text

# The plan strategies are large; their repr (computed by hypothesis for labels) is too.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# -- strategies ----------------------------------------------------------------------------

KEYS = [
    "name", "description", "vars", "secrets", "settings", "defaults", "commands", "id",
    "needs", "for_each", "as", "when", "exists", "run", "inverse", "irreversible", "changes",
    "outputs", "children", "command", "shell", "http", "python", "async", "timeout",
    "retries", "delay", "backoff", "failed_when", "env", "cwd", "stdin", "handle", "poll",
    "until", "interval", "cancel", "url", "method", "json", "body", "status", "headers",
    "function", "kwargs", "file", "optional", "max_parallel", "on_failure", "entity", "<<",
]
TEMPLATES = [
    "{{ vm }}", "{{ disks }}", "{{ item }}", "{{ disk }}", "{{ result.stdout | trim }}",
    "{{ commands.a.outputs.uuid }}", "{{ commands.b.status }}", "{{ commands.zz }}",
    "{{ handle }}", "{{ poll.stdout == 'ok' }}", "{{ outputs.uuid }}", "{{ nope }}",
    "{{ vm | }}", "{% if vm %}x{% endif %}", "{% for %}", "{{ token }}", "{{ env.HOME }}",
    "{{ 1 // 0 }}", "{{ ''.__class__ }}", "{{ vm ~ '-' ~ disk }}", "plain", "{#",
]
def _plans(sloppy: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Plan-shaped documents; ``sloppy`` ones have wrong values here and there.

    Clean plans get past the schema, so the loader's own checks and the graph get fuzzed.
    """

    def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(good, good, good, bad) if sloppy else good

    ids = mostly(st.sampled_from(["a", "b", "c", "d", "clone"]),
                 st.sampled_from(["1bad", "a b"]))
    durations = mostly(st.sampled_from(["5s", "500ms", "1m30s", 2.5, 0]),
                       st.sampled_from(["-1s", "soon", -1, True]))
    argv = st.lists(templates | texts, min_size=1, max_size=3)
    probe = st.fixed_dictionaries({"command": argv})
    http = st.fixed_dictionaries(
        {"url": templates},
        optional={"method": mostly(st.just("POST"), st.just("post")),
                  "json": anything, "status": mostly(st.just(201), st.just(99))},
    )
    action = st.one_of(
        st.fixed_dictionaries({"command": argv}),
        st.fixed_dictionaries({"shell": templates}),
        st.fixed_dictionaries({"http": http}),
        st.fixed_dictionaries({"python": mostly(st.just("mod:fn"), st.just("mod.fn"))}),
    )
    options: dict[str, st.SearchStrategy[Any]] = {
        "timeout": durations,
        "retries": mostly(st.integers(0, 3), st.just(-1)),
        "cwd": templates,
        "env": st.dictionaries(st.sampled_from(["A", "B"]), templates | texts, max_size=2),
        "failed_when": templates,
    }
    probes = st.builds(lambda a, o: {**a, **o}, action, st.fixed_dictionaries({}, optional=options))
    options["async"] = st.fixed_dictionaries(
        {"handle": templates, "poll": probe, "until": templates | st.booleans()},
        optional={"interval": durations, "timeout": durations, "cancel": probe,
                  "failed_when": templates},
    )
    operations = st.builds(lambda a, o: {**a, **o}, action,
                           st.fixed_dictionaries({}, optional=options))

    def command(children: st.SearchStrategy[list[dict[str, Any]]]
                ) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {"id": ids},
            optional={
                "run": operations,
                "inverse": operations,
                "exists": mostly(probes, operations),
                "needs": ids | st.lists(ids, max_size=3, unique=True),
                "for_each": templates | st.lists(st.sampled_from(["x", "y", "z", "[k]"]),
                                                 max_size=3),
                "as": mostly(st.sampled_from(["disk", "item"]), st.just("result")),
                "outputs": st.dictionaries(st.sampled_from(["uuid", "x"]), templates,
                                           max_size=2),
                "irreversible": st.booleans(),
                "changes": st.booleans(),
                "children": children,
                "name": templates,
            },
        )

    commands = st.recursive(
        st.lists(command(st.nothing()), min_size=1, max_size=3),
        lambda inner: st.lists(command(inner), min_size=1, max_size=3),
        max_leaves=8,
    )
    return st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=5), "commands": commands},
        optional={
            "vars": st.fixed_dictionaries(
                {"vm": texts,
                 "disks": st.lists(st.sampled_from(["d0", "d1", "d2"]), max_size=3,
                                   unique=True)},
                optional={"result": st.just(1)} if sloppy else {}),
            "secrets": st.dictionaries(st.sampled_from(["token", "vm"]),
                                       st.fixed_dictionaries({"env": st.just("TOKEN")}),
                                       max_size=2),
            "settings": st.fixed_dictionaries({}, optional={
                "max_parallel": st.integers(1, 8),
                "on_failure": mostly(st.just("stop"), st.just("rolback"))}),
            "defaults": st.fixed_dictionaries({}, optional={"timeout": durations,
                                                            "retries": st.integers(0, 2)}),
        },
    )


templates = st.sampled_from(TEMPLATES)
texts = st.text(max_size=6)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 700), st.floats(allow_nan=False), texts,
    templates, st.sampled_from(["5s", "-1s", "a", "1bad"]),
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
plans = _plans(sloppy=False) | _plans(sloppy=True)
documents = plans | anything
# Characters that change the meaning of YAML the most.
EDIT_CHARS = [*":-[]{}#&*!|>'\"%@`,?\t\n ~<=", "{{", "}}", "\u2028", "\x85", "\ufeff"]
edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(["insert", "delete", "replace"]),
              st.sampled_from(EDIT_CHARS)),
    max_size=4,
)


def mutate(text: str, changes: list[tuple[int, str, str]]) -> str:
    for at, how, char in changes:
        pos = at % (len(text) + 1)
        if how == "insert":
            text = text[:pos] + char + text[pos:]
        elif how == "delete":
            text = text[:pos] + text[pos + 1:]
        else:
            text = text[:pos] + char + text[pos + 1:]
    return text


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    document = draw(documents)
    flow = draw(st.sampled_from([False, True, None]))
    text = yaml.safe_dump(document, default_flow_style=flow, sort_keys=False,
                          allow_unicode=True)
    return mutate(text, draw(edits))


def loads_or_plan_error(text: str | bytes) -> None:
    with contextlib.suppress(PlanError, UsageError):
        load_text(text, "fuzz.yaml")


# -- properties ----------------------------------------------------------------------------


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text_loads_or_raises_a_plan_error(text: str) -> None:
    """Arbitrary text never raises anything but PlanError or UsageError."""
    loads_or_plan_error(text)


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_load_or_raise_a_plan_error(data: bytes) -> None:
    """Arbitrary bytes (bad UTF-8, BOMs, NULs) never raise anything but PlanError."""
    loads_or_plan_error(data)


@FUZZ
@given(text=yaml_texts())
def test_plan_like_documents_load_or_raise_a_plan_error(text: str) -> None:
    """Plan-shaped YAML, intact or with random edits, gives a plan or a PlanError."""
    loads_or_plan_error(text)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "plan.yaml"


@FUZZ
@given(text=yaml_texts() | st.text(max_size=200))
def test_validate_exits_0_or_3_with_located_lines(fuzz_file: Path, text: str) -> None:
    """`planctl validate` exits 0 or 3, and every line it writes to stderr is located."""
    fuzz_file.write_text(text, encoding="utf-8", errors="surrogatepass")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(fuzz_file)])
    assert code in (0, 3), err.getvalue()
    located = re.compile(re.escape(str(fuzz_file)) + r":\d+:\d+: (error|warning): ")
    lines = err.getvalue().splitlines()
    assert all(located.match(line) for line in lines), err.getvalue()
    if code == 3:
        assert any(": error: " in line for line in lines)
