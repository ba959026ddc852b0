"""Tests of planner.templates: static analysis, native rendering and the sandbox."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any

import pytest

from planner.templates import (
    CommandRef,
    TemplateError,
    TemplateInfo,
    analyze,
    is_template,
    render,
    render_value,
)


def test_is_template() -> None:
    """Strings with `{{`, `{%` or `{#` are templates; others are plain text."""
    assert is_template("{{ a }}") and is_template("{% if a %}x{% endif %}")
    assert is_template("{# note #}")
    assert not is_template("plain { text }")


# -- analyze -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("{{ vm }}", {"vm"}),
        ("image/{{ vm }}-{{ disk }}", {"vm", "disk"}),
        ("{{ result.stdout }}", {"result"}),
        ("{{ vm | upper }}", {"vm"}),
        ("{% for d in disks %}{{ d }}{{ sep }}{% endfor %}", {"disks", "sep"}),
        ("{% set x = 1 %}{{ x + y }}", {"y"}),
        ("{{ range(3) | list }}", set()),
        ("{# comment #}{{ q }}", {"q"}),
        ("no template", set()),
    ],
)
def test_analyze_finds_the_free_names(source: str, names: set[str]) -> None:
    """The names a template reads from its context, not those it defines or Jinja provides."""
    info = analyze(source)
    assert isinstance(info, TemplateInfo)
    assert info.names == names
    assert isinstance(info.names, frozenset)


@pytest.mark.parametrize(
    ("source", "refs"),
    [
        ("{{ commands.vm.outputs.uuid }}", [CommandRef("vm", "outputs", "uuid")]),
        ("{{ commands.vm.status }}", [CommandRef("vm", "status")]),
        ("{{ commands.vm }}", [CommandRef("vm")]),
        ("{{ commands.vm.outputs.a.b }}", [CommandRef("vm", "outputs", "a")]),
        ("{{ commands.a.status }}-{{ commands.b.outputs.x }}",
         [CommandRef("a", "status"), CommandRef("b", "outputs", "x")]),
    ],
)
def test_analyze_finds_command_references(source: str, refs: list[CommandRef]) -> None:
    """`commands.<id>[.<attr>[.<key>]]` references are reported, longest form only."""
    assert list(analyze(source).command_refs) == refs
    assert analyze(source).names == {"commands"}


def test_subscript_references_are_found_by_the_jinja_path() -> None:
    """`commands['vm'].outputs['uuid']` is the same reference as the dotted form."""
    info = analyze("{{ commands['vm'].outputs['uuid'] }}")
    assert info.command_refs == (CommandRef("vm", "outputs", "uuid"),)


def test_a_dynamic_id_is_not_a_reference() -> None:
    """`commands[name]` cannot be checked statically; only `name` is a free name then."""
    info = analyze("{{ commands[name].status }}")
    assert info.names == {"commands", "name"}
    assert info.command_refs == ()


@pytest.mark.parametrize(
    "source",
    [
        "{{ vm }}",
        "{{vm}}-{{ disk }}",
        "x {{ a.b.c }} y {{ d }}",
        "{{ commands.vm.outputs.uuid }}",
        "{{ commands.vm.status }} {{ commands.other }}",
        "{{ commands.vm.outputs.a.b }}",
        "{{ result.stdout }}{{ result.rc }}",
        "{{ true }}-{{ none }}-{{ False }}",
        "{{ trueish }}{{ none_left.x }}",
    ],
)
def test_the_fast_path_agrees_with_jinja(source: str) -> None:
    """The regex fast path of simple templates gives what Jinja's parser gives."""
    fast = analyze(source)
    # A `{# #}` comment sends the same template through Jinja's parser.
    slow = analyze(source + "{# force the Jinja path #}")
    assert fast == slow


def test_analyze_is_cached() -> None:
    """The same template text is analysed once."""
    assert analyze("{{ cached_name | trim }}") is analyze("{{ cached_name | trim }}")


@pytest.mark.parametrize("source", ["{{ vm | }}", "{% if a %}", "{{ a ", "{% endfor %}"])
def test_syntax_errors_raise_template_error(source: str) -> None:
    """A template that does not parse raises TemplateError, never a Jinja exception."""
    with pytest.raises(TemplateError):
        analyze(source)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ x | rim }}", "unknown filter `rim`; did you mean `trim`?"),
        ("{% if x is od %}y{% endif %}", "unknown test `od`; did you mean `odd`?"),
        ("{% filter uper %}x{% endfilter %}", "unknown filter `uper`; did you mean `upper`?"),
        ("{{ x | zzzzzz }}", "unknown filter `zzzzzz`"),
    ],
)
def test_unknown_filters_and_tests_are_template_errors(source: str, message: str) -> None:
    """A misspelt filter or test is found when analysing, with a suggestion."""
    with pytest.raises(TemplateError) as caught:
        analyze(source)
    assert str(caught.value) == message


def test_template_errors_carry_the_template_line() -> None:
    """The line of a syntax error within a multi-line template is kept."""
    with pytest.raises(TemplateError) as caught:
        analyze("line one\nline two {{ a | }}\n")
    assert caught.value.lineno == 2


# -- render --------------------------------------------------------------------------------


def test_render_produces_text() -> None:
    """render substitutes values and filters, giving a string."""
    assert render("vm-{{ n }}-{{ name | upper }}", {"n": 7, "name": "db"}) == "vm-7-DB"
    assert render("{{ n }}", {"n": 7}) == "7"


def test_render_leaves_plain_strings_alone() -> None:
    """A string without template markers is returned unchanged."""
    assert render("plain {text}", {}) == "plain {text}"


@pytest.mark.parametrize("source", ["{{ missing }}", "{{ missing | trim }}", "{{ a.nope }}",
                                    "{{ a.nope | trim }}"])
def test_undefined_names_are_errors(source: str) -> None:
    """Undefined names and attributes fail loudly instead of rendering as empty text."""
    with pytest.raises(TemplateError):
        render(source, {"a": {}})


def test_render_value_keeps_native_types() -> None:
    """A string that is one expression yields the value itself: list, number, bool, mapping."""
    context: dict[str, Any] = {"disks": ["d0", "d1"], "n": 2, "m": {"k": None}, "s": " ok\n"}
    assert render_value("{{ disks }}", context) == ["d0", "d1"]
    assert render_value("{{ n + 1 }}", context) == 3
    assert render_value("{{ m }}", context) == {"k": None}
    assert render_value("{{ s | trim == 'ok' }}", context) is True
    assert render_value(" {{ n }} ", context) == 2


@pytest.mark.parametrize(
    ("source", "value"),
    [("{{ true }}", True), ("{{ True }}", True), ("{{ false }}", False),
     ("{{ False }}", False), ("{{ none }}", None), ("{{ None }}", None),
     ("{{ trueish }}", "a name"), ("x{{ false }}y", "xFalsey")],
)
def test_jinja_literals_are_values_not_names(source: str, value: Any) -> None:
    """`{{ true }}` is Jinja's literal, not a variable called `true`; `trueish` is a name."""
    assert analyze(source).names == ({"trueish"} if "trueish" in source else set())
    assert render_value(source, {"trueish": "a name"}) == value


def test_a_mapping_key_named_like_a_method_is_read_the_same_with_or_without_a_filter(
        ) -> None:
    """`d.items` of a mapping with a key `items` (a Kubernetes list, JSON data) is that
    key's value, as `{{ d.items }}` alone gives it; with a filter after it, it used to be
    the dict's method (`object of type 'builtin_function_or_method' has no len()`)."""
    data = {"d": {"items": [{"n": "a"}, {"n": "b"}], "keys": "k", "count": 2}}
    assert render_value("{{ d.items }}", data) == [{"n": "a"}, {"n": "b"}]
    assert render_value("{{ d.items | length }}", data) == 2
    assert render_value("{{ d.items | map(attribute='n') | list }}", data) == ["a", "b"]
    assert render("{{ d.keys | upper }} {{ d.count + 1 }}", data) == "K 3"
    assert render_value("{{ d.get('keys') }} {{ e.keys() | list }}", {**data, "e": {"x": 1}}
                        ) == "k ['x']"  # a method still, where no key has its name


def test_render_value_renders_mixed_strings_as_text() -> None:
    """Text around an expression makes the result a string."""
    assert render_value("disk-{{ n }}", {"n": 2}) == "disk-2"


def test_render_value_walks_lists_and_mappings() -> None:
    """Lists and mappings are rendered item by item; other values pass through."""
    source = {"argv": ["x", "{{ n }}"], "flag": True, "count": 3, "name": "{{ vm }}-a"}
    assert render_value(source, {"n": 5, "vm": "v"}) == {
        "argv": ["x", 5], "flag": True, "count": 3, "name": "v-a",
    }


def test_render_value_of_an_undefined_name_is_an_error() -> None:
    """A single undefined expression raises TemplateError instead of yielding Undefined."""
    with pytest.raises(TemplateError):
        render_value("{{ nope | default(undefined_too) }}", {})
    with pytest.raises(TemplateError):
        render_value("{{ nope }}", {})


def test_the_plan_filters() -> None:
    """bool, from_json, to_json and quote filters are available to plans."""
    context = {"s": "yes", "j": '{"a": [1]}', "v": {"b": 1, "a": 2}, "q": "a b"}
    assert render_value("{{ s | bool }}", context) is True
    assert render_value("{{ j | from_json }}", context) == {"a": [1]}
    assert render("{{ v | to_json }}", context) == '{"a": 2, "b": 1}'
    assert render("{{ q | quote }}", context) == "'a b'"


@pytest.mark.parametrize(("source", "text"), [
    ("{{ 3 | quote }}", "3"), ("{{ 2.5 | quote }}", "2.5"), ("{{ true | quote }}", "true"),
    ("{{ n | quote }}", "-1"), ("{{ [1, 'a b'] | quote }}", "'[1, '\"'\"'a b'\"'\"']'"),
])
def test_quote_takes_the_text_of_numbers_and_booleans(source: str, text: str) -> None:
    """`quote` on a number or a boolean quotes its text, as a `command` argument would get
    it, instead of failing at run time; shell templates insert them the same way."""
    assert render(source, {"n": -1}) == text
    assert render(source.replace(" | quote", ""), {"n": -1}, shell=True) == text


# -- the sandbox ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ x.__class__ | string }}",
        "{{ f.__globals__ | string }}",
        "{{ (f.__code__) | string }}",
        "{{ l.append(1) }}",
        "{{ d.update({'a': 1}) }}",
        "{{ ''.__class__ }}",
    ],
)
@pytest.mark.parametrize("renderer", [render, render_value])
def test_the_sandbox_refuses_unsafe_access(source: str, renderer: Any) -> None:
    """Dunder attributes and mutating methods are refused with a TemplateError."""
    context = {"x": 1, "f": lambda: 0, "l": [], "d": {}}
    with pytest.raises(TemplateError):
        renderer(source, context)
    assert context["l"] == [] and context["d"] == {}


def test_the_fast_path_cannot_reach_attributes_either() -> None:
    """`{{ x.__class__ }}` (the simple form) only walks mappings, so it is undefined."""
    with pytest.raises(TemplateError):
        render("{{ x.__class__ }}", {"x": 1})


# -- shell quoting -------------------------------------------------------------------------

NASTY = ["a b", "it's", "$(touch pwned)", "`id`", "a;b", "*", "", "new\nline", '"q"']


@pytest.mark.parametrize("value", NASTY)
def test_shell_mode_quotes_every_output(value: str) -> None:
    """With shell=True each `{{ }}` output is one shell word, whatever it contains."""
    script = render("printf '%s|' {{ v }} {{ n }}", {"v": value, "n": 3}, shell=True)
    assert shlex.split(script)[2:] == [value, "3"]


def test_shell_quoting_survives_a_real_shell(tmp_path: Any) -> None:
    """/bin/sh receives the values as single words and runs nothing they contain."""
    script = render("printf '%s\\n' {{ a }} {{ b }}", {"a": "$(touch pwned)", "b": "x y"},
                    shell=True)
    out = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines() == ["$(touch pwned)", "x y"]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("value", [*NASTY, "plain", 3])
def test_shell_mode_quotes_a_quote_filter_once(value: Any, tmp_path: Any) -> None:
    """`{{ v | quote }}`, as a plan written for Ansible's shell module has it, gives /bin/sh
    the value itself, as `{{ v }}` does, whatever it holds (it used to be quoted twice: a
    value with a space or a quote reached the program wrapped in quotes, `plain` did not)."""
    script = render("printf '%s\\n' {{ v | quote }} {{ v | quote | quote }} {{ v }}",
                    {"v": value}, shell=True)
    out = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out == f"{value}\n" * 3
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("value", [*NASTY, "plain", 3])
def test_shell_mode_quote_keeps_its_quotes_for_a_shell_run_inside_a_string(
        value: Any, tmp_path: Any) -> None:
    """Inside "..." or '...' that another shell runs again (`sh -c "..."`, `ssh host
    "..."`, `eval`), `{{ v | quote }}` keeps its quotes for that shell, which then gets
    the value itself and runs none of it. Before, `quote` was `{{ v }}` there: the inner
    shell got the bare value, and `a; touch pwned` ran."""
    script = render("sh -c \"printf '%s\\\\n' {{ v | quote }}\"; "
                    "eval \"printf '%s\\\\n' {{ v | quote }}\"", {"v": value}, shell=True)
    done = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert (done.returncode, done.stdout) == (0, f"{value}\n" * 2), (script, done.stderr)
    assert not (tmp_path / "pwned").exists()


# Where a plan may write `{{ v }}` in a script, and the line /bin/sh must print for it.
SHELL_PLACES = [
    ('printf "[%s]\\n" "{{ v }}"', "[{v}]"),  # the habit of Ansible's shell module
    ('printf "[%s]\\n" "pre {{ v }} post"', "[pre {v} post]"),
    ("printf '[%s]\\n' 'pre {{ v }} post'", "[pre {v} post]"),
    ("printf '[%s]\\n' pre{{ v }}post", "[pre{v}post]"),
    ("printf '[%s]\\n' \"$(printf '%s' {{ v }})\"", "[{v}]"),
    ("printf '[%s]\\n' \"$(printf '%s' \"{{ v }}\")\"", "[{v}]"),
    ("printf '[%s]\\n' \"${UNSET:-{{ v }}}\"", "[{v}]"),
    ("printf '[%s]\\n' `printf '%s' {{ v | quote }}`", None),  # one word, split again by ``
    ("printf '[%s]\\n' \"`printf '%s' {{ v }}`\"", "[{v}]"),
    ("cat <<EOF\n[{{ v }}]\nEOF", "[{v}]"),
    ("cat <<'EOF'\n[{{ v }}]\nEOF", "[{v}]"),
    ("cat <<-EOF\n\t[{{ v }}]\n\tEOF", "[{v}]"),
    ("printf '[%s]\\n' {{ v }} # {{ v | length }} characters", "[{v}]"),
    ("{% macro opt(x) %}--name={{ x }}{% endmacro %}printf '[%s]\\n' {{ opt(v) }}",
     "[--name={v}]"),
    ("{% set o %}--name={{ v }}{% endset %}printf '[%s]\\n' \"{{ o }}\"", "[--name={v}]"),
    ("printf '[%s]\\n' \\\\{{ v }}", "[\\{v}]"),
    ("cat <<EOF\n[\\\\{{ v }}]\nEOF", "[\\{v}]"),
    # a # in a word, or in a comment inside `...`, is no comment after the word or the `...`
    # (the value used to be inserted as it is there, as in a comment, and ran)
    ("printf '[%s]\\n' $(printf a)#{{ v }}", "[a#{v}]"),
    ("printf '[%s]\\n' $(( 1 ))#{{ v }}", "[1#{v}]"),
    ("printf '[%s]\\n' `printf a #b` {{ v }}", "[a]\n[{v}]"),
    # in ${...} a # is no comment and "..." opens anew, also inside "..." (the value used
    # to be inserted as it is after ${x%% #*}, and in single quotes in "${x:-"..."}": it ran)
    ("x='a #b'; printf '[%s]\\n' ${x%% #*} {{ v }}", "[a]\n[{v}]"),
    ("printf '[%s]\\n' \"${UNSET:-\"{{ v }}\"}\"", "[{v}]"),
    ("printf '[%s]\\n' ${UNSET:-{{ v }}}", "[{v}]"),
    ("printf '[%s]\\n' \"${UNSET:-${UNSET:-{{ v }}}}\"", "[{v}]"),
    # a here-document's line with a $(...) or `...` before the value (it used to be refused),
    # a ${...} (" in the value used to be taken out, } to end it), two here-documents
    ("cat <<EOF\n$(printf h) `printf i` [{{ v }}]\nEOF", "h i [{v}]"),
    ("cat <<EOF\n[${UNSET:-{{ v }}}]\nEOF", "[{v}]"),
    ("printf '[%s]\\n' \"\\${{ v }}\" \\${{ v }}", "[${v}]\n[${v}]"),
    ("((printf '[%s]\\n' {{ v }}) | cat)", "[{v}]"),  # two subshells, for dash and bash
    # $$ is the pid: the { after it is a character, not the start of ${...}
    ("printf '[%s]\\n' $${{ '{' }}U:-{{ v }}} | sed '1s/^.[0-9]*/[/'", "[{{U:-{v}}}]"),
    ("cat <<A; cat <<'B'\n[{{ v }}]\nA\n[{{ v }}]\nB", "[{v}]\n[{v}]"),
]
SHELLS = ["/bin/sh", *filter(None, [shutil.which("bash")])]  # bash: /bin/sh elsewhere
SHELL_VALUES = [*NASTY, "\\", "\\$(touch pwned)", "'\"'\"'", "#", "$HOME", "a\tb",
                "`; touch pwned; echo `", "\\`touch pwned\\`"]


@pytest.mark.parametrize(("source", "line"), SHELL_PLACES)
def test_shell_mode_quotes_a_value_for_where_it_stands(source: str, line: str | None,
                                                       tmp_path: Any) -> None:
    """Inside "...", '...', $(...), ${...} or a here-document, /bin/sh gets the value itself
    and runs none of it (a value in "..." or a here-document used to be inserted in single
    quotes, where `$(touch pwned)` ran and `a b` came out as 'a b'); so does bash."""
    for value in SHELL_VALUES:
        script = render(source, {"v": value}, shell=True)
        for sh in SHELLS:
            out = subprocess.run([sh, "-c", script], cwd=tmp_path, capture_output=True,
                                 text=True, check=True).stdout
            assert not (tmp_path / "pwned").exists(), (sh, source, value)
            if line is not None:
                assert out == line.format(v=value) + "\n", (sh, source, value)


# bash's own syntax, for where /bin/sh is bash: a here-string used to be taken for a
# here-document (its word a slot left in the script; the next lines' values not quoted, so
# they ran), a value in $'...' was inserted as in '...', where \' does not end it.
BASH_PLACES = [
    ("cat <<< {{ v }}", "{v}"),
    ('cat <<< "{{ v }}"', "{v}"),
    ("cat <<< x\nprintf '[%s]\\n' {{ v }}", "x\n[{v}]"),
    ("printf '[%s]\\n' $'x\\ty{{ v }}'", "[x\ty{v}]"),
    # a # right after a process substitution is in its word
    (": <(true)#{{ v }}\nprintf '[%s]\\n' {{ v }}", "[{v}]"),
]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(("source", "line"), BASH_PLACES)
def test_shell_mode_quotes_a_value_in_bash_syntax(source: str, line: str,
                                                  tmp_path: Any) -> None:
    """Bash runs none of a value after a here-string or in $'...', and prints it as it is."""
    for value in SHELL_VALUES:
        if "$'" in source and ("\\" in value or "'" in value):
            continue  # refused: see below
        script = render(source, {"v": value}, shell=True)
        out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout
        assert not (tmp_path / "pwned").exists(), (source, value)
        assert out == line.format(v=value) + "\n", (source, value)


# What a `{% set %}` block, a macro or a `{% call %}` block captures, with a filter applied
# to it: the filter used to see the slots standing for the values, so `upper` left `v` as
# it was, and `length` counted the slots.
CAPTURED_PLACES = [
    ("{% set x %}a {{ v }}{% endset %}printf '[%s]\\n' {{ x | upper }}", "[A {V}]"),
    ("{% set x | upper %}a {{ v }}{% endset %}printf '[%s]\\n' \"{{ x }}\"", "[A {V}]"),
    ("{% set x %}{{ v }}{% endset %}printf '[%s]\\n' {{ x | length == v | length }}",
     "[true]"),
    ("{% macro m(a) %}-{{ a }}{% endmacro %}printf '[%s]\\n' {{ m(v) | upper }}", "[-{V}]"),
    ("{% macro w() %}{{ caller() | upper }}{% endmacro %}"
     "printf '[%s]\\n' {% call w() %}b{{ v }}{% endcall %}", "[B{V}]"),
    ("{% macro w() %}{{ caller() }}{% endmacro %}"
     "printf '[%s]\\n' {% call w() %}b{{ v | upper }}{% endcall %}", "[b{V}]"),
    ("{% macro m(a) %}printf '[%s]\\n' {{ a }}{{ caller() }}{% endmacro %}"
     "{% call m(v | upper) %}{% endcall %}", "[{V}]"),
]


@pytest.mark.parametrize(("source", "line"), CAPTURED_PLACES)
def test_shell_mode_a_filter_of_a_captured_block_sees_the_values(
        source: str, line: str, tmp_path: Any) -> None:
    """A filter applied to a block's text applies to the values in it too; the result is
    still one quoted value for /bin/sh, which runs none of it."""
    for value in ["a b", "x; touch pwned", "$(touch pwned)", "'\"'"]:
        script = render(source, {"v": value}, shell=True)
        out = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout
        assert not (tmp_path / "pwned").exists(), (source, value)
        assert out == line.format(V=value.upper()) + "\n", (source, value, script)


def test_shell_mode_a_filter_block_takes_no_value_as_argument(tmp_path: Any) -> None:
    """A `{% filter %}` block writes into the script itself: a value given to its filter
    used to go in unquoted, and `x; touch pwned` ran. It is refused; constant arguments
    still work."""
    for source in ["{% filter replace('@H@', host) %}echo @H@{% endfilter %}",
                   "{% filter upper | replace('@H@', 'a' ~ host) %}echo @H@{% endfilter %}",
                   "{% filter indent(host) %}echo\necho{% endfilter %}",
                   "{% filter format(host) %}echo %s{% endfilter %}"]:
        with pytest.raises(TemplateError, match=r"a \{% filter %\} block in a shell script "
                           r"takes constant arguments only: `\w+` would put a value into "
                           r"the script unquoted"):
            render(source, {"host": "x; touch pwned"}, shell=True)
    script = render("{% filter replace('@', 'printf') %}  @ '[%s]\\n' {{ v }}{% endfilter %}",
                    {"v": "x; touch pwned"}, shell=True)
    out = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out == "[x; touch pwned]\n" and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("source", [
    "{% filter replace('0', '5') %}echo {{ v }}{% endfilter %}",
    "{% filter truncate(6, true, '', 0) %}echo {{ v }}{% endfilter %}",
])
def test_shell_mode_a_filter_block_that_breaks_a_value_place_is_an_error(source: str) -> None:
    """A filter block that edits the place where a value goes is a template error (it used
    to end planctl with an IndexError, exit 70)."""
    with pytest.raises(TemplateError, match=r"a \{% filter %\} block cut or changed the place"):
        render(source, {"v": "a b"}, shell=True)


@pytest.mark.parametrize(("source", "value", "error"), [
    ("echo $'{{ v }}'", "\\' ; touch pwned; echo '", "a value holding a backslash or ' cannot "
     "be inserted in $'...' (it would read differently in sh and in bash): write '...' or "
     "\"...\" instead, not \"\\\\' ; touch pwned; echo '\""),
    ("cat <<EOF\n{{ v }}\nEOF", "x\nEOF\ntouch pwned",
     "a value inserted in a here-document holds a line 'EOF', which would end it"),
    ("cat <<'EOF'\nsee {{ v }}\nEOF", "\nEOF", "a value inserted in a here-document holds "
     "a line 'EOF', which would end it"),
    ("cat <<EOF\n{{ v }}", "EOF\ntouch pwned", "a value inserted in a here-document holds a "
     "line 'EOF', which would end it"),  # a here-document the script leaves to its end
    ("true # {{ v }}", "\ntouch pwned", "a value inserted in a shell comment cannot hold a "
     "line break"),
    ("echo $(( {{ v }} + 1 ))", "a[$(touch pwned)]",
     "a value inserted in $((...)) must be an integer, not 'a[$(touch pwned)]'"),
    ('echo `echo "{{ v }}"`', "x", "a value cannot be inserted in quotes or nested `...` "
     "inside `...`: write $(...) instead"),
    ("echo `echo \\`echo {{ v }}\\``", "x", "a value cannot be inserted in quotes or nested "
     "`...` inside `...`: write $(...) instead"),
    ("cat <<EOF\n$(echo {{ v }})\nEOF", "x", "a value cannot be inserted in $(...) or `...` "
     "inside a here-document"),
    ("echo \\{{ v }}", "a; touch pwned", "a value cannot follow a backslash in a shell script"),
    ('echo "\\{{ v }}"', "$(touch pwned)", "a value cannot follow a backslash in a shell "
     "script"),
    ("cat <<EOF\n\\{{ v }}\nEOF", "$(touch pwned)", "a value cannot follow a backslash in a "
     "shell script"),
    # a $(...) in a here-document goes on to the next line: the value is in it
    ("cat <<EOF\n$(for h in a; do\necho {{ v }}\ndone)\nEOF", "a; touch pwned",
     "a value cannot be inserted in $(...) or `...` inside a here-document"),
    ("cat <<-EOF\n\t{{ v }}\n\tEOF", "\tx", "a value inserted in a <<- here-document cannot "
     "start a line with a tab, which the shell takes out: write << instead"),
    # bash's ((...)) evaluates a quoted value too, a[$(...)] running the command; dash reads
    # (( y = 1 << 2 )) as subshells with a here-document, bash as a shift
    ("(( i = {{ v }} + 1 ))", "a[$(touch pwned)]", "a value inserted in ((...)) must be an "
     "integer, not 'a[$(touch pwned)]'"),
    ("(( y = 1 << 2 ))\necho {{ v }}", "a; touch pwned", "a script with values cannot hold << "
     "in ((...)), which bash reads as a shift and sh (dash) as a here-document: write "
     "x=$((x << n)) instead"),
    # a value right after a $ (GitHub's ${{ x }}) used to be escaped as if it stood alone:
    # "${{ v }}" with (touch pwned) gave "$(touch pwned)", which ran
    ('echo "Price: ${{ v }}"', "(touch pwned)", "a value cannot follow a $ in a shell script, "
     "which would take the value's first characters for an expansion: write \\$ for a "
     "dollar sign"),
    ("cat <<EOF\n${{ v }}\nEOF", "(touch pwned)", "a value cannot follow a $ in a shell "
     "script, which would take the value's first characters for an expansion: write \\$ for "
     "a dollar sign"),
    ("echo $'\\{{ v }}'", "n", "a value cannot follow a backslash in a shell script"),
    # dash ends $'it\'s' at the \', bash goes on: the scripts that follow differ
    ("echo $'it\\'s {{ v }}'", "$(touch pwned)", "a value cannot follow a $'...' holding \\', "
     "where sh (dash) ends it and bash does not: write '...' or \"...\" instead"),
    ("echo $'it\\'s'; echo {{ v }}", "$(touch pwned)", "a value cannot follow a $'...' holding "
     "\\', where sh (dash) ends it and bash does not: write '...' or \"...\" instead"),
    ("cat <<{{ v }}\nx\nEOF", "EOF", "a value cannot be in a here-document's delimiter: write "
     "the delimiter in the script"),
    # dash reads $$ then {, bash pairs the { with a } and the quotes within: the value in
    # "...$${U:-...}..." was escaped as in ${...}, in quotes of its own, which ended the
    # "..." for dash, where a value with a line break then ran
    ('echo "x$${U:-{{ v }}}"', "\ntouch pwned\n", "a value cannot be inserted in $${...} "
     "inside \"...\" or a here-document, which sh and bash read differently: write $$ and "
     "{...} apart"),
    ("true \\\n#{{ v }}", "\ntouch pwned #", "a value inserted in a shell comment cannot hold "
     "a line break"),  # a backslash-newline is taken out before the # is read
])
def test_shell_mode_refuses_a_value_it_cannot_quote_where_it_stands(
        source: str, value: str, error: str) -> None:
    """Where no quoting keeps a value from being run, the rendering fails, saying why."""
    with pytest.raises(TemplateError) as caught:
        render(source, {"v": value}, shell=True)
    assert str(caught.value) == error


def test_shell_mode_numbers_in_arithmetic_and_multi_line_here_documents(tmp_path: Any) -> None:
    """An integer goes into $((...)) as it is; a value with line breaks into a
    here-document, line by line."""
    script = render("echo $(( {{ n }} + 1 )); cat <<EOF\n{{ text }}\nport=$(( {{ n }} + 4 ))\nEOF",
                    {"n": -3, "text": "a: 1\nb: $(x)"}, shell=True)
    out = subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out == "-2\na: 1\nb: $(x)\nport=1\n"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_shell_mode_an_integer_in_bash_arithmetic_command(tmp_path: Any) -> None:
    """An integer goes into bash's ((...)) as it is; a # after it starts a comment."""
    script = render("(( i = {{ n }} + 1 )) # {{ note }}\necho $i", {"n": 4, "note": "it's"},
                    shell=True)
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out == "5\n"


def test_without_shell_mode_values_are_not_quoted() -> None:
    """Only shell mode quotes; argv templates get the raw value."""
    assert render("echo {{ v }}", {"v": "a b"}) == "echo a b"
