"""Bound connections kept between logins, for campus-mfa-authd: a login borrows one for its
reads and writes and gives it back before it waits for a person (and at its end), so a
burst of logins binds a few times instead of once per login.

A connection that sat idle may have died (slapd restarted, an idle timeout, a failover).
connection.py finds that out on the next operation: a read that fails on a borrowed
connection is tried once more on a fresh one; before the first write of a loan, a
connection idle for VALIDATE_AFTER seconds or more is checked with a WhoAmI and replaced
if dead. A write whose answer is lost is never sent again (a counted attempt would count
twice): the login fails closed, or verify_code re-reads the token and decides anew.

Connections to any server but the first of ``ldap.uris`` are kept for FALLBACK_SECONDS
only, so that once the first provider is back every host writes there again (compare-and-
swaps meet on one server, docs/ldap-servers.md). A server that failed (refused, or did not
answer within ldap.timeout) is tried after the others for DOWN_SECONDS, so that a provider
that hangs costs one timeout, not one per login.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import ldap3

SIZE = 8                 # idle connections kept; more logins at once open more, not kept
VALIDATE_AFTER = 1.0     # seconds idle after which a connection is checked before a write
FALLBACK_SECONDS = 30.0  # how long a connection to a later server of ldap.uris is kept
DOWN_SECONDS = 10.0      # how long a server that failed is tried after the others


@dataclass
class Pooled:
    conn: ldap3.Connection
    primary: bool            # to the first server of ldap.uris
    opened: float
    used: float              # last operation that succeeded


class ConnectionPool:
    """Idle bound connections as one DN (the service DN's, in the authd)."""

    def __init__(self, uris: tuple[str, ...], size: int = SIZE) -> None:
        self.first = uris[0] if uris else ""
        self.size = size
        self._idle: list[Pooled] = []
        self._down: dict[str, float] = {}  # server name -> until when it is tried last
        self._lock = threading.Lock()
        self.opened = 0    # connections opened (and bound) through this pool: a measure

    def take(self) -> Pooled | None:
        """The most recently used idle connection, or None (the caller opens one)."""
        with self._lock:
            return self._idle.pop() if self._idle else None

    def adopt(self, conn: ldap3.Connection) -> Pooled:
        """A connection the caller just opened, to be given back later."""
        now = time.monotonic()
        with self._lock:
            self.opened += 1
        return Pooled(conn, conn.server.name == self.first, now, now)

    def give_back(self, pooled: Pooled) -> bool:
        """Keep ``pooled`` for the next login; False if it is not kept (the caller unbinds
        it): the pool is full, or it is a fallback server's and old enough."""
        if not pooled.primary and time.monotonic() - pooled.opened > FALLBACK_SECONDS:
            return False
        with self._lock:
            if len(self._idle) >= self.size:
                return False
            self._idle.append(pooled)
            return True

    def failed(self, server: str) -> None:
        """``server`` did not answer: try the others first for a while."""
        with self._lock:
            self._down[server] = time.monotonic() + DOWN_SECONDS

    def order(self, servers: list) -> list:
        """``servers`` (ldap3 Servers, in ldap.uris order) with the ones that failed lately
        moved to the end, in their own order."""
        now = time.monotonic()
        with self._lock:
            down = {name for name, until in self._down.items() if until > now}
        return sorted(servers, key=lambda server: server.name in down)

    def close(self) -> list[Pooled]:
        """Empty the pool; the connections it held, for the caller to unbind."""
        with self._lock:
            idle, self._idle = self._idle, []
        return idle
