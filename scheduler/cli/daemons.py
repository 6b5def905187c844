"""The long-running commands: ``hpcq scheduler``, ``hpcq worker`` and ``hpcq up``."""

from __future__ import annotations

import os

import click

from scheduler.cli import common
from scheduler.cli.common import redis_option


@click.command("scheduler")
@redis_option
def scheduler_cmd():
    """Run the scheduler daemon (dispatches queued tasks to free worker slots)."""
    from scheduler.dispatcher import run_scheduler
    run_scheduler(common.settings())


@click.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), metavar="N",
              help="Slots: tasks run at once [default: CPU count].")
@click.option("--hostname", "-n", metavar="H", help="Worker name [default: worker@<host>].")
@redis_option
def worker_cmd(concurrency, hostname):
    """Run a Celery worker that runs tasks' commands."""
    from worker.main import run_worker
    run_worker(common.settings(), concurrency=concurrency or os.cpu_count(), hostname=hostname)


@click.command("up")
@click.option("--workers", "-w", type=click.IntRange(min=0), default=2, show_default=True,
              help="Number of workers.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), metavar="C",
              help="Slots per worker [default: CPU count].")
@click.option("--port", "-p", type=click.IntRange(min=1, max=65535), metavar="P",
              help="Port of the embedded Redis [default: the last one used, or a free one].")
@click.option("--state-dir", metavar="D", help="Data and logs of the embedded Redis "
              "[default: $HPCQ_STATE_DIR or ~/.local/state/hpcq].")
@redis_option(help="Use this Redis instead of starting one (HPCQ_REDIS_URL is not used).")
def up_cmd(workers, concurrency, port, state_dir):
    """Run a local cluster: Redis (embedded unless --redis), a scheduler and N workers.

    Stops all of them on Ctrl-C or SIGTERM."""
    from scheduler.local import LocalCluster
    ctx = click.get_current_context()
    url = ctx.meta.get("hpcq.redis")
    cfg = common.settings()
    cluster = LocalCluster(redis_url=url, workers=workers, concurrency=concurrency, port=port,
                           state_dir=state_dir or cfg.state_dir)
    raise SystemExit(cluster.run())
