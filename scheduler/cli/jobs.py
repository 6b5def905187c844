"""``hpcq job ...``: HPC Pack's ``job`` command (new, add, submit, view, list, listtasks, wait,
cancel, requeue)."""

from __future__ import annotations

import getpass
import re

import click

from scheduler.api.model import MAX_CANCEL_MESSAGE, TaskSpec
from scheduler.cli.options import (JOB_NEW_OPTIONS, TASK_OPTIONS, build_spec, job_fields,
                                   job_new_options, job_default_options, submit_task_options,
                                   task_options)
from scheduler.core.states import JOB_END, JobState
from scheduler.errors import NotFound
from scheduler.settings import duration
from scheduler.cli import common, render, stopping
from scheduler.cli.common import json_option, redis_option
from scheduler.cli.progress import Counter, wait_for_job

def add_spec(job, spec: TaskSpec):
    return job.add_task(**vars(spec))


def print_id(obj_id, as_json: bool, **extra) -> None:
    if as_json:
        render.emit_json({"id": str(obj_id), **extra})
    else:
        click.echo(str(obj_id))


@click.group("job")
@redis_option
def job_group():
    """Create, submit, view and control jobs (HPC Pack's `job` command)."""


@job_group.command("new")
@job_new_options
@job_default_options
@redis_option
@json_option
def job_new(name, priority, fail_on_task_failure, runtime, as_json, **kw):
    """Create a job in the Configuring state and print its id.

    \b
    hpcq job new --name render --cores 4 --group gpu --exclusive
    hpcq job new --depends-on-job 3,4 --hold-until 2026-11-26T08:00
    """
    fields = job_fields(kw, defaults=True)
    s = common.connect()
    job = s.create_job(name=name, priority=priority, fail_on_task_failure=fail_on_task_failure,
                       runtime=runtime, **fields)
    print_id(job.id, as_json)


@job_group.command("add")
@click.argument("job")
@task_options
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND...")
@redis_option
@json_option
def job_add(job, command, as_json, **kw):
    """Add a task to a job; print the task id.  To a Configuring job it is submitted with the
    job; to a Queued or Running one it is queued at once.

    \b
    hpcq job add 1 --name prep -- ./prep.sh
    hpcq job add 1 --sweep 1-100 --depends-on prep --cores 4 -- render frame_*** > out_***.txt
    hpcq job add 1 --retry 2 --retry-delay 30 --valid-exit-codes 0,3 -- ./fetch.sh
    """
    spec = build_spec(command, kw)
    s = common.connect()
    task = add_spec(s.get_job(job), spec)
    print_id(task.id, as_json)


class _DashDashCommand(click.Command):
    """Keeps the words after the first ``--`` apart, so ``submit -- 5`` runs the command 5
    while ``submit 5`` submits job 5."""

    def parse_args(self, ctx, args):
        if "--" in args:
            i = args.index("--")
            ctx.meta["hpcq.command"] = list(args[i + 1:])
            args = args[:i]
        else:
            ctx.meta["hpcq.command"] = None
        return super().parse_args(ctx, args)


_JOB_ID_LIKE = re.compile(r"^\s*\d+\s*$")


@job_group.command("submit", cls=_DashDashCommand)
@job_new_options
@submit_task_options
@click.option("--key", metavar="K", help="Idempotency key: if a job was already submitted with "
              "K, print its id instead of submitting another (safe to retry).")
@click.option("--strict", is_flag=True, help="Refuse a task that no online worker could ever "
              "run (too many cores, GPUs or memory, or a group no worker is in).")
@click.argument("words", nargs=-1, metavar="[JOB | -- COMMAND...]")
@redis_option
@json_option
def job_submit(words, as_json, name, priority, fail_on_task_failure, runtime, key, strict, **kw):
    """Submit job JOB, or create, fill and submit a one-task job running COMMAND.

    \b
    hpcq job submit 3
    hpcq job submit --name hello --stdout out.txt -- echo hello
    hpcq job submit --sweep 1-10 --cores 4 -- echo '*'
    hpcq job submit --key nightly-2026-11-25 --hold-until 2026-11-26T02:00 -- ./nightly.sh
    """
    ctx = click.get_current_context()
    command = ctx.meta.get("hpcq.command")
    if command is None and len(words) == 1 and _JOB_ID_LIKE.match(words[0]):
        given = [p for p in JOB_NEW_OPTIONS + TASK_OPTIONS
                 if ctx.get_parameter_source(p) not in (None, click.core.ParameterSource.DEFAULT)]
        if given:
            raise click.UsageError(
                f"job and task options apply only to a new job (-- COMMAND), not to job {words[0].strip()}")
        _print_submitted(common.connect().submit_job(words[0], strict=strict, key=key), as_json)
        return
    if command is not None and words:
        raise click.UsageError(f"unexpected argument {words[0]!r} before --")
    fields = job_fields(kw)
    kw["task_name"] = kw["task_name"] or name
    spec = build_spec(command if command is not None else words, kw)
    job = common.connect().submit(spec, name=name, priority=priority,
                                  fail_on_task_failure=fail_on_task_failure, runtime=runtime,
                                  key=key, strict=strict, **fields)
    _print_submitted(job, as_json)


def _print_submitted(job, as_json: bool) -> None:
    if as_json:
        render.emit_json(job.to_dict())
    else:
        click.echo(str(job.id))


@job_group.command("view")
@click.argument("job")
@redis_option
@json_option
def job_view(job, as_json):
    """Show a job's properties and its task counts."""
    j = common.connect().get_job(job)
    if as_json:
        render.emit_json(j.to_dict())
    else:
        render.show_job(j)


@job_group.command("list")
@click.option("--state", metavar="S1,S2", help="Only jobs in these states (or All).")
@click.option("--all", "all_", is_flag=True, help="Jobs in every state, not only Queued and Running.")
@click.option("--user", metavar="NAME|*", help="Only this owner's jobs [default: you; * for everyone].")
@redis_option
@json_option
def job_list(state, all_, user, as_json):
    """List jobs: without --all or --state only your Queued and Running jobs, like HPC Pack."""
    wanted = common.parse_job_states(state)
    if wanted is None and not all_ and not state:
        wanted = {JobState.Queued, JobState.Running}
    if user is None:
        user = "*" if all_ else getpass.getuser()
    jobs = common.connect().get_job_list(state=wanted, owner=None if user == "*" else user)
    if as_json:
        render.emit_json([j.to_dict() for j in jobs])
    else:
        render.table(render.JOB_COLUMNS, render.job_rows(jobs), empty="no jobs")


@job_group.command("listtasks")
@click.argument("job")
@click.option("--expand", is_flag=True, help="List each sweep instance separately.")
@click.option("--state", metavar="S1,S2", help="Only tasks in these states (or All).")
@redis_option
@json_option
def job_listtasks(job, expand, state, as_json):
    """List a job's tasks (sweep instances too with --expand)."""
    wanted = common.parse_task_states(state)
    j = common.connect().get_job(job)
    tasks = (t for t in j.iter_tasks(expand) if wanted is None or t.state in wanted)
    if as_json:
        render.emit_json_stream(t.to_dict() for t in tasks)
    else:
        render.table(render.TASK_COLUMNS, render.task_rows(tasks), empty="no tasks")


@job_group.command("wait")
@click.argument("job")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S", help="Give up after S seconds (exit 3).")
@redis_option
@json_option
def job_wait(job, timeout, as_json):
    """Wait for a job to end: exit 0 if Finished, 1 if Failed or Canceled, 2 if there is no
    such job, 3 on timeout."""
    try:
        j = common.connect().get_job(job)
    except NotFound as exc:
        exc.exit_code = 2   # a bad id, as for every other command; 1 means the job did not finish
        raise
    state = wait_for_job(j, timeout, quiet=as_json)
    if as_json:
        render.emit_json(j.to_dict())
    raise SystemExit(0 if state == JobState.Finished else 1)


@job_group.command("cancel")
@click.argument("job")
@click.option("--message", metavar="M",
              help=f"Reason, recorded in the error messages (<= {MAX_CANCEL_MESSAGE} characters).")
@click.option("--force", is_flag=True, help="Kill running tasks at once, without the grace period.")
@click.option("--graceful", is_flag=True, help="Let running tasks finish; start nothing new.")
@click.option("--grace", type=click.FloatRange(min=0), metavar="S", help="Grace period between SIGTERM and SIGKILL.")
@click.option("--no-wait", is_flag=True, help="Return once the cancel is recorded.")
@redis_option
@json_option
def job_cancel(job, message, force, graceful, grace, no_wait, as_json):
    """Cancel a job and its unfinished tasks; print its resulting state."""
    s = common.connect()
    j = s.cancel_job(job, message=message, force=force, graceful=graceful, wait=False, grace=grace)
    if not no_wait:
        counts = Counter(j)   # sweep instances one by one

        def left() -> int:
            c = counts.counts()
            return c.get("Canceling", 0) + (c.get("Running", 0) + c.get("Dispatching", 0) if graceful else 0)
        stopping.wait_stopped(f"job {j.id}", done=lambda: j.refresh().state in JOB_END, left=left,
                              grace=0.0 if force else s.cancel_grace(grace),
                              graceful=graceful, quiet=as_json)
    _print_state(j, as_json)


@job_group.command("requeue")
@click.argument("job")
@click.option("--no-wait", is_flag=True, help="Return once the requeue is recorded.")
@redis_option
@json_option
def job_requeue(job, no_wait, as_json):
    """Queue a Failed, Canceled or Running job's unfinished tasks again; print its state."""
    with render.waiting(f"requeuing job {job}: waiting until its running tasks have stopped"):
        j = common.connect().requeue_job(job, wait=not no_wait)
    _print_state(j, as_json)


def _print_state(obj, as_json: bool) -> None:
    if as_json:
        render.emit_json(obj.to_dict())
    else:
        click.echo(f"{obj.id} {obj.state.value}")


@job_group.command("purge")
@click.argument("job", required=False)
@click.option("--older-than", metavar="DURATION",
              help="Every job that ended more than this long ago (90s, 15m, 12h, 5d).")
@redis_option
@json_option
def job_purge(job, older_than, as_json):
    """Delete ended jobs and all their task records now (the scheduler does it by itself after
    HPCQ_JOB_RETENTION).  Only Finished, Failed and Canceled jobs can be purged.

    \b
    hpcq job purge 3
    hpcq job purge --older-than 1d
    """
    if (job is None) == (older_than is None):
        raise click.UsageError("give a JOB or --older-than DURATION (one of them)")
    s = common.connect()
    if job is not None:
        s.purge_job(job)
        purged = [int(job)]
    else:
        try:
            age = duration(older_than)
        except ValueError:
            raise click.BadParameter(f"{older_than!r} is not a duration (90s, 15m, 12h, 5d)",
                                     param_hint="--older-than") from None
        with render.counting("purging jobs", quiet=as_json) as count:
            purged = s.purge_jobs(age, on_job=count)
    if as_json:
        render.emit_json({"purged": [str(j) for j in purged]})
    elif job is not None:
        click.echo(f"{job} purged")
    else:
        click.echo(f"{len(purged)} job(s) purged")


from scheduler.cli.jobcontrol import job_finish, job_modify  # noqa: E402  (they use job_group's helpers)

job_group.add_command(job_modify)
job_group.add_command(job_finish)
