"""Storage failures by class and cause: one place decides whether an exception means "the database is unavailable",
so a driver error raised while closing a transaction never masks the connection loss that caused it."""

from __future__ import annotations

import asyncpg

# SQLSTATE classes 08 (connection exception), 57 (operator intervention: admin shutdown, crash shutdown, cannot
# connect now, query cancelled) and 53300 (too many connections): transient, the same request may succeed later.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError (socket lost mid-query)
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    # asyncpg's answer to a statement on a connection whose server died between statements (seen when a primary is
    # SIGKILLed: "cannot switch to state 12; another operation (2) is in progress"); never a client's fault, and a
    # retry lands on a fresh connection.
    asyncpg.InternalClientError,
)


class DatabaseUnreachable(OSError):
    """Opening a connection failed at the socket level (refused, unreachable, timed out): the pool's connect wraps
    the driver's OSError in this, so an OSError elsewhere (a client's reset, a disk) is never mistaken for it. Still
    an OSError, so code that treats any socket failure as "retry later" (readiness, the live feed) keeps working."""


def database_unavailable_cause(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s cause/context chain that says the database is unavailable, if any.

    asyncpg's Transaction.__aexit__ answers a lost connection with InterfaceError ("connection is closed") whose
    __context__ is the real AdminShutdownError/ConnectionDoesNotExistError: walking the chain finds it.
    """
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, UNAVAILABLE) or isinstance(node, DatabaseUnreachable):
            return node
        node = node.__cause__ or node.__context__
    return None
