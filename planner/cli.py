"""The planctl command line: parses arguments, prints, and chooses exit codes."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ._version import __version__
from .errors import Diagnostic, PlanctlError, PlanError, Severity, UsageError

if TYPE_CHECKING:
    from .loader import LoadedPlan

__all__ = ["app", "main"]

EXIT_OK = 0
EXIT_INVALID = 3
EXIT_INTERNAL = 70  # a bug in planctl: traceback written to a file, never to the user

app = typer.Typer(
    name="planctl",
    help="Run declarative plans that roll back everything a failed run changed.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _color(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def _print_diagnostic(diagnostic: Diagnostic) -> None:
    text = str(diagnostic)
    if _color(sys.stderr):
        colour = "red" if diagnostic.severity is Severity.ERROR else "yellow"
        word = diagnostic.severity.value
        text = text.replace(f": {word}: ", ": " + typer.style(word, fg=colour, bold=True) + ": ", 1)
    typer.echo(text, err=True)


def _fail(error: PlanctlError) -> NoReturn:
    if isinstance(error, PlanError):
        for diagnostic in error.diagnostics:
            _print_diagnostic(diagnostic)
        count = sum(d.severity is Severity.ERROR for d in error.diagnostics)
        typer.echo(f"{count} error{'s' if count != 1 else ''}", err=True)
    else:
        typer.echo(f"planctl: error: {error}", err=True)
    raise typer.Exit(error.exit_code)


def _variables(assignments: list[str] | None, files: list[Path] | None) -> dict[str, Any]:
    from .loader import parse_var
    from .source import read_document

    result: dict[str, Any] = {}
    for file in files or []:
        try:
            data = read_document(file.read_bytes(), str(file)).data
        except OSError as exc:
            raise UsageError(f"--vars-file {file}: {exc.strerror}") from None
        if not isinstance(data, dict):
            raise UsageError(f"--vars-file {file}: expected a mapping of names to values")
        result.update(data)
    for assignment in assignments or []:
        name, value = parse_var(assignment)
        result[name] = value
    return result


VarOption = Annotated[
    list[str] | None,
    typer.Option("--var", "-e", metavar="NAME=VALUE",
                 help="Override a plan variable; VALUE is read as YAML (3, [a, b], text)."),
]
VarsFileOption = Annotated[
    list[Path] | None,
    typer.Option("--vars-file", metavar="FILE", help="YAML or JSON mapping of variables."),
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
    3 invalid plan or usage · 4 entity locked by another run · 130 interrupted.
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

    Every problem is reported at its place in the file, as FILE:LINE:COL. Exit 0 when
    all plans are valid, 3 otherwise.

    Example:

        planctl validate plans/*.yaml --var vm=vm-7
    """
    failed = False
    for plan in plans:
        try:
            loaded = _load(plan, var, vars_file)
        except PlanError as error:
            failed = True
            for diagnostic in error.diagnostics:
                _print_diagnostic(diagnostic)
            continue
        except UsageError as error:
            _fail(error)
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
                       f"{len(loaded.graph)} steps{tail})")
    if failed:
        raise typer.Exit(EXIT_INVALID)


class GraphFormat(str, Enum):
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

        planctl graph plans/vm-from-template/plan.yaml --format dot | dot -Tsvg > plan.svg
    """
    from .render_graph import render_graph

    loaded = _load(plan, var, vars_file)
    typer.echo(render_graph(loaded.graph, format.value), nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of plans (plugin actions included) for editors and linters.

    Example:

        planctl schema > plan.schema.json
    """
    import json

    from .schema import full_schema

    typer.echo(json.dumps(full_schema(), indent=2))


def _internal_error(exc: BaseException) -> int:
    fd, path = tempfile.mkstemp(prefix="planctl-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"planctl {__version__}\nargv: {sys.argv}\n\n")
        handle.write("".join(traceback.format_exception(exc)))
    typer.echo(f"planctl: internal error: {type(exc).__name__}: {exc}\n"
               f"planctl: the traceback is in {path}; please report it", err=True)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:  # typer >= 0.29 carries its own copy of click
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover - older typer on top of click
        from click import exceptions as click  # type: ignore[no-redef]

    command = typer.main.get_command(app)
    try:
        # Without standalone mode, click returns the code of an Exit raised by a command.
        code = command.main(args=argv, prog_name="planctl", standalone_mode=False)
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        typer.echo("planctl: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            typer.echo(exc.ctx.get_help())
            return EXIT_OK
        exc.show()
        return EXIT_INVALID
    except click.ClickException as exc:
        exc.show()
        return EXIT_INVALID
    except PlanctlError as error:
        try:
            _fail(error)
        except typer.Exit as done:
            return int(done.exit_code)
    except KeyboardInterrupt:
        typer.echo("planctl: interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no bare traceback
        return _internal_error(exc)
    return code if isinstance(code, int) else EXIT_OK


def run() -> NoReturn:
    sys.exit(main())
