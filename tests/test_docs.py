"""Runs every example of docs/*.md, and validates the plans of README.md, as a reader would.

Each document runs in a fresh temporary directory of its own: its blocks run in order
and share that directory (a plan written by one block is applied by the next), with
``planctl`` and ``python`` from this interpreter, the checkout first on ``PYTHONPATH``,
``NO_COLOR=1``, ``COLUMNS=80``, and no ``PLANCTL_*`` or ``GITHUB_*`` variables (so the
state store is ``.planctl/state.db`` in that directory, as the docs say).

A fenced block is classified by its language:

``console``
    Commands after ``$ `` (a line ending with ``\\`` continues on the next), each followed
    by the output it prints (stdout and stderr together). The block runs as one bash
    script, so ``cd``, variables and ``$?`` carry from one command to the next. A command
    that exits non-zero must be followed by ``$ echo $?`` showing its status: exit codes
    are part of every example. Output is compared line by line after normalising what
    changes from run to run (run ids, times, durations, pids, host names, job handles,
    poll counts) and runs of spaces; ``...`` inside a line matches any text. Shown lines
    must appear in that order; a line that is exactly ``...`` means more lines may appear,
    and without one every line printed must be shown.
``sh``, ``bash``, ``shell``
    A script run with bash; it must exit 0 (or as ``exit=N`` says).
``yaml``
    A whole plan (it has ``commands:``) is checked with ``planctl validate --strict``,
    as it was at that point of the document (all of a document's plans are validated
    together once its other blocks have run). Other YAML must say what it is:
    ``as=command`` (one command, or a list of them), ``as=operation`` (the body of a
    ``run:``) or ``as=top`` (top-level keys but ``commands``): it is wrapped into a
    plan and checked the same way; ``file=PATH`` alone writes a YAML file (e.g. a
    ``--vars-file``) after checking that it parses.
``python``
    Run with this interpreter in the document's directory (``python -c``); it must exit 0.

An HTML comment on the last non-blank line before a fence sets options for that block,
e.g. ``<!-- doc-test: file=site.yaml warnings -->``:

``skip (reason)``  not run; the reason is required. Blocks in any other language must say so.
``file=PATH``      write the block to PATH in the document's directory (a plan is then
                   validated too; a ``python`` or ``sh`` block is written, not run).
``as=KIND``        a YAML fragment (see above).
``invalid``        the plan must fail validation (exit 3).
``warnings``       the plan must validate with at least one warning.
``unordered``      console output lines may come in any order (concurrent steps).
``exit=N``         the exit status of an ``sh`` block.
``requires=PROG``  skip the block (not the document) when PROG is not on PATH.

A standalone ``<!-- doc-test-setup: copy=SRC[:DEST] ... -->`` copies files or directories
of the repository into the document's directory before its first block. README.md is
checked in plans-only mode: its whole plans are validated, its other blocks ignored.

Documents run concurrently (each in its own directory, with its own state store), since
most of their time is spent waiting for subprocesses and polled tasks. Relative links
between documents are checked too: the file must exist, and so must the heading an
``#anchor`` names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCUMENTS = sorted(DOCS.glob("*.md"))
BLOCK_TIMEOUT = 120

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doc-test:(?P<body>.*?)-->\s*$")
_SETUP = re.compile(r"^\s*<!--\s*doc-test-setup:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"\bskip\s*\((?P<reason>[^)]+)\)")
_FLAGS = frozenset({"invalid", "warnings", "unordered"})
_VALUED = frozenset({"file", "as", "exit", "requires"})
_FRAGMENTS = frozenset({"command", "operation", "top"})
_RUNNABLE = frozenset({"console", "sh", "bash", "shell", "yaml", "python"})


class DocError(AssertionError):
    """An example does not do what its document says."""


@dataclass(frozen=True)
class Block:
    """One fenced block of a document and the options of the marker before it."""

    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    options: Mapping[str, str] = field(default_factory=dict)
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{_rel(self.doc)}:{self.line}"


@dataclass(frozen=True)
class Document:
    path: Path
    blocks: tuple[Block, ...]
    copies: tuple[tuple[str, str], ...]  # (source in the repository, destination)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _options(body: str, where: str) -> tuple[dict[str, str], str | None]:
    skip = _SKIP.search(body)
    rest = _SKIP.sub("", body) if skip else body
    if "skip" in rest.split():
        raise DocError(f"{where}: `skip` needs a reason: skip (why)")
    options: dict[str, str] = {}
    for token in rest.split():
        key, sep, value = token.partition("=")
        if (key in _FLAGS and not sep) or (key in _VALUED and sep and value):
            options[key] = value
        else:
            raise DocError(f"{where}: unknown doc-test option {token!r}")
    if options.get("as", "command") not in _FRAGMENTS:
        raise DocError(f"{where}: as= takes one of {sorted(_FRAGMENTS)}")
    return options, skip["reason"].strip() if skip else None


def parse(path: Path) -> Document:
    """The fenced blocks of a Markdown file with their doc-test options."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = _rel(path)
    blocks: list[Block] = []
    copies: list[tuple[str, str]] = []
    pending: tuple[int, str] | None = None  # a marker waiting for its fence
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        index += 1
        if setup := _SETUP.match(line):
            for token in setup["body"].split():
                key, _, value = token.partition("=")
                if key != "copy" or not value:
                    raise DocError(f"{rel}:{number}: unknown doc-test-setup option {token!r}")
                source, _, dest = value.partition(":")
                copies.append((source, dest or Path(source).name))
            continue
        if marker := _MARKER.match(line):
            if pending is not None:
                raise DocError(f"{rel}:{pending[0]}: doc-test marker without a block after it")
            pending = (number, marker["body"])
            continue
        fence = _FENCE.match(line)
        if not fence:
            if line.strip() and pending is not None:
                raise DocError(f"{rel}:{pending[0]}: doc-test marker without a block after it")
            continue
        indent, ticks = len(fence["indent"]), fence["fence"]
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != ticks:
            text = lines[index]
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            index += 1
        if index >= len(lines):
            raise DocError(f"{rel}:{number}: unclosed code fence")
        index += 1  # the closing fence
        options, skip = ({}, None) if pending is None else _options(
            pending[1], f"{rel}:{pending[0]}")
        pending = None
        blocks.append(Block(path, number, fence["lang"], "\n".join(body) + "\n", options, skip))
    if pending is not None:
        raise DocError(f"{rel}:{pending[0]}: doc-test marker without a block after it")
    return Document(path, tuple(blocks), tuple(copies))


# -- console output ------------------------------------------------------------------------

_VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b"), "<run>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\b"), "<time>"),
    (re.compile(r"\b\d+m\d{2}s\b|(?<![\w.])\d+(\.\d+)?(ms|s)\b"), "<dur>"),
    (re.compile(r"\b(job|task)-[0-9a-f]{8,12}\b"), r"\1-<id>"),
    (re.compile(r"\b\d+ polls?\b"), "<n> polls"),
    (re.compile(r"\(pid \d+\)"), "(pid <n>)"),
    (re.compile(r"\bpid \d+ on [\w.-]+"), "pid <n> on <host>"),
    (re.compile(r" on [\w.-]+ \(pid"), " on <host> (pid"),
    (re.compile(r"(?<![\w.-])[\w.-]+:\d+(?=\s+<time>)"), "<host>:<n>"),
    (re.compile(r"/tmp/planctl-crash-\w+\.log"), "<crash-log>"),
)


def normalize(line: str) -> str:
    """A line with what changes from run to run replaced, and runs of spaces collapsed."""
    for pattern, replacement in _VOLATILE:
        line = pattern.sub(replacement, line)
    return " ".join(line.split())


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in normalize(expected).split("...")]
    return re.compile(".*".join(parts))


def match_output(expected: Sequence[str], actual: Sequence[str], *, ordered: bool = True
                 ) -> str | None:
    """None when ``actual`` shows ``expected`` (see the module docstring), else why not."""
    wanted = [line for line in expected if line.strip()]
    partial = any(line.strip() == "..." for line in wanted)
    wanted = [line for line in wanted if line.strip() != "..."]
    lines = [normalize(line) for line in actual if line.strip()]
    used: set[int] = set()
    position = 0
    for line in wanted:
        pattern = _line_pattern(line)
        candidates = range(position, len(lines)) if ordered else range(len(lines))
        found = next((i for i in candidates if i not in used and pattern.fullmatch(lines[i])),
                     None)
        if found is None:
            where = " after the lines matched so far" if ordered and position else ""
            return f"expected line not found{where}: {line.strip()!r}"
        used.add(found)
        position = found + 1
    if not partial and len(used) != len(lines):
        extra = [actual_line for i, actual_line in enumerate(lines) if i not in used]
        return f"unexpected output (add a `...` line to allow more): {extra[0]!r}"
    return None


@dataclass(frozen=True)
class Command:
    text: str
    expected: tuple[str, ...]


def console_commands(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block with the output shown after each."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            if line.strip() and not commands:
                raise DocError(f"{block.where}: console output before the first `$ ` command")
            index += 1
            continue
        text = [line[2:]]
        index += 1
        while text[-1].endswith("\\") and index < len(lines):
            text.append(lines[index])
            index += 1
        expected: list[str] = []
        while index < len(lines) and not lines[index].startswith("$ "):
            expected.append(lines[index])
            index += 1
        commands.append(Command("\n".join(text), tuple(expected)))
    if not commands:
        raise DocError(f"{block.where}: a console block without any `$ ` command")
    return commands


# -- running a document ----------------------------------------------------------------------


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PLANCTL_", "GITHUB_", "SLOWCP_", "STORE_"))}
    bindir = str(Path(sys.executable).parent)
    env.update(
        NO_COLOR="1",
        COLUMNS="80",
        PATH=os.pathsep.join([bindir, env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
    )
    return env


_MARK_RE = re.compile(r"^@@doc-test (\d+) (-?\d+)@@$", re.MULTILINE)


class Session:
    """Runs the blocks of one document, in order, in one working directory."""

    def __init__(self, document: Document, workdir: Path) -> None:
        self.document = document
        self.workdir = workdir
        self.env = _environment()
        self.plans: list[tuple[Block, str]] = []  # (block, file to validate), see check_plans
        for source, dest in document.copies:
            origin = ROOT / source
            target = workdir / dest
            if not origin.exists():
                raise DocError(f"{_rel(document.path)}: doc-test-setup: no {source}")
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns(
                    ".store", ".slowcp", ".planctl", "__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)

    def run(self, block: Block, *, plans_only: bool = False) -> None:
        if block.skip is not None:
            return
        required = block.options.get("requires")
        if required and shutil.which(required, path=self.env["PATH"]) is None:
            return
        if plans_only:
            if block.lang == "yaml":
                data = self._parse_yaml(block)
                if isinstance(data, dict) and "commands" in data:
                    self._yaml(block)
            return
        if block.lang not in _RUNNABLE:
            raise DocError(f"{block.where}: a ```{block.lang or '(no language)'} block cannot "
                           "be run: mark it <!-- doc-test: skip (reason) -->")
        if block.lang == "console":
            self._console(block)
        elif block.lang == "yaml":
            self._yaml(block)
        elif block.lang == "python":
            self._python(block)
        else:
            self._shell(block)

    def _write(self, block: Block) -> Path | None:
        name = block.options.get("file")
        if name is None:
            return None
        path = self.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
        if os.access(path, os.X_OK) or block.text.startswith("#!"):
            path.chmod(0o755)
        return path

    def _parse_yaml(self, block: Block) -> object:
        try:
            return yaml.safe_load(block.text)
        except yaml.YAMLError as exc:
            raise DocError(f"{block.where}: YAML does not parse: {exc}") from None

    def _yaml(self, block: Block) -> None:
        data = self._parse_yaml(block)
        written = self._write(block)
        kind = block.options.get("as")
        if kind is not None:
            text = yaml.safe_dump(_wrap(data, kind, block), sort_keys=False)
        elif isinstance(data, dict) and "commands" in data:
            text = block.text
        elif written is not None:
            return  # a YAML file the next blocks use, e.g. a --vars-file
        else:
            raise DocError(f"{block.where}: YAML that is not a whole plan: mark it as=command, "
                           "as=operation, as=top, file=PATH or skip (reason)")
        # A copy as it is now: a later block may overwrite the file (the tutorial does).
        scratch = Path(".doc-test") / f"{block.doc.stem}-{block.line}.yaml"
        (self.workdir / scratch).parent.mkdir(exist_ok=True)
        (self.workdir / scratch).write_text(text, encoding="utf-8")
        self.plans.append((block, str(scratch)))

    def check_plans(self) -> None:
        """Validate the plans seen so far: one ``planctl validate`` per kind of expectation
        (valid with ``--strict``, valid with warnings, invalid), its output read per file."""
        groups: dict[str, list[tuple[Block, str]]] = {}
        for block, name in self.plans:
            mode = next((m for m in ("invalid", "warnings") if m in block.options), "strict")
            groups.setdefault(mode, []).append((block, name))
        self.plans = []
        for mode, items in groups.items():
            argv = ["planctl", "validate", *(["--strict"] if mode == "strict" else []),
                    *(name for _, name in items)]
            done = subprocess.run(argv, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT,
                                  check=False)
            lines = done.stdout.splitlines()
            for block, name in items:
                mine = [line for line in lines if line.startswith(f"{name}:")]
                valid = any(line.startswith(f"{name}: valid (") for line in mine)
                errors = any(": error: " in line for line in mine)
                warnings = any(": warning: " in line for line in mine)
                if mode == "invalid" and (valid or not errors):
                    problem = "marked invalid, but planctl validate accepts it"
                elif mode == "warnings" and not (valid and warnings):
                    problem = "marked `warnings`: it must be valid, with at least one warning"
                elif mode == "strict" and not (valid and not warnings):
                    problem = "planctl validate --strict rejects it"
                else:
                    continue
                shown = "\n".join(mine) or done.stdout
                raise DocError(f"{block.where}: {problem}:\n{shown}")
            if done.returncode != (3 if mode == "invalid" else 0):
                raise DocError(f"{_rel(self.document.path)}: planctl validate exited "
                               f"{done.returncode}:\n{done.stdout}")

    def _python(self, block: Block) -> None:
        if self._write(block) is not None:
            return
        done = subprocess.run([sys.executable, "-c", block.text], cwd=self.workdir,
                              env=self.env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT, check=False)
        if done.returncode != 0:
            raise DocError(f"{block.where}: python exited {done.returncode}:\n"
                           f"{done.stdout}{done.stderr}")

    def _shell(self, block: Block) -> None:
        if self._write(block) is not None:
            return
        done = subprocess.run(["bash", "-c", block.text], cwd=self.workdir, env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=BLOCK_TIMEOUT, check=False)
        expected = int(block.options.get("exit", "0"))
        if done.returncode != expected:
            raise DocError(f"{block.where}: script exited {done.returncode}, the document "
                           f"says {expected}:\n{done.stdout}")

    def _console(self, block: Block) -> None:
        commands = console_commands(block)
        script = ["exec 2>&1", "__doc_test_rc() { return \"$1\"; }"]
        for index, command in enumerate(commands):
            script.append(command.text)
            script.append(f"__doc_rc=$?; printf '\\n@@doc-test {index} %s@@\\n' "
                          '"$__doc_rc"; __doc_test_rc "$__doc_rc"')
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=self.workdir,
                              env=self.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              text=True, timeout=BLOCK_TIMEOUT, check=False)
        outputs = _split(done.stdout)
        for index, command in enumerate(commands):
            if index not in outputs:
                raise DocError(f"{block.where}: `$ {command.text}` did not finish (the block "
                               f"exited {done.returncode}):\n{done.stdout}")
            rc, printed = outputs[index]
            follows = commands[index + 1].text.strip() if index + 1 < len(commands) else ""
            if rc != 0 and follows != "echo $?":
                raise DocError(f"{block.where}: `$ {command.text}` exited {rc}; show it with a "
                               f"`$ echo $?` line after it:\n{printed}")
            problem = match_output(command.expected, printed.splitlines(),
                                   ordered="unordered" not in block.options)
            if problem:
                raise DocError(f"{block.where}: `$ {command.text}`: {problem}\n--- printed:\n"
                               f"{printed}")


def _split(stdout: str) -> dict[int, tuple[int, str]]:
    """Each command's exit status and output, cut at the markers printed after it."""
    found: dict[int, tuple[int, str]] = {}
    start = 0
    for mark in _MARK_RE.finditer(stdout):
        found[int(mark[1])] = (int(mark[2]), stdout[start:mark.start()])
        start = mark.end() + 1
    return found


def _wrap(data: object, kind: str, block: Block) -> dict[str, object]:
    """A fragment made into a whole plan, so that it is checked in context."""
    if kind == "operation":
        if not isinstance(data, dict):
            raise DocError(f"{block.where}: as=operation needs a mapping")
        return {"name": "doc-example",
                "commands": [{"id": "example", "changes": False, "run": data}]}
    if kind == "command":
        commands = data if isinstance(data, list) else [data]
        return {"name": "doc-example", "commands": commands}
    if not isinstance(data, dict) or "commands" in data:
        raise DocError(f"{block.where}: as=top needs top-level keys other than `commands`")
    return {"name": "doc-example", **data,
            "commands": [{"id": "example", "changes": False, "run": {"command": ["true"]}}]}


# -- tests -----------------------------------------------------------------------------------


def run_document(path: Path, workdir: Path) -> None:
    """Every block of the document, in order, in ``workdir``."""
    document = parse(path)
    session = Session(document, workdir)
    for block in document.blocks:
        session.run(block)
    session.check_plans()


@pytest.fixture(scope="session")
def document_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Mapping[Path, Future[None]]]:
    """The selected documents, run concurrently: most of their time is spent waiting for
    subprocesses and polled tasks, and each has a directory and a state store of its own."""
    wanted = {item.callspec.params["path"] for item in request.session.items
              if isinstance(item, pytest.Function)
              and item.originalname == "test_document_examples"}
    selected = [path for path in DOCUMENTS if path in wanted]
    with ThreadPoolExecutor(max_workers=max(1, len(selected))) as pool:
        futures = {path: pool.submit(run_document, path, tmp_path_factory.mktemp(path.stem))
                   for path in selected}
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_document_examples(path: Path, document_runs: Mapping[Path, Future[None]]) -> None:
    """Every block of the document runs as the document says, in order."""
    document_runs[path].result()


def test_readme_plans(tmp_path: Path) -> None:
    """The plans shown in README.md validate without warnings."""
    document = parse(ROOT / "README.md")
    session = Session(document, tmp_path)
    for block in document.blocks:
        session.run(block, plans_only=True)
    session.check_plans()


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_links(path: Path) -> None:
    """Relative links point at files that exist, and at headings that exist in them."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    for link in _LINK.finditer(text):
        target = link["target"]
        if re.match(r"[a-z]+:", target):
            continue  # an external URL
        name, _, anchor = target.partition("#")
        file = (path.parent / name).resolve() if name else path
        assert file.exists(), f"{_rel(path)}: link to a missing file: {target}"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"{_rel(path)}: no heading for #{anchor}"


def test_docs_exist() -> None:
    """The documentation set the index promises is there."""
    names = {p.name for p in DOCUMENTS}
    assert {"README.md", "tutorial.md", "language.md", "cli.md", "state.md"} <= names


# -- the harness itself ------------------------------------------------------------------------


def _doc(tmp_path: Path, text: str) -> Document:
    path = tmp_path / "self-check.md"
    path.write_text(text, encoding="utf-8")
    return parse(path)


def test_unmarked_block_of_unknown_language_fails(tmp_path: Path) -> None:
    """A block the harness cannot run must be marked skip, with a reason."""
    document = _doc(tmp_path, "text\n\n```text\nhello\n```\n")
    with pytest.raises(DocError, match="cannot be run"):
        Session(document, tmp_path).run(document.blocks[0])
    with pytest.raises(DocError, match="needs a reason"):
        _doc(tmp_path, "<!-- doc-test: skip -->\n```text\nhello\n```\n")


def test_yaml_fragment_must_say_what_it_is(tmp_path: Path) -> None:
    """YAML that is not a whole plan is rejected unless marked."""
    document = _doc(tmp_path, "```yaml\nretries: 3\n```\n")
    with pytest.raises(DocError, match="not a whole plan"):
        Session(document, tmp_path).run(document.blocks[0])


def test_plans_are_validated_as_marked(tmp_path: Path) -> None:
    """A plan with a warning fails unless marked `warnings`; `invalid` must be invalid."""
    plan = "```yaml\nname: x\ncommands:\n  - {id: a, run: {command: [touch, a]}}\n```\n"
    for marker, fails in (("", "--strict rejects it"), ("<!-- doc-test: warnings -->\n", None),
                          ("<!-- doc-test: invalid -->\n", "marked invalid")):
        document = _doc(tmp_path, marker + plan)
        session = Session(document, tmp_path)
        session.run(document.blocks[0])
        if fails is None:
            session.check_plans()
        else:
            with pytest.raises(DocError, match=fails):
                session.check_plans()


def test_marker_must_precede_a_block(tmp_path: Path) -> None:
    """A marker followed by prose (a typo, a moved block) is an error."""
    with pytest.raises(DocError, match="without a block"):
        _doc(tmp_path, "<!-- doc-test: unordered -->\nsome prose\n")


def test_failing_command_must_show_its_exit_status(tmp_path: Path) -> None:
    """A command that exits non-zero without `$ echo $?` after it fails the test."""
    document = _doc(tmp_path, "```console\n$ false\n```\n")
    with pytest.raises(DocError, match=r"echo \$\?"):
        Session(document, tmp_path).run(document.blocks[0])
    shown = _doc(tmp_path, "```console\n$ (exit 3)\n$ echo $?\n3\n```\n")
    Session(shown, tmp_path).run(shown.blocks[0])
    wrong = _doc(tmp_path, "```console\n$ (exit 3)\n$ echo $?\n1\n```\n")
    with pytest.raises(DocError, match="expected line not found"):
        Session(wrong, tmp_path).run(wrong.blocks[0])


def test_output_matching() -> None:
    """Volatile values are normalised; `...` elides; order counts unless unordered."""
    actual = ["    0.05s  run 20261122-072026-bec203 RUNNING", "  12.50s  SUCCEEDED      a",
              "0.01s  SUCCEEDED b"]
    assert match_output(["0.00s run 20991231-235959-000000 RUNNING", "...",
                         "1.00s SUCCEEDED b"], actual) is None
    assert match_output(["0.00s run 20991231-235959-000000 RUNNING"], actual) is not None
    assert match_output(["... SUCCEEDED b", "... SUCCEEDED a", "..."], actual) is not None
    assert match_output(["... SUCCEEDED b", "... SUCCEEDED a", "..."], actual,
                        ordered=False) is None
    assert match_output(["1"], ["130"]) is not None
