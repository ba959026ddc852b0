"""Reads plan YAML safely into plain JSON-like values and maps JSON paths back to positions.

Only the YAML core types are built (mappings with string keys, sequences, strings, numbers,
booleans, null); any other tag, ``!!python/...`` included, is an error and nothing is
constructed from it. Parsing walks libyaml's event stream directly (``CSafeLoader`` when
present): PyYAML's own composer and constructor are ten times slower on large plans.
Positions are not recorded on the fast path; ``Document.locate`` re-reads the text once,
the first time a diagnostic needs a position.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml import events as ev
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from .errors import Diagnostic, Path, PlanError

__all__ = ["MAX_PLAN_BYTES", "Document", "read_document"]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_YAML = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _YAML + "str", _YAML + "map", _YAML + "seq"
_SCALAR_TAGS = {_STR, _YAML + "int", _YAML + "float", _YAML + "bool", _YAML + "null"}
_IMPLICIT: dict[str, list[tuple[str, Any]]] = Resolver.yaml_implicit_resolvers
ScalarEvent = ev.ScalarEvent
_constructor = SafeConstructor()
_BUILD: dict[str, Callable[[ScalarNode], Any]] = {
    _YAML + "int": _constructor.construct_yaml_int,
    _YAML + "float": _constructor.construct_yaml_float,
    _YAML + "bool": _constructor.construct_yaml_bool,
    _YAML + "null": _constructor.construct_yaml_null,
}
# A plan that expands (through aliases) past this many nodes, or characters of strings, is
# refused: "billion laughs". The characters are what a plan file of the largest size read
# (MAX_PLAN_BYTES) could hold, so an alias never makes a plan bigger than a file could.
MAX_EXPANDED_NODES = 2_000_000
MAX_PLAN_BYTES = 64 * 1024 * 1024
MAX_EXPANDED_CHARS = MAX_PLAN_BYTES

Positions = dict[Path, tuple[int, int]]


class _Invalid(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


def _at(event: Any, diagnostic: Diagnostic) -> Diagnostic:
    """Pin a diagnostic to where ``event`` was written (its file is filled in later)."""
    mark = event.start_mark
    return diagnostic.located("", mark.line + 1, mark.column + 1)


def _tag_error(tag: str, path: Path) -> _Invalid:
    if tag.startswith(_YAML + "python/") or tag.startswith("!!python"):
        msg = f"unsafe YAML tag {tag!r} refused; plans hold data, never Python objects"
    else:
        msg = f"YAML tag {tag!r} is not supported; plans use plain strings, numbers, lists, maps"
    return _Invalid(Diagnostic(path, msg, hint="remove the tag"))


def _scalar(event: Any, path: Path) -> Any:
    tag = event.tag
    value: str = event.value
    if tag is not None and tag != "!":
        if tag not in _SCALAR_TAGS:
            raise _tag_error(tag, path)
        if tag == _STR:
            return value
        node_tag = tag
    elif event.implicit[0] and tag is None:
        node_tag = _STR
        for candidate, regexp in _IMPLICIT.get(value[:1], ()):
            if regexp.match(value):
                node_tag = candidate
                break
        if node_tag not in _BUILD:
            # Timestamps, merge and value markers stay strings: a plan is JSON data.
            return value
    else:
        return value
    try:
        return _BUILD[node_tag](ScalarNode(node_tag, value))
    except (ConstructorError, ValueError) as exc:
        what = node_tag[len(_YAML):]
        shown = value if len(value) <= 40 else f"{value[:20]}...{value[-10:]}"
        problem = str(exc).replace(value, shown)
        raise _Invalid(Diagnostic(path, f"cannot read {shown!r} as {what}: {problem}")) from None


class _Builder:
    """Turns the event stream of one document into values; one instance per read."""

    def __init__(self, loader: Any) -> None:
        self.get = loader.get_event
        self.anchors: dict[str, Any] = {}
        self.aliased = False
        self.problems: list[Diagnostic] = []

    def node(self, event: Any, path: Path) -> Any:
        cls = event.__class__
        if cls is ev.ScalarEvent:
            value = _scalar(event, path)
        elif cls is ev.MappingStartEvent:
            if event.tag not in (None, "!", _MAP):
                raise _tag_error(event.tag, path)
            value = self.mapping(path, event.start_mark.index)
        elif cls is ev.SequenceStartEvent:
            if event.tag not in (None, "!", _SEQ):
                raise _tag_error(event.tag, path)
            value = self.sequence(path)
        elif cls is ev.AliasEvent:
            if event.anchor not in self.anchors:
                raise _Invalid(Diagnostic(path, f"unknown YAML alias *{event.anchor}"))
            self.aliased = True
            return self.anchors[event.anchor]
        else:  # pragma: no cover - libyaml guarantees node events here
            raise _Invalid(Diagnostic(path, f"unexpected YAML event {cls.__name__}"))
        if event.anchor is not None:
            self.anchors[event.anchor] = value
        return value

    def mapping(self, path: Path, start: int = -2) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[dict[str, Any]] = []
        get = self.get
        while True:
            key_event = get()
            if key_event.__class__ is ev.MappingEndEvent:
                break
            if key_event.__class__ is not ev.ScalarEvent:
                # `{{ dest }}` unquoted is a flow mapping whose first key is `{ dest }`.
                hint = "a template must be quoted, \"{{ ... }}\": unquoted, YAML reads `{` " \
                    "as the start of a mapping" if key_event.__class__ is ev.MappingStartEvent \
                    and getattr(key_event.start_mark, "index", -1) == start + 1 else None
                problem = Diagnostic(path, "mapping keys must be plain strings", hint)
                raise _Invalid(_at(key_event, problem))
            key = key_event.value
            # Fast path: an untagged key whose first character no implicit type starts with
            # is a plain string (most keys: `id`, `run`, `command`...).
            if key_event.tag is not None or (key_event.implicit[0] and key[:1] in _IMPLICIT):
                key = _scalar(key_event, path)
            if key == "<<" and key_event.tag is None and key_event.implicit[0]:
                merged.extend(self.merge_sources(get(), path))
                continue
            if not isinstance(key, str):
                raise _Invalid(_at(key_event, Diagnostic(
                    path,
                    f"mapping key {key_event.value!r} is read as {type(key).__name__}, "
                    "not a string",
                    hint=f"quote it: '{key_event.value}'",
                )))
            if key in out:
                self.problems.append(
                    Diagnostic((*path, key), f"duplicate key {key!r}",
                               hint="each key may appear once", at_key=True)
                )
            event = get()
            if event.__class__ is ScalarEvent and event.anchor is None and event.tag is None \
                    and not (event.implicit[0] and event.value[:1] in _IMPLICIT):
                out[key] = event.value  # a plain string: no path, no resolution needed
            else:
                out[key] = self.node(event, (*path, key))
        for source in merged:
            for key, value in source.items():
                out.setdefault(key, value)
        return out

    def merge_sources(self, event: Any, path: Path) -> list[dict[str, Any]]:
        value = self.node(event, path)
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(s, dict) for s in sources):
            raise _Invalid(Diagnostic(path, "a '<<' merge key takes a mapping or a list of them"))
        return sources

    def sequence(self, path: Path) -> list[Any]:
        out: list[Any] = []
        get = self.get
        while True:
            item = get()
            if item.__class__ is ev.SequenceEndEvent:
                return out
            if item.__class__ is ScalarEvent and item.anchor is None and item.tag is None \
                    and not (item.implicit[0] and item.value[:1] in _IMPLICIT):
                out.append(item.value)
            else:
                out.append(self.node(item, (*path, len(out))))


def _expanded_size(value: Any, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """Nodes and characters of strings as a reader of the expanded tree would see them;
    shared nodes count each time."""
    if not isinstance(value, dict | list):
        return 1, len(value) if isinstance(value, str) else 0
    key = id(value)
    if key in memo:
        return memo[key]
    nodes, chars = 1, 0
    if isinstance(value, dict):
        chars = sum(map(len, value))
        items: Iterable[Any] = value.values()
    else:
        items = value
    for item in items:
        more_nodes, more_chars = _expanded_size(item, memo)
        nodes += more_nodes
        chars += more_chars
    memo[key] = nodes, chars
    return nodes, chars


def _positions(text: bytes | str) -> tuple[Positions, Positions]:
    """Value and key positions (1-based line, column) for every path of the document."""
    values: Positions = {}
    keys: Positions = {}
    loader = _Loader(text)
    get = loader.get_event

    def walk(event: Any, path: Path) -> None:
        mark = event.start_mark
        values[path] = (mark.line + 1, mark.column + 1)
        cls = event.__class__
        if cls is ev.MappingStartEvent:
            while (key := get()).__class__ is not ev.MappingEndEvent:
                kmark = key.start_mark
                if key.__class__ is ev.ScalarEvent:
                    child = (*path, key.value)
                    keys[child] = (kmark.line + 1, kmark.column + 1)
                    walk(get(), child)
                else:  # a complex key: skip it and its value
                    walk(key, path)
                    walk(get(), path)
        elif cls is ev.SequenceStartEvent:
            index = 0
            while (item := get()).__class__ is not ev.SequenceEndEvent:
                walk(item, (*path, index))
                index += 1

    try:
        get()  # StreamStart
        first = get()
        if first.__class__ is ev.DocumentStartEvent:
            walk(get(), ())
    except yaml.YAMLError:
        pass  # the fast pass already reported it; keep what was positioned
    finally:
        loader.dispose()
    return values, keys


@dataclass
class Document:
    """A parsed plan file: its data and a way to find where any path of it was written."""

    file: str
    text: bytes | str
    data: Any
    _values: Positions | None = field(default=None, repr=False)
    _keys: Positions | None = field(default=None, repr=False)

    def position(self, path: Path, *, at_key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of ``path``, or of its nearest written ancestor."""
        if self._values is None or self._keys is None:
            self._values, self._keys = _positions(self.text)
        if at_key and path in self._keys:
            return self._keys[path]
        probe = path
        while probe:
            if probe in self._values:
                return self._values[probe]
            probe = probe[:-1]
        return self._values.get((), (1, 1))

    def locate(self, diagnostic: Diagnostic) -> Diagnostic:
        if diagnostic.line is not None:
            return diagnostic
        line, column = self.position(diagnostic.path, at_key=diagnostic.at_key)
        return diagnostic.located(self.file, line, column)


def _lines(text: bytes | str) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text)


def _offset_position(text: bytes | str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a byte offset into the UTF-8 text libyaml read."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    lines = _lines(raw[:offset])
    return len(lines), len(lines[-1]) + 1


def _char_at(text: bytes | str, line: int, column: int) -> str:
    """The character at a 0-based libyaml mark, or '' when out of range."""
    lines = _lines(text)
    return lines[line][column : column + 1] if line < len(lines) else ""


def _past_end(text: bytes | str, line: int, column: int) -> bool:
    """Whether a 0-based mark lies after the last non-blank character of the text."""
    lines = _lines(text)
    last = max((i for i, s in enumerate(lines) if s.strip()), default=-1)
    return line > last or (line == last and column >= len(lines[last].rstrip()))


def read_document(text: bytes | str, file: str) -> Document:
    """Parse one YAML document; raise PlanError (located) if it is not safe, plain YAML."""
    try:
        loader = _Loader(text)
    except UnicodeEncodeError as exc:  # a str holding lone surrogates
        raise PlanError([Diagnostic((), f"cannot read YAML: {exc.reason}", file=file, line=1,
                                    column=1)]) from None
    builder = _Builder(loader)
    try:
        builder.get()  # StreamStart
        start = builder.get()
        if start.__class__ is ev.StreamEndEvent:
            raise _Invalid(Diagnostic((), "the plan file is empty", hint="start with `name:`"))
        data = builder.node(builder.get(), ())
        builder.get()  # DocumentEnd
        if (after := builder.get()).__class__ is not ev.StreamEndEvent:
            raise _Invalid(_at(after, Diagnostic(
                (), "a plan file holds one YAML document, not several",
                hint="split it into one file per plan")))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and mark and _past_end(text, mark.line, mark.column):
            # An unclosed quote or bracket is found at the end of the file; show its start.
            mark = exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        # libyaml does not name the character; a tab is by far the most common one.
        hint = "indent with spaces; YAML does not allow tabs here" \
            if mark and _char_at(text, mark.line, mark.column) == "\t" else None
        if hint is None and "mapping values are not allowed" in problem:
            # `shell: echo note: x` or `run: command: [x]`
            hint = "quote a value that contains ': ', or put a nested key on a line of its " \
                "own, indented under its parent"
        elif hint is None and "did not find expected ','" in problem:
            # `headers: {Authorization: Bearer {{ token }}}`
            hint = "every `[` and `{` needs its `]` or `}`; inside them, quote a value that " \
                "holds `{`, `}`, `[`, `]` or `,`, as a template: \"Bearer {{ token }}\""
        elif hint is None and ("did not find expected key" in problem
                               or "did not find expected '-' indicator" in problem):
            hint = "check the indentation of this line, or a missing `- `: the keys of one " \
                "mapping, and the items of one list, start in the same column"
        # PyYAML 6.0.4 stops deep nesting itself; older ones end in a RecursionError (below).
        message = f"the YAML is nested too deeply ({problem})" \
            if "nesting depth" in problem else f"YAML syntax: {problem}"
        raise PlanError([Diagnostic((), message, hint, file=file, line=line,
                                    column=column)]) from None
    except yaml.reader.ReaderError as exc:
        line, column = _offset_position(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or " ")
        raise PlanError([Diagnostic((), f"cannot read YAML: {exc.reason} (#x{code:02x})",
                                    "plans are UTF-8 text", file=file, line=line,
                                    column=column)]) from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise PlanError([Diagnostic((), f"cannot read YAML: {problem}", file=file, line=1,
                                    column=1)]) from None
    except RecursionError:
        raise PlanError([Diagnostic((), "the YAML is nested too deeply", file=file, line=1,
                                    column=1)]) from None
    except MemoryError:
        raise PlanError([Diagnostic((), "the plan is too large to read into memory",
                                    file=file, line=1, column=1)]) from None
    except _Invalid as exc:
        found = exc.diagnostic
        if found.line is not None:
            located = found.located(file, found.line, found.column or 1)
        else:
            located = Document(file, text, None).locate(found)
        raise PlanError([located]) from None
    finally:
        loader.dispose()
    doc = Document(file, text, data)
    if builder.aliased:
        nodes, chars = _expanded_size(data, {})
        over = f"{MAX_EXPANDED_NODES:,} nodes" if nodes > MAX_EXPANDED_NODES else \
            f"{MAX_EXPANDED_CHARS:,} characters" if chars > MAX_EXPANDED_CHARS else None
        if over:
            builder.problems.append(Diagnostic(
                (), f"the plan expands through aliases to over {over}",
                hint="aliases inside aliases multiply: a 'billion laughs'"))
    if builder.problems:
        raise PlanError([doc.locate(d) for d in builder.problems])
    return doc
