"""Tests of planner.source: the safe YAML reader and its lazy positions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import source
from planner.errors import Diagnostic, PlanError
from planner.source import Document, read_document


def data(text: str | bytes) -> object:
    return read_document(text, "plan.yaml").data


def error(text: str | bytes) -> Diagnostic:
    with pytest.raises(PlanError) as caught:
        read_document(text, "plan.yaml")
    (first,) = caught.value.diagnostics
    return first


# -- core types and scalars ----------------------------------------------------------------


def test_core_types_are_built_as_plain_python_values() -> None:
    """Mappings, sequences, strings, numbers, booleans and null become dict, list, str, ..."""
    text = "m: {a: 1}\nl: [x, 2.5]\ns: text\ni: 42\nf: 1.5\nb: true\nn: null\n"
    assert data(text) == {
        "m": {"a": 1},
        "l": ["x", 2.5],
        "s": "text",
        "i": 42,
        "f": 1.5,
        "b": True,
        "n": None,
    }


@pytest.mark.parametrize(
    "scalar",
    [
        "yes", "no", "on", "off", "On", "OFF", "y", "n", "true", "False",
        "0x10", "017", "0b101", "1_000", "+12", "-7", "1:30", "190:20:30.15",
        "1.5", "6.8523015e+5", "1e3", "1.5e3", ".inf", "-.Inf",
        "~", "null", "Null", "", "'yes'", '"0x10"', "0o17", "<<x",
    ],
)
def test_yaml_11_scalars_resolve_as_pyyaml_does(scalar: str) -> None:
    """Plain scalars get the YAML 1.1 types PyYAML's safe_load gives them (yes → True, ...)."""
    text = f"v: {scalar}\n"
    assert data(text) == yaml.safe_load(text)
    assert type(data(text)["v"]) is type(yaml.safe_load(text)["v"])  # type: ignore[index]


def test_the_value_marker_stays_a_string() -> None:
    """A lone `=` (YAML 1.1's value marker, which PyYAML cannot construct) is the text "="."""
    assert data("v: =\n") == {"v": "="}


def test_nan_is_read_as_a_float() -> None:
    """`.nan` is a float NaN, as in PyYAML."""
    value = data("v: .nan\n")["v"]  # type: ignore[index]
    assert isinstance(value, float) and math.isnan(value)


def test_the_documented_examples_of_yaml_11() -> None:
    """yes and on are true, 0x10 is sixteen and ~ is null."""
    assert data("a: yes\nb: on\nc: 0x10\nd: ~\n") == {"a": True, "b": True, "c": 16, "d": None}


@pytest.mark.parametrize("stamp", ["2024-01-01", "2001-12-14t21:59:43.10-05:00",
                                   "2001-12-14 21:59:43.10 -5"])
def test_timestamps_stay_strings(stamp: str) -> None:
    """A timestamp is kept as the text written; a plan is JSON data, not datetimes."""
    assert data(f"v: {stamp}\n") == {"v": stamp}


def test_explicit_core_tags_are_honoured() -> None:
    """`!!str 12` is the string "12", `!!int '7'` the number 7."""
    assert data("a: !!str 12\nb: !!int '7'\nc: !!float '2'\nd: !!bool 'yes'\n") == {
        "a": "12", "b": 7, "c": 2.0, "d": True,
    }


def test_a_core_tag_on_an_unreadable_scalar_is_a_located_error() -> None:
    """`!!int abc` cannot be read as an integer; the error points at the value."""
    found = error("name: x\ncount: !!int abc\n")
    assert "cannot read 'abc' as int" in found.message
    assert (found.line, found.column) == (2, 8)


# -- tags ----------------------------------------------------------------------------------


def test_python_tags_are_refused_and_nothing_is_constructed(tmp_path: Path) -> None:
    """`!!python/object/apply` is an error; the function it names is never called."""
    marker = tmp_path / "pwned"
    found = error(f'name: x\nrun: !!python/object/apply:os.mkdir ["{marker}"]\n')
    assert "unsafe YAML tag" in found.message
    assert (found.file, found.line, found.column) == ("plan.yaml", 2, 6)
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "v: !!python/name:os.system\n",
        "v: !!python/object:collections.OrderedDict {}\n",
        "v: !!python/tuple [1, 2]\n",
    ],
)
def test_every_python_tag_is_called_unsafe(text: str) -> None:
    """Any `!!python/...` tag, on a scalar, mapping or sequence, is an unsafe tag."""
    assert "unsafe YAML tag" in error(text).message


@pytest.mark.parametrize(
    "text",
    [
        "v: !!set {a, b}\n",
        "v: !!binary aGVsbG8=\n",
        "v: !!timestamp 2024-01-01\n",
        "v: !!omap [{a: 1}]\n",
        "v: !custom text\n",
        "v: !custom {a: 1}\n",
        "v: !custom [1]\n",
    ],
)
def test_other_tags_are_refused(text: str) -> None:
    """Tags beyond the core types are not supported; the hint says to remove them."""
    found = error(text)
    assert "is not supported" in found.message
    assert found.hint == "remove the tag"
    assert (found.line, found.column) == (1, 4)


def test_the_non_specific_tag_keeps_a_string() -> None:
    """`! 12` is the string "12", as YAML defines the non-specific tag."""
    assert data("v: ! 12\n") == {"v": "12"}


# -- aliases and merge keys ----------------------------------------------------------------


def test_aliases_repeat_the_anchored_value() -> None:
    """`*name` stands for the value anchored with `&name`."""
    assert data("a: &disks [d0, d1]\nb: *disks\nc: &n 3\nd: *n\n") == {
        "a": ["d0", "d1"], "b": ["d0", "d1"], "c": 3, "d": 3,
    }


def test_merge_keys_fill_in_missing_keys_only() -> None:
    """`<<: *base` adds the anchored mapping's keys that the mapping does not set itself."""
    text = "base: &b {timeout: 5m, retries: 2}\nop:\n  <<: *b\n  retries: 5\n"
    assert data(text)["op"] == {"timeout": "5m", "retries": 5}  # type: ignore[index]


def test_merge_keys_take_a_list_of_mappings() -> None:
    """`<<: [*a, *b]` merges several mappings, the first winning."""
    text = "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n"
    assert data(text)["c"] == {"x": 1, "y": 2}  # type: ignore[index]


def test_a_merge_of_something_else_than_a_mapping_is_an_error() -> None:
    """`<<: 3` is refused with a message naming the merge key."""
    assert "'<<' merge key" in error("a:\n  <<: 3\n").message


def test_an_unknown_alias_is_an_error() -> None:
    """`*nowhere` without an anchor is reported at its place."""
    found = error("name: x\nv: *nowhere\n")
    assert "unknown YAML alias *nowhere" in found.message
    assert found.line == 2


def test_an_alias_bomb_is_refused() -> None:
    """Nested aliases that would expand to billions of nodes are refused, not expanded."""
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    found = error(text)
    assert "expands through aliases" in found.message
    assert "billion laughs" in (found.hint or "")


def test_the_alias_limit_counts_expanded_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan under the expansion limit loads; the same plan over it is refused."""
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"
    assert data(text) == {"a": [1, 2, 3], "b": [[1, 2, 3]] * 3}
    monkeypatch.setattr(source, "MAX_EXPANDED_NODES", 10)
    assert "expands through aliases" in error(text).message


# -- keys ----------------------------------------------------------------------------------


def test_a_duplicate_key_is_located_at_the_second_key() -> None:
    """The second `run:` of a mapping is the error, with its own line and column."""
    text = "name: x\ncommands:\n  - id: a\n    run: {command: [a]}\n    run: {command: [b]}\n"
    found = error(text)
    assert found.message == "duplicate key 'run'"
    assert found.path == ("commands", 0, "run")
    assert (found.line, found.column) == (5, 5)


@pytest.mark.parametrize(
    ("key", "kind"),
    [("yes", "bool"), ("on", "bool"), ("1", "int"), ("2.5", "float"), ("null", "NoneType")],
)
def test_non_string_keys_are_refused_with_a_quoting_hint(key: str, kind: str) -> None:
    """`yes:` as a key reads as a boolean; the error says so, at the key, and how to quote."""
    found = error(f"name: x\nvars:\n  {key}: 1\n")
    assert found.message == f"mapping key {key!r} is read as {kind}, not a string"
    assert found.hint == f"quote it: '{key}'"
    assert (found.file, found.line, found.column) == ("plan.yaml", 3, 3)


def test_quoted_keys_that_look_like_other_types_are_strings() -> None:
    """`'yes':` and `"1":` are string keys."""
    assert data("'yes': 1\n\"1\": 2\n") == {"yes": 1, "1": 2}


def test_complex_keys_are_refused() -> None:
    """A sequence used as a key is an error located at the key."""
    found = error("name: x\n? [a, b]\n: 1\n")
    assert found.message == "mapping keys must be plain strings"
    assert (found.line, found.column) == (2, 3)


@pytest.mark.parametrize("text", [
    "run: {command: [echo, {{ dest }}]}\n",
    "run:\n  shell: {{ dest }}\n",
    "run:\n  command:\n    - {{ dest }}/file\n",
])
def test_an_unquoted_template_says_to_quote_it(text: str) -> None:
    """`{{ dest }}` unquoted is a YAML mapping keyed by a mapping: the error said only
    'mapping keys must be plain strings'; its hint now says to quote the template."""
    found = error(text)
    assert found.message == "mapping keys must be plain strings"
    assert found.hint == "a template must be quoted, \"{{ ... }}\": unquoted, YAML reads " \
        "`{` as the start of a mapping"
    assert error("name: x\n? {a: 1}\n: 1\n").hint is None  # a block key is no template


# -- whole documents -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n"])
def test_an_empty_file_is_an_error(text: str) -> None:
    """A file without a document is reported as empty, with a hint how to start."""
    found = error(text)
    assert found.message == "the plan file is empty"
    assert (found.line, found.column) == (1, 1)


def test_several_documents_are_refused_at_the_second_one() -> None:
    """A second `---` document is an error pointing at where it starts."""
    found = error("name: a\n---\nname: b\n")
    assert "one YAML document, not several" in found.message
    assert (found.line, found.column) == (2, 1)


def test_an_explicit_single_document_is_fine() -> None:
    """`---` before and `...` after one document are allowed."""
    assert data("---\nname: a\n...\n") == {"name": "a"}


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("a: b: c\n", 1, 5),
        ("a: [1, 2\nb: 3\n", 2, 2),
        ("a:\n  - 1\n - 2\n", 3, 2),
        ("name: x\nvars: {a: 'unclosed}\n", 2, 11),  # the quote that is never closed
        ("name: x\nl: [1, 2\n", 2, 4),  # the bracket that is never closed
    ],
)
def test_syntax_errors_are_located(text: str, line: int, column: int) -> None:
    """A YAML syntax error names the problem and where it is (or the start it never closes)."""
    found = error(text)
    assert found.message.startswith("YAML syntax: ")
    assert (found.file, found.line, found.column) == ("plan.yaml", line, column)


def test_a_tab_in_indentation_gets_a_hint() -> None:
    """libyaml does not name the character; the hint says tabs are the problem."""
    found = error("name: x\nvars:\n\tvm: 1\n")
    assert (found.line, found.column) == (3, 1)
    assert "tabs" in (found.hint or "")


@pytest.mark.parametrize(("text", "hint"), [
    ("run:\n  shell: echo note: this breaks\n",
     "quote a value that contains ': ', or put a nested key on a line of its own, indented "
     "under its parent"),
    ("run: command: [echo]\n",
     "quote a value that contains ': ', or put a nested key on a line of its own, indented "
     "under its parent"),
    ("run:\n  command: [echo]\n inverse:\n  command: [echo]\n",
     "check the indentation of this line, or a missing `- `: the keys of one mapping, and "
     "the items of one list, start in the same column"),
    ("commands:\n  - id: a\n  id: b\n",
     "check the indentation of this line, or a missing `- `: the keys of one mapping, and "
     "the items of one list, start in the same column"),
    ("run: {http: {url: x, headers: {Authorization: Bearer {{ token }}}}}\n",
     "every `[` and `{` needs its `]` or `}`; inside them, quote a value that holds `{`, "
     "`}`, `[`, `]` or `,`, as a template: \"Bearer {{ token }}\""),
])
def test_the_commonest_yaml_syntax_errors_say_what_to_check(text: str, hint: str) -> None:
    """libyaml's 'mapping values are not allowed in this context' and 'did not find
    expected key' (or '-' indicator) came with no hint; they say what to look at."""
    found = error(text)
    assert found.message.startswith("YAML syntax: ")
    assert found.hint == hint


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_a_plan_error_not_a_recursion_error(opener: str) -> None:
    """A hundred thousand nested brackets give a PlanError, never a RecursionError."""
    closer = "]" if opener == "[" else "}"
    found = error("v: " + opener * 100_000 + closer * 100_000 + "\n")
    assert "nested too deeply" in found.message


def test_moderate_nesting_is_read() -> None:
    """Fifty levels of nesting are fine."""
    value = data("v: " + "[" * 50 + "1" + "]" * 50 + "\n")["v"]  # type: ignore[index]
    depth = 0
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    assert (depth, value) == (50, 1)


def test_bytes_and_text_read_the_same() -> None:
    """UTF-8 bytes, as read from a file, give the same data as text."""
    text = "name: café\nvars: {disk: ü}\n"
    assert data(text.encode("utf-8")) == data(text) == {"name": "café", "vars": {"disk": "ü"}}


# -- positions -----------------------------------------------------------------------------

PLAN = """\
# a comment line
name: demo
commands:
  - id: first
    run: {command: [echo, hi]}
    needs:
      - zero
"""


def test_positions_of_values_are_one_based() -> None:
    """A value's position is its first character, counting lines and columns from 1."""
    doc = read_document(PLAN, "plan.yaml")
    assert doc.position(("name",)) == (2, 7)
    assert doc.position(("commands", 0, "id")) == (4, 9)
    assert doc.position(("commands", 0, "run", "command", 1)) == (5, 27)
    assert doc.position(("commands", 0, "needs", 0)) == (7, 9)


def test_positions_of_keys() -> None:
    """With at_key, the position is that of the key rather than of its value."""
    doc = read_document(PLAN, "plan.yaml")
    assert doc.position(("name",), at_key=True) == (2, 1)
    assert doc.position(("commands", 0, "run"), at_key=True) == (5, 5)
    assert doc.position(("commands", 0, "run", "command"), at_key=True) == (5, 11)


def test_positions_fall_back_to_the_nearest_written_ancestor() -> None:
    """A path that is not in the file (a missing key) is placed at its closest parent."""
    doc = read_document(PLAN, "plan.yaml")
    assert doc.position(("commands", 0, "inverse")) == (4, 5)
    assert doc.position(("commands", 0, "inverse"), at_key=True) == (4, 5)
    assert doc.position(("nothing", "here")) == doc.position(()) == (2, 1)


def test_positions_count_characters_not_bytes() -> None:
    """Columns after non-ASCII text count characters, for bytes and text input alike."""
    text = "name: héllo\nl: [x, ü, y]\n"
    for given_text in (text, text.encode("utf-8")):
        assert read_document(given_text, "p").position(("l", 2)) == (2, 11)


def test_positions_are_computed_lazily_once() -> None:
    """The fast read records no positions; the first lookup computes them all."""
    doc = read_document(PLAN, "plan.yaml")
    assert doc._values is None
    doc.position(("name",))
    values = doc._values
    assert values is not None
    doc.position(("commands",))
    assert doc._values is values


def test_locate_fills_in_file_line_and_column() -> None:
    """Document.locate pins a diagnostic to the document and leaves located ones alone."""
    doc = read_document(PLAN, "plan.yaml")
    found = doc.locate(Diagnostic(("commands", 0, "id"), "bad id"))
    assert (found.file, found.line, found.column) == ("plan.yaml", 4, 9)
    pinned = Diagnostic((), "x", file="other.yaml", line=9, column=9)
    assert doc.locate(pinned) is pinned
    assert str(found) == "plan.yaml:4:9: error: commands[0].id: bad id"


def test_a_document_holds_its_file_and_text() -> None:
    """read_document returns a Document naming the file it came from."""
    doc = read_document(PLAN, "plans/demo.yaml")
    assert isinstance(doc, Document)
    assert (doc.file, doc.text) == ("plans/demo.yaml", PLAN)


# -- agreement with PyYAML -----------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=True),
    st.sampled_from(["yes", "on", "0x1f", "1:30", "~", "2024-01-01", "<<", "=", "1e3"]),
)
_json_like = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=_json_like, flow=st.booleans())
def test_reads_what_safe_dump_wrote_as_safe_load_does(value: object, flow: bool) -> None:
    """Any JSON-like value dumped by PyYAML reads back exactly as yaml.safe_load reads it."""
    text = yaml.safe_dump({"v": value}, default_flow_style=flow, allow_unicode=True)
    assert data(text) == yaml.safe_load(text)
