"""`--junit FILE`: a run as JUnit XML, a test case per command and per inverse, for CI."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .status import CommandStatus, RunStatus
from .tally import FinishedRun, History, one_line, plural

__all__ = ["INVERSE_SUFFIX", "junit_xml", "write_junit"]

S = CommandStatus
INVERSE_SUFFIX = " (inverse)"


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def _case(suite: ET.Element, classname: str, name: str, seconds: float | None) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=_text(classname), name=_text(name),
                         time=_seconds(seconds))


def _text(value: object) -> str:
    """Every text of the report: XML 1.0 cannot carry control characters, lone surrogates,
    U+FFFE or U+FFFF, even as character references; ``one_line`` escapes them."""
    return one_line(value)


def _failure(case: ET.Element, message: str, kind: str, details: str = "") -> None:
    element = ET.SubElement(case, "failure", message=_text(message), type=_text(kind))
    element.text = _text(details or message)


def _skipped(case: ET.Element, message: str) -> None:
    # The reason as text, not as a `message` attribute: the strict Jenkins (junit-4) schema
    # allows none, and Jenkins shows the text when the attribute is missing.
    ET.SubElement(case, "skipped").text = _text(message)


def _output(case: ET.Element, lines: list[str]) -> None:
    if lines:
        ET.SubElement(case, "system-out").text = "\n".join(_text(line) for line in lines)


def _forward(suite: ET.Element, classname: str, history: History, interrupted: bool) -> None:
    case = _case(suite, classname, history.command_id, history.forward_time)
    lines = [f"status: {history.forward or history.status}"]
    if history.entity:
        lines.append(f"entity: {history.entity}")
    if history.handle:
        lines.append(f"async task: {history.handle} ({plural(history.polls, 'poll')})")
    if history.retries:
        lines.append(f"retried: {history.retries} time{'s' if history.retries != 1 else ''}")
    lines.extend(f"warning: {note}" for note in history.notes)
    forward = history.forward
    if forward in (S.FAILED, S.UNKNOWN):
        message = history.forward_error or f"ended {forward}"
        _failure(case, message, forward or "FAILED")
    elif forward == S.SKIPPED:
        _skipped(case, "skipped: `when` was false, or its parent was skipped")
    elif forward is None:
        _skipped(case, "did not finish: the run was interrupted (resumable)"
                 if interrupted and history.started is not None
                 else "not run: the run stopped before it")
    elif forward == S.UNCHANGED:
        lines.append("nothing to do: already present, or no `run`")
    _output(case, lines)


def _inverse(suite: ET.Element, classname: str, history: History,
             leftover: Mapping[str, Any] | None, interrupted: bool) -> None:
    case = _case(suite, classname, history.command_id + INVERSE_SUFFIX, history.inverse_time)
    lines = [f"status: {history.inverse or history.status}", "execution_reason: ROLLBACK_FLOW"]
    if history.entity:
        lines.append(f"entity: {history.entity}")
    if history.inverse_runs > 1:
        lines.append(f"inverse started {history.inverse_runs} times (rollback resumed)")
    if history.inverse_retries:
        lines.append(f"retried: {history.inverse_retries} times")
    if history.inverse == S.REVERT_FAILED:
        _failure(case, history.inverse_error or "inverse failed", S.REVERT_FAILED)
    elif leftover is not None:
        _failure(case, f"leftover: {leftover.get('reason')}", "LEFTOVER")
    elif history.inverse == S.REVERT_SKIPPED:  # the reason recorded: `--gone`
        _skipped(case, f"nothing to undo: {history.inverse_error or '`exists` says it is absent'}")
    elif history.inverse is None and interrupted:
        _skipped(case, "did not finish: the rollback was interrupted (resumable)")
    _output(case, lines)


def junit_xml(finished: FinishedRun, *, plan: str | None = None) -> bytes:
    """The JUnit XML document of a run (UTF-8, with declaration).

    One ``testsuite`` per run; a ``testcase`` per command (classname: the plan, name: the
    command id) for its forward part, and one more, named ``ID (inverse)``, per command
    whose inverse a rollback ran, skipped or could not run.
    """
    classname = plan or finished.plan
    interrupted = finished.status == RunStatus.INTERRUPTED
    rolled = finished.status in (RunStatus.ROLLED_BACK, RunStatus.ROLLBACK_FAILED)
    left = {str(item.get("command")): item for item in finished.leftovers} if rolled else {}
    suite = ET.Element("testsuite", name=_text(classname), id=_text(finished.run_id))
    properties = ET.SubElement(suite, "properties")
    for name, value in (("run_id", finished.run_id), ("plan_file", finished.plan_file),
                        ("status", finished.status), ("exit_code", str(finished.exit_code))):
        ET.SubElement(properties, "property", name=name, value=_text(value))
    for history in finished.histories.values():
        _forward(suite, classname, history, interrupted)
        leftover = left.get(history.command_id)
        if history.inverse_started is not None or leftover is not None:
            _inverse(suite, classname, history, leftover, interrupted)
    cases = suite.findall("testcase")
    failures = sum(c.find("failure") is not None for c in cases)
    skipped = sum(c.find("skipped") is not None for c in cases)
    started = time.gmtime(finished.first_event)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0",
              "skipped": str(skipped), "time": _seconds(finished.span)}
    suite.attrib.update(counts)
    # The Jenkins schema wants a timestamp without a zone: it is UTC.
    suite.set("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S", started))
    suite.set("hostname", _text(finished.host or socket.gethostname()))
    # `testsuites` has no `skipped` attribute in the Jenkins schema.
    root = ET.Element("testsuites", {"name": "planctl",
                                     **{k: v for k, v in counts.items() if k != "skipped"}})
    root.append(suite)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'.encode()


def write_junit(path: Path, finished: FinishedRun, *, plan: str | None = None) -> None:
    """Write the report whole or not at all: a CI step may read it while planctl writes."""
    data = junit_xml(finished, plan=plan)
    if path.exists() and not path.is_file():  # /dev/stdout, a named pipe
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)  # reports/junit.xml, as pytest does
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
