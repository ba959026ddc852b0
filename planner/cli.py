"""The planctl command line: parses arguments, prints, and chooses exit codes."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ._version import __version__
from .errors import Diagnostic, PlanctlError, PlanError, Severity, StateError, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .loader import LoadedPlan
    from .reporters import Reporting
    from .sqlite_store import SQLiteStore
    from .store import CommandRecord, RunRecord

__all__ = ["app", "main"]

EXIT_OK = 0
EXIT_INVALID = 3
EXIT_INTERNAL = 70  # a bug in planctl: traceback written to a file, never to the user

app = typer.Typer(
    name="planctl",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _color(stream: Any) -> bool:
    if not getattr(stream, "isatty", lambda: False)():
        return False
    from .reporters import no_color

    return not no_color(os.environ)


def _print_diagnostic(diagnostic: Diagnostic) -> None:
    text = str(diagnostic)
    if _color(sys.stderr):
        colour = "red" if diagnostic.severity is Severity.ERROR else "yellow"
        word = diagnostic.severity.value
        text = text.replace(f": {word}: ", ": " + typer.style(word, fg=colour, bold=True) + ": ", 1)
    typer.echo(text, err=True)


# apply and plan show this many of a plan's warnings (validate shows them all): a
# generated plan of thousands of commands must not bury the run under its warnings.
MAX_WARNINGS = 10


def _print_warnings(plan: Path, warnings: Sequence[Diagnostic]) -> None:
    for warning in warnings[:MAX_WARNINGS]:
        _print_diagnostic(warning)
    if len(warnings) > MAX_WARNINGS:
        typer.echo(f"{plan}: {len(warnings) - MAX_WARNINGS} more warnings; "
                   f"`planctl validate {plan}` lists them all", err=True)


DEFAULT_STATE = os.path.join(".planctl", "state.db")


def _fail(error: PlanctlError) -> NoReturn:
    if isinstance(error, PlanError):  # as validate prints it: one line per problem
        for diagnostic in error.diagnostics:
            _print_diagnostic(diagnostic)
    else:
        typer.echo(f"planctl: error: {error}", err=True)
    raise typer.Exit(error.exit_code)


def _variables(assignments: list[str] | None, files: list[Path] | None) -> dict[str, Any]:
    from .loader import GivenVars, TooLarge, parse_var, read_bounded
    from .source import MAX_PLAN_BYTES, read_document

    result = GivenVars()
    for file in files or []:
        try:
            raw = read_bounded(file, MAX_PLAN_BYTES)
        except OSError as exc:
            raise UsageError(f"--vars-file {file}: {exc.strerror}") from None
        except TooLarge as exc:
            raise UsageError(f"--vars-file {file}: {exc}") from None
        # No YAML document at all (empty, or comments only): not "the plan file is empty".
        blank = all(not line.strip() or line.lstrip().startswith(b"#")
                    for line in raw.splitlines())
        data = None if blank else _json_object(raw)
        if data is None and not blank:
            data = read_document(raw, str(file)).data
        if not isinstance(data, dict):  # a .tfvars or .env file: `who = "x"`, `who=x`
            got = "nothing" if data is None else "a list" if isinstance(data, list) \
                else f"the {type(data).__name__} {str(data)[:40]!r}"
            raise UsageError(f"--vars-file {file}: expected a mapping of names to values "
                             f"(YAML `name: value` lines or a JSON object), got {got}")
        result.update(data)
        result.origins.update(dict.fromkeys(data, f"--vars-file {file}:"))
    for assignment in assignments or []:
        name, value = parse_var(assignment)
        result[name] = value
        result.origins.pop(name, None)
    return result


class _NotJson(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise _NotJson("duplicate key")  # the YAML reader names it, located
    return dict(pairs)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(text)
    return value


def _not_json(text: str) -> Any:
    raise _NotJson(text)  # NaN, Infinity: not JSON proper


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """``raw`` as JSON when it is a JSON object (unique keys, finite numbers), else None:
    then it is read as YAML. JSON is YAML, but YAML 1.1 reads JSON's ``1e-05`` (what
    ``json.dump`` writes for 0.00001) as text, not a number."""
    import json

    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys, parse_float=_finite,
                          parse_constant=_not_json)
    except (ValueError, RecursionError):  # JSONDecodeError and _NotJson are ValueErrors
        return None
    return data if isinstance(data, dict) else None


VarOption = Annotated[
    list[str] | None,
    typer.Option("--var", "-e", metavar="NAME=VALUE",
                 help="Override a plan variable; VALUE is read as YAML (3, [a, b], text); "
                      "one starting with [ or { must be valid YAML. Repeatable."),
]
VarsFileOption = Annotated[
    list[Path] | None,
    typer.Option("--vars-file", metavar="FILE",
                 help="YAML or JSON mapping of variables; repeatable, applied before --var."),
]


def _load(plan: Path, var: list[str] | None, vars_file: list[Path] | None) -> LoadedPlan:
    from .loader import load_plan

    return load_plan(plan, variables=_variables(var, vars_file))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"planctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="Print the version and exit.")
    ] = False,
) -> None:
    """Run declarative plans that roll back everything a failed run changed.

    Exit codes: 0 succeeded · 1 failed and fully rolled back · 2 failed with leftovers ·
    3 invalid plan or usage · 4 entity locked by another run · 70 internal error (a bug in
    planctl; the traceback is written to a file named on stderr) · 130 interrupted.
    `plan` adds 10 (something would change, with --detailed-exitcode) and 11 (apply would
    fail).
    """


@app.command()
def validate(
    plans: Annotated[list[Path], typer.Argument(metavar="PLAN...", help="Plan files to check.")],
    var: VarOption = None,
    vars_file: VarsFileOption = None,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print problems only.")] = False,
) -> None:
    """Check plans without running anything: schema, templates, ids, needs, cycles.

    Every problem is reported at its place in the file, as FILE:LINE:COL (a --var the
    plan does not declare, as FILE), and every plan is checked. Exit 0 when all plans are
    valid, 3 otherwise.

    Examples:

        planctl validate plans/*.yaml plans/*/plan.yaml

        planctl validate plans/vm-from-template/plan.yaml --var vm=vm-7
    """
    from .loader import load_plan

    variables = _variables(var, vars_file)  # a bad --var or --vars-file: for every plan
    failed = False
    for plan in plans:
        try:
            loaded = load_plan(plan, variables=variables)
        except PlanError as error:
            failed = True
            for diagnostic in error.diagnostics:
                _print_diagnostic(diagnostic)
            continue
        except UsageError as error:  # a variable this plan does not declare
            failed = True
            _print_diagnostic(Diagnostic((), str(error), file=str(plan)))
            continue
        for warning in loaded.warnings:
            _print_diagnostic(warning)
        if strict and loaded.warnings:
            failed = True
            continue
        if not quiet:
            commands = len(loaded.graph.instances)
            warns = len(loaded.warnings)
            tail = f", {warns} warning{'s' if warns != 1 else ''}" if warns else ""
            typer.echo(f"{plan}: valid ({commands} command{'s' if commands != 1 else ''}, "
                       f"{len(loaded.graph)} step{'s' if len(loaded.graph) != 1 else ''}{tail})")
    if failed:
        raise typer.Exit(EXIT_INVALID)


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


@app.command()
def graph(
    plan: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan file.")],
    format: Annotated[GraphFormat, typer.Option("--format", "-f", help="Output format.")] = (
        GraphFormat.mermaid
    ),
    var: VarOption = None,
    vars_file: VarsFileOption = None,
) -> None:
    """Print the compiled DAG: loops expanded, parents as clusters around their children.

    Example:

    \b
        planctl graph plans/vm-from-template/plan.yaml --format dot | dot -Tsvg > plan.svg
    """
    from .render_graph import render_graph

    loaded = _load(plan, var, vars_file)
    typer.echo(render_graph(loaded.graph, format.value, loaded.plan), nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of plans (plugin actions included) for editors and linters.

    Example:

        planctl schema > plan.schema.json
    """
    import json

    from .schema import full_schema

    typer.echo(json.dumps(full_schema(), indent=2))


class PreviewFormat(StrEnum):
    text = "text"
    json = "json"


@app.command("plan")
def plan_command(
    plan: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan file to preview.")],
    var: VarOption = None,
    vars_file: VarsFileOption = None,
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", "-j", min=1, metavar="N",
                                 help="`exists` probes in flight at once, as apply's -j "
                                      "(default: the plan's, or 16).")
    ] = None,
    detailed_exitcode: Annotated[bool, typer.Option(
        "--detailed-exitcode",
        help="Exit 0 when nothing would change, 10 when something would.")] = False,
    output: Annotated[PreviewFormat, typer.Option(
        "--output", "-o", help="text: tables; json: one JSON document.")] = PreviewFormat.text,
    state: Annotated[str, typer.Option(
        "--state", "-s", metavar="PATH|URL", envvar="PLANCTL_STATE", show_default=True,
        help="SQLite state file whose entity locks to report, as apply takes it: a path, "
        "sqlite:///PATH or file:///PATH (read only; may not exist).")
    ] = str(DEFAULT_STATE),
) -> None:
    """Show what apply would do, and what its rollback would undo, asking only `exists`.

    Each command would run, or is UNCHANGED because its `exists` probe finds it present.
    Nothing else runs and nothing is written (no state store, no run, no lock). Values only
    apply produces, such as outputs of commands that would run first, show as
    "(known after apply)"; a probe that needs one is not asked, and a probe that apply
    would ask only after a command that changes something is "known after apply" too.
    What waits for a command that would fail is "not reached". Entities of the plan that
    another run holds locked in the state file are listed (apply would wait for them, up
    to its lock timeout, or exit 4); the file is only read.

    Exit codes: 0 the preview is complete (with --detailed-exitcode: nothing would change)
    · 10 something would change (only with --detailed-exitcode) · 11 apply would fail: a
    probe cannot answer or a template does not render · 3 invalid plan or usage. 10 and
    11 are not Terraform's 2, which in planctl means "leftovers remain".

    Examples:

        planctl plan plans/vm-from-template/plan.yaml --var vm=vm-7

        planctl plan plans/hello-world.yaml --detailed-exitcode

        planctl plan plans/hello-world.yaml -o json > preview.json
    """
    import json

    from .executor import resolve_secrets
    from .preview import format_preview, preview_plan

    loaded = _load(plan, var, vars_file)
    _print_warnings(plan, loaded.warnings)
    from .sqlite_store import read_locks

    # The same file apply would lock in (a URL too): StateError exits 3 like any unusable store.
    locks = read_locks(_state_file(_state_path(state)))
    restore = None
    if output is PreviewFormat.json:  # a probe's print must not break the JSON document
        from .reporters import divert_stdout

        restore = divert_stdout(sys.stdout, sys.stderr)[1]
    try:
        preview = preview_plan(loaded, secrets=resolve_secrets(loaded),
                               max_parallel=max_parallel, locks=locks)
    finally:
        if restore is not None:
            restore()
    if output is PreviewFormat.json:
        typer.echo(json.dumps(preview.to_dict(), indent=2))
    else:
        typer.echo(format_preview(preview), nl=False)
    raise typer.Exit(preview.exit_code(detailed=detailed_exitcode))


def _state_path(value: str | Path) -> Path:
    """--state: a path, or a URL of the SQLite file: ``sqlite:///relative.db``,
    ``sqlite:////absolute.db`` (as SQLAlchemy writes them) or ``file:///absolute.db``."""
    text = str(value)
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):(?=//)", text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    rest = text[match.end():]
    if scheme == "sqlite" and rest.startswith("///") and len(rest) > 3:
        return Path(rest[3:])
    if scheme == "file" and rest.startswith("//"):
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(text)
        if parts.netloc in ("", "localhost") and parts.path:
            return Path(unquote(parts.path))
    if scheme in ("sqlite", "file"):
        raise UsageError(f"--state {text}: expected sqlite:///RELATIVE/PATH, "
                         f"sqlite:////ABSOLUTE/PATH or file:///ABSOLUTE/PATH")
    raise UsageError(f"--state {text}: planctl keeps its state in SQLite: give a path, "
                     f"or a sqlite:// or file:// URL (not {scheme}:)")


StateOption = Annotated[
    Path,
    typer.Option("--state", "-s", metavar="PATH|URL", envvar="PLANCTL_STATE",
                 parser=_state_path, help="SQLite state file: a path, sqlite:///PATH or "
                 "file:///PATH.", show_default=True),
]


def _duration(text: str) -> float | None:
    """Seconds (``30``, ``2.5``) or a duration as plans write it (``5m``, ``1m30s``), 0 or
    more and finite; None for anything else (``nan``, ``-1``, a word, nothing)."""
    from .model import parse_duration

    text = text.strip()
    try:
        value = float(text) if _NUMBER.fullmatch(text) else parse_duration(text)
    except ValueError:
        return None
    return value if text and 0 <= value < float("inf") else None


def _seconds(text: str) -> float:
    """--lock-timeout: a ``_duration``."""
    value = _duration(text)
    if value is None:
        raise typer.BadParameter(f"{text!r} is not a number of seconds or a duration "
                                 f"(30, 2.5, 5m, 1m30s)")
    return value


_NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")


LockTimeoutOption = Annotated[
    float | None,
    typer.Option("--lock-timeout", metavar="SECONDS", parser=_seconds,
                 help="Wait this long for entities held by another run: seconds or a "
                      "duration (30, 5m; default: the plan's settings.lock_timeout, or 0: "
                      "fail at once with exit 4); Ctrl-C stops the wait, exit 130."),
]


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class _Invocation:
    """What the error paths of ``main`` must know about the command being run."""

    output = OutputFormat.text
    reporting: Reporting | None = None  # the run's listener: knows the run id once it exists
    state: Path | None = None  # the state store opened, named if it fails
    one_dash: str | None = None  # a `-state=x.db` on the command line, see _one_dash_option


def _remember_output(value: OutputFormat) -> OutputFormat:
    _Invocation.output = value
    return value


OutputOption = Annotated[
    OutputFormat,
    # Eager: read before the other options, so that one they refuse is reported as JSON.
    typer.Option("--output", "-o", envvar="PLANCTL_OUTPUT", callback=_remember_output,
                 is_eager=True,
                 help="text: a live tree on a terminal, else one plain line per event; "
                      "json: one JSON object per event on stdout (see docs/output.md)."),
]
JunitOption = Annotated[
    Path | None,
    typer.Option("--junit", metavar="FILE",
                 help="Also write the run as JUnit XML: a test case per command and per "
                      "inverse."),
]


def _reporting(output: OutputFormat, junit: Path | None, verb: str, loaded: LoadedPlan | None,
               runner: Any = None, ended: RunRecord | None = None,
               read_only: frozenset[str] = frozenset()) -> Reporting:
    """The listener of a run and the reports due at its end, as --output asks (``loaded``
    None: a run that ``ended``, see Reporting)."""
    from .reporters import Reporting

    reporting = _Invocation.reporting = Reporting(
        output=output.value, verb=verb, loaded=loaded, junit=junit, stdout=sys.stdout,
        stderr=sys.stderr, environ=os.environ,
        statuses=None if runner is None else runner.status,
        entities=None if runner is None else runner._entities, ended=ended,
        read_only=read_only)
    return reporting


def _json_error(error: BaseException, code: int, kind: str | None = None) -> None:
    """With --output json, what ended planctl before (or instead of) a run, as JSON."""
    if _Invocation.output is OutputFormat.json:
        from .ndjson import dumps, error_object

        executor = sys.modules.get("planner.executor")  # no secret in a message either
        redact = executor.redact_secrets if executor is not None else str
        reporting = _Invocation.reporting
        run_id = reporting.run_id if reporting is not None else None
        obj = error_object(error, code, kind=kind, run_id=run_id)
        # The texts masked, not the line: a secret `1` or `error` must not mask the keys
        # and numbers of the object, nor one JSON escapes (`"`, `é`) escape masking.
        obj["message"] = redact(obj["message"])
        obj["diagnostics"] = [{key: redact(value) if isinstance(value, str) else value
                               for key, value in item.items()} for item in obj["diagnostics"]]
        typer.echo(dumps(obj), nl=False)


def _check_environment() -> None:
    """The PLANCTL_* settings a run reads, checked before the state store is opened, so a
    bad one exits 3 with nothing written."""
    from .executor import lock_lease
    from .reporters import progress_interval

    progress_interval(os.environ)
    lock_lease()


def _check_junit(junit: Path | None) -> None:
    """A --junit file that could not be written is found before the run, not after it
    (exit 3, nothing run or written): the nearest existing folder on its path must be a
    folder planctl may write in (missing ones are made when the report is written)."""
    if junit is None or (junit.exists() and not junit.is_dir() and not junit.is_file()):
        return  # /dev/stdout, a named pipe: written as they are
    if junit.is_dir():
        raise UsageError(f"--junit {junit}: is a directory; name the report's file")
    folder = junit.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"--junit {junit}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--junit {junit}: cannot write in {folder}")


def _from_environment(param: str) -> str:
    """` (from $VAR)` when the option ``param`` took its value from its environment
    variable (a PLANCTL_STATE exported long ago), else nothing."""
    try:  # typer >= 0.29 carries its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer on top of click
        from click import get_current_context  # type: ignore[no-redef, import-not-found, unused-ignore]

    ctx = get_current_context(silent=True)
    if ctx is None or getattr(ctx.get_parameter_source(param), "name", "") != "ENVIRONMENT":
        return ""
    option = next((p for p in ctx.command.params if p.name == param), None)
    return f" (from ${option.envvar})" if option is not None and option.envvar else ""


def _state_file(path: Path) -> Path:
    """``path``, unless it is a directory (`--state .planctl`, not the file in it)."""
    if path.is_dir():
        inside = path / "state.db"
        raise StateError(f"{path}: a directory; --state names the SQLite file" + (
            f": --state {inside}" if inside.is_file() else ", e.g. .planctl/state.db"))
    return path


def _store(path: Path, *, must_exist: bool = False) -> SQLiteStore:
    from .sqlite_store import SQLiteStore, network_filesystem

    _state_file(path)
    if must_exist and not path.exists():
        raise UsageError(f"no state store at {path}{_from_environment('state')}: "
                         "nothing has run here yet (see --state)")
    _Invocation.state = path
    if (kind := network_filesystem(path)) is not None:
        typer.echo(f"planctl: warning: {path} is on a network file system ({kind}), where "
                   "SQLite's locks and WAL mode are not reliable: two runs may take the same "
                   "lock, or the store may be damaged; keep it on a local disk (--state)",
                   err=True)
    return SQLiteStore(path)


def _run_id(store: SQLiteStore, run: str | None, last: bool, verb: str | None = None) -> str:
    """The run named by RUN (a prefix will do) or --last. Without either: the most recent
    run for a command that only reads (``verb`` None), a usage error for one that acts."""
    if run is None and not last and verb is not None:
        raise UsageError(f"which run? give its id (see `planctl runs`) or --last: "
                         f"`planctl {verb} --last`")
    if last or run is None:
        if run is not None:
            raise UsageError("give a RUN id or --last, not both")
        found = store.last_run_id()
        if found is None:
            raise UsageError("no runs recorded in this state store")
        return found
    matches = store.run_ids(run)
    if run not in matches:
        if len(matches) == 1:
            return matches[0]
        if not matches:
            hint = ""
            if run.endswith((".yaml", ".yml")) or os.path.isfile(run):  # Terraform's destroy
                hint = (f"; {run} is a plan, not a run: give a run id (`planctl runs` lists "
                        "them) or --last")
            raise UsageError(f"unknown run {run!r}{hint}")
        shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise UsageError(f"run id prefix {run!r} is ambiguous: it matches {len(matches)} runs "
                         f"({shown})")
    return run


@contextlib.contextmanager
def _reports_before_signals(runner: Any) -> Iterator[None]:
    """Around a run of the command line and its reports. Before the run begins, SIGINT and
    SIGTERM act as they always do; while it goes on, its own handlers take them (it stops
    resumably). Once it has ended, one that comes while its summary and reports (--junit,
    GITHUB_STEP_SUMMARY) are written is held until they are, and planctl then exits as the
    run ended: a CI cancelling a job sends SIGINT, then SIGTERM seconds later, and the
    report of the stopped run is what the job's page shows."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[str] = []
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        if runner.wake is not None:  # its flow began, so it ended: its handlers are gone
            held.append(signal.Signals(signum).name)
            return
        prior = previous[signum]
        if callable(prior):  # Python's own SIGINT handler: KeyboardInterrupt
            prior(signum, frame)
        elif prior == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for number, prior in previous.items():
            signal.signal(number, prior)
        if held:
            names = " and ".join(sorted(set(held)))
            typer.echo(f"planctl: {names} came after the run ended: its summary and "
                       f"reports were written first", err=True)


class _Interrupted(Exception):
    """A KeyboardInterrupt out of a command (Ctrl-C before a run, or a signal while a run
    waited for another run's locks), carried past typer, which would turn it into a silent
    exit 130, to ``main``."""


def _one_dash_option(group: Any, args: list[str]) -> str | None:
    """What to say about a long option written with one dash, as Terraform's are
    (`-state=x.db`, `-var who=x`): click reads it as short options with a value
    (`-s tate=x.db`), which would run with a state file named `tate=x.db`."""
    name = next((arg for arg in args if not arg.startswith("-")), None)
    sub = getattr(group, "commands", {}).get(name)
    if name is None:  # `planctl -version`
        sub, name, args = group, "", ["", *args]
    elif sub is None:
        return None
    longs = {"help"}
    valued: set[str] = set()
    for param in sub.params:
        opts = [*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())]
        if getattr(param, "param_type_name", "") != "option":
            continue
        longs.update(opt[2:] for opt in opts if opt.startswith("--"))
        if not getattr(param, "is_flag", False) and not getattr(param, "count", False):
            valued.update(opts)
    rest = args[args.index(name) + 1:]
    for index, arg in enumerate(rest):
        if arg == "--":
            break
        if index and rest[index - 1] in valued:
            continue  # the value of the option before it
        word = arg[1:].partition("=")[0]
        if arg.startswith("-") and not arg.startswith("--") and word in longs:
            return f"{arg}: long options take two dashes: -{arg}"
    return None


def _interruptible(callback: Any) -> Any:
    import functools

    @functools.wraps(callback)
    def command(*args: Any, **kwargs: Any) -> Any:
        if _Invocation.one_dash is not None:
            raise UsageError(_Invocation.one_dash)
        try:
            with _full_collections_paused():
                return callback(*args, **kwargs)
        except KeyboardInterrupt as stop:
            raise _Interrupted(str(stop)) from None

    return command


@contextlib.contextmanager
def _full_collections_paused() -> Iterator[None]:
    """No automatic full garbage collection while a command runs. What a command builds
    (a recorded run's plan, records, events, rows to print) lives to its end, so each
    full collection scans more and frees nothing, and the heap grows fast enough to set
    one off every few hundred thousand objects: 1-2 s of `rollback --dry-run` or
    `resume -o json` of a 100,000-command run. The young generations, where a command's
    few reference cycles die, still collect; a run pauses full collections itself too."""
    import gc

    saved = gc.get_threshold()
    if saved[0]:  # 0: collection is off already
        gc.set_threshold(saved[0], saved[1], 1 << 30)
    try:
        yield
    finally:
        if saved[0]:
            gc.set_threshold(*saved)


@app.command()
def apply(
    plan: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan file to run.")],
    var: VarOption = None,
    vars_file: VarsFileOption = None,
    state: StateOption = Path(DEFAULT_STATE),
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", "-j", min=1, metavar="N",
                                 help="Steps in flight at once (default: the plan's, or 16).")
    ] = None,
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback",
                           help="On failure, stop and leave everything for `planctl rollback`.")
    ] = False,
    lock_timeout: LockTimeoutOption = None,
    cancel_inflight: Annotated[
        bool, typer.Option("--cancel-inflight",
                           help="On failure, cancel polled async tasks that declare `cancel` "
                                "instead of waiting for them to end.")
    ] = False,
    output: OutputOption = OutputFormat.text,
    junit: JunitOption = None,
) -> None:
    """Run a plan: commands concurrently, async tasks polled, every step recorded.

    Exit codes: 0 succeeded · 1 failed and fully rolled back · 2 failed with leftovers ·
    3 invalid plan or usage · 4 entity locked · 70 internal error (a bug; traceback in a
    file named on stderr) · 130 interrupted (resumable).

    Example:

        planctl apply plans/vm-from-template/plan.yaml --var vm=vm-7 -j 8
    """
    from .executor import ApplyOptions, Runner, execute, resolve_secrets

    loaded = _load(plan, var, vars_file)
    _print_warnings(plan, loaded.warnings)
    secrets = resolve_secrets(loaded)
    _check_environment()
    _check_junit(junit)
    store = _store(state)
    reporter = _reporting(output, junit, "apply", loaded)
    options = ApplyOptions(max_parallel=max_parallel,
                           on_failure="stop" if no_rollback else None,
                           lock_timeout=lock_timeout, cancel_inflight=cancel_inflight)
    try:
        runner = Runner(loaded, store, options=options, listener=reporter, secrets=secrets)
        with _reports_before_signals(runner):
            outcome = execute(runner, runner.apply)
            reporter.finish(store, outcome, runner.changed)
    finally:
        reporter.close()
        store.close()
    raise typer.Exit(outcome.exit_code)


@app.command()
def rollback(
    run: Annotated[str | None, typer.Argument(metavar="RUN", help="Run id (a prefix will do).")]
    = None,
    last: Annotated[bool, typer.Option("--last", help="The most recent run.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what would be undone, in order; asks only `exists`.")] = False,
    gone: Annotated[list[str] | None, typer.Option(
        "--gone", metavar="COMMAND",
        help="A leftover you removed by hand (repeatable): recorded REVERT_SKIPPED without "
             "its inverse, so what it kept can be undone.")] = None,
    state: StateOption = Path(DEFAULT_STATE),
    lock_timeout: LockTimeoutOption = None,
    output: OutputOption = OutputFormat.text,
    junit: JunitOption = None,
) -> None:
    """Undo what a recorded run changed, from the plan as it was when that run started.

    Works on any run: succeeded, stopped (--no-rollback, on_failure: stop), interrupted,
    or partly rolled back (it picks up where the last rollback stopped). A second call
    does nothing. Exit 0 when nothing is left, 2 when leftovers remain.

    Examples:

        planctl rollback --last --dry-run

        planctl rollback 20261122-073521 --gone 'clone[disk1]'
    """
    from .executor import execute
    from .report import format_rollback_plan

    _check_environment()
    _check_junit(junit)
    store = _store(state, must_exist=True)
    reporter: Reporting | None = None
    try:
        run_id = _run_id(store, run, last, "rollback")
        runner, reporter = _recorded_runner(store, run_id, lock_timeout, output, junit,
                                            "rollback", gone=tuple(gone or ()))
        runner.check_gone()
        if runner.nothing_to_undo():
            record = store.get_run(run_id)
            reporter.nothing_to_do(store, run_id, f"run {run_id} "
                                   f"({record.status if record else '?'}): nothing to undo")
            raise typer.Exit(0)
        if dry_run:
            import time

            from .executor import live_holder, lock_lease, still_running

            now = time.time()
            holder = live_holder(store, run_id, now, lock_lease())
            if holder is not None:
                reporter.warn(f"{still_running(holder, now)}: a rollback now would exit 4; "
                              f"below is what it would undo as things stand")
            reporter.say(format_rollback_plan(runner))
            raise typer.Exit(0)
        with _reports_before_signals(runner):
            outcome = execute(runner, runner.rollback)
            code = 0 if outcome.status == "ROLLED_BACK" else outcome.exit_code
            reporter.finish(store, outcome, runner.changed, code)
    finally:
        if reporter is not None:
            reporter.close()
        store.close()
    raise typer.Exit(code)


@app.command()
def resume(
    run: Annotated[str | None, typer.Argument(metavar="RUN", help="Run id (a prefix will do).")]
    = None,
    last: Annotated[bool, typer.Option("--last", help="The most recent run.")] = False,
    state: StateOption = Path(DEFAULT_STATE),
    lock_timeout: LockTimeoutOption = None,
    output: OutputOption = OutputFormat.text,
    junit: JunitOption = None,
) -> None:
    """Continue a run after a crash, kill -9 or Ctrl-C: re-attach to its async tasks, settle
    steps left STARTING with `exists`, and continue its rollback if one was under way.

    Example:

        planctl resume --last
    """
    from .executor import execute, load_run
    from .reporters import LIVE, choose_view, reports_due

    _check_environment()
    _check_junit(junit)
    store = _store(state, must_exist=True)
    reporter: Reporting | None = None
    try:
        run_id = _run_id(store, run, last, "resume")
        record = store.get_run(run_id)
        if record is not None and record.status not in ("RUNNING", "INTERRUPTED",
                                                        "ROLLING_BACK"):
            message = (f"run {run_id} ended {record.status}: nothing to resume"
                       + (f" (undo it with: planctl rollback {run_id})"
                          if record.status in ("STOPPED", "ROLLBACK_FAILED") else ""))
            if not reports_due(output.value, junit, os.environ):
                typer.echo(message)  # all there is to say: the plan need not be loaded
                raise typer.Exit(0)
            if choose_view(output.value, sys.stdout, os.environ) == LIVE:
                # The live tree is drawn from the plan.
                reporter = _reporting(output, junit, "resume", load_run(store, run_id))
            else:  # reports of the run as recorded: its plan need not be loaded
                reporter = _reporting(output, junit, "resume", None, ended=record,
                                      read_only=_read_only_commands(store, record))
            reporter.nothing_to_do(store, run_id, message)
            raise typer.Exit(0)
        runner, reporter = _recorded_runner(store, run_id, lock_timeout, output, junit,
                                            "resume")
        with _reports_before_signals(runner):
            outcome = execute(runner, runner.resume)
            # The end of a rollback `planctl rollback` began exits as that command does.
            code = 0 if outcome.status == "ROLLED_BACK" and runner.rollback_asked() \
                else outcome.exit_code
            reporter.finish(store, outcome, runner.changed, code)
    finally:
        if reporter is not None:
            reporter.close()
        store.close()
    raise typer.Exit(code)


@app.command()
def locks(state: StateOption = Path(DEFAULT_STATE)) -> None:
    """List entity locks: which run holds what, since when, and whether it is alive.

    Example:

        planctl locks
    """
    import time

    from .executor import RUN_KEY, lock_lease, lock_state

    store = _store(state, must_exist=True)
    try:
        # The lock a run holds on itself is how its executor shows it is alive, not an
        # entity: not listed.
        held = [lock for lock in store.list_locks() if not lock.entity.startswith(RUN_KEY)]
        runs = {run_id: store.get_run(run_id, plan=False)
                for run_id in {lock.run_id for lock in held}}
    finally:
        store.close()
    if not held:
        typer.echo("no locks held")
        return
    now, lease = time.time(), lock_lease()
    from .report import _table, _when

    def status(run_id: str) -> str | None:
        record = runs[run_id]
        return record.status if record is not None else None

    rows = [[lock.entity, lock.run_id, f"{lock.host}:{lock.pid}", _when(lock.acquired_at),
             lock_state(lock, now, lease, status(lock.run_id))] for lock in held]
    typer.echo(_table(["ENTITY", "RUN", "HOLDER", "SINCE", "HEARTBEAT"], rows), nl=False)


@app.command()
def unlock(
    entity: Annotated[str, typer.Argument(metavar="ENTITY", help="Entity to release.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Release even when the holding run is alive: its planctl then "
                        "stops (exit 130), its run resumable.")] = False,
    state: StateOption = Path(DEFAULT_STATE),
) -> None:
    """Release an entity lock left by a dead run (its leftovers become yours to handle).

    Example:

        planctl unlock image/vm-42-disk0
    """
    import time

    from .executor import lock_alive, lock_lease

    store = _store(state, must_exist=True)
    try:
        held = {lock.entity: lock for lock in store.list_locks()}
        lock = held.get(entity)
        if lock is None:
            raise UsageError(f"entity {entity} is not locked")
        alive = lock_alive(lock, time.time(), lock_lease())
        if alive and not force:
            raise UsageError(f"entity {entity} is held by run {lock.run_id}, which is alive "
                             f"(pid {lock.pid} on {lock.host}); use --force to release anyway")
        store.unlock(entity)
    finally:
        store.close()
    typer.echo(f"unlocked {entity} (was held by run {lock.run_id})" + (
        f"; its planctl (pid {lock.pid} on {lock.host}) stops at its next heartbeat, and "
        f"`planctl resume {lock.run_id}` continues it" if alive else ""))


def _recorded_runner(store: SQLiteStore, run_id: str, lock_timeout: float | None,
                     output: OutputFormat, junit: Path | None, verb: str,
                     gone: tuple[str, ...] = ()) -> tuple[Any, Reporting]:
    """The Runner of a recorded run (its plan loaded once), reporting as --output asks."""
    from .executor import ApplyOptions, Runner, load_run, resolve_secrets

    loaded = load_run(store, run_id)
    runner = Runner.from_store(store, run_id, loaded=loaded,
                               secrets=resolve_secrets(loaded),
                               options=ApplyOptions(lock_timeout=lock_timeout, gone=gone))
    # The view starts from the statuses as recorded; the runner reports from now on.
    runner.listener = reporter = _reporting(output, junit, verb, loaded, runner)
    return runner, reporter


@app.command()
def runs(
    state: StateOption = Path(DEFAULT_STATE),
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, metavar="N",
                                              help="How many runs.")] = 20,
) -> None:
    """List recorded runs, newest first.

    Example:

        planctl runs -n 5
    """
    from .report import format_runs

    store = _store(state, must_exist=True)
    try:
        # SQLite's LIMIT takes 64 bits: `-n 99999999999999999999` means every run.
        typer.echo(format_runs(store.list_runs(min(limit, 2**63 - 1), plans=False)),
                   nl=False)
    finally:
        store.close()


@app.command()
def prune(
    keep: Annotated[int | None, typer.Option(
        "--keep", min=0, metavar="N",
        help="Keep the N most recent runs, whatever they are; look only at older ones.")]
    = None,
    older_than: Annotated[str | None, typer.Option(
        "--older-than", metavar="AGE",
        help="Look only at runs started more than AGE ago (a duration: 30d, 12h, 90m).")]
    = None,
    include_succeeded: Annotated[bool, typer.Option(
        "--include-succeeded",
        help="Also forget SUCCEEDED runs whose changes are still in place: planctl can no "
             "longer roll them back.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be removed; remove nothing.")] = False,
    state: StateOption = Path(DEFAULT_STATE),
) -> None:
    """Forget old runs that nothing more can be done with: ended, holding no lock, with
    nothing for `planctl rollback` to undo (rolled back, or read-only).

    A run with leftovers (STOPPED, ROLLBACK_FAILED) or one that did not end is always
    kept; a SUCCEEDED run that changed something only with --include-succeeded. Say
    which runs to look at with --keep, --older-than, or both. The file does not shrink:
    SQLite reuses the space for later runs (`sqlite3 FILE VACUUM`, when no run is going,
    gives it back).

    Examples:

        planctl prune --keep 50

        planctl prune --older-than 30d --include-succeeded --dry-run
    """
    import time

    from .prune import judge, remove

    if keep is None and older_than is None:
        raise UsageError("say which runs to look at: --keep N (all but the newest N), "
                         "--older-than AGE, or both")
    age = None if older_than is None else _duration(older_than)
    if older_than is not None and age is None:
        raise UsageError(f"--older-than {older_than!r}: not a duration (30d, 12h, 90m, "
                         f"1h30m, or seconds)")
    store = _store(state, must_exist=True)
    try:
        verdicts = judge(store, keep=keep, older_than=age, now=time.time(),
                         succeeded=include_succeeded)
        gone = set() if dry_run else set(remove(store, verdicts))
    finally:
        store.close()
    removing = "would remove" if dry_run else "removed"
    done = {v.run.id for v in verdicts if v.remove and (dry_run or v.run.id in gone)}
    for v in verdicts:
        note = v.note if v.run.id in done or not v.remove \
            else "it changed meanwhile (a rollback began?)"
        typer.echo(f"{removing if v.run.id in done else 'kept':<{len(removing)}}  "
                   f"{v.run.id}  {v.run.status:<15} {v.run.plan_name}"
                   f"{': ' + note if note else ''}")
    count = len(done)
    typer.echo(f"{removing} {count} run{'' if count == 1 else 's'} of {len(verdicts)} "
               f"looked at" + ("; the newest run was not looked at" if keep == 1 else
                               f"; the newest {keep} were not looked at" if keep else ""))


@app.command()
def show(
    run: Annotated[str | None, typer.Argument(metavar="RUN", help="Run id (a prefix will do).")]
    = None,
    command: Annotated[str | None, typer.Argument(
        metavar="COMMAND", help="A command of the run, e.g. 'clone[disk1]': show it in full.")]
    = None,
    last: Annotated[bool, typer.Option("--last", help="The most recent run.")] = False,
    state: StateOption = Path(DEFAULT_STATE),
) -> None:
    """Show a run (without RUN: the most recent one): its commands as a tree with status,
    times, execution reason, attempts. With COMMAND, that command in full: its rendered
    parameters, result (stdout, stderr, rc...), outputs, error, async tasks and history.

    Examples:

        planctl show --last

        planctl show --last 'clone[disk1]'
    """
    from .report import format_command, format_run

    store = _store(state, must_exist=True)
    try:
        if last and command is None and run is not None:
            # `show --last COMMAND`: the one argument is the command, unless it is a run.
            if store.get_run(run) is not None:
                raise UsageError("give a RUN id or --last, not both")
            run, command = None, run
        try:
            run_id = _run_id(store, run, last)
        except UsageError as error:
            raise UsageError(f"{error}{_command_hint(store, run)}") from None
        record = store.get_run(run_id)
        assert record is not None  # _run_id found it
        if command is None:
            typer.echo(format_run(record, store.get_commands(run_id, details=False),
                                  store.get_tasks(run_id), _names(store, run_id)), nl=False)
            return
        found = store.get_commands(run_id, command).get(command)
        if found is None:
            raise UsageError(_unknown_command(run_id, command,
                                              store.get_commands(run_id, details=False)))
        # Its own events, and the run's first (its history is timed from there).
        first = store.get_events(run_id, limit=1)
        history = [e for e in store.get_events(run_id, command) if e not in first]
        typer.echo(format_command(record, found, store.get_tasks(run_id), first + history,
                                  _names(store, run_id).get(command),
                                  read_only=_read_only(record, found.spec_id)), nl=False)
    finally:
        store.close()


def _command_hint(store: SQLiteStore, word: str | None) -> str:
    """When RUN is no run but a command of the most recent one, how to show that."""
    import shlex

    last = store.last_run_id()
    if word is None or last is None or not store.get_commands(last, word):
        return ""
    return f"; to show command {word} of the most recent run: " \
           f"`planctl show --last {shlex.quote(word)}`"


def _unknown_command(run_id: str, word: str, commands: Mapping[str, CommandRecord]) -> str:
    """Why ``word`` names no command of the run, and what it may have meant."""
    from .schema import did_you_mean

    instances = [c.id for c in commands.values() if c.spec_id == word]
    if instances:
        return (f"{word}: a loop in run {run_id}; give one of its commands: "
                f"{', '.join(instances)}")
    hint = did_you_mean(word, commands) or f"`planctl show {run_id}` lists them"
    return f"{word}: run {run_id} has no such command ({hint})"


@app.command()
def events(
    run: Annotated[str | None, typer.Argument(metavar="RUN", help="Run id (a prefix will do).")]
    = None,
    last: Annotated[bool, typer.Option("--last", help="The most recent run.")] = False,
    command: Annotated[str | None, typer.Option(
        "--command", "-c", metavar="ID", help="Only the events of this command.")] = None,
    state: StateOption = Path(DEFAULT_STATE),
) -> None:
    """Print a run's recorded event log (without RUN: the most recent run's), one JSON
    object per line, as `apply --output json` streamed it: every invocation of the run
    (apply, rollback, resume) in order, without their `outcome` objects.

    Examples:

        planctl events --last > events.ndjson

        planctl events --last --command 'clone[disk1]'
    """
    from .ndjson import JsonReporter
    from .tally import read_events

    store = _store(state, must_exist=True)
    try:
        run_id = _run_id(store, run, last)
        record = store.get_run(run_id, plan=False)  # its plan's name only
        assert record is not None  # _run_id found it
        if command is not None and not store.get_commands(run_id, command):
            every = store.get_commands(run_id, details=False)
            raise UsageError(f"--command {_unknown_command(run_id, command, every)}")
        # The same reporter as `--output json`, fed the log from its start, so each object
        # is the one the run streamed (entities of task events learnt from command events,
        # which a command's own events include).
        # Written through stdout's buffer, not flushed line by line: 200,000 lines were
        # 200,000 system calls.
        reporter = JsonReporter(sys.stdout, plan=record.plan_name,
                                commands=store.command_count(run_id), batch=True)
        for event in read_events(store, run_id, command, page=_EVENTS_PAGE):
            reporter(event)
        reporter.sink.flush()
    finally:
        store.close()


# Events read at once by `planctl events`: its memory stays flat however long the log.
_EVENTS_PAGE = 5000


def _names(store: SQLiteStore, run_id: str) -> dict[str, str]:
    """The commands' `name`s, from the run's plan snapshot (none if it no longer loads:
    the rest of `show` comes from the store alone)."""
    from .executor import load_run
    from .graph import command_names

    if not _declares_names(store.get_run(run_id)):
        return {}  # loading a big plan (seconds) to find no name is not worth it
    try:
        loaded = load_run(store, run_id)
    except PlanctlError:
        return {}
    return command_names(loaded.plan, loaded.graph, run_id)


def _snapshot_commands(run: RunRecord | None) -> Iterator[Mapping[str, Any]]:
    """The commands of the run's plan snapshot, children included, as written."""
    if run is None or not isinstance(run.snapshot, Mapping):
        return
    todo = [run.snapshot.get("commands")]
    while todo:
        commands = todo.pop()
        for command in commands if isinstance(commands, list) else ():
            if isinstance(command, Mapping):
                yield command
                todo.append(command.get("children"))


def _read_only(run: RunRecord, spec_id: str) -> bool:
    """Whether the run's plan snapshot declares command ``spec_id`` `changes: false`."""
    return any(command.get("id") == spec_id and command.get("changes") is False
               for command in _snapshot_commands(run))


def _read_only_commands(store: SQLiteStore, run: RunRecord) -> frozenset[str]:
    """The run's commands its plan snapshot declares `changes: false` (as the loaded plan
    would say: ids are unique across the plan, children included)."""
    specs = {command.get("id") for command in _snapshot_commands(run)
             if command.get("changes") is False}
    if not specs:
        return frozenset()  # most plans: the run's commands need not be read
    return frozenset(iid for iid, command in store.get_commands(run.id, details=False).items()
                     if command.spec_id in specs)


def _declares_names(run: RunRecord | None) -> bool:
    """Whether the run's plan snapshot gives any command a `name`."""
    return any("name" in command for command in _snapshot_commands(run))


def _store_failure(exc: BaseException) -> tuple[StateError, int] | None:
    """SQLite saying, in the middle of a command, that the store cannot be used (damaged,
    locked for too long, full): the user's error to fix, and its exit code. A run under
    way stopped as if killed: 130, resumable, naming the run."""
    from .sqlite_store import store_failure

    problem = store_failure(exc)
    if problem is None:
        return None
    reporting = _Invocation.reporting
    run_id = reporting.run_id if reporting is not None else None
    where = f"{_Invocation.state}: the state store failed: {problem}"
    if run_id is None:
        return StateError(where), StateError.exit_code
    return StateError(f"{where}; run {run_id} stopped where its last commit left it: "
                      f"`planctl resume {run_id}` once the store can be written"), 130


def _internal_error(exc: BaseException) -> int:
    executor = sys.modules.get("planner.executor")  # secrets resolved so far stay out
    redact = executor.redact_secrets if executor is not None else str
    fd, path = tempfile.mkstemp(prefix="planctl-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"planctl {__version__}\nargv: {sys.argv}\n\n")
        handle.write(redact("".join(traceback.format_exception(exc))))
    typer.echo(f"planctl: internal error: {type(exc).__name__}: {redact(str(exc))}\n"
               f"planctl: the traceback is in {path}; please report it", err=True)
    return EXIT_INTERNAL


# click's names of number types, as a message says what was expected instead.
_NUMBER_WORDS = {"int range": "a whole number", "integer range": "a whole number",
                 "int": "a whole number", "integer": "a whole number",
                 "float range": "a number", "float": "a number"}


def _usage_message(exc: Exception) -> str:
    """click's complaint about the command line, as one line that names the option (or
    argument) it is about, as the user can write it: ``-j/--max-parallel: ...``."""
    # click is imported by ``main`` (typer's copy or the package), hence getattr.
    kind_of_error = type(exc).__name__
    if kind_of_error == "NoSuchOption":
        possibilities = getattr(exc, "possibilities", None)
        return f"no such option: {getattr(exc, 'option_name', '?')}" + (
            f"; did you mean {' or '.join(sorted(possibilities))}?" if possibilities else "")
    param = getattr(exc, "param", None)
    if param is None or kind_of_error != "BadParameter":  # missing, extra argument, ...
        format_message = getattr(exc, "format_message", None)
        text = str(format_message() if format_message is not None else exc)
        text = text[:1].lower() + text[1:] if text[1:2].islower() else text
        return text.removesuffix(".")
    message = str(getattr(exc, "message", exc)).removesuffix(".")
    kind = getattr(param.type, "name", "")
    if kind in _NUMBER_WORDS:
        message = message.replace(f"is not a valid {kind}", f"is not {_NUMBER_WORDS[kind]}")
    opts = getattr(param, "opts", None)
    if getattr(param, "param_type_name", "") == "option" and opts:
        name = "/".join(sorted(opts, key=lambda opt: opt.startswith("--")))
    else:
        name = str(param.human_readable_name)
    ctx = getattr(exc, "ctx", None)
    source = ctx.get_parameter_source(param.name) if ctx is not None else None
    if getattr(source, "name", None) == "ENVIRONMENT" and param.envvar:
        name += f" (from ${param.envvar})"
    return f"{name}: {message}"


def _interrupted(exc: BaseException) -> int:
    """Ctrl-C or SIGTERM before a run began (or instead of one: while waiting for another
    run's locks): nothing recorded, exit 130."""
    why = str(exc) if isinstance(exc, KeyboardInterrupt | _Interrupted) else ""
    _json_error(KeyboardInterrupt(why), 130, "interrupted")
    typer.echo(f"planctl: interrupted{': ' + why if why else ''}", err=True)
    return 130


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops planctl as Ctrl-C does (exit 130, `planctl: interrupted`, the JSON
    error object) before a run began too (reading the plan and its --vars-file, resolving
    secrets), not by the signal's default action; a run takes both signals with its own
    handlers meanwhile. Left alone when something else already handles SIGTERM."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL):
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:  # typer >= 0.29 carries its own copy of click
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover - older typer on top of click
        from click import exceptions as click  # type: ignore[no-redef, import-not-found, unused-ignore]

    command = typer.main.get_command(app)
    for sub in getattr(command, "commands", {}).values():
        sub.callback = _interruptible(sub.callback)
    _Invocation.output = OutputFormat.text
    _Invocation.reporting = None
    _Invocation.state = None
    _Invocation.one_dash = _one_dash_option(command, sys.argv[1:] if argv is None else argv)
    try:
        # Without standalone mode, click returns the code of an Exit raised by a command.
        with _sigterm_interrupts():
            code = command.main(args=argv, prog_name="planctl", standalone_mode=False)
    except typer.Exit as done:
        return int(done.exit_code)
    except (typer.Abort, KeyboardInterrupt, _Interrupted) as exc:
        return _interrupted(exc)
    except click.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
            typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
            return EXIT_OK
        message = _Invocation.one_dash or _usage_message(exc)
        _json_error(UsageError(message), EXIT_INVALID, "usage")
        ctx = getattr(exc, "ctx", None)
        see = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"planctl: error: {message}{see}", err=True)
        return EXIT_INVALID
    except PlanctlError as error:
        _json_error(error, error.exit_code)
        try:
            _fail(error)
        except typer.Exit as done:
            return int(done.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no bare traceback
        failure = _store_failure(exc)
        if failure is not None:
            unusable, code = failure
            _json_error(unusable, code)
            typer.echo(f"planctl: error: {unusable}", err=True)
            return code
        code = _internal_error(exc)
        _json_error(exc, code, "internal")
        return code
    return code if isinstance(code, int) else EXIT_OK


def run() -> NoReturn:
    """The console script: ``main``, then a fast exit.

    Everything is done when ``main`` returns (stores are closed in the commands'
    ``finally``), so the interpreter's teardown, which frees a large plan object by
    object (~0.1 s for 10,000 commands), is skipped: the streams are flushed, then
    ``os._exit``.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away (`planctl ... | head`): nothing more can be said there;
        # None: started with that descriptor closed (`>&-`), nothing was said there.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    os._exit(code)
