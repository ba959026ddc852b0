"""The CI examples (examples/ci): their shape, and their planctl steps run for real.

Each pipeline's shell steps run in order, as the CI system would run them (bash, stop at
the first failure), in a temporary checkout of the example plan with `planctl` from this
interpreter; then the files they keep as artifacts must exist and be what they claim.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from planner.cli import main as planctl_main

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"


def load(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((CI / name).read_text(encoding="utf-8"))
    return data


def github() -> dict[Any, Any]:
    return load("github-actions.yml")


def gitlab() -> dict[Any, Any]:
    return load("gitlab-ci.yml")


def github_scripts(job: Mapping[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def gitlab_scripts(job: Mapping[str, Any], default: Mapping[str, Any]) -> list[str]:
    return [*default.get("before_script", []), *job["script"]]


def planctl_lines(scripts: list[str]) -> Iterator[str]:
    for script in scripts:
        for line in script.splitlines():
            if line.strip().startswith("planctl "):
                yield line.strip()


# -- shape -----------------------------------------------------------------------------------


def test_github_workflow_validates_applies_and_keeps_report_and_state() -> None:
    """The workflow validates, applies with --junit and --output json, then always uploads
    the report and the hidden .planctl/ directory and publishes the JUnit report."""
    flow = github()
    triggers = flow["on"] if "on" in flow else flow[True]  # YAML 1.1: a bare `on` is true
    assert {"pull_request", "push"} <= set(triggers)
    apply = flow["jobs"]["apply"]
    uses = [step.get("uses", "") for step in apply["steps"]]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    lines = list(planctl_lines(github_scripts(apply)))
    assert any(line.startswith("planctl validate") for line in lines)
    applies = [line for line in lines if line.startswith("planctl apply")]
    assert len(applies) == 1
    assert "--junit report.xml" in applies[0] and "--output json" in applies[0]
    upload = next(s for s in apply["steps"]
                  if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].split()
    assert "report.xml" in paths and ".planctl/" in paths
    assert upload["with"]["include-hidden-files"] is True
    junit = next(s for s in apply["steps"] if "junit" in s.get("uses", ""))
    assert junit["if"] == "always()" and junit["with"]["report_paths"] == "report.xml"
    assert apply["permissions"]["checks"] == "write"
    assert flow["env"]["PLANCTL_STATE"] == ".planctl/state.db"


def test_gitlab_job_validates_applies_and_keeps_report_and_state() -> None:
    """The pipeline validates, applies with --junit, and keeps the JUnit report (as a
    report) and .planctl/ as artifacts even when apply fails."""
    pipeline = gitlab()
    default = pipeline["default"]
    assert any(line.startswith("planctl validate")
               for line in planctl_lines(gitlab_scripts(pipeline["validate"], default)))
    apply = pipeline["apply"]
    lines = list(planctl_lines(gitlab_scripts(apply, default)))
    applies = [line for line in lines if line.startswith("planctl apply")]
    assert len(applies) == 1
    assert "--junit report.xml" in applies[0] and "--output json" in applies[0]
    artifacts = apply["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == "report.xml"
    assert ".planctl/" in artifacts["paths"]
    assert pipeline["variables"]["PLANCTL_STATE"] == ".planctl/state.db"


@pytest.mark.parametrize("line", sorted({
    *planctl_lines([s for job in github()["jobs"].values() for s in github_scripts(job)]),
    *planctl_lines([s for name, job in gitlab().items() if isinstance(job, dict)
                    and "script" in job for s in job["script"]]),
}))
def test_every_planctl_line_parses_as_a_planctl_command(line: str) -> None:
    """Each planctl invocation of the examples names a real command and real options
    (checked by asking that command for --help with the same arguments)."""
    words = shlex.split(line.split(">")[0].split("||")[0])
    assert words[0] == "planctl"
    args = [w if not w.startswith("$") else "plan.yaml" for w in words[1:]]
    assert planctl_main([*args, "--help"]) == 0


# -- the steps, run ----------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A checkout holding the example plan, and the environment of a CI job."""
    shutil.copytree(ROOT / "plans" / "vm-from-template", tmp_path / "plans" / "vm-from-template",
                    ignore=shutil.ignore_patterns(".store", "__pycache__"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "planctl"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m planner "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANCTL_", "GITHUB_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT), NO_COLOR="1",
               GITHUB_OUTPUT=str(tmp_path / "github-output"),
               GITHUB_STEP_SUMMARY=str(tmp_path / "step-summary.md"))
    return tmp_path, env


def run_steps(cwd: Path, env: Mapping[str, str], scripts: list[str]) -> None:
    """Run each step's script with bash -e, skipping the package installation."""
    for script in scripts:
        kept = "\n".join(line for line in script.splitlines()
                         if not line.strip().startswith("pip install"))
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", kept], cwd=cwd,
                              env=dict(env), capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"{script}\n{done.stdout}{done.stderr}"


def check_artifacts(root: Path) -> None:
    """What the apply step keeps: a JUnit report, JSON events, the state file."""
    suite = ET.parse(root / "report.xml").getroot()
    cases = [c.get("name") for c in suite.iter("testcase")]
    assert {"add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]", "start_vm"} <= set(cases)
    events = [json.loads(line) for line in
              (root / "events.ndjson").read_text().splitlines() if line.strip()]
    assert events and all(isinstance(e, dict) for e in events)
    assert (root / ".planctl" / "state.db").is_file()


def test_github_workflow_steps_run(checkout: tuple[Path, dict[str, str]]) -> None:
    """The plan job previews (changes=true: exit 10 accepted), the apply job applies and
    leaves the files it uploads, and the step summary."""
    root, env = checkout
    flow = github()
    env = {**env, **{k: str(v) for k, v in flow["env"].items() if "${{" not in str(v)}}
    run_steps(root, env, github_scripts(flow["jobs"]["plan"]))
    assert (root / "github-output").read_text() == "changes=true\n"
    assert not (root / ".planctl").exists()  # the preview writes no state
    run_steps(root, env, github_scripts(flow["jobs"]["apply"]))
    check_artifacts(root)
    assert "add-vm-from-template" in (root / "step-summary.md").read_text()


def test_gitlab_pipeline_steps_run(checkout: tuple[Path, dict[str, str]]) -> None:
    """The validate job (with its preview) and the apply job run and leave the artifacts."""
    root, env = checkout
    pipeline = gitlab()
    env = {**env, **{k: str(v) for k, v in pipeline["variables"].items()}}
    default = pipeline["default"]
    for name in ("validate", "apply"):
        run_steps(root, env, ["\n".join(gitlab_scripts(pipeline[name], default))])
    check_artifacts(root)
