"""README.md runs as written (issue 12, point 8).

The fenced blocks of the README's Quick start, A walk-through, Cancel and requeue and The same
from Python sections are taken from README.md itself, in order, and run against a fresh
``hpcq up``, the README's own command line from its own block:

- every ```sh block runs in ONE ``bash -euo pipefail`` session (variables carry over from block
  to block), in a fresh directory, after the ``export HPCQ_REDIS_URL=...`` line that hpcq up
  printed;
- every ```python block runs as written, at its place in that order, with this venv's
  ``python``, in that session (so with the exported ``HPCQ_REDIS_URL``): it must connect with
  ``Scheduler.connect()``, and no block may name a Redis URL of its own (a README example that
  hard-coded one ran against a Redis no worker read);
- the blocks not run are recognized by ``role()``: ```text blocks (a sample of what a command
  prints), the install block(s) (each of their lines starts with ``python3 -m venv``: the test
  already runs in an installed environment, and the test-suite line is one of them) and the
  ``hpcq up`` block (the test runs it as the cluster).  Any other block in those sections fails the test, as does
  a README without those sections.

Then ``hpcq up`` gets SIGINT (Ctrl-C), must exit 0, and no process of it or of its tasks may be
left."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from scheduler.core import keys
from tests.support.up import EXPORT, Up
from tests.support import MARKER_VAR, assert_no_leftovers, die_with_parent, new_marker, wait_until

README = Path(__file__).resolve().parent.parent / "README.md"
#: The sections whose blocks must run, in the README's order.
SECTIONS = ("Quick start", "A walk-through", "Cancel and requeue", "The same from Python")
#: How a Python block connects: to the cluster the exported HPCQ_REDIS_URL names.
CONNECT = "Scheduler.connect()"
#: Seconds for the whole README to run (it takes about a minute).
SESSION_TIMEOUT = 150
BLOCK_MARK = "@@README block {}@@"


@dataclass
class Block:
    section: str
    lang: str
    text: str
    line: int           # of the opening fence, 1-based

    def commands(self) -> list[str]:
        return [ln.strip() for ln in self.text.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]

    def where(self) -> str:
        return f"README.md line {self.line} (section {self.section!r}, ```{self.lang})"


def readme_blocks(text: str) -> dict[str, list[Block]]:
    """The fenced blocks of each ``## `` section, in order (a ``#`` line inside a fence is a
    comment, not a heading; ``###`` subsections belong to their section)."""
    found: dict[str, list[Block]] = {}
    section = None
    fence = None
    body: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if fence is not None:
            if line.rstrip() == "```":
                found.setdefault(section, []).append(Block(section, fence[0], "\n".join(body) + "\n",
                                                           fence[1]))
                fence = None
            else:
                body.append(line)
            continue
        m = re.match(r"^```(\S*)\s*$", line)
        if m:
            fence, body = (m.group(1), n), []
            continue
        h = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if h and len(h.group(1)) <= 2:
            section = h.group(2) if len(h.group(1)) == 2 else None
            found.setdefault(section, [])
    assert fence is None, f"README.md: the fence opened at line {fence[1]} is never closed"
    return found


def role(block: Block) -> str:
    """run, or why not: output (a ```text block: a sample of what a command prints), install
    (every line of it starts with ``python3 -m venv``: it makes and fills a virtual environment,
    and the test runs in one; the test-suite line is one), cluster (one command, ``hpcq up``:
    the test runs it as the cluster)."""
    if block.lang == "text":
        return "output"
    if block.lang == "python":
        return "run"
    if block.lang == "sh":
        commands = block.commands()
        if commands and all(c.startswith("python3 -m venv ") for c in commands):
            return "install"
        if len(commands) == 1 and shlex.split(commands[0], comments=True)[:2] == ["hpcq", "up"]:
            return "cluster"
        return "run"
    raise AssertionError(f"{block.where()}: a block the test neither runs nor excludes "
                         "(```sh and ```python blocks run; ```text is output)")


def plan() -> tuple[Block, list[Block]]:
    """The ``hpcq up`` block and the blocks to run, in order; fails on a README that lost a
    section, a runnable block, its install or test-suite line, or its one ``hpcq up``."""
    found = readme_blocks(README.read_text())
    missing = [s for s in SECTIONS if s not in found]
    assert not missing, f"README.md has no section(s) {missing} (## headings)"
    order = [s for s in found if s in SECTIONS]
    assert order == list(SECTIONS), f"README.md's sections are out of order: {order}"
    blocks = [b for s in SECTIONS for b in found[s]]
    roles = [(b, role(b)) for b in blocks]
    clusters = [b for b, r in roles if r == "cluster"]
    assert len(clusters) == 1 and clusters[0].section == "Quick start", \
        f"README.md must have one `hpcq up` block, in its Quick start: {[b.where() for b in clusters]}"
    installs = [b for b, r in roles if r == "install"]
    assert any("pip install ." in b.text for b in installs), "README.md lost its install line"
    assert any("python -m pytest -q" in b.text for b in installs), \
        "README.md lost its test command line `python -m pytest -q` (CI runs it)"
    runs = [b for b, r in roles if r == "run"]
    for s in SECTIONS[1:]:
        assert any(b.section == s for b in runs), f"README.md's section {s!r} has no block to run"
    first_run = blocks.index(runs[0])
    assert blocks.index(clusters[0]) < first_run, "README.md runs a block before `hpcq up`"
    return clusters[0], runs


@pytest.mark.unit
def test_readme_blocks_are_all_classified():
    """The parse itself (fast, no cluster): every block of the four sections is run or
    excluded, and each Python block connects to the exported cluster, naming no URL."""
    cluster, runs = plan()
    assert cluster.commands() == ["hpcq up"]
    python = [b for b in runs if b.lang == "python"]
    assert python and all(b.text.count(CONNECT) == 1 for b in python), \
        f"each Python block connects once, with {CONNECT} (HPCQ_REDIS_URL)"
    for b in python:
        assert not re.search(r"rediss?://", b.text), f"line {b.line}: a Python block names a Redis URL"


# --- the cluster -------------------------------------------------------------------------------

def workers_online(url: str, want: int) -> bool:
    """``want`` workers registered and online, and a scheduler holding the lease (what a user
    who pastes the export line a few seconds later finds)."""
    r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    try:
        names = r.zrange(keys.WORKERS, 0, -1)
        online = [n for n in names if r.hget(keys.worker(n), "state") == "online"]
        return len(online) >= want and bool(r.get(keys.LEADER))
    finally:
        r.close()


def logs(state_dir: Path) -> str:
    out = []
    for path in sorted((state_dir / "log").glob("*.log")):
        out.append(f"===== {path.name}\n{path.read_text(errors='replace')[-3000:]}")
    return "\n".join(out)


# --- the session -------------------------------------------------------------------------------

def script(export: str, runs: list[Block], url: str, pydir: Path) -> str:
    """One bash script: the export line, then each block after a mark on stdout and stderr.
    Python blocks run from files (their text as written) with this venv's python."""
    lines = [export]
    for n, b in enumerate(runs):
        mark = shlex.quote(BLOCK_MARK.format(n))
        lines.append(f"printf '\\n%s %s\\n' {mark} \"$(date +%s.%N)\"; printf '\\n%s\\n' {mark} >&2")
        if b.lang == "sh":
            lines.append(b.text)
        else:
            path = pydir / f"readme_block_{n}.py"
            path.write_text(b.text)
            lines.append(f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}")
    lines.append(f"printf '\\n%s %s\\n' {shlex.quote(BLOCK_MARK.format('end'))} \"$(date +%s.%N)\"")
    return "\n".join(lines) + "\n"


def durations(out: str, runs: list[Block]) -> str:
    """``line L: S s`` for each block that ran (L: its fence's line), from the times of the marks."""
    marks = re.findall(r"^@@README block (\w+)@@ ([\d.]+)$", out, re.M)
    return ", ".join(f"line {runs[int(a)].line}: {float(t2) - float(t1):.1f}s"
                     for (a, t1), (_, t2) in zip(marks, marks[1:]))


def split(text: str, n: int) -> list[str]:
    """The output of each of ``n`` blocks (what is after its mark)."""
    parts = [""] * n
    current = None
    for line in text.splitlines(keepends=True):
        m = re.fullmatch(r"@@README block (\w+)@@( [\d.]+)?\n?", line)
        if m:
            current = int(m.group(1)) if m.group(1).isdigit() else None
        elif current is not None:
            parts[current] += line
    return parts


def run_session(text: str, env: dict, cwd: Path) -> tuple[int | None, str, str]:
    path = cwd.parent / "readme-session.sh"
    path.write_text(text)
    proc = subprocess.Popen(["bash", "-euo", "pipefail", str(path)], env=env, cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=die_with_parent)
    try:
        out, err = proc.communicate(timeout=SESSION_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err
    return proc.returncode, out, err


@pytest.mark.cluster
@pytest.mark.slow
def test_readme_runs_as_written(tmp_path):
    cluster, runs = plan()
    home, work, state = tmp_path / "home", tmp_path / "work", tmp_path / "state"
    for d in (home, work, tmp_path / "tmp", tmp_path / "py"):
        d.mkdir()
    marker = new_marker()
    venv_bin = os.path.dirname(sys.executable)
    assert os.access(os.path.join(venv_bin, "hpcq"), os.X_OK), \
        f"no hpcq next to {sys.executable}: the README runs in an installed environment"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCQ_")}
    env.update({"PATH": venv_bin + os.pathsep + env.get("PATH", ""), MARKER_VAR: marker,
                "TMPDIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1"})
    # hpcq up's data, logs and spool in a tmp dir: an environment variable, not a text change
    up = Up(shlex.split(cluster.commands()[0], comments=True), dict(env, HPCQ_STATE_DIR=str(state)),
            cwd=home)
    t0 = time.monotonic()
    try:
        export = wait_until(up.export_line, 60, "hpcq up to print its export line")
        url = EXPORT.match(export).group(1)
        wait_until(lambda: workers_online(url, 2), 60, "hpcq up's two workers and scheduler")
        up.tree()

        started = time.monotonic()
        code, out, err = run_session(script(export, runs, url, tmp_path / "py"), env, work)
        (tmp_path / "session.out").write_text(out)    # kept for a look after a failure
        (tmp_path / "session.err").write_text(err)
        outs, errs = split(out, len(runs)), split(err, len(runs))
        if code != 0:
            failed = max((n for n in range(len(runs)) if BLOCK_MARK.format(n) in out), default=0)
            pytest.fail(f"{runs[failed].where()} "
                        f"{'timed out' if code is None else f'exited {code}'}:\n{runs[failed].text}\n"
                        f"(block times: {durations(out, runs)})\n"
                        f"--- stdout\n{outs[failed][-3000:]}\n--- stderr\n{errs[failed][-3000:]}\n"
                        f"--- hpcq up's logs\n{logs(state)}")
        by_section = {s: "".join(o for b, o in zip(runs, outs) if b.section == s) for s in SECTIONS}
        everything = out + err
        assert "did not finish" not in everything, everything[-4000:]
        check_walk_through(by_section["A walk-through"], work)
        check_cancel(by_section["Cancel and requeue"])
        check_python(by_section["The same from Python"])
        ran_for = time.monotonic() - started

        # Ctrl-C stops all of it; nothing of it or of its tasks is left
        tree = up.tree()
        stopping = time.monotonic()
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=90) == 0, "".join(up.err)
        assert_no_leftovers(marker, timeout=10, extra=tree)
        print(f"hpcq up ready in {started - t0:.1f}s; the README ran in {ran_for:.1f}s (blocks "
              f"{durations(out, runs)}); hpcq up stopped in {time.monotonic() - stopping:.1f}s")
    finally:
        if up.proc.poll() is None:    # failed above: stop it as Ctrl-C does, then make sure
            up.tree()
            up.proc.send_signal(signal.SIGINT)
            try:
                up.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        up.kill()
        assert_no_leftovers(marker, timeout=5, extra=up.tree())


def lines(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.splitlines()]


def check_walk_through(out: str, work: Path) -> None:
    host = socket.gethostname()
    assert re.search(rf"^w1@{re.escape(host)}\s+online\s", out, re.M), out[:2000]
    assert re.search(rf"^w2@{re.escape(host)}\s+online\s", out, re.M), out[:2000]
    assert re.search(r"^Output:\nhello world$", out, re.M), out[:3000]
    # the render job: a sweep of 100 frames after its prep, files where --stdout said
    assert "Finished [Finished 100]" in out
    assert re.search(r"^Command\s+echo frame '17'$", out, re.M)
    assert re.search(rf"^Stdout\s+{re.escape(str(work.resolve()))}/frames/out_017\.txt$", out, re.M)
    assert "frame 17" in lines(out)
    assert len(json.loads((work / "tasks.json").read_text())) == 101
    # commands as typed; one word is a command line; the default working directory
    assert "a  b" in lines(out)
    assert re.search(r"^\s*1 apple\n\s*2 pear$", out, re.M), out
    # relative paths resolved at add, shown absolute
    results = str((work / "results").resolve())
    assert re.search(rf"^Work dir\s+{re.escape(results)}$", out, re.M)
    assert re.search(rf"^Stdout\s+{re.escape(results)}/where\.txt$", out, re.M)
    assert results in lines(out)
    # the task's environment: its own variables, the worker's, or the submitter's with --export-env
    assert re.search(r"^\d+\.1\.2: instance 2, value 20, circle, no color$", out, re.M), out
    assert "blue" in lines(out)
    # Redis keeps head and tail with a marker; task output prints it all; --follow as it comes
    assert re.search(r"^\[\.\.\. 1\.\d MB cut \.\.\.\]$", out, re.M), out
    assert "200000" in [ln.strip() for ln in lines(out)]
    ticks = [ln for ln in lines(out) if ln.startswith("tick ")]
    assert ticks == ["tick 1", "tick 2", "tick 3"]


def check_cancel(out: str) -> None:
    # with fewer slots than the sweep's instances (2 workers x CPUs), the last one waits
    if 2 * (os.cpu_count() or 1) < 100:
        assert re.search(r"^State\s+Queued\nReason\s+\S", out, re.M), out
    job = re.search(r"^(\d+)\.1\.1 Failed$", out, re.M)          # canceled while running
    assert job, out
    j = job.group(1)
    assert re.search(rf"^{j}\.1 Canceled$", out, re.M), out     # the sweep
    assert re.search(rf"^{j}\.1\.1\s+naps\s+Failed\s.*Message: bad input$", out, re.M), out
    assert re.search(r"^State\s+Failed$", out, re.M), out       # its job
    # the graceful cancel: running instances finished, the others never started
    g = re.search(r"^(\d+) Canceled$", out, re.M)
    assert g and g.group(1) != j, out
    short = re.findall(rf"^{g.group(1)}\.1\.\d+\s+short\s+(\w+)", out, re.M)
    assert len(short) == 8 and set(short) <= {"Finished", "Canceled"}, out
    # the requeue: the sweep runs again, and the job ends Finished
    # (queued again; on a free slot its first instance may start before the command prints)
    assert re.search(rf"^{j}\.1 (Queued|Running)$", out, re.M), out
    assert re.search(rf"^{j}\.1\s+naps\s+Finished \[Finished 100\]", out, re.M), out


def check_python(out: str) -> None:
    got = lines(out)
    assert any(re.fullmatch(r"job \d+ Finished", ln) for ln in got), out
    assert "Finished 0 49" in got, out
    assert "sum of squares: 385" in got, out
    assert ("Failed - The task has been canceled by the user during execution. "
            "Message: no longer needed") in got, out
