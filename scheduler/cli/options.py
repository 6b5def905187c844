"""The options of ``job new``, ``job add`` and the one-shot ``job submit``, and how they become
a JobSpec's fields and a TaskSpec: declared once, shared by the three commands."""

from __future__ import annotations

import click

from scheduler.api.model import TaskSpec
from scheduler.cli import common

#: Options of a new job (``job new`` and the one-shot ``job submit``).
JOB_NEW_OPTIONS = ("name", "priority", "fail_on_task_failure", "runtime", "depends_on_job",
                   "run_on_parent_failure", "hold_until", "task_retry_count")
#: Options of ``job new`` only: what its tasks get unless they say otherwise.
JOB_DEFAULT_OPTIONS = ("exclusive", "job_env", "cores", "memory", "gpus", "group")
TASK_OPTIONS = ("task_name", "workdir", "env", "export_env", "stdin", "stdout", "stderr", "task_runtime",
                "depends_on", "no_rerunnable", "sweep", "cores", "memory", "gpus", "group",
                "exclusive", "retry", "retry_delay", "valid_exit_codes", "max_failed_instances")


def _apply(f, options):
    for opt in reversed(options):
        f = opt(f)
    return f


def job_new_options(f):
    return _apply(f, [
        click.option("--name", default="", help="Job name."),
        click.option("--priority", default="Normal", show_default=True,
                     help="Lowest, BelowNormal, Normal, AboveNormal or Highest."),
        click.option("--fail-on-task-failure", is_flag=True,
                     help="Fail the job and cancel its other tasks when a task fails."),
        click.option("--runtime", type=click.IntRange(min=1), metavar="S",
                     help="Job run time limit in seconds."),
        click.option("--depends-on-job", metavar="J1,J2",
                     help="Jobs that must end first (HPC Pack's ParentJobIds); if one Failed or "
                          "was Canceled this job fails without starting."),
        click.option("--run-on-parent-failure", is_flag=True,
                     help="Run even if a --depends-on-job parent Failed or was Canceled."),
        click.option("--hold-until", metavar="TIME",
                     help="Start no task before TIME (ISO 8601: 2026-11-26T08:00, local time "
                          "unless it has an offset)."),
        click.option("--task-retry-count", type=click.IntRange(min=0), metavar="N",
                     help="Reruns of a task after system errors (lost node) [default: "
                          "HPCQ_TASK_RETRY_COUNT, 3]."),
    ])


def job_default_options(f):
    """``job new``'s defaults for its tasks, and the job's own exclusive flag and variables."""
    return _apply(f, [
        click.option("--exclusive", is_flag=True, help="No other job's tasks share its workers."),
        click.option("--env", "job_env", multiple=True, metavar="K=V",
                     help="Environment variable every task gets (repeatable)."),
        click.option("--cores", type=click.IntRange(min=1), metavar="N", help="Cores per task [default: 1]."),
        click.option("--memory", type=click.IntRange(min=0), metavar="MB", help="Memory per task in MB."),
        click.option("--gpus", type=click.IntRange(min=0), metavar="N", help="GPUs per task."),
        click.option("--group", metavar="G", help="Node group its tasks run in."),
    ])


def task_options(f, name_flag: str = "--name", runtime_flag: str = "--runtime"):
    return _apply(f, [
        click.option(name_flag, "task_name", default="", help="Task name."),
        click.option("--workdir", metavar="DIR", help="Working directory of the command."),
        click.option("--env", multiple=True, metavar="K=V", help="Environment variable (repeatable)."),
        click.option("--export-env", is_flag=True,
                     help="Give the task your current environment (hpcq's HPCQ_* settings left "
                          "out); --env wins over it."),
        click.option("--stdin", metavar="FILE", help="File to read standard input from."),
        click.option("--stdout", metavar="FILE", help="File to write standard output to."),
        click.option("--stderr", metavar="FILE", help="File to write standard error to."),
        click.option(runtime_flag, "task_runtime", type=click.IntRange(min=1), metavar="S",
                     help="Task run time limit in seconds."),
        click.option("--depends-on", metavar="A,B", help="Names of tasks this task waits for."),
        click.option("--no-rerunnable", is_flag=True, help="Refuse requeues of this task."),
        click.option("--sweep", metavar="START-END[:STEP]", help="Make a parametric sweep task."),
        click.option("--cores", type=click.IntRange(min=1), metavar="N",
                     help="Cores it needs (CCP_NUMCPUS) [default: the job's, else 1]."),
        click.option("--memory", type=click.IntRange(min=0), metavar="MB", help="Memory it needs, in MB."),
        click.option("--gpus", type=click.IntRange(min=0), metavar="N",
                     help="GPUs it needs (CUDA_VISIBLE_DEVICES names them)."),
        click.option("--group", metavar="G", help="Run only on workers of node group G."),
        click.option("--exclusive", is_flag=True, help="Run alone on its worker."),
        click.option("--retry", type=click.IntRange(min=0), default=0, metavar="N",
                     help="Run again when the command fails, up to N times."),
        click.option("--retry-delay", type=click.FloatRange(min=0), default=0, metavar="S",
                     help="Seconds between a failure and its retry."),
        click.option("--valid-exit-codes", metavar="CODES",
                     help="Exit codes that mean success, e.g. 0,10..20 [default: 0]."),
        click.option("--max-failed-instances", type=click.IntRange(min=0), metavar="N",
                     help="A sweep: instances that may fail before it counts as Failed [default: 0]."),
    ])


def submit_task_options(f):
    """The task options of ``job submit``: --name and --runtime there are the job's."""
    return task_options(f, name_flag="--task-name", runtime_flag="--task-runtime")


def build_spec(words, kw) -> TaskSpec:
    """A validated task spec from the COMMAND words and the task options."""
    if not words:
        raise click.UsageError("missing COMMAND (put it after --)")
    env = common.parse_env(kw["env"])
    if kw["export_env"]:
        env = {**common.exported_env(), **env}
    return TaskSpec(command=common.join_command(words), name=kw["task_name"], work_dir=kw["workdir"],
                    env=env, stdin=kw["stdin"], stdout=kw["stdout"],
                    stderr=kw["stderr"], runtime=kw["task_runtime"],
                    depends_on=common.parse_depends(kw["depends_on"]),
                    is_rerunnable=not kw["no_rerunnable"], sweep=common.parse_sweep(kw["sweep"]),
                    cores=kw["cores"], memory=kw["memory"], gpus=kw["gpus"], group=kw["group"],
                    exclusive=kw["exclusive"], retry=kw["retry"], retry_delay=kw["retry_delay"],
                    valid_exit_codes=kw["valid_exit_codes"],
                    max_failed_instances=kw["max_failed_instances"])


def job_fields(kw, defaults: bool = False) -> dict:
    """The JobSpec fields (beyond name, priority, fail_on_task_failure, runtime) of the job
    options in ``kw``, popped from it; ``defaults``: also ``job new``'s task defaults."""
    fields = {"depends_on_job": common.parse_depends(kw.pop("depends_on_job", None)),
              "run_on_parent_failure": kw.pop("run_on_parent_failure", False),
              "hold_until": kw.pop("hold_until", None),
              "task_retry_count": kw.pop("task_retry_count", None)}
    if defaults:
        fields.update(exclusive=kw.pop("exclusive"), env=common.parse_env(kw.pop("job_env")),
                      cores=kw.pop("cores"), memory=kw.pop("memory"), gpus=kw.pop("gpus"),
                      group=kw.pop("group"))
    return fields
