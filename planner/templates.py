"""Jinja2 templates of plans: a sandboxed environment, static analysis and rendering.

Templates are analysed once per distinct source text (plans repeat the same few
templates thousands of times) and the simple ``{{ dotted.name }}`` form, by far the most
common, is analysed and rendered without Jinja's compiler at all. Jinja's sandbox is
bounded further (sizes, numbers, loop iterations and calls): see MAX_SIZE.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import shlex
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
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
        import markupsafe

        self.__dict__.update(
            StrictUndefined=jinja2.StrictUndefined,
            TemplateSyntaxError=jinja2.TemplateSyntaxError,
            Undefined=jinja2.Undefined,
            UndefinedError=jinja2.UndefinedError,
            SecurityError=jinja2.exceptions.SecurityError,
            TemplateRuntimeError=jinja2.exceptions.TemplateRuntimeError,
            Markup=markupsafe.Markup,
            ImmutableSandboxedEnvironment=jinja2.sandbox.ImmutableSandboxedEnvironment,
            meta=jinja2.meta,
            nodes=jinja2.nodes,
            pass_eval_context=jinja2.pass_eval_context,
            pass_context=jinja2.pass_context,
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
    """What a template reads: free names, ``commands.*`` references and the keys of
    ``outputs.*`` it reads (a command's own outputs, in its inverse)."""

    names: frozenset[str]
    command_refs: tuple[CommandRef, ...]
    output_keys: frozenset[str] = frozenset()
    # ids whose `commands.<id>.status` is compared (== or !=) with a string
    status_compared: frozenset[str] = frozenset()


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


class _ShellWord(str):
    """What `quote` gives in a `shell` template: the value as one shell word already,
    quotes and all. Where the script reads words it goes in as it is (quoted once, as
    Ansible's `{{ x | quote }}` means); inside "...", '...' or a here-document its quotes
    stay, escaped as text, for the shell that runs that string again (`ssh host "systemctl
    restart {{ svc | quote }}"`, `sh -c "... {{ x | quote }}"`)."""


def _shell_word(value: Any) -> _ShellWord:
    return value if isinstance(value, _ShellWord) else _ShellWord(_quote(value))


def _word(value: Any) -> str:
    """The text a `shell` template inserts for a value, as a `command` argument gets it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


class _Slots(threading.local):
    values: list[str] | None = None  # the values of the `shell` rendering under way


_slots = _Slots()


def _shell_slot(_eval_ctx: Any, value: Any) -> str:
    """Finalize of `shell` templates: the value is kept aside and a NUL-delimited slot put
    in its place, filled by ``_fill`` once the quoting around it is known. (Taking the
    eval context keeps Jinja from finalizing constants at compile time.)"""
    values = _slots.values
    _sized(value)
    if values is None:  # the script itself holds a NUL: it cannot run anyway
        return _quote(value)
    text = _word(value)
    if "\0" in text:  # the output of a {% block %}: the values it holds, back
        text = _unslot(text, values)
    values.append(text)
    return f"\0{len(values) - 1}\0"


def _unslot(text: str, values: list[str]) -> str:
    """``text`` with the slots of ``values`` it holds replaced by the values themselves."""
    return _SLOT.sub(lambda m: values[int(m[1])] if int(m[1]) < len(values) else m[0], text)


def _shell_values(_context: Any, text: Any) -> Any:
    """What a ``{% set %}`` block captures in a `shell` template, and what a filter or a
    test is given (a macro's output): the values themselves, not their slots, so that a
    filter or a test sees them. That text goes into the script only through ``{{ }}``,
    quoted. (A macro's own output keeps its slots: ``{% call %}`` writes it as script.)"""
    values = _slots.values
    if values is None or not isinstance(text, str) or "\0" not in text:
        return text
    return _unslot(text, values)


def _shell_blocks(env: Any, tree: Any) -> None:
    """A `shell` template's ``{% set %}`` blocks, filters and tests, made to read values
    (see ``_shell_values``); a ``{% filter %}`` block, which writes into the script,
    refused a filter argument that is not a constant: a value given there would go into
    the script unquoted."""
    nodes = _j.nodes

    def values_filter(lineno: int) -> Any:
        return nodes.Filter(None, "planctl_values", [], [], None, None, lineno=lineno)

    for block in list(tree.find_all(nodes.AssignBlock)):
        if block.filter is None:
            block.filter = values_filter(block.lineno)
        else:  # `{% set x | f %}`: f applied to the values
            inner = block.filter
            while inner.node is not None:
                inner = inner.node
            inner.node = values_filter(block.lineno)
    for used in list(tree.find_all((nodes.Filter, nodes.Test))):  # `{{ m(v) | upper }}`
        if used.node is not None and used.name != "planctl_values":
            used.node = nodes.Filter(used.node, "planctl_values", [], [], None, None,
                                     lineno=used.lineno)
    eval_ctx = nodes.EvalContext(env)
    for block in tree.find_all(nodes.FilterBlock):
        applied = block.filter
        while applied is not None:
            given = [*applied.args, *(pair.value for pair in applied.kwargs),
                     *(a for a in (applied.dyn_args, applied.dyn_kwargs) if a is not None)]
            for arg in given:
                try:
                    arg.as_const(eval_ctx)
                except nodes.Impossible:
                    raise TemplateError(
                        f"a {{% filter %}} block in a shell script takes constant arguments "
                        f"only: `{applied.name}` would put a value into the script unquoted "
                        f"(write {{{{ value }}}} where it goes, quoted for you)",
                        block.lineno) from None
            applied = applied.node


def _shell_render(template: Any, source: str, context: Mapping[str, Any]) -> str:
    if "\0" in source:
        return str(template.render(context))
    values: list[str] = []
    _slots.values = values
    try:
        script = str(template.render(context))
    finally:
        _slots.values = None
    if values and "\0" in _SLOT.sub(lambda m: "" if int(m[1]) < len(values) else m[0], script):
        raise TemplateError("a {% filter %} block cut or changed the place of a value in the "
                            "script: apply the filter to the value instead")
    return _fill(script, values) if values else script


_SLOT = re.compile("\0([0-9]+)\0")
_DQ_SPECIAL = re.compile(r'([\\$`"])')  # what a backslash escapes inside "..."
_HEREDOC_SPECIAL = re.compile(r"([\\$`])")  # ... in a here-document, and in `...`
_SEPARATORS = frozenset(" \t\n;&|()<>")
# A backslash would take the first character of the value's quoting for itself.
_AFTER_BACKSLASH = "a value cannot follow a backslash in a shell script"


def _fill(script: str, values: list[str]) -> str:
    """``script`` with each slot replaced by its value, quoted for where it stands: one
    word where the shell reads words, escaped inside "...", '...' and here-documents, so
    that /bin/sh reads the value itself and never runs any of it. Where that cannot be
    done, a TemplateError says why."""
    out: list[str] = []
    # plain, sub ($(...)), bq (`...`), nested (\`...\` in `...`), dq, sq, arith ($((...))),
    # arithcmd (bash's ((...))), comment, param (${...}), dparam (${...} in "..."), ansi
    # ($'...'), hd and qhd (the body of a here-document, its delimiter unquoted or quoted)
    stack = ["plain"]
    depth = [0]  # parentheses open in each sub and arith
    heredocs: list[tuple[str, bool, bool]] = []  # delimiter, quoted, <<- strips tabs
    # the here-document whose body is being read: delimiter, <<-, and where the body began
    # in out, stack and depth
    body: tuple[str, bool, int, int, int] | None = None
    joined = -1  # where a backslash-newline joined two lines: no line starts there
    split = False  # a \' in $'...' was read: sh (dash) ended it there, bash did not
    word_start = True
    i, n = 0, len(script)

    def opening(mode: str, token: str) -> int:
        """Copy ``token`` at ``i``, which opens ``mode`` with its own count of brackets;
        the index past it."""
        stack.append(mode)
        depth.append(0)  # brackets (parentheses, braces) open in it
        out.append(token)
        return i + len(token)

    while i < n:
        while body is not None and script[i - 1] == "\n" and i != joined:  # a body's line
            past = _heredoc_line(script, i, out, body)
            if past == i:
                break
            i = past  # past the delimiter
            del stack[body[3]:], depth[body[4]:]
            body = _heredoc_body(heredocs, stack, depth, out)
            if i >= n:
                break
        if i >= n:
            break
        c = script[i]
        mode = stack[-1]
        if mode == "comment" and c == "`" and "bq" in stack:  # `...` is found before its #
            stack.pop()
            mode = stack[-1]
        if c == "\0":
            end = script.index("\0", i + 1)
            value = values[int(script[i + 1:end])]
            if "pid" in stack:
                raise TemplateError("a value cannot be inserted in $${...} inside \"...\" or a "
                                    "here-document, which sh and bash read differently: write "
                                    "$$ and {...} apart")
            if split:
                raise TemplateError("a value cannot follow a $'...' holding \\', where sh "
                                    "(dash) ends it and bash does not: write '...' or \"...\" "
                                    "instead")
            if mode not in ("sq", "qhd", "comment", "ansi") and _after_dollar(out):
                raise TemplateError("a value cannot follow a $ in a shell script, which would "
                                    "take the value's first characters for an expansion: write "
                                    "\\$ for a dollar sign")
            if mode not in ("hd", "dparam", "arith", "arithcmd") and "hd" in stack:
                raise TemplateError("a value cannot be inserted in $(...) or `...` inside a "
                                    "here-document")
            if mode == "param":  # ${x:-{{ v }}} is read as where the ${...} stands
                mode = next(m for m in reversed(stack) if m not in ("param", "dparam"))
                mode = mode if mode in ("arith", "arithcmd") else "param"
            if body is not None and body[1] and "\n\t" in "\n" + value:
                line = script[script.rfind("\n", 0, i) + 1:i]
                if "\n\t" in value or not line.strip("\t"):
                    raise TemplateError("a value inserted in a <<- here-document cannot start "
                                        "a line with a tab, which the shell takes out: write "
                                        "<< instead")
            out.append(_slot_text(mode, value, stack.count("bq")))
            i, word_start = end + 1, False
            continue
        if mode == "sq":
            if c == "'":
                stack.pop()
        elif mode == "qhd":
            pass
        elif mode == "ansi":  # bash's $'...', where a backslash escapes (\' too)
            if c == "\\":
                if script.startswith("\0", i + 1):
                    raise TemplateError(_AFTER_BACKSLASH)
                split = split or script.startswith("'", i + 1)
                out.append(script[i:i + 2])
                i += 2
                continue
            if c == "'":
                stack.pop()
        elif mode == "comment":
            if c == "\n":
                stack.pop()
                continue  # the newline ends the line in the enclosing mode
        elif c == "\\" and mode not in ("arith", "arithcmd"):
            if script.startswith("\0", i + 1):
                raise TemplateError(_AFTER_BACKSLASH)
            if script.startswith("`", i + 1) and mode in ("bq", "nested"):  # `...\`...\`...`
                stack.pop() if mode == "nested" else stack.append("nested")
            out.append(script[i:i + 2])
            # a backslash-newline is taken out before words are read: `\<newline>#` is a #
            word_start = word_start and script.startswith("\n", i + 1)
            i += 2
            joined = i
            continue
        elif (mode, c) in (("dq", '"'), ("bq", "`")):  # the closing quote
            stack.pop()
        elif c == "`":
            stack.append("bq")
        elif script.startswith("$${", i) and mode in ("dq", "hd", "dparam"):
            i = opening("pid", "$${")  # $$ then {: bash pairs the { with a } (and quotes)
            continue
        elif script.startswith("$$", i):  # the shell's pid: $${x} is no ${x}
            out.append("$$")
            i, word_start = i + 2, False
            continue
        elif script.startswith("$((", i):
            i = opening("arith", "$((")
            continue
        elif script.startswith("$(", i):
            i = opening("sub", "$(")
            continue
        elif script.startswith(("<(", ">("), i) and mode in ("plain", "sub", "bq"):
            i = opening("sub", script[i:i + 2])  # bash's process substitution: one word
            continue
        elif script.startswith("$'", i) and mode in ("plain", "sub", "bq", "param"):
            stack.append("ansi")
            out.append("$'")
            i += 2
            continue
        elif script.startswith("${", i):  # in "${...}", quotes open anew; # is no comment
            i = opening("dparam" if mode in ("dq", "dparam", "hd") else "param", "${")
            continue
        elif mode in ("arith", "arithcmd"):
            if c == "(":
                depth[-1] += 1
            elif c == ")" and depth[-1] == 0 and script.startswith("))", i):
                stack.pop()
                depth.pop()
                out.append("))")
                # $((...))#... is one word; ((...)) #... a command and a comment
                i, word_start = i + 2, mode == "arithcmd"
                continue
            elif c == ")":
                depth[-1] -= 1
            elif mode == "arithcmd" and script.startswith("<<", i):
                raise TemplateError("a script with values cannot hold << in ((...)), which "
                                    "bash reads as a shift and sh (dash) as a here-document: "
                                    "write x=$((x << n)) instead")
        elif mode in ("param", "dparam", "pid"):
            if c == "{":
                depth[-1] += 1
            elif c == "}" and depth[-1] == 0:
                stack.pop()
                depth.pop()
                out.append(c)
                i, word_start = i + 1, False  # ${...}#... is one word
                continue
            elif c == "}":
                depth[-1] -= 1
            elif c == '"':
                stack.append("dq")
            elif c == "'" and mode == "param":  # in "${...}" a ' is a character
                stack.append("sq")
        elif mode in ("dq", "hd"):
            pass
        elif script.startswith("((", i) and word_start and _arithmetic_command(script, i):
            i = opening("arithcmd", "((")
            continue
        elif c == "'":
            stack.append("sq")
        elif c == '"':
            stack.append("dq")
        elif c == "(" and mode == "sub":
            depth[-1] += 1
        elif c == ")" and mode == "sub":
            if depth[-1] == 0:
                stack.pop()
                depth.pop()
                out.append(c)
                i, word_start = i + 1, False  # $(...)#... is one word
                continue
            else:
                depth[-1] -= 1
        elif c == "#" and word_start:
            stack.append("comment")
            out.append(c)
            i += 1
            continue
        elif script.startswith("<<<", i):  # bash's here-string: a word follows
            out.append("<<<")
            i, word_start = i + 3, True
            continue
        elif script.startswith("<<", i) and body is None:
            i = _heredoc_operator(script, i, out, heredocs)
            word_start = True
            continue
        elif c == "\n" and heredocs and body is None:
            out.append(c)
            i += 1
            body = _heredoc_body(heredocs, stack, depth, out)
            word_start = True
            continue
        out.append(c)
        word_start = c in _SEPARATORS
        i += 1
    if body is not None:  # a here-document the script does not end: the shell ends it
        _heredoc_check(out, body)
    return "".join(out)


def _arithmetic_command(script: str, i: int) -> bool:
    """Whether the (( at ``i`` opens bash's arithmetic command: its first unmatched ) is
    followed by another; else, as ((cd a && make) || exit 1), it opens two subshells."""
    depth = 0
    for j in range(i + 2, len(script)):
        if script[j] == "(":
            depth += 1
        elif script[j] == ")":
            if depth == 0:
                return script.startswith("))", j)
            depth -= 1
    return True


def _after_dollar(out: list[str]) -> bool:
    r"""Whether ``out`` ends with a $ that is no character of its own (not \$ or $$)."""
    k = 0
    while k < len(out) and out[-1 - k] == "$":
        k += 1
    return k % 2 == 1


def _slot_text(mode: str, value: str, backquotes: int) -> str:
    if mode in ("plain", "sub", "bq", "param"):
        word = value if isinstance(value, _ShellWord) else shlex.quote(value)
        for _ in range(backquotes):  # `...` takes a backslash off \\, \` and \$ first
            word = _HEREDOC_SPECIAL.sub(r"\\\1", word)
        return word
    if mode == "comment":
        if "\n" in value:
            raise TemplateError("a value inserted in a shell comment cannot hold a line break")
        return value
    if mode in ("arith", "arithcmd"):
        if re.fullmatch(r"[+-]?[0-9]+", value):
            return value
        where = "$((...))" if mode == "arith" else "((...))"
        raise TemplateError(f"a value inserted in {where} must be an integer, not {value!r}")
    if backquotes or mode == "nested":
        raise TemplateError("a value cannot be inserted in quotes or nested `...` inside `...`: "
                            "write $(...) instead")
    if mode == "ansi":  # bash reads \ and ' there as escapes, sh (dash) as in '...'
        if "\\" in value or "'" in value:
            raise TemplateError(f"a value holding a backslash or ' cannot be inserted in "
                                f"$'...' (it would read differently in sh and in bash): "
                                f"write '...' or \"...\" instead, not {value!r}")
        return value
    if mode == "dparam":  # in quotes of its own: a ' or } in "${x:-...}" is read as syntax
        return '"' + _DQ_SPECIAL.sub(r"\\\1", value) + '"'
    if mode == "dq":
        return _DQ_SPECIAL.sub(r"\\\1", value)
    if mode == "hd":
        return _HEREDOC_SPECIAL.sub(r"\\\1", value)
    if mode == "qhd":
        return value
    return value.replace("'", "'\\''")  # sq


def _heredoc_operator(script: str, i: int, out: list[str],
                      heredocs: list[tuple[str, bool, bool]]) -> int:
    """Copy ``<<[-] WORD`` at ``i``, note the here-document it opens; return the index past."""
    start = i
    i += 2
    strip = script.startswith("-", i)
    i += strip
    while i < len(script) and script[i] in " \t":
        i += 1
    word_start = i
    while i < len(script) and script[i] not in _SEPARATORS:
        if script[i] in "'\"":
            close = script.find(script[i], i + 1)
            i = len(script) if close < 0 else close + 1
        else:
            i += 1 + (script[i] == "\\")
    word = script[word_start:i]
    if "\0" in word:
        raise TemplateError("a value cannot be in a here-document's delimiter: write the "
                            "delimiter in the script")
    delimiter = word.replace("'", "").replace('"', "").replace("\\", "")
    heredocs.append((delimiter, any(q in word for q in "'\"\\"), strip))
    out.append(script[start:i])
    return i


def _heredoc_body(heredocs: list[tuple[str, bool, bool]], stack: list[str],
                  depth: list[int], out: list[str]) -> tuple[str, bool, int, int, int] | None:
    """Begin the body of the first of ``heredocs`` (taken off it); None when there is none."""
    if not heredocs:
        return None
    delimiter, quoted, strip = heredocs.pop(0)
    body = (delimiter, strip, len(out), len(stack), len(depth))
    stack.append("qhd" if quoted else "hd")
    return body


def _heredoc_line(script: str, i: int, out: list[str],
                  body: tuple[str, bool, int, int, int]) -> int:
    """At the start ``i`` of a line of a here-document's body: ``i`` when the body goes on;
    when the line is its delimiter, the line copied and the index past it (after the
    values inserted in the body were checked not to have made a line that would end it)."""
    delimiter, strip = body[0], body[1]
    end = script.find("\n", i)
    end = len(script) if end < 0 else end + 1
    line = script[i:end].rstrip("\n")
    if (line.lstrip("\t") if strip else line) != delimiter:
        return i
    _heredoc_check(out, body)
    out.append(script[i:end])
    return end


def _heredoc_check(out: list[str], body: tuple[str, bool, int, int, int]) -> None:
    """Check that the values inserted in a body made no line that would end it."""
    delimiter, strip = body[0], body[1]
    text = "".join(out[body[2]:])
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    if any((part.lstrip("\t") if strip else part) == delimiter for part in lines):
        raise TemplateError(f"a value inserted in a here-document holds a line "
                            f"{delimiter!r}, which would end it")


# Bounds of one rendering. Jinja's sandbox stops `range()` at 100,000 items but nothing
# else: `'a' * 10**10` or a macro that calls itself twice would take the machine's memory
# or hang planctl. What can build a value much larger than its inputs checks the size it
# would build first; loops and calls are counted.
MAX_SIZE = 10_000_000  # characters of a text, or items of a list, one template builds
MAX_INT_BITS = 100_000  # a number one template computes (4,300 digits print already)
MAX_STEPS = 1_000_000  # loop iterations and calls (macros, methods) of one rendering


class _Budget(threading.local):
    steps = 0


_budget = _Budget()


def _refuse(what: str) -> NoReturn:
    raise _j.SecurityError(f"the template {what} (a bound of planctl's template sandbox)")


def _check(size: int) -> None:
    if size > MAX_SIZE:
        _refuse(f"builds more than {MAX_SIZE:,} characters or items")


def _step() -> None:
    _budget.steps += 1
    if _budget.steps > MAX_STEPS:
        _refuse(f"takes more than {MAX_STEPS:,} loop iterations and calls")


def _weight(value: Any, memo: dict[int, int] | None = None) -> int:
    """Characters of the texts and items of the lists and mappings in ``value``, a shared
    one counted each time it appears (as printing the value would); stops past MAX_SIZE."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list | tuple | dict):
        return 1
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    memo[id(value)] = 1  # a value that holds itself counts once
    total = len(value)
    for item in (*value, *value.values()) if isinstance(value, dict) else value:
        total += _weight(item, memo)
        if total > MAX_SIZE:
            break
    memo[id(value)] = total
    return total


def _depth(value: Any, memo: dict[int, int] | None = None) -> int:
    """How deeply lists and mappings nest in ``value`` (a text or number: 0)."""
    if not isinstance(value, list | tuple | dict):
        return 0
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    memo[id(value)] = 1  # a value that holds itself
    items = value.values() if isinstance(value, dict) else value
    memo[id(value)] = deepest = 1 + max((_depth(item, memo) for item in items), default=0)
    return deepest


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse a ``*``, ``**`` or ``+`` that would build more than the bounds, and a ``%``
    formatting whose field widths would."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints:
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                _refuse(f"builds a number of more than {MAX_INT_BITS:,} bits")
        elif isinstance(right, int) and isinstance(left, str | list | tuple):
            _check(_weight(left) * right)
        elif isinstance(left, int) and isinstance(right, str | list | tuple):
            _check(_weight(right) * left)
    elif operator == "**":
        if ints and right > 0 and abs(left) > 1 and right * abs(left).bit_length() > MAX_INT_BITS:
            _refuse(f"builds a number of more than {MAX_INT_BITS:,} bits")
    elif operator == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _check(_weight(left) + _weight(right))
    elif operator == "%" and isinstance(left, str):
        _check_printf(left, right)


_PRINTF_KEY = re.compile(r"%\(([^)]*)\)")
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(text: str, args: Any) -> None:
    """``text % args``: a width or precision past MAX_SIZE, written or given by ``*``, or
    values that would make the text longer (``('%(a)s' * 1000) % {'a': long}``)."""
    memo: dict[int, int] = {}
    if isinstance(args, Mapping):
        inserted = sum(_weight(args.get(key), memo) for key in _PRINTF_KEY.findall(text))
    elif isinstance(args, tuple):
        inserted = sum(_weight(arg, memo) for arg in args)
    else:
        inserted = _weight(args)
    _check(len(text) + inserted)
    for width, precision in _PRINTF.findall(text):
        for number in (width, precision):
            if number == "*":
                values = args if isinstance(args, tuple) else (args,)
                if any(isinstance(v, int) and v > MAX_SIZE for v in values):
                    _check(MAX_SIZE + 1)
            elif number:
                _check_number(number)


def _check_number(digits: str) -> None:
    _check(MAX_SIZE + 1 if len(digits) > 9 else int(digits))


def _check_spec(spec: str) -> None:
    """A ``str.format`` field spec (``>10``, ``.3f``): no width or precision past MAX_SIZE."""
    for digits in re.findall(r"\d+", spec):
        _check_number(digits)


def _replaced_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0  # str() of another value, or a TypeError of its own
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _joined_size(separator: Any, items: list[Any]) -> int:
    size = len(separator) * max(len(items) - 1, 0) if isinstance(separator, str) else 0
    memo: dict[int, int] = {}
    for item in items:
        size += _weight(item, memo)
        if size > MAX_SIZE:
            break
    return size


def _sized_text(value: Any) -> int:
    """About the size of ``str(value)`` (at least), checked before it is built: a list
    that holds the same list ten times, six levels deep, prints as a million copies."""
    if isinstance(value, list | tuple | dict):
        size = _weight(value)
        _check(size)
        return size
    return 1


def _sized(value: Any) -> Any:
    """``value``, once its text is known to stay within MAX_SIZE (finalize, text filters)."""
    _sized_text(value)
    return value


def _bounded_join(pieces: Iterable[Any]) -> str:
    """``"".join`` of a template's output, a block's or a ``~``, stopped past MAX_SIZE."""
    parts = []
    size = 0
    for piece in pieces:
        if piece.__class__ is str:
            text = piece
        else:
            _check(size + _sized_text(piece))
            text = str(piece)
        size += len(text)
        if size > MAX_SIZE:
            _check(size)
        parts.append(text)
    return "".join(parts)


def _checked_str_call(owner: str, name: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a call of a ``str`` method that would build more than MAX_SIZE; the
    arguments to call it with (``join`` reads its iterable here)."""
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        _check(args[0])
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _check(len(owner) + owner.count("\t") * size)
    elif name == "translate" and args and isinstance(args[0], Mapping | list | tuple):
        table = args[0]
        longest = max((len(v) for v in (table.values() if isinstance(table, Mapping) else table)
                       if isinstance(v, str)), default=1)
        _check(len(owner) * max(longest, 1))
    elif name == "replace" and len(args) >= 2:
        _check(_replaced_size(owner, *args[:3]))
    elif name == "join" and len(args) == 1:
        items = list(args[0])
        _check(_joined_size(owner, items))
        return (items,)
    return args


def _bounded_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """Jinja's filters that can build much more than they are given, checked first."""
    center, indent, replace, join = (filters[n] for n in ("center", "indent", "replace", "join"))
    batch, slice_, wordwrap, sum_ = (filters[n] for n in ("batch", "slice", "wordwrap", "sum"))
    tojson = filters["tojson"]

    def checked(original: Any, check: Callable[..., None]) -> Any:
        def filter_(*args: Any, **kwargs: Any) -> Any:
            check(*args, **kwargs)
            return original(*args, **kwargs)
        return functools.update_wrapper(filter_, original)  # keeps Jinja's pass_* marks

    def center_(value: Any, width: Any = 80) -> None:
        if isinstance(width, int):
            _check(width)

    def indent_(text: Any, width: Any = 4, *_: Any, **__: Any) -> None:
        lines = str(text).count("\n") + 1
        each = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        _check(len(str(text)) + lines * each)

    def replace_(_ctx: Any, text: Any, old: Any, new: Any, count: Any = None) -> None:
        _check(_replaced_size(text, old, new, -1 if count is None else count))

    def join_(ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> Any:
        if attribute is None and not isinstance(value, str | _j.Undefined):
            value = list(value)  # a generator (`map`) is read once: here
            _check(_joined_size(d, value))
        return join(ctx, value, d, attribute)

    def batch_(_value: Any, count: Any, fill_with: Any = None) -> None:
        if isinstance(count, int):
            _check(count if fill_with is None else count * max(_weight(fill_with), 1))

    def slice_check(_ctx: Any, value: Any, count: Any, fill_with: Any = None) -> None:
        batch_(value, count, fill_with)

    def wordwrap_(_env: Any, text: Any, width: Any = 79, break_long_words: Any = True,
                  wrapstring: Any = None, *_: Any) -> None:
        if isinstance(wrapstring, str):
            _check(len(str(text)) * (len(wrapstring) + 1))

    def sum_start(_env: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> None:
        if isinstance(start, list | tuple) and isinstance(iterable, list | tuple):
            _check(_weight(start) + sum(_weight(i) for i in iterable))

    def format_(value: Any, *args: Any, **kwargs: Any) -> None:
        _check_printf(str(value), kwargs or args)

    def tojson_(_ctx: Any, value: Any, indent: Any = None) -> None:
        # Each item on a line of its own, indented once per level it is nested at.
        each = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) \
            else 0
        if each > 0:
            weight = _weight(value)
            _check(weight)
            _check(weight * (1 + each * _depth(value)))

    return {
        "center": checked(center, center_), "indent": checked(indent, indent_),
        "replace": checked(replace, replace_), "join": functools.update_wrapper(join_, join),
        "batch": checked(batch, batch_), "slice": checked(slice_, slice_check),
        "wordwrap": checked(wordwrap, wordwrap_), "sum": checked(sum_, sum_start),
        "format": checked(filters["format"], format_), "tojson": checked(tojson, tojson_),
        "planctl_loop": _counted,
    }


def _counted(items: Any) -> Iterator[Any]:
    """What a ``{% for %}`` iterates, each item counted as a step."""
    for item in items:
        _step()
        yield item


@cache
def _sandbox_class() -> type[ImmutableSandboxedEnvironment]:
    """Jinja's immutable sandbox, with planctl's bounds (MAX_SIZE, MAX_INT_BITS, MAX_STEPS)."""
    import string

    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

    class Generator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:  # `a ~ b`, sized
            self.write("environment.planctl_concat((")
            for item in node.nodes:
                self.visit(item, frame)
                self.write(", ")
            self.write("))")

    class Bounded(string.Formatter):
        """Checks each field's spec, and the fields' text so far, against MAX_SIZE."""

        size = 0  # of the fields formatted by this vformat

        def vformat(self, *args: Any) -> Any:
            self.size = 0
            return super().vformat(*args)

        def format_field(self, value: Any, format_spec: str) -> Any:
            _check_spec(format_spec)
            _check(self.size + _sized_text(value))
            text = super().format_field(value, format_spec)
            self.size += len(text)
            _check(self.size)
            return text

    class Formatter(Bounded, SandboxedFormatter):
        pass

    class EscapeFormatter(Bounded, SandboxedEscapeFormatter):
        pass

    class Sandbox(_j.ImmutableSandboxedEnvironment):  # type: ignore[misc]
        code_generator_class = Generator
        intercepted_binops = frozenset({"*", "**", "+", "%"})
        concat = staticmethod(_bounded_join)
        planctl_concat = staticmethod(_bounded_join)
        planctl_shell = False  # `shell` templates: see _shell_blocks

        def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
            tree = super()._parse(source, name, filename)
            for loop in tree.find_all(_j.nodes.For):
                loop.iter = _j.nodes.Filter(loop.iter, "planctl_loop", [], [], None, None,
                                            lineno=loop.iter.lineno)
            if self.planctl_shell:
                _shell_blocks(self, tree)
            return tree

        def getattr(self, obj: Any, attribute: str) -> Any:
            """``d.items`` of a mapping that has a key ``items`` is that key's value, as the
            plain ``{{ d.items }}`` gives it, filters or not (Jinja's own: the method)."""
            if isinstance(obj, Mapping) and isinstance(attribute, str):
                try:
                    if attribute in obj:
                        return obj[attribute]
                except TypeError:  # a mapping whose keys cannot be compared with a text
                    pass
            return super().getattr(obj, attribute)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            _step()
            owner = getattr(obj, "__self__", None)
            if isinstance(owner, str):
                args = _checked_str_call(owner, getattr(obj, "__name__", ""), args, kwargs)
            return super().call(context, obj, *args, **kwargs)

        def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
            """Jinja's own, with a formatter that checks each field's width."""
            if not isinstance(value, types.MethodType | types.BuiltinMethodType) \
                    or value.__name__ not in ("format", "format_map") \
                    or not isinstance(value.__self__, str):
                return None
            text: str = value.__self__
            formatter = EscapeFormatter(self, escape=text.escape) \
                if isinstance(text, _j.Markup) else Formatter(self)
            is_map = value.__name__ == "format_map"

            def wrapper(*args: Any, **kwargs: Any) -> str:
                if is_map:
                    if kwargs or len(args) != 1:
                        raise TypeError("format_map() takes exactly one argument")
                    kwargs, args = args[0], ()
                return type(text)(formatter.vformat(text, args, kwargs))

            return functools.update_wrapper(wrapper, value)

    return Sandbox


# Filters that read what they are given as text (str() of a list or mapping).
_TEXT_FILTERS = ("capitalize", "center", "escape", "e", "forceescape", "format", "indent",
                 "lower", "pprint", "replace", "safe", "string", "striptags", "title", "trim",
                 "truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "tojson",
                 "to_json", "quote")


def _text_filter(original: Any) -> Any:
    """``original`` (a filter), refusing a list or mapping whose text would pass MAX_SIZE."""
    pass_arg = getattr(original, "jinja_pass_arg", None)

    def filter_(*args: Any, **kwargs: Any) -> Any:
        _sized_text(args[1] if pass_arg is not None else args[0])
        return original(*args, **kwargs)

    return functools.update_wrapper(filter_, original)  # keeps Jinja's pass_* marks


@cache
def environment(shell: bool = False) -> ImmutableSandboxedEnvironment:
    """The shared sandbox; with ``shell`` every ``{{ }}`` output is quoted for /bin/sh."""
    env: ImmutableSandboxedEnvironment = _sandbox_class()(
        undefined=_j.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_j.pass_eval_context(_shell_slot) if shell else _sized,
    )
    env.planctl_shell = shell  # type: ignore[attr-defined]
    env.filters.update(
        bool=_to_bool, from_json=_from_json, to_json=_to_json,
        # `{{ x | quote }}`, as Ansible's shell module needs, is quoted once where the
        # script reads words, and keeps its quotes for an inner shell inside a string.
        quote=_shell_word if shell else _quote,
        **_bounded_filters(env.filters),
    )
    for name in _TEXT_FILTERS:  # what they are given, as text: within MAX_SIZE
        env.filters[name] = _text_filter(env.filters[name])
    if shell:
        env.filters["planctl_values"] = _j.pass_context(_shell_values)
    lipsum: Callable[..., Any] = env.globals["lipsum"]  # type: ignore[assignment]

    def bounded_lipsum(n: Any = 5, html: Any = True, min: Any = 20, max: Any = 100) -> Any:
        if isinstance(n, int) and isinstance(max, int):
            _check(n * max)  # words
        return lipsum(n, html, min, max)

    env.globals["lipsum"] = bounded_lipsum
    return env


def _chain(node: nodes.Node, root: str = "commands") -> list[str] | None:
    """``commands.a.outputs.b`` → ['a', 'outputs', 'b']; None when not rooted at ``root``."""
    parts: list[str] = []
    while True:
        if isinstance(node, _j.nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node, _j.nodes.Getitem) and isinstance(node.arg, _j.nodes.Const):
            parts.append(str(node.arg.value))
        elif isinstance(node, _j.nodes.Getitem):
            parts.clear()  # dynamic key: only what precedes it is known
        elif isinstance(node, _j.nodes.Name):
            return parts[::-1] if node.name == root else None
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
        frozenset(d[1] for d in dotted if d[0] == "outputs" and len(d) > 1),
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
    keys: set[str] = set()
    if "commands" in names or "outputs" in names:
        # `outputs.get('x')` calls a method of the mapping: it reads no key `get`.
        called = {id(call.node) for call in tree.find_all(_j.nodes.Call)}
        for node in tree.find_all((_j.nodes.Getattr, _j.nodes.Getitem)):
            if id(node) in called:
                continue
            chain = _chain(node)
            if chain is not None:
                chains.add(tuple(chain[:3]))
            elif "outputs" in names and (own := _chain(node, "outputs")):
                keys.add(own[0])
    compared: set[str] = set()
    if "commands" in names:
        for compare in tree.find_all(_j.nodes.Compare):
            sides = [compare.expr, *(op.expr for op in compare.ops if op.op in ("eq", "ne"))]
            if len(sides) < 2 or not any(isinstance(side, _j.nodes.Const)
                                         and isinstance(side.value, str) for side in sides):
                continue
            for side in sides:
                chain = _chain(side)
                if chain is not None and len(chain) == 2 and chain[1] == "status":
                    compared.add(chain[0])
    return TemplateInfo(names, _refs(chains), frozenset(keys), frozenset(compared))


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
        _budget.steps = 0
        try:
            if shell:
                return _shell_render(_compiled(source, shell), source, context)
            return str(_compiled(source, shell).render(context))
        except TemplateError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted out by _reraise
            _reraise(exc)

    return jinja


def _reraise(exc: Exception) -> NoReturn:
    """Raise what a failure of Jinja while rendering stands for: a TemplateError for what
    the template did wrong; anything else (a bug) as it is."""
    if isinstance(exc, _j.TemplateSyntaxError):
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None
    if isinstance(exc, _j.TemplateRuntimeError | TypeError | ValueError | ArithmeticError
                  | LookupError):  # undefined names, the sandbox, `'{x}'.format()`, ...
        raise TemplateError(str(exc)) from None
    if isinstance(exc, RecursionError):
        raise TemplateError("the template recurses too deeply (a macro that calls itself?)"
                            ) from None
    if isinstance(exc, MemoryError):
        raise TemplateError("the template ran out of memory") from None
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
            _budget.steps = 0
            try:
                value = _expression(expr)(**context)
                if isinstance(value, _j.Undefined):
                    value._fail_with_undefined_error()
                return value
            except Exception as exc:  # noqa: BLE001 - sorted out by _reraise
                _reraise(exc)

        return evaluate
    return _text_renderer(source, False)
