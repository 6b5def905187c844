"""``hpcq``: the command line, shaped like HPC Pack's ``job`` and ``task`` commands.

Every failure the user can cause is one line on stderr, ``error: <message>``, and an exit code:
2 for bad usage or a malformed id, 1 for a refused operation, an unknown id or an unreachable
Redis, 3 for a wait that timed out."""

from __future__ import annotations

import os
import sys

import click

from scheduler.api.client import unreachable_message
from scheduler.errors import HpcqError, RedisUnavailable
from scheduler.cli import common
from scheduler.cli.common import redis_option
from scheduler.cli.config import config_cmd
from scheduler.cli.daemons import scheduler_cmd, up_cmd, worker_cmd
from scheduler.cli.flower import flower_cmd
from scheduler.cli.jobs import job_group
from scheduler.cli.nodes import node_group
from scheduler.cli.render import fail
from scheduler.cli.tasks import task_group
from scheduler.cli.watch import watch_cmd

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@redis_option
@click.version_option(package_name="hpcq", prog_name="hpcq")
def cli():
    """hpcq: HPC Pack's jobs and tasks on Redis and Celery.

    \b
    hpcq up                                  # a local cluster; export the URL it prints
    hpcq job submit -- echo hello            # a one-task job; prints its id
    hpcq job new; hpcq job add 1 -- cmd; hpcq job submit 1
    hpcq job wait 1; hpcq job listtasks 1; hpcq task view 1.1
    hpcq node list; hpcq node view worker@host
    """


for command in (job_group, task_group, node_group, scheduler_cmd, worker_cmd, up_cmd, config_cmd):
    cli.add_command(command)
cli.add_command(flower_cmd)
cli.add_command(watch_cmd)


def _fail(message: str, code: int, exc: BaseException | None = None) -> None:
    """``fail`` with every Redis URL masked and its password hidden (issue 10); the notes the
    API added to ``exc`` (e.g. a job a failed submit could not cancel) follow on the same line."""
    message = "; ".join([message, *getattr(exc, "__notes__", ())])
    fail(common.redact(message, common.current.get("redis_url"), os.environ.get("HPCQ_REDIS_URL")),
         code)


def _unreachable(exc: BaseException) -> str:
    """A lost connection in the middle of a command (``connect`` words its own failures)."""
    text = str(exc)
    url = common.current.get("redis_url")
    if isinstance(exc, RedisUnavailable) and not text.startswith("cannot reach Redis: "):
        return text
    cause = exc.__context__ if isinstance(exc, RedisUnavailable) else None
    return unreachable_message(url, cause or exc) if url else text


def main(argv: list[str] | None = None) -> None:
    """The console script ``hpcq`` (and ``python -m scheduler.cli``)."""
    import redis
    try:
        from kombu.exceptions import OperationalError
    except ImportError:  # pragma: no cover
        OperationalError = ()
    try:
        rv = cli.main(args=argv, prog_name="hpcq", standalone_mode=False)
    except BrokenPipeError:
        # the reader went away (`hpcq ... | head`): stop quietly, as a tool killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)
    except RedisUnavailable as exc:
        _fail(_unreachable(exc), exc.exit_code, exc)
    except HpcqError as exc:
        _fail(str(exc) or type(exc).__name__, exc.exit_code, exc)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        _fail(exc.format_message().rstrip(".") + hint, exc.exit_code)
    except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
        _fail(_unreachable(exc), 1, exc)
    except redis.RedisError as exc:
        _fail(f"Redis error: {exc}", 1, exc)
    sys.exit(rv if isinstance(rv, int) else 0)
