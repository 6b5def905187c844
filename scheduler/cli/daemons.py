"""The long-running commands: ``hpcq scheduler``, ``hpcq worker`` and ``hpcq up``."""

from __future__ import annotations

import os

import click

from scheduler.cli import common
from scheduler.cli.common import redis_option


def metrics_options(f):
    """--metrics-port and --metrics-address (scheduler/metrics.py, worker/metrics.py)."""
    f = click.option("--metrics-address", default="0.0.0.0", show_default=True, metavar="A",
                     help="Address the metrics endpoint listens on.")(f)
    return click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=0,
                        metavar="P", help="Serve Prometheus metrics on http://A:P/metrics "
                        "[default: 0, off].")(f)


@click.command("scheduler")
@redis_option
@metrics_options
def scheduler_cmd(metrics_port, metrics_address):
    """Run the scheduler daemon (dispatches queued tasks to free worker slots)."""
    from scheduler.dispatcher import run_scheduler
    cfg = common.settings()
    if metrics_port:
        from scheduler.metrics import serve
        serve(cfg, metrics_port, metrics_address)
    run_scheduler(cfg)


@click.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), metavar="N",
              help="Slots: tasks run at once [default: CPU count].")
@click.option("--hostname", "-n", metavar="H", help="Worker name [default: worker@<host>].")
@click.option("--cores", type=click.IntRange(min=1), metavar="N",
              help="Cores it offers to tasks [default: its concurrency].")
@click.option("--memory", type=click.IntRange(min=1), metavar="MB",
              help="Memory it offers to tasks, in MB [default: the machine's].")
@click.option("--gpus", metavar="N|IDS", callback=lambda c, p, v: common.parse_gpus(v),
              help="GPUs it offers: a count (ids 0..N-1) or ids such as 0,2.")
@click.option("--group", "groups", multiple=True, metavar="G",
              help="A node group it is in (repeatable): tasks asking --group G run only there.")
@redis_option
@metrics_options
def worker_cmd(concurrency, hostname, cores, memory, gpus, groups, metrics_port, metrics_address):
    """Run a Celery worker that runs tasks' commands.

    \b
    hpcq worker -c 8 --cores 32 --memory 128000 --gpus 4 --group gpu
    """
    from worker.main import run_worker
    # what it advertises reaches the worker's settings as HPCQ_WORKER_* (read where they are used)
    for name, value in (("CORES", cores), ("MEMORY", memory), ("GPUS", gpus),
                        ("GROUPS", ",".join(common.parse_groups(groups)) if groups else None)):
        if value is not None:
            os.environ[f"HPCQ_WORKER_{name}"] = str(value)
    run_worker(common.settings(), concurrency=concurrency or os.cpu_count(), hostname=hostname,
               metrics_port=metrics_port, metrics_address=metrics_address)


@click.command("up")
@click.option("--workers", "-w", type=click.IntRange(min=0), default=2, show_default=True,
              help="Number of workers.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), metavar="C",
              help="Slots per worker [default: CPU count].")
@click.option("--port", "-p", type=click.IntRange(min=1, max=65535), metavar="P",
              help="Port of the embedded Redis [default: the last one used, or a free one].")
@click.option("--state-dir", metavar="D", help="Data and logs of the embedded Redis "
              "[default: $HPCQ_STATE_DIR or ~/.local/state/hpcq].")
@click.option("--flower", is_flag=True, help="Also run Flower (hpcq flower) on 127.0.0.1.")
@click.option("--flower-port", type=click.IntRange(min=1, max=65535), metavar="P",
              help="Flower's port [default: 5555, or a free one if taken]; implies --flower.")
@redis_option(help="Use this Redis instead of starting one (HPCQ_REDIS_URL is not used).")
def up_cmd(workers, concurrency, port, state_dir, flower, flower_port):
    """Run a local cluster: Redis (embedded unless --redis), a scheduler and N workers.

    Stops all of them on Ctrl-C or SIGTERM."""
    from scheduler.local import LocalCluster
    ctx = click.get_current_context()
    url = ctx.meta.get("hpcq.redis")
    cfg = common.settings()
    from scheduler.cli.flower import flower_port_for
    cluster = LocalCluster(redis_url=url, workers=workers, concurrency=concurrency, port=port,
                           state_dir=state_dir or cfg.state_dir,
                           flower_port=flower_port_for(flower, flower_port))
    raise SystemExit(cluster.run())
