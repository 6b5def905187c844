"""``hpcq job modify`` and ``hpcq job finish`` (HPC Pack's job modify and job finish)."""

from __future__ import annotations

import click

from scheduler.api.model import MAX_CANCEL_MESSAGE
from scheduler.cli import common, render, stopping
from scheduler.cli.common import json_option, redis_option
from scheduler.core.states import JOB_END


@click.command("modify")
@click.argument("job")
@click.option("--hold-until", metavar="TIME", help="Start no task before TIME (ISO 8601; local "
              "time unless it has an offset).")
@click.option("--no-hold", is_flag=True, help="Drop the job's hold: its tasks may start now.")
@click.option("--priority", metavar="P", help="Lowest, BelowNormal, Normal, AboveNormal or Highest.")
@redis_option
@json_option
def job_modify(job, hold_until, no_hold, priority, as_json):
    """Change a job that waits (Configuring or Queued): its hold and its priority.

    \b
    hpcq job modify 7 --hold-until 2026-11-26T08:00 --priority Highest
    """
    if hold_until and no_hold:
        raise click.UsageError("--hold-until and --no-hold exclude each other")
    j = common.connect().modify_job(job, hold_until=hold_until, priority=priority, clear_hold=no_hold)
    if as_json:
        render.emit_json(j.to_dict())
    else:
        click.echo(f"{j.id} {j.state.value}")


def finish_options(f):
    """The options of ``job finish`` and ``task finish``."""
    for opt in reversed([
        click.option("--message", metavar="M",
                     help=f"Recorded as its message (<= {MAX_CANCEL_MESSAGE} characters).",),
        click.option("--grace", type=click.FloatRange(min=0), metavar="S",
                     help="Grace period between SIGTERM and SIGKILL."),
        click.option("--no-wait", is_flag=True, help="Return once the finish is recorded."),
        redis_option, json_option,
    ]):
        f = opt(f)
    return f


@click.command("finish")
@click.argument("job")
@finish_options
def job_finish(job, message, grace, no_wait, as_json):
    """Finish a job (HPC Pack's job finish): running tasks are stopped as by a cancel, and the
    job and every task that had not ended end Finished with the message."""
    s = common.connect()
    j = s.finish_job(job, message=message, wait=False, grace=grace)
    if not no_wait:
        stopping.wait_stopped(f"job {j.id}", done=lambda: j.refresh().state in JOB_END,
                              left=lambda: j.refresh().counts.get("Canceling", 0),
                              grace=s.cancel_grace(grace),
                              quiet=as_json)
    if as_json:
        render.emit_json(j.refresh().to_dict())
    else:
        click.echo(f"{j.id} {j.refresh().state.value}")
