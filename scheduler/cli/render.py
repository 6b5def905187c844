"""Output of the CLI: JSON documents, tables and key-value lists, and one-line errors.

Human output is plain text (bold headers on a terminal), written as it is produced so that long
listings stream; ``--json`` output is one JSON document built from the API's ``to_dict()``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator

import click

from scheduler.api.records import JobView, TaskView


def _tty() -> bool:
    return click.get_text_stream("stdout").isatty()


def waiting(what: str):
    """A live status line on a terminal while a cancel or requeue waits for processes to stop
    (up to the grace period); nothing when stderr is not a terminal."""
    import contextlib

    from rich.console import Console
    err = Console(stderr=True, highlight=False)
    return err.status(what) if err.is_terminal else contextlib.nullcontext()


def counting(what: str, quiet: bool = False):
    """A live count on a terminal while a long operation goes item by item: ``with
    counting("purging jobs") as count: ... count(item)``; nothing when stderr is no terminal."""
    import contextlib

    from rich.console import Console
    err = Console(stderr=True, highlight=False)

    @contextlib.contextmanager
    def live():
        n = [0]
        if quiet or not err.is_terminal:
            yield lambda _item=None: None
            return
        with err.status(f"{what}: 0") as status:
            def count(_item=None):
                n[0] += 1
                status.update(f"{what}: {n[0]}")
            yield count
    return live()


def bold(text: str) -> str:
    return click.style(text, bold=True) if _tty() else text


def emit_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2))


def emit_json_stream(docs: Iterable[dict]) -> None:
    """One JSON array written item by item, so a huge sweep never sits in memory."""
    out = click.get_text_stream("stdout")
    first = True
    out.write("[")
    for doc in docs:
        out.write(("\n  " if first else ",\n  ") + json.dumps(doc))
        first = False
    out.write("\n]\n" if not first else "]\n")
    out.flush()


def fmt_time(t: float | None) -> str:
    if t is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def fmt_time_ms(t: float) -> str:
    """A time to the millisecond (an event's, a history line's)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def fmt_duration(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    secs = max(0.0, (end if end is not None else time.time()) - start)
    if secs < 60:
        return f"{secs:.1f}s"
    m, s = divmod(int(secs), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "-"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _s(v) -> str:
    return "" if v is None else str(v)


def kv_list(rows: list[tuple[str, object]]) -> None:
    """``Key   value`` lines; rows with no value are left out."""
    rows = [(k, _s(v)) for k, v in rows if _s(v) != ""]
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        lines = value.splitlines() or [""]
        click.echo(bold(f"{key:<{width}}") + f"  {lines[0]}")
        for more in lines[1:]:
            click.echo(f"{'':<{width}}  {more}")


def show_job(job: JobView) -> None:
    rows = [
        ("Id", job.id), ("Name", job.name), ("Owner", job.owner), ("State", job.state.value),
        ("Reason", job.reason), ("Priority", job.priority.name),
        ("Fail on task failure", "yes" if job.fail_on_task_failure else "no"),
        ("Runtime limit", f"{job.runtime} s" if job.runtime else "none"),
        ("Exclusive", "yes" if job.exclusive else "no"),
        ("Task defaults", " ".join(f"{k}={v}" for k, v in job.task_defaults.items())),
        ("Environment", " ".join(f"{k}={v}" for k, v in job.env.items())),
        ("Depends on jobs", ",".join(map(str, job.depends_on_job)) + (
            " (runs on parent failure)" if job.run_on_parent_failure else "")),
        ("Hold until", fmt_time(job.hold_until)),
        ("Task retry count", job.task_retry_count),
        ("Tasks", job.task_count), ("Task states", fmt_counts(job.counts)),
        ("Created", fmt_time(job.create_time)), ("Submitted", fmt_time(job.submit_time)),
        ("Started", fmt_time(job.start_time)), ("Ended", fmt_time(job.end_time)),
        ("Elapsed", fmt_duration(job.start_time, job.end_time)),
        ("Requeue count", job.requeue_count), ("Error message", job.error_message),
    ]
    kv_list(rows)


def _asks(task: TaskView) -> str:
    parts = [f"{task.cores} core{'s' if task.cores != 1 else ''}"]
    if task.memory:
        parts.append(f"{task.memory} MB")
    if task.gpus:
        parts.append(f"{task.gpus} GPU{'s' if task.gpus != 1 else ''}")
    if task.group:
        parts.append(f"group {task.group}")
    if task.exclusive:
        parts.append("exclusive")
    return ", ".join(parts)


def _given(task: TaskView) -> str:
    a = task.allocation
    if not a:
        return ""
    gpus = f", GPUs {','.join(a['gpus'])}" if a["gpus"] else ""
    return f"{a['cores']} core{'s' if a['cores'] != 1 else ''}{gpus} on {task.node}"


def show_task(task: TaskView) -> None:
    rows: list[tuple[str, object]] = [
        ("Id", task.id), ("Name", task.name), ("State", task.state.value),
        ("Reason", task.reason), ("Command", task.command),
    ]
    if task.is_sweep:
        start, end, step = task.sweep
        rows += [("Sweep", f"{start}-{end}:{step} ({task.instances} instances)"),
                 ("Instance states", sweep_summary(task))]
    rows += [
        ("Work dir", task.work_dir), ("Environment", " ".join(f"{k}={v}" for k, v in task.env.items())),
        ("Stdin", task.stdin), ("Stdout", task.stdout), ("Stderr", task.stderr),
        ("Runtime limit", f"{task.runtime} s" if task.runtime else "none"),
        ("Depends on", ",".join(task.depends_on)),
        ("Rerunnable", "yes" if task.is_rerunnable else "no"),
        ("Asks for", _asks(task)),
        ("Given", _given(task)),
        ("Retry", f"{task.retry_count} of {task.retry} (delay {task.retry_delay:g} s)" if task.retry else ""),
        ("Valid exit codes", task.valid_exit_codes),
        ("Exit code", task.exit_code), ("Error message", task.error_message),
        ("Node", task.node), ("Pid", task.pid), ("Celery id", task.celery_id),
        ("Submitted", fmt_time(task.submit_time)), ("Started", fmt_time(task.start_time)),
        ("Ended", fmt_time(task.end_time)), ("Elapsed", fmt_duration(task.start_time, task.end_time)),
        ("CPU user", "" if task.cpu_user is None else f"{task.cpu_user:.2f} s"),
        ("CPU kernel", "" if task.cpu_kernel is None else f"{task.cpu_kernel:.2f} s"),
        ("Peak memory", fmt_bytes(task.peak_memory)),
        ("Requeue count", task.requeue_count),
    ]
    kv_list(rows)
    history = task.history
    if history:
        click.echo(bold("History:"))
        for m in history:
            where = f"  on {m.node}" if m.node else ""
            why = f"  {one_line(m.message)}" if m.message else ""
            click.echo(f"  {fmt_time_ms(m.time)}  {m.state:<11}{where}{why}".rstrip())
    if task.output:
        click.echo(bold("Output:"))
        click.echo(task.output.rstrip("\n"))


def sweep_summary(task: TaskView) -> str:
    """Instances per state; before submission just how many there are."""
    if task.state.value == "Configuring":
        return f"{task.instances} instances"
    return fmt_counts(task.instance_counts)


JOB_COLUMNS = ("Id", "Owner", "Name", "State", "Priority", "Tasks", "Submitted")


def job_rows(jobs: Iterable[JobView]) -> Iterator[list[str]]:
    for j in jobs:
        yield [str(j.id), j.owner, j.name, j.state.value, j.priority.name, str(j.task_count),
               fmt_time(j.submit_time)]


TASK_COLUMNS = ("Id", "Name", "State", "Exit", "Node", "Command", "Error")


def task_rows(tasks: Iterable[TaskView]) -> Iterator[list[str]]:
    for t in tasks:
        state = t.state.value
        if t.is_sweep:
            state += f" [{sweep_summary(t)}]"
        yield [str(t.id), t.name, state, _s(t.exit_code), _s(t.node), _s(t.command),
               t.error_message]


def table(columns, rows: Iterable[list[str]], chunk: int = 500, empty: str = "") -> None:
    """A plain table, written as rows come: column widths are fixed by the header and the
    first ``chunk`` rows, so a listing of a million sweep instances starts at once and streams.
    A later cell wider than its column just pushes the rest of its row right."""
    rows = iter(rows)
    first: list[list[str]] = []
    for row in rows:
        first.append([one_line(c) for c in row])
        if len(first) >= chunk:
            break
    if not first and empty:
        click.echo(empty, err=True)
        return
    widths = [max([len(c)] + [len(r[k]) for r in first]) for k, c in enumerate(columns)]
    out = click.get_text_stream("stdout")

    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() + "\n"

    out.write(bold(line(columns).rstrip("\n")) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    out.writelines(line(r) for r in first)
    for row in rows:
        out.write(line([one_line(c) for c in row]))
    out.flush()


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def fail(message: str, code: int) -> None:
    """``error: <message>`` on stderr as one line, then exit ``code``."""
    try:
        sys.stdout.flush()
    except Exception:
        pass
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)
