"""The peers' side of compare.py: their virtualenv, and Ansible's playbooks.

The peers (OpenStack TaskFlow, ansible-core) and matplotlib are installed into a
virtualenv of their own, made from the interpreter that runs planctl, so that all tools
run on the same Python and none of them becomes a dependency of the project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".peers-venv"

# TaskFlow's SQLite persistence needs SQLAlchemy and alembic (its "database" extra also
# pulls in MySQL and PostgreSQL drivers, which nothing here uses).
PACKAGES = ("taskflow", "ansible-core", "SQLAlchemy", "alembic", "matplotlib")
_IMPORTS = "import taskflow, ansible, sqlalchemy, alembic, matplotlib"


class PeersUnavailable(Exception):
    """The peers' virtualenv could not be made or completed."""


def ensure_venv(path: Path) -> Path:
    """The peers venv's python: reused when it imports every peer, else (re)installed."""
    python = path / "bin" / "python"
    if python.exists() and _run([str(python), "-c", _IMPORTS]).returncode == 0:
        return python
    if not python.exists():
        print(f"peers: creating the virtualenv {path}", flush=True)
        made = _run([sys.executable, "-m", "venv", str(path)])
        if made.returncode != 0:
            raise PeersUnavailable(f"python -m venv {path} failed: {made.stdout[-2000:]}")
    print(f"peers: pip install {' '.join(PACKAGES)} (into {path})", flush=True)
    done = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 *PACKAGES])
    if done.returncode != 0 or _run([str(python), "-c", _IMPORTS]).returncode != 0:
        raise PeersUnavailable(f"pip install into {path} failed: {done.stdout[-2000:]}")
    return python


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=False, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False)


def versions(python: Path) -> dict[str, str]:
    """Installed versions of the peers (and of SQLite as the venv's python sees it)."""
    code = ("import importlib.metadata as m, json, sqlite3; print(json.dumps("
            f"{{p: m.version(p) for p in {list(PACKAGES)!r}}} | "
            "{'sqlite': sqlite3.sqlite_version}))")
    done = _run([str(python), "-c", code])
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


def clean_env() -> dict[str, str]:
    """A peer's environment: this one without PYTHONPATH or Ansible settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("ANSIBLE_") and k != "PYTHONPATH"}


def ansible_env(work: Path) -> dict[str, str]:
    """Ansible's environment: its homes and temporary files inside ``work``, no colour."""
    env = clean_env()
    env.update({
        "ANSIBLE_HOME": str(work / "home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "home" / "tmp"),
        "ANSIBLE_REMOTE_TMP": str(work / "remote"),
        "ANSIBLE_ASYNC_DIR": str(work / "async"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    })
    return env


_PLAY = ["- hosts: localhost", "  connection: local", "  gather_facts: false", "  tasks:"]


def playbook(workload: str, n: int, seconds: float = 0.5, interval: float = 0.05) -> str:
    """The Ansible counterpart of planctl's plan for ``workload`` (see workloads.py)."""
    lines = list(_PLAY)
    if workload == "W1":
        # N debug tasks: an action that runs on the controller, like a no-op `python` call.
        for i in range(n):
            lines += [f"    - name: c{i}", f"      debug: {{msg: c{i}}}"]
    elif workload == "W2":
        # N jobs started in the background (async, poll 0), then each one polled until done.
        lines += [
            "    - name: start jobs",
            f"      command: sleep {seconds}",
            "      async: 10",
            "      poll: 0",
            f'      loop: "{{{{ range({n}) | list }}}}"',
            "      register: jobs",
            "    - name: wait for jobs",
            "      async_status:",
            '        jid: "{{ item.ansible_job_id }}"',
            '      loop: "{{ jobs.results }}"',
            "      register: polled",
            "      until: polled.finished",
            f"      retries: {int(10 / interval)}",
            f"      delay: {interval}",
        ]
    elif workload == "W3":
        # Ansible has no inverse operations: a block whose rescue undoes the N - 1 by hand.
        lines.append("    - block:")
        for i in range(n - 1):
            lines += [f"        - name: c{i}", f"          debug: {{msg: c{i}}}"]
        lines += [f"        - name: c{n - 1}", "          fail: {msg: planned failure}",
                  "      rescue:"]
        for i in reversed(range(n - 1)):
            lines += [f"        - name: undo c{i}", f"          debug: {{msg: undo c{i}}}"]
    elif workload == "L":
        # The counterpart of workloads.big_plan: templated argv, checked by --syntax-check.
        lines[1:1] = ["  vars:", "    greeting: hello", "    target: /tmp/planctl-bench"]
        for i in range(n):
            lines += [
                f"    - name: c{i}",
                "      command:",
                f'        argv: [touch, "{{{{ target }}}}/c{i}-{{{{ greeting }}}}"]',
                f'        creates: "{{{{ target }}}}/c{i}-{{{{ greeting }}}}"',
            ]
    else:
        raise ValueError(f"unknown workload {workload!r}")
    return "\n".join(lines) + "\n"
