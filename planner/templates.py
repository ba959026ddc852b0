"""Jinja2 templates of plans: a sandboxed environment, static analysis and rendering.

Templates are analysed once per distinct source text (plans repeat the same few
templates thousands of times) and the simple ``{{ dotted.name }}`` form, by far the most
common, is analysed and rendered without Jinja's compiler at all.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "CommandRef",
    "TemplateError",
    "TemplateInfo",
    "analyze",
    "is_template",
    "render",
    "render_value",
]

class _Jinja:
    """Jinja2, imported on first use: the simple templates most plans hold never need it."""

    def __getattr__(self, name: str) -> Any:
        import jinja2
        import jinja2.exceptions
        import jinja2.meta
        import jinja2.nodes
        import jinja2.sandbox

        self.__dict__.update(
            StrictUndefined=jinja2.StrictUndefined,
            TemplateSyntaxError=jinja2.TemplateSyntaxError,
            Undefined=jinja2.Undefined,
            UndefinedError=jinja2.UndefinedError,
            SecurityError=jinja2.exceptions.SecurityError,
            ImmutableSandboxedEnvironment=jinja2.sandbox.ImmutableSandboxedEnvironment,
            meta=jinja2.meta,
            nodes=jinja2.nodes,
        )
        return self.__dict__[name]


_j: Any = _Jinja()

# ``{{ name }}`` or ``{{ a.b.c }}``: looked up without Jinja. Jinja's literals (``true``,
# ``none``, ...) are not names: they go to Jinja.
_SIMPLE = re.compile(r"\{\{\s*(?!(?:true|false|none|True|False|None)\b)"
                     r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\}\}")
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


class TemplateError(Exception):
    """A template failed to parse or render; ``lineno`` is within the template (1-based)."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


@dataclass(frozen=True, slots=True)
class CommandRef:
    """A reference ``commands.<id>[.<attr>[.<key>]]`` found in a template."""

    id: str
    attr: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What a template reads: free names and ``commands.*`` references."""

    names: frozenset[str]
    command_refs: tuple[CommandRef, ...]


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on", "y"}
    return bool(value)


def _from_json(value: str) -> Any:
    return json.loads(value)


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _quote(value: Any) -> str:
    """The `quote` filter, and every value a `shell` template inserts: one shell word, of
    the text a `command` argument would get (booleans as true/false, numbers as written)."""
    if isinstance(value, str):
        return shlex.quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return shlex.quote(str(value))


@cache
def environment(shell: bool = False) -> ImmutableSandboxedEnvironment:
    """The shared sandbox; with ``shell`` every ``{{ }}`` output is shell-quoted."""
    env: ImmutableSandboxedEnvironment = _j.ImmutableSandboxedEnvironment(
        undefined=_j.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_quote if shell else None,
    )
    env.filters.update(
        bool=_to_bool, from_json=_from_json, to_json=_to_json, quote=_quote
    )
    return env


def _chain(node: nodes.Node) -> list[str] | None:
    """``commands.a.outputs.b`` → ['a', 'outputs', 'b']; None when not rooted at commands."""
    parts: list[str] = []
    while True:
        if isinstance(node, _j.nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node, _j.nodes.Getitem) and isinstance(node.arg, _j.nodes.Const):
            parts.append(str(node.arg.value))
        elif isinstance(node, _j.nodes.Getitem):
            parts.clear()  # dynamic key: only what precedes it is known
        elif isinstance(node, _j.nodes.Name):
            return parts[::-1] if node.name == "commands" else None
        else:
            return None
        node = node.node


def _refs(chains: set[tuple[str, ...]]) -> tuple[CommandRef, ...]:
    longest = {c for c in chains if not any(o != c and o[: len(c)] == c for o in chains)}
    return tuple(
        CommandRef(c[0], c[1] if len(c) > 1 else None, c[2] if len(c) > 2 else None)
        for c in sorted(longest)
        if c
    )


@lru_cache(maxsize=4096)
def _simple_info(found: tuple[str, ...]) -> TemplateInfo:
    """Analysis of templates made only of ``{{ dotted.name }}``: shared by every text around."""
    dotted = [f.split(".") for f in found]
    return TemplateInfo(
        frozenset(d[0] for d in dotted),
        _refs({tuple(d[1:4]) for d in dotted if d[0] == "commands"}),
    )


@lru_cache(maxsize=65536)
def analyze(source: str) -> TemplateInfo:
    """Free names and command references of a template; raises TemplateError if it won't parse."""
    if "{%" not in source and "{#" not in source:
        found = _SIMPLE.findall(source)
        if found and source.count("{{") == len(found):
            return _simple_info(tuple(found))
    env = environment()
    try:
        tree = env.parse(source)
    except _j.TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None
    for used in tree.find_all((_j.nodes.Filter, _j.nodes.Test)):
        kind, known = ("filter", env.filters) if isinstance(used, _j.nodes.Filter) \
            else ("test", env.tests)
        if used.name not in known:
            close = difflib.get_close_matches(used.name, list(known), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise TemplateError(f"unknown {kind} `{used.name}`{hint}", used.lineno)
    try:
        undeclared = _j.meta.find_undeclared_variables(tree)
    except _j.TemplateSyntaxError as exc:  # what Jinja's code generator refuses beyond parsing
        raise TemplateError(exc.message or "invalid template", exc.lineno) from None
    names = frozenset(undeclared - env.globals.keys())
    chains: set[tuple[str, ...]] = set()
    if "commands" in names:
        for node in tree.find_all((_j.nodes.Getattr, _j.nodes.Getitem)):
            chain = _chain(node)
            if chain is not None:
                chains.add(tuple(chain[:3]))
    return TemplateInfo(names, _refs(chains))


@lru_cache(maxsize=65536)
def _getter(dotted: str) -> Callable[[Mapping[str, Any]], Any]:
    """A function reading ``dotted`` (``a.b.c``) out of a context, split once."""
    head, *rest = dotted.split(".")

    def get(context: Mapping[str, Any]) -> Any:
        try:
            value = context[head]
        except KeyError:
            raise TemplateError(f"'{head}' is undefined") from None
        for part in rest:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                raise TemplateError(f"'{dotted}' is undefined (no '{part}')")
        return value

    return get


@lru_cache(maxsize=65536)
def _compiled(source: str, shell: bool) -> Any:
    return environment(shell).from_string(source)


@lru_cache(maxsize=65536)
def _expression(expr: str) -> Any:
    return environment().compile_expression(expr, undefined_to_none=False)


def render(source: str, context: Mapping[str, Any], *, shell: bool = False) -> str:
    """Render a template to text; plain strings come back unchanged."""
    return _text_renderer(source, shell)(context)


@lru_cache(maxsize=65536)
def _text_renderer(source: str, shell: bool) -> Callable[[Mapping[str, Any]], str]:
    """How ``render`` renders this string, decided once per distinct text: unchanged,
    literal pieces around ``{{ dotted.name }}`` getters, or Jinja."""
    if not is_template(source):
        return lambda _context: source
    if not shell and "{%" not in source and "{#" not in source:
        found = _SIMPLE.findall(source)
        if found and source.count("{{") == len(found):
            pieces = _SIMPLE.split(source)  # literal, name, literal, ..., literal
            literals, getters = pieces[0:-1:2], [_getter(d) for d in pieces[1::2]]
            last = pieces[-1]

            def substitute(context: Mapping[str, Any]) -> str:
                out = []
                for literal, get in zip(literals, getters, strict=True):
                    out.append(literal)
                    out.append(_text(get(context)))
                out.append(last)
                return "".join(out)

            return substitute

    def jinja(context: Mapping[str, Any]) -> str:
        try:
            return str(_compiled(source, shell).render(context))
        except Exception as exc:  # noqa: BLE001 - sorted out by _reraise
            _reraise(exc)

    return jinja


def _reraise(exc: Exception) -> NoReturn:
    """Raise what a failure of Jinja while rendering stands for: a TemplateError for what
    the template did wrong; anything else (a bug) as it is."""
    if isinstance(exc, _j.TemplateSyntaxError):
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None
    if isinstance(exc, _j.UndefinedError | _j.SecurityError | TypeError | ValueError
                  | ArithmeticError):
        raise TemplateError(str(exc)) from None
    raise exc


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def render_value(source: Any, context: Mapping[str, Any]) -> Any:
    """Render keeping native types: ``"{{ disks }}"`` gives the list itself.

    A string that is exactly one ``{{ expression }}`` yields the expression's value;
    other strings render to text; lists and mappings are rendered item by item.
    """
    if source.__class__ is str:
        return _renderer(source)(context)
    if isinstance(source, list):
        return [render_value(item, context) for item in source]
    if isinstance(source, dict):
        return {key: render_value(value, context) for key, value in source.items()}
    if isinstance(source, str):
        return _renderer(source)(context)
    return source


@lru_cache(maxsize=65536)
def _renderer(source: str) -> Callable[[Mapping[str, Any]], Any]:
    """How ``render_value`` renders this string, decided once per distinct text: plans
    repeat the same few templates for thousands of commands and polls."""
    single = _SINGLE.match(source)
    if single and "{{" not in single["expr"] and "}}" not in single["expr"]:
        expr = single["expr"].strip()
        if _SIMPLE.fullmatch("{{" + expr + "}}"):
            return _getter(expr)

        def evaluate(context: Mapping[str, Any]) -> Any:
            try:
                value = _expression(expr)(**context)
                if isinstance(value, _j.Undefined):
                    value._fail_with_undefined_error()
                return value
            except Exception as exc:  # noqa: BLE001 - sorted out by _reraise
                _reraise(exc)

        return evaluate
    return _text_renderer(source, False)
