"""Every error the API raises is one of these, so callers can catch hpcq's own failures apart
from bugs.  The CLI maps them to exit codes: InvalidId/InvalidInput are usage errors (2), the rest
are refusals (1)."""


class HpcqError(Exception):
    """Base class of every hpcq error."""

    exit_code = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class NotFound(HpcqError):
    """The job or task id is well formed but does not exist."""


class InvalidId(HpcqError):
    """The text is not a job id (``J``) or task id (``J.T`` / ``J.T.I``)."""

    exit_code = 2


class InvalidInput(HpcqError):
    """A field of a job or task, or an argument of an operation, is not acceptable."""

    exit_code = 2


class CancelMessageTooLong(InvalidInput):
    """HPC Pack's Operation_CancelMessageIsTooLong: the cancel is refused (exit 1), not misused."""

    exit_code = 1


class InvalidState(HpcqError):
    """The operation is not allowed in the object's current state; nothing was changed."""


class PermissionDenied(HpcqError):
    """The user is neither the job's owner nor an administrator (HPCQ_ADMINS); nothing was
    changed."""


class WaitTimeout(HpcqError):
    """A wait ran past its deadline; the object is still in a non-final state."""

    exit_code = 3


class RedisUnavailable(HpcqError):
    """hpcq's Redis cannot be reached."""


class NoCluster(HpcqError):
    """The Redis answers but holds no hpcq cluster: no scheduler or worker ever ran against it
    (most often the default URL, or a stale ``HPCQ_REDIS_URL``, naming another Redis).  Said
    rather than reporting an empty cluster, or submitting work no worker will ever read."""
