"""Every plan under tests/plans/broken/ has one mistake, reported where its first line says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from planner.cli import main

BROKEN = Path(__file__).parent / "plans" / "broken"
PLANS = sorted(BROKEN.glob("*.yaml"))
_EXPECT = re.compile(r"# expect: (?P<line>\d+):(?P<column>\d+) (?P<text>.+)")


def test_the_corpus_is_large_enough() -> None:
    """At least 35 broken plans cover the mistakes users make."""
    assert len(PLANS) >= 35


@pytest.mark.parametrize("path", PLANS, ids=[p.stem for p in PLANS])
def test_a_broken_plan_is_reported_at_its_mistake(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`planctl validate` exits 3 with `FILE:LINE:COL: error: ...` naming the mistake."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    expect = _EXPECT.fullmatch(first)
    assert expect, f"{path.name}: first line must be `# expect: LINE:COL text`"
    file = str(path)
    code = main(["validate", file])
    out, err = capsys.readouterr()
    assert code == 3
    prefix = f"{file}:{expect['line']}:{expect['column']}: error:"
    lines = err.splitlines()
    assert any(ln.startswith(prefix) and expect["text"] in ln for ln in lines), err
    assert "Traceback" not in err + out
    assert "internal error" not in err
    assert "valid (" not in out
