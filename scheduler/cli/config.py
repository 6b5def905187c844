"""``hpcq config``: the settings this command would run with, where each comes from, secrets
masked, so an operator can see what a deployment really sets (a variable misspelled in a compose
file shows up as a default here)."""

from __future__ import annotations

import dataclasses
import os

import click

from scheduler.cli import common, render
from scheduler.cli.common import json_option, redis_option
from scheduler.settings import Settings


def _source(name: str, ctx: click.Context) -> str:
    if name == "redis_url" and ctx.meta.get("hpcq.redis"):
        return "--redis"
    return "environment" if os.environ.get(Settings.env_name(name)) else "default"


@click.command("config")
@redis_option
@json_option
def config_cmd(as_json):
    """Print the effective settings (from HPCQ_* variables, --redis and defaults), the Redis
    password masked."""
    ctx = click.get_current_context()
    cfg = common.settings()
    values = cfg.public()
    rows = [{"name": f.name, "variable": Settings.env_name(f.name), "value": values[f.name],
             "source": _source(f.name, ctx)} for f in dataclasses.fields(Settings)]
    unknown = sorted(k for k in os.environ if k.startswith("HPCQ_") and k not in Settings.env_names()
                     and k not in IGNORED)
    if as_json:
        render.emit_json({"settings": rows, "unknown_variables": unknown})
        return
    render.table(("Variable", "Value", "Source"),
                 ([r["variable"], "" if r["value"] in (None, "") else str(r["value"]), r["source"]]
                  for r in rows))
    for name in unknown:
        click.echo(f"warning: {name} is set but hpcq reads no such setting", err=True)


#: HPCQ_* variables that are not settings: the markers and ids hpcq gives each task's processes.
IGNORED = frozenset({"HPCQ_JOB_ID", "HPCQ_TASK_ID", "HPCQ_TASK_NUMBER", "HPCQ_INSTANCE",
                     "HPCQ_SWEEP_VALUE", "HPCQ_ATTEMPT", "HPCQ_WORKER"})
