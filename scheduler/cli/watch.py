"""``hpcq watch [JOB]``: the event stream (scheduler/api/events.py) followed live.

Three renderings of the same events, chosen as ``job wait`` chooses: a rich live table of the
latest events on a terminal, a plain line per event when stdout is not one (a log, a pipe), and
one JSON object per line with ``--json`` (its ``cursor`` resumes: ``--since CURSOR``).

With a JOB it ends when the job does, with ``job wait``'s exit codes (0 Finished, 1 Failed or
Canceled, 2 no such job).  The end is taken from the job's record, not from the end event alone:
a replay (``--since``) passes end events of runs the job was requeued after, and while the
stream is quiet the record is looked at every ``CHECK_EVERY`` s, so even an end whose event was
trimmed before it was read ends the watch."""

from __future__ import annotations

import json
import sys
from collections import deque

import click

from scheduler.api import events as ev_api
from scheduler.core import schema
from scheduler.core.states import JOB_END, JobState
from scheduler.errors import NotFound
from scheduler.cli import common
from scheduler.cli.common import redis_option
from scheduler.cli.render import fmt_time_ms, one_line

#: Seconds of a quiet stream after which a watched job's record is read again.
CHECK_EVERY = 2.0
#: Rows the live table keeps at least (more on a taller terminal).
MIN_ROWS = 5
_END = {s.value for s in JOB_END}


@click.command("watch")
@click.argument("job", required=False)
@click.option("--since", metavar="CURSOR",
              help="Start after this event (its cursor, as --json prints it); 0: from the "
                   "oldest the stream keeps [default: from now].")
@redis_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, a line each.")
def watch_cmd(job, since, as_json):
    """Follow every state change (jobs, tasks, workers) live; with JOB only that job's and its
    tasks', until the job ends: exit 0 Finished, 1 Failed or Canceled, 2 no such job.

    \b
    hpcq watch                      # everything, until Ctrl-C
    hpcq watch 7                    # job 7, until it ends
    hpcq watch 7 --json --since 0   # its whole kept history, as JSON lines
    """
    s = common.connect()
    cursor = ev_api.last_cursor(s.store) if since is None else since
    target = None
    if job is not None:
        try:
            target = s.get_job(job)
        except NotFound as exc:
            exc.exit_code = 2
            raise
    if since is not None and ev_api.missed(s.store, since):
        click.echo(f"warning: events after {since} were already trimmed (the stream keeps the "
                   f"last ~{schema.EVENTS_KEEP})", err=True)
    out = _JsonOut() if as_json else _PlainOut() if not _tty() else _LiveOut(target)
    try:
        with out:
            state = _follow(s, target, cursor, out, from_now=since is None)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if target is None:
        return
    out.final(f"job {target.id} {state.value}")
    raise SystemExit(0 if state == JobState.Finished else 1)


def _tty() -> bool:
    return click.get_text_stream("stdout").isatty()


def _ended(job, event=None) -> JobState | None:
    """The job's end state if it has ended (and, given an event, not moved since it)."""
    try:
        job.refresh()
    except NotFound:        # purged meanwhile: it had ended
        return job.state
    if job.state not in JOB_END or job.state == JobState.Configuring:
        return None
    if event is not None and float(job.record.get("changed") or 0) > event.time:
        return None         # a later run is under way (requeued after this end)
    return job.state


def _follow(s, job, cursor: str, out, from_now: bool) -> JobState | None:
    # from now, a job that has already ended has nothing to come (its record is read after the
    # cursor was taken, so an end in between is seen either way)
    if job is not None and from_now and _ended(job) is not None:
        return job.state
    while True:
        for event in s.events(since=cursor, job=None if job is None else job.id,
                              block=CHECK_EVERY):
            cursor = event.cursor
            out.show(event)
            if job is not None and event.kind == "job" and event.state in _END:
                state = _ended(job, event)
                if state is not None:
                    return state
        if job is not None:
            state = _ended(job)
            if state is not None:
                return state


# --- renderings ------------------------------------------------------------------------------

def plain_line(e: ev_api.Event) -> str:
    move = f"{e.old_state} -> {e.state}" if e.old_state else e.state
    parts = [fmt_time_ms(e.time), f"{e.kind:<6}", f"{e.id:<10}", move]
    if e.node and e.kind != "worker":
        parts.append(f"on {e.node}")
    if e.message:
        parts.append(one_line(e.message))
    return "  ".join(parts)


class _JsonOut:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def show(self, e: ev_api.Event) -> None:
        sys.stdout.write(json.dumps(e.to_dict()) + "\n")
        sys.stdout.flush()

    def final(self, line: str) -> None:
        pass                # the job's end event was the last line


class _PlainOut(_JsonOut):
    def show(self, e: ev_api.Event) -> None:
        sys.stdout.write(plain_line(e) + "\n")
        sys.stdout.flush()

    def final(self, line: str) -> None:
        click.echo(line)


class _LiveOut:
    """The latest events as a table that redraws in place (rich ``Live``)."""

    def __init__(self, job):
        from rich.console import Console
        self.console = Console()
        self.job = job
        self.rows: deque = deque(maxlen=max(MIN_ROWS, self.console.size.height - 6))
        self.count = 0
        self.live = None

    def _table(self):
        from rich.table import Table
        title = f"hpcq watch: job {self.job.id}" if self.job else "hpcq watch"
        t = Table(title=f"{title} ({self.count} events)", expand=True, title_justify="left")
        for name in ("Time", "Kind", "Id", "From", "State", "Node", "Message"):
            t.add_column(name, overflow="fold" if name == "Message" else "ellipsis",
                         no_wrap=name != "Message")
        for e in self.rows:
            t.add_row(fmt_time_ms(e.time)[11:], e.kind, e.id, e.old_state or "", e.state,
                      "" if e.kind == "worker" else (e.node or ""), one_line(e.message or ""))
        return t

    def __enter__(self):
        from rich.live import Live
        self.live = Live(self._table(), console=self.console, auto_refresh=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def show(self, e: ev_api.Event) -> None:
        self.rows.append(e)
        self.count += 1
        self.live.update(self._table(), refresh=True)

    def final(self, line: str) -> None:
        self.console.print(line, highlight=False)
