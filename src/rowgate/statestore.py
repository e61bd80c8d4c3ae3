"""The state store: rowgate's own small database (tokens, persisted keys, audit, ...).

SQLite by default (a file under ``data_dir``), or PostgreSQL when the config's
``state:`` is a ``postgresql://`` URL so several replicas share one store. Callers
write portable SQL with ``?`` placeholders; for PostgreSQL they become ``%s``.
One connection per Database, guarded by a lock: callers may use it from any thread
(the proxy runs blocking calls in a worker thread, see ``asyncio.to_thread``)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from rowgate.errors import ConfigError

Dialect = Literal["sqlite", "postgresql"]
T = TypeVar("T")


def _to_pyformat(sql: str) -> str:
    """``?`` → ``%s`` and ``%`` → ``%%`` outside quoted strings and identifiers."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class Database:
    """A connection to the state store. ``blob`` and ``real`` are the column types
    for bytes and floats in this dialect (for CREATE TABLE statements)."""

    def __init__(self, dialect: Dialect, conn: Any, where: str, reconnect: Callable[[], Any] | None = None) -> None:
        self.dialect: Dialect = dialect
        self.where = where
        self.blob = "BLOB" if dialect == "sqlite" else "BYTEA"
        self.real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
        self._conn = conn
        self._reconnect = reconnect
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction(); statements outside one commit on their own

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else _to_pyformat(sql)

    def _run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                return fn()
            except Exception:
                # a PostgreSQL store that restarted: reconnect once, outside transactions only
                # (inside one, the caller must see the failure and retry the whole transaction)
                if self._reconnect is None or self._depth or not getattr(self._conn, "broken", False):
                    raise
                self._conn = self._reconnect()
                return fn()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return self._run(lambda: int(self._conn.execute(self._sql(sql), tuple(params)).rowcount))

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(p) for p in seq]

        def run() -> None:
            if self.dialect == "sqlite":
                self._conn.executemany(sql, rows)
            else:
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)

        self._run(run)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._run(lambda: [tuple(r) for r in self._conn.execute(self._sql(sql), tuple(params)).fetchall()])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """All statements inside commit together or not at all. Holds the lock, so
        other threads wait; nested use joins the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                if self.dialect == "sqlite":
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield self
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                else:
                    with self._conn.transaction():
                        yield self
            finally:
                self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _open_sqlite(path: Path) -> Database:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # owner-only from the first byte (SQLite gives its -wal and -shm files the same mode)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                f.chmod(0o600)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")  # readers (the CLI) never block the proxy's writes
        conn.execute("PRAGMA busy_timeout=10000")
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"state: cannot open the SQLite state store {path}: {e}") from e
    return Database("sqlite", conn, str(path))


def _open_postgresql(url: str) -> Database:
    import psycopg

    host = url.split("@")[-1]  # the URL may carry a password: name only the host part

    def connect() -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise ConfigError(f"state: cannot connect to the PostgreSQL state store at {host}: {e}") from None

    return Database("postgresql", connect(), host, reconnect=connect)


def open_database(url: str | None, default_path: Path) -> Database:
    """``url``: None (SQLite at ``default_path``), a ``postgresql://`` URL, a
    ``sqlite:///path`` URL or a plain file path."""
    if url is None:
        return _open_sqlite(default_path)
    if url.startswith(("postgresql://", "postgres://")):
        return _open_postgresql(url)
    if url.startswith("sqlite:///"):
        return _open_sqlite(Path(url.removeprefix("sqlite://")))
    if "://" in url:
        raise ConfigError(f"state: unsupported URL {url.split('://')[0]}://... (use postgresql://... or a file path)")
    return _open_sqlite(Path(url))


def open_state(state: str | None, data_dir: Path | None) -> Database:
    """The store a config names: ``state:`` if set, else ``data_dir/state.db``."""
    if state is None and data_dir is None:
        raise ConfigError(
            "no state store configured",
            hint="set data_dir (the store is then data_dir/state.db) or state: postgresql://... in the config",
        )
    return open_database(state, (data_dir or Path(".")) / "state.db")
