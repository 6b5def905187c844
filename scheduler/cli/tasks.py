"""``hpcq task ...``: HPC Pack's ``task`` command (view, cancel, requeue) on ``J.T`` or
``J.T.I``."""

from __future__ import annotations

import click

from scheduler.api.model import MAX_CANCEL_MESSAGE
from scheduler.cli import common, render, stopping
from scheduler.core.states import TASK_END
from scheduler.cli.common import json_option, redis_option
from scheduler.cli.jobcontrol import finish_options
from scheduler.cli.output import print_output


@click.group("task")
@redis_option
def task_group():
    """View and control single tasks and sweep instances (HPC Pack's `task` command)."""


@task_group.command("view")
@click.argument("task")
@redis_option
@json_option
def task_view(task, as_json):
    """Show a task, a sweep (J.T) or one sweep instance (J.T.I)."""
    t = common.connect().get_task(task)
    if as_json:
        render.emit_json(t.to_dict())
    else:
        render.show_task(t)


@task_group.command("cancel")
@click.argument("task")
@click.option("--message", metavar="M",
              help=f"Reason, recorded in the error message (<= {MAX_CANCEL_MESSAGE} characters).")
@click.option("--force", is_flag=True, help="Kill a running task at once, without the grace period.")
@click.option("--grace", type=click.FloatRange(min=0), metavar="S", help="Grace period between SIGTERM and SIGKILL.")
@click.option("--no-wait", is_flag=True, help="Return once the cancel is recorded.")
@redis_option
@json_option
def task_cancel(task, message, force, grace, no_wait, as_json):
    """Cancel a task, a whole sweep or one instance; print its resulting state."""
    s = common.connect()
    t = s.cancel_task(task, message=message, force=force, wait=False, grace=grace)
    if not no_wait:
        stopping.wait_stopped(f"task {t.id}", done=lambda: t.refresh().state in TASK_END,
                              left=lambda: _still_stopping(t),
                              grace=0.0 if force else s.cancel_grace(grace),
                              quiet=as_json)
    _print_state(t, as_json)


def _still_stopping(task) -> int:
    """Processes of this task (or of this sweep's instances) that are still being stopped."""
    if task.is_sweep:
        return task.instance_counts.get("Canceling", 0)
    return int(task.state.value == "Canceling")


@task_group.command("requeue")
@click.argument("task")
@click.option("--no-wait", is_flag=True, help="Return once the requeue is recorded.")
@redis_option
@json_option
def task_requeue(task, no_wait, as_json):
    """Queue a Failed or Canceled task (or a running one, stopping it first) again."""
    with render.waiting(f"requeuing {task}: waiting until a running attempt has stopped"):
        t = common.connect().requeue_task(task, wait=not no_wait)
    _print_state(t, as_json)


def _print_state(task, as_json: bool) -> None:
    task.refresh()
    if as_json:
        render.emit_json(task.to_dict())
    else:
        click.echo(f"{task.id} {task.state.value}")


@task_group.command("finish")
@click.argument("task")
@finish_options
def task_finish(task, message, grace, no_wait, as_json):
    """Finish a task, a whole sweep or one instance (HPC Pack's task finish): stopped as by a
    cancel if it runs, then Finished with the message."""
    s = common.connect()
    t = s.finish_task(task, message=message, wait=False, grace=grace)
    if not no_wait:
        stopping.wait_stopped(f"task {t.id}", done=lambda: t.refresh().state in TASK_END,
                              left=lambda: _still_stopping(t),
                              grace=s.cancel_grace(grace),
                              quiet=as_json)
    _print_state(t, as_json)


@task_group.command("output")
@click.argument("task")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing as the task writes, until it ends (waits for it to start).")
@redis_option
def task_output(task, follow):
    """Print a task's whole stdout (and stderr, on stderr), not only the part kept in Redis.

    \b
    hpcq task output 3.1
    hpcq task output 3.2.17 --follow
    """
    print_output(common.connect().get_task(task), follow=follow)
