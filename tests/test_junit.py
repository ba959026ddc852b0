"""Tests of planner.junit: the JUnit XML of a finished run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import junitschema
import pytest
from finishedrun import FAILED_AND_REVERTED, command, make_finished

from planner.junit import junit_xml, write_junit


def test_cases_per_command_and_inverse_with_failures_and_skips() -> None:
    """Forward failures carry their message (control codes escaped, so the XML parses);
    passed cases have only their output; a skipped inverse and a never-run command are
    skipped; the counts on both levels agree."""
    root = ET.fromstring(junit_xml(FAILED_AND_REVERTED))
    junitschema.check(root)
    suite = root.find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["vm", "vm (inverse)", "img[a]", "img[a] (inverse)", "img[b]",
                           "img[b] (inverse)", "report"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"),
            suite.get("errors")) == ("7", "2", "2", "0")
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("7", "2", "0")
    failure = cases["img[b]"].find("failure")
    assert failure is not None
    assert failure.get("message") == "exit status 1: \\x1b[31mno\\x1b[0m"
    assert cases["img[a]"].get("time") == "0.700"
    assert [e.tag for e in cases["img[a] (inverse)"]] == ["system-out"]
    assert cases["img[b] (inverse)"].find("skipped") is not None
    report = cases["report"].find("skipped")
    assert report is not None and (report.text or "").startswith("not run")
    assert suite.get("time") == "1.900"


def test_leftovers_of_a_failed_rollback_are_failing_inverses() -> None:
    """A command left over without an inverse ever run gets a failing `(inverse)` case."""
    finished = make_finished(
        {"a": ("SUCCEEDED", True, None)}, [], status="ROLLBACK_FAILED", exit_code=2,
        leftovers=[{"command": "a", "entity": None, "status": "SUCCEEDED",
                    "reason": "no inverse declared"}])
    root = ET.fromstring(junit_xml(finished))
    junitschema.check(root)
    suite = root.find("testsuite")
    assert suite is not None
    failure = suite.find("testcase[@name='a (inverse)']/failure")
    assert failure is not None
    assert (failure.get("type"), failure.get("message")) == \
        ("LEFTOVER", "leftover: no inverse declared")


# Characters XML 1.0 cannot carry, even as character references.
NOT_XML = "\x00\x0b\udcff\ufffe\uffff"


def test_characters_xml_cannot_carry_are_escaped_everywhere(tmp_path: Path) -> None:
    """An error, an entity, a command id or a plan name holding characters XML 1.0 cannot
    carry (C0 controls, lone surrogates, U+FFFE, U+FFFF) is written with them escaped:
    the file parses and passes the schema, and says what it could."""
    finished = make_finished(
        {f"img[{NOT_XML}]": ("FAILED", None, None)},
        [(0.0, "command", f"img[{NOT_XML}]", command("STARTING")),
         (0.1, "command", f"img[{NOT_XML}]", command("FAILED", error=f"bad {NOT_XML}!"))],
        status="ROLLED_BACK")
    path = tmp_path / "junit.xml"
    write_junit(path, finished, plan=f"plan {NOT_XML}")
    root = ET.parse(path).getroot()
    junitschema.check(root)
    escaped = "\\x00\\x0b\\udcff\\ufffe\\uffff"
    (case,) = root.iter("testcase")
    assert case.get("name") == f"img[{escaped}]"
    assert case.get("classname") == f"plan {escaped}"
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == f"bad {escaped}!"


def test_write_replaces_the_file_whole(tmp_path: Path) -> None:
    """The report replaces an older one; missing folders are made; a file in the way of
    one is an OSError to report."""
    path = tmp_path / "junit.xml"
    path.write_text("old")
    write_junit(path, FAILED_AND_REVERTED)
    assert ET.parse(path).getroot().tag == "testsuites"
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]
    write_junit(tmp_path / "missing" / "junit.xml", FAILED_AND_REVERTED)
    assert ET.parse(tmp_path / "missing" / "junit.xml").getroot().tag == "testsuites"
    with pytest.raises(OSError):
        write_junit(path / "junit.xml", FAILED_AND_REVERTED)


def test_the_schema_checker_rejects_what_jenkins_rejects() -> None:
    """The checker the tests rely on is not a no-op: a `message` on `skipped`, a `skipped`
    count on `testsuites` and children out of order are refused."""
    bad = [
        '<testsuites><testsuite name="p" tests="1"><testcase name="a">'
        '<skipped message="why"/></testcase></testsuite></testsuites>',
        '<testsuites skipped="1"><testsuite name="p" tests="0"/></testsuites>',
        '<testsuites><testsuite name="p" tests="1"><testcase name="a"><system-out/>'
        '<failure/></testcase></testsuite></testsuites>',
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            junitschema.check(ET.fromstring(text))
    junitschema.check(ET.fromstring('<testsuites><testsuite name="p" tests="1">'
                                    '<testcase name="a"><skipped>why</skipped></testcase>'
                                    '</testsuite></testsuites>'))
