"""Run planctl as ``python -m planner``."""

from .cli import run

run()
