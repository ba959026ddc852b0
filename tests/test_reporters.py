"""Tests of planner.reporters: which view a run gets."""

from __future__ import annotations

import io

import pytest

from planner import cli
from planner.reporters import JSON, LIVE, PLAIN, choose_view


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("output", "tty", "environ", "view"), [
    ("json", True, {"TERM": "xterm"}, JSON),
    ("text", True, {"TERM": "xterm"}, LIVE),
    ("text", True, {}, LIVE),
    ("text", False, {"TERM": "xterm"}, PLAIN),
    ("text", True, {"TERM": "xterm", "NO_COLOR": "1"}, PLAIN),
    ("text", True, {"TERM": "xterm", "NO_COLOR": ""}, LIVE),  # no-color.org: empty is unset
    ("text", True, {"TERM": "dumb"}, PLAIN),
])
def test_view_by_output_terminal_and_environment(output: str, tty: bool,
                                                 environ: dict[str, str], view: str) -> None:
    stream = _Terminal() if tty else io.StringIO()
    assert choose_view(output, stream, environ) == view


@pytest.mark.parametrize(("value", "color"), [(None, True), ("", True), ("1", False)])
def test_diagnostics_follow_no_color_as_the_view_does(
        value: str | None, color: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Coloured diagnostics on a terminal turn off exactly when the live view does: when
    NO_COLOR is set and not empty (no-color.org)."""
    if value is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", value)
    assert cli._color(_Terminal()) is color
    assert (choose_view("text", _Terminal(), {"NO_COLOR": value or ""}) == LIVE) is color
