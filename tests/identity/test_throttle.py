"""Brute force: failed logins are slowed, then refused for a while (even with the
right token), per identity and per address, and logged."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from proxyutil import TOKENS, UpstreamDB, raw_login, start_proxy

from rowgate.config import Throttle, ThrottleLimits
from rowgate.errors import LoginLocked
from rowgate.identity.throttle import LoginThrottle
from rowgate.pgwire import backend as be


def test_throttle_counts_delays_and_locks() -> None:
    now = [0.0]
    cfg = Throttle(identity=ThrottleLimits(delay_after=2, lockout_after=4),
                   address=ThrottleLimits(delay_after=5, lockout_after=8), delay=1, max_delay=3, lockout=60, window=100)
    t = LoginThrottle(cfg, lambda: now[0])
    assert [t.failed("alice", "10.0.0.1:1111") for _ in range(3)] == [0.0, 1.0, 2.0]
    t.check("alice", "10.0.0.1:2222")
    assert t.failed("alice", "10.0.0.1:3333") == 3.0  # capped; and now locked
    with pytest.raises(LoginLocked, match="identity"):
        t.check("alice", "10.0.0.9:1")
    t.check("bob", "10.0.0.2:1")  # other identities from other addresses are fine
    # four more failures from the same host (other names, new ports): the address locks too
    for i, name in enumerate(("u1", "u2", "u3", "u4")):
        t.failed(name, f"10.0.0.1:{4000 + i}")
    with pytest.raises(LoginLocked, match="address"):
        t.check("bob", "10.0.0.1:5555")
    now[0] += 61
    t.check("alice", "10.0.0.1:1")  # the lockout is over
    t.succeeded("alice")
    assert t.failed("alice", "10.0.0.3:1") == 0.0  # success reset the identity's count
    now[0] += 1000
    assert t.failed("u1", "10.0.0.4:1") == 0.0  # old failures are forgotten after the window


def test_brute_force_is_slowed_then_refused(upstream: UpstreamDB, tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = start_proxy(upstream, tmp, auth={"throttle": {
        "identity": {"delay_after": 2, "lockout_after": 4}, "address": {"delay_after": 50, "lockout_after": 100},
        "delay": "0.3s", "max_delay": "1s", "lockout": "1m"}})
    caplog.set_level(logging.WARNING, logger="rowgate")
    try:
        timings = []
        for _ in range(4):
            started = time.monotonic()
            out = raw_login(p.port, "alice", "guess-guess-guess")
            timings.append(time.monotonic() - started)
            assert isinstance(out[-1], be.ErrorResponse) and out[-1].sqlstate == "28P01"
        assert timings[0] < 0.25 and timings[1] >= 0.3 and timings[2] >= 0.6, timings
        out = raw_login(p.port, "alice", TOKENS["alice"])  # locked: even the right token
        err = out[-1]
        assert isinstance(err, be.ErrorResponse) and err.sqlstate == "28000"
        assert err.message is not None and "too many failed logins" in err.message
        out = raw_login(p.port, "bob", TOKENS["bob"])  # another identity is not locked
        assert isinstance(out[-1], be.ReadyForQuery)
        logged = caplog.text
        assert "failed login for identity 'alice'" in logged and "locked out" in logged
    finally:
        p.stop()
