"""Who may change a job: its owner (the user name ``getpass.getuser()`` gave when it was created)
or an administrator, one of the names in ``HPCQ_ADMINS`` as the scheduler publishes it in Redis
(``ADMINS``), so that a client's own environment cannot make it an administrator; nobody else,
root included.

This stops mistakes (canceling a colleague's job by a typo), not a hostile user: anyone holding
the Redis password can run the scripts, or write the records, directly.  Real separation needs
each user's own Redis credentials (Redis ACLs) in front of a service that checks the caller, or
clients that never reach Redis (see the README's Owners section).

The rule is checked by each operation's own script, first (lib.lua ``check_permitted``): no
round trip of its own, and no window between the check and the change."""

from __future__ import annotations

import getpass


def current_user() -> str:
    return getpass.getuser()


def canonical_admins(names: str) -> str:
    """HPCQ_ADMINS as the scheduler publishes it (``Store.announce``): sorted, no blanks."""
    return ",".join(sorted({n.strip() for n in (names or "").split(",") if n.strip()}))
