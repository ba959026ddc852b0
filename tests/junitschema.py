"""The JUnit XML that Jenkins' strict schema (junit-4.xsd) accepts, as a checker for tests.

Most consumers (GitLab, Azure Pipelines, CircleCI, GitHub test-report actions) accept more
than this schema; a report that passes it is read by all of them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

# element -> (allowed attributes, required attributes, allowed children in their order)
_RULES: dict[str, tuple[set[str], set[str], list[str]]] = {
    "testsuites": ({"name", "time", "tests", "failures", "disabled", "errors"}, set(),
                   ["testsuite"]),
    "testsuite": ({"name", "tests", "failures", "errors", "time", "disabled", "skipped",
                   "timestamp", "hostname", "id", "package"}, {"name", "tests"},
                  ["properties", "testcase", "system-out", "system-err"]),
    "properties": (set(), set(), ["property"]),
    "property": ({"name", "value"}, {"name", "value"}, []),
    "testcase": ({"name", "assertions", "time", "classname", "status"}, {"name"},
                 ["skipped", "error", "failure", "system-out", "system-err"]),
    "failure": ({"type", "message"}, set(), []),
    "error": ({"type", "message"}, set(), []),
    "skipped": (set(), set(), []),
    "system-out": (set(), set(), []),
    "system-err": (set(), set(), []),
}
_ONCE = {("testsuite", "properties"), ("testsuite", "system-out"),
         ("testsuite", "system-err"), ("testcase", "skipped")}


def check(element: ET.Element, path: str = "") -> None:
    """Raise AssertionError naming the first place ``element`` breaks the schema."""
    where = f"{path}/{element.tag}"
    assert element.tag in _RULES, f"{where}: unknown element"
    allowed, required, children = _RULES[element.tag]
    assert set(element.attrib) <= allowed, f"{where}: attributes {set(element.attrib) - allowed}"
    assert required <= set(element.attrib), f"{where}: missing {required - set(element.attrib)}"
    order = [children.index(child.tag) if child.tag in children else -1 for child in element]
    assert -1 not in order, f"{where}: children {[c.tag for c in element]}"
    assert order == sorted(order), f"{where}: children out of order {[c.tag for c in element]}"
    for tag in {c.tag for c in element}:
        if (element.tag, tag) in _ONCE:
            assert len(element.findall(tag)) == 1, f"{where}: more than one {tag}"
    assert element.tag != "testsuites" or not path, f"{where}: only the root may be testsuites"
    for child in element:
        check(child, where)
