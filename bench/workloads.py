"""Plan generators shared by the benchmarks (plans are written as YAML files)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def chain(n: int, *, fail_last: bool = False) -> str:
    """W1/W3: ``n`` no-op python commands, each needing the previous one."""
    lines = [f"name: chain-{n}", "commands:"]
    for i in range(n):
        fn = "noop:fail" if fail_last and i == n - 1 else "noop:noop"
        lines += [f"  - id: c{i}", f"    run: {{python: '{fn}'}}",
                  "    inverse: {python: 'noop:noop'}"]
        if i:
            lines.append(f"    needs: c{i - 1}")
    return "\n".join(lines) + "\n"


def fanout(n: int, seconds: float = 0.5, interval: float = 0.05) -> str:
    """W2: ``n`` independent async tasks that each finish ``seconds`` after they start."""
    return f"""name: fanout-{n}
vars:
  jobs: {list(range(n))}
settings:
  max_parallel: {n}
commands:
  - id: job
    for_each: "{{{{ jobs }}}}"
    run:
      python:
        function: noop:start_job
        kwargs: {{name: "j{{{{ item }}}}", seconds: {seconds}}}
      async:
        handle: "{{{{ result.id }}}}"
        poll: {{python: {{function: 'noop:job_status', kwargs: {{handle: "{{{{ handle }}}}"}}}}}}
        until: "{{{{ poll.done }}}}"
        interval: {interval}s
        max_interval: {interval}s
        backoff: 1
    inverse: {{python: 'noop:noop'}}
"""


def big_plan(n: int) -> str:
    """L: a plan of ``n`` commands, six lines each, templated argv, needs between them."""
    lines = ["name: big", "vars:", "  greeting: hello", "  target: /tmp/planctl-bench",
             "commands:"]
    for i in range(n):
        lines += [
            f"  - id: c{i}",
            f'    entity: "file/{{{{ target }}}}/c{i}"',
            f'    run: {{command: [touch, "{{{{ target }}}}/c{i}-{{{{ greeting }}}}"]}}',
            f'    inverse: {{command: [rm, -f, "{{{{ target }}}}/c{i}-{{{{ greeting }}}}"]}}',
            f'    exists: {{command: [test, -e, "{{{{ target }}}}/c{i}-{{{{ greeting }}}}"]}}',
            f"    needs: [c{i - 1}]" if i else "    needs: []",
        ]
    return "\n".join(lines) + "\n"
