"""Reaching a cluster's Redis: the URL checked before any connection, and one line saying what
to fix when the connection fails, the password always masked."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from scheduler.errors import InvalidInput
from scheduler.settings import mask_url


def check_url(url: str) -> None:
    """A malformed Redis URL is bad usage (InvalidInput); the message masks its password."""
    from redis.connection import parse_url
    rest = url.partition("://")[2]
    if "@" in rest[len(urlsplit(url).netloc):]:
        # An unencoded / ? or # in the password ends the host part early: its tail would be
        # taken for a host or a database, and shown as one.
        raise InvalidInput(f"invalid Redis URL {url.partition('://')[0]}://***@{rest.rpartition('@')[2]}: "
                           "percent-encode the password's / ? # @ (%2F %3F %23 %40)")
    try:
        parse_url(url)
    except ValueError as exc:
        raise InvalidInput(f"invalid Redis URL {mask_url(url)}: {exc}") from None


def unreachable_message(url: str, exc: BaseException) -> str:
    """One line on a failed connection to ``url`` (password masked), saying what to fix."""
    where = mask_url(url)
    if isinstance(exc, redis.AuthenticationError):
        if urlsplit(url).password is None:
            return (f"Redis at {where} requires a password: put it in the URL or in a file named "
                    "by HPCQ_REDIS_PASSWORD_FILE")
        return f"Redis at {where} refused the password: {str(exc).rstrip('.')}"
    return f"cannot reach Redis at {where}: {str(exc).removeprefix('cannot reach Redis: ')}"


def no_cluster_message(url: str) -> str:
    """One line for a Redis that answers but holds no hpcq cluster (``NoCluster``)."""
    return (f"Redis at {mask_url(url)} holds no hpcq cluster (no scheduler or worker has run "
            "against it): set HPCQ_REDIS_URL to your cluster's URL (`hpcq up` prints the export "
            "line) or start `hpcq scheduler` and `hpcq worker` on it")
