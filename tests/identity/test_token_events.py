"""The token store's history of changes (what the proxy copies into the audit log), on both
back ends: one event per change, numbered in commit order under concurrent writers, expiry
noted once, and the history of a store made before events existed filled in once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from proxyutil import UpstreamDB

from rowgate.identity.tokenstore import TokenStore
from rowgate.statestore import Database, open_database

EVENTS_DB = "rowgate_token_events_test"


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp: Path, upstream: UpstreamDB) -> Iterator[tuple[str, Path]]:
    """(url or None, sqlite path): open as many connections to one fresh store as a test needs."""
    if request.param == "sqlite":
        yield "", tmp / "state.db"
        return
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {EVENTS_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {EVENTS_DB}")
    yield upstream.dsn(EVENTS_DB), tmp / "unused.db"


def _open(opener: tuple[str, Path]) -> Database:
    return open_database(opener[0] or None, opener[1])


def _create(store: TokenStore, name: str, now: float, expires: float | None = None) -> None:
    store.create(name, kind="human", groups=("g",), attributes={}, on_behalf_of=None, expires=expires, now=now,
                 actor="ops@host")


def test_one_event_per_change(opener: tuple[str, Path]) -> None:
    db = _open(opener)
    try:
        store = TokenStore(db)
        now = time.time()
        _create(store, "a", now)
        store.revoke("a", now + 1, actor="sec@host")
        store.revoke("a", now + 2, actor="sec@host")  # already revoked: no change, no event
        _create(store, "a", now + 3)  # the name issued again: a new token id
        _create(store, "b", now, expires=now + 5)
        assert store.record_expired(now + 4) == 0 and store.next_expiry(now + 4) == pytest.approx(now + 5)
        assert store.record_expired(now + 6) == 1
        assert store.record_expired(now + 7) == 0  # noted once
        assert store.next_expiry(now + 6) is None
        _create(store, "b", now + 8)  # over the expired token: its expiry is not noted twice
        events = store.events(0)
        assert [(e.name, e.action, e.actor) for e in events] == [
            ("a", "created", "ops@host"), ("a", "revoked", "sec@host"), ("a", "created", "ops@host"),
            ("b", "created", "ops@host"), ("b", "expired", None), ("b", "created", "ops@host")]
        assert [e.seq for e in events] == list(range(1, 7))
        assert events[0].token_id == events[1].token_id != events[2].token_id
        assert events[4].at == pytest.approx(now + 5) and events[1].at == pytest.approx(now + 1)
        assert store.events(4) == events[4:]
        assert store.audited_through("r1") == 0
        store.set_audited_through("r1", 4)
        store.set_audited_through("r1", 5)
        assert store.audited_through("r1") == 5 and store.audited_through("r2") == 0
    finally:
        db.close()


def test_expiry_is_noted_when_the_name_is_issued_again(opener: tuple[str, Path]) -> None:
    """No proxy saw the expiry: issuing the name again, which removes the old row, notes it."""
    db = _open(opener)
    try:
        store = TokenStore(db)
        now = time.time()
        _create(store, "c", now - 10, expires=now - 5)
        _create(store, "c", now)
        assert [(e.action, e.at) for e in store.events(0)] == [
            ("created", pytest.approx(now - 10)), ("expired", pytest.approx(now - 5)), ("created", pytest.approx(now))]
    finally:
        db.close()


def test_history_of_an_older_store_is_filled_in_once(opener: tuple[str, Path]) -> None:
    db = _open(opener)
    try:
        store = TokenStore(db)
        now = time.time()
        _create(store, "old", now - 100)
        _create(store, "gone", now - 90)
        store.revoke("gone", now - 80)
        # as a store made before token events existed
        db.execute("DROP TABLE rowgate_token_events")
        db.execute("DELETE FROM rowgate_meta WHERE key = 'token_events'")
        store = TokenStore(db)
        events = store.events(0)
        assert sorted((e.name, e.action, e.actor) for e in events) == [
            ("gone", "created", None), ("gone", "revoked", None), ("old", "created", None)]
        assert {e.name: e.at for e in events if e.action == "created"} == {
            "old": pytest.approx(now - 100), "gone": pytest.approx(now - 90)}
        TokenStore(db)  # opened again: nothing added
        assert store.events(0) == events
    finally:
        db.close()


def test_concurrent_changes_are_numbered_in_commit_order(opener: tuple[str, Path]) -> None:
    """Writers on their own connections (the CLI, several proxies): every change gets an
    event, and event numbers have no gap a reader could skip."""
    TokenStore(_open(opener)).db.close()
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        db = _open(opener)
        try:
            store = TokenStore(db)
            for j in range(10):
                _create(store, f"w{i}-{j}", time.time())
                if j % 2:
                    store.revoke(f"w{i}-{j}", time.time())
        except BaseException as e:  # reported by the test thread
            errors.append(e)
        finally:
            db.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    db = _open(opener)
    try:
        events = TokenStore(db).events(0)
    finally:
        db.close()
    assert [e.seq for e in events] == list(range(1, 61))
    assert len({(e.name, e.action) for e in events}) == 60
