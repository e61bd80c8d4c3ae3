"""Brute-force protection for logins, counted per identity name and per client
address (host only). After ``delay_after`` failures each further failure is answered
late (exponential, capped); after ``lockout_after`` failures every attempt is refused
for ``lockout``, even with the right secret. A success clears the identity's count,
never the address's: one valid token must not reset an attacker's address."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from rowgate.config import Throttle, ThrottleLimits
from rowgate.errors import LoginLocked

log = logging.getLogger("rowgate.auth")

MAX_TRACKED = 100_000  # counters kept per kind; the oldest go first, locked-out ones last
MAX_SPARED = 1000  # locked-out counters skipped per eviction (bounds the work of one failure)


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class _Counters:
    def __init__(self, what: str, limits: ThrottleLimits, cfg: Throttle) -> None:
        self.what = what
        self.limits = limits
        self.cfg = cfg
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    def get(self, key: str, now: float) -> _Count | None:
        c = self._counts.get(key)
        if c is not None and now - c.last > self.cfg.window and now >= c.locked_until:
            del self._counts[key]
            return None
        return c

    def fail(self, key: str, now: float) -> _Count:
        c = self.get(key, now) or _Count()
        c.failures += 1
        c.last = now
        if c.failures >= self.limits.lockout_after and now >= c.locked_until:
            c.locked_until = now + self.cfg.lockout
            log.warning(
                "%s %s locked out for %gs after %d failed logins", self.what, key, self.cfg.lockout, c.failures
            )
        self._counts[key] = c
        self._counts.move_to_end(key)
        spared = 0
        while len(self._counts) > MAX_TRACKED:
            old_key, old = self._counts.popitem(last=False)
            # a flood of failures for made-up names must not push a lockout out of memory
            if now < old.locked_until and spared < MAX_SPARED:
                self._counts[old_key] = old
                spared += 1
        return c

    def delay(self, c: _Count | None) -> float:
        if c is None or c.failures < self.limits.delay_after:
            return 0.0
        return float(min(self.cfg.max_delay, self.cfg.delay * 2 ** (c.failures - self.limits.delay_after)))

    def clear(self, key: str) -> None:
        self._counts.pop(key, None)


def host_of(client_addr: str) -> str:
    """'127.0.0.1:5432' → '127.0.0.1' (every connection has a new port). An IPv6 client
    counts by its /64: one host usually holds a whole /64 and could otherwise take a
    fresh address for every few attempts."""
    host, sep, port = client_addr.rpartition(":")
    if not (sep and port.isdigit()):
        return client_addr
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return host


class LoginThrottle:
    def __init__(self, cfg: Throttle, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self._identity = _Counters("identity", cfg.identity, cfg)
        self._address = _Counters("address", cfg.address, cfg)

    def check(self, name: str, client_addr: str) -> None:
        """Raise LoginLocked if either the identity or the address is locked out."""
        if not self.cfg.enabled:
            return
        now = self.clock()
        for counters, key in ((self._identity, name), (self._address, host_of(client_addr))):
            c = counters.get(key, now)
            if c is not None and now < c.locked_until:
                log.warning("login for identity %r from %s refused: %s locked out", name, client_addr, counters.what)
                raise LoginLocked(
                    f"too many failed logins for this {'identity' if counters is self._identity else 'address'}; "
                    f"try again in {c.locked_until - now:.0f} seconds",
                    hint="a successful login is impossible until then; ask your administrator if this persists",
                )

    def failed(self, name: str, client_addr: str) -> float:
        """Count a failure; return how long to wait before answering it."""
        if not self.cfg.enabled:
            return 0.0
        now = self.clock()
        ci = self._identity.fail(name, now)
        ca = self._address.fail(host_of(client_addr), now)
        return max(self._identity.delay(ci), self._address.delay(ca))

    def succeeded(self, name: str) -> None:
        self._identity.clear(name)
