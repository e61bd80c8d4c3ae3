"""The audit store, for search and lineage: SQLite (one file in the data dir) or PostgreSQL (a
database of its own, shared by several proxy replicas, each with its own chain).

The journal (``journal``) is the log; the importer copies its records here. The record body
(canonical JSON) and its hash are kept as written, and ``verify`` checks them as a chain of
their own and against the journal; the other columns and the ``audit_tables`` /
``audit_columns`` index tables are derived from the body and are not trusted by ``verify``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from rowgate.audit import records as rec
from rowgate.errors import AuditUnavailable, ConfigError

# audit_records: one row per record as the journal has it; the other tables are derived from
# the bodies in the same transaction.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        replica TEXT NOT NULL, seq BIGINT NOT NULL, body TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY (replica, seq))""",
    """CREATE TABLE IF NOT EXISTS audit_index (
        replica TEXT NOT NULL, seq BIGINT NOT NULL, ts TEXT NOT NULL, type TEXT NOT NULL, session BIGINT,
        identity TEXT, database TEXT, decision TEXT, ref BIGINT, PRIMARY KEY (replica, seq))""",
    """CREATE TABLE IF NOT EXISTS audit_tables (replica TEXT NOT NULL, seq BIGINT NOT NULL, tbl TEXT NOT NULL,
        PRIMARY KEY (replica, seq, tbl))""",
    """CREATE TABLE IF NOT EXISTS audit_columns (replica TEXT NOT NULL, seq BIGINT NOT NULL, ts TEXT NOT NULL,
        identity TEXT, col TEXT NOT NULL, clause TEXT NOT NULL, PRIMARY KEY (replica, seq, col, clause))""",
    # records of sessions that saw raw values, with the reason (a table of its own rather than a
    # column of audit_index: stores made before it get it by CREATE IF NOT EXISTS)
    """CREATE TABLE IF NOT EXISTS audit_unmasked (replica TEXT NOT NULL, seq BIGINT NOT NULL,
        reason TEXT NOT NULL, PRIMARY KEY (replica, seq))""",
    "CREATE INDEX IF NOT EXISTS audit_index_ts ON audit_index (ts)",
    "CREATE INDEX IF NOT EXISTS audit_index_identity ON audit_index (identity, ts)",
    "CREATE INDEX IF NOT EXISTS audit_index_ref ON audit_index (replica, ref)",
    "CREATE INDEX IF NOT EXISTS audit_index_type ON audit_index (type, ts)",
    "CREATE INDEX IF NOT EXISTS audit_tables_tbl ON audit_tables (tbl)",
    "CREATE INDEX IF NOT EXISTS audit_columns_col ON audit_columns (col)",
    "CREATE INDEX IF NOT EXISTS audit_columns_identity ON audit_columns (identity)",
)
_DERIVED = ("audit_index", "audit_tables", "audit_columns", "audit_unmasked")


class StoreLocation(NamedTuple):
    """How ``open_store`` opened a store: what another process needs to open it too."""

    url: str | None
    data_dir: Path | None
    password: str | None


class StoredRecord(NamedTuple):
    seq: int
    body: str  # canonical JSON, without the hash
    hash: str
    record: dict[str, Any]  # the body parsed


@dataclass(frozen=True)
class SearchFilter:
    identity: str | None = None
    database: str | None = None
    table: str | None = None  # schema.table, or a bare table name
    column: str | None = None  # schema.table.column
    decision: str | None = None
    since: str | None = None  # ISO timestamps, compared as text (all are UTC)
    until: str | None = None
    text: str | None = None
    types: tuple[str, ...] = ()
    unmasked: bool = False  # only records of sessions that saw raw values
    limit: int | None = None


class _Connection(Protocol):
    dialect: str

    def run(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class _Sqlite:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        # autocommit mode with explicit BEGIN/COMMIT; WAL + synchronous=NORMAL: a commit is a
        # write() into the WAL (survives a crash of the process) and is fsynced at checkpoints
        # only: the store is rebuilt from the journal, which is the durable log
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # written by the import process (and hourly by retention): WAL readers (`rowgate
        # audit`) never block it
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=1000")

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.db.execute(sql, params)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def begin(self) -> None:
        self.db.execute("BEGIN")

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()


class _Postgres:
    dialect = "postgresql"

    def __init__(self, url: str, password: str | None) -> None:
        self._url, self._password = url, password
        self.db = self._connect()

    def _connect(self) -> Any:
        import psycopg

        if self._password:
            return psycopg.connect(self._url, connect_timeout=5, password=self._password)
        return psycopg.connect(self._url, connect_timeout=5)

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.db.execute(self._sql(sql), params)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.db.cursor() as cur:
            cur.executemany(self._sql(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = self.db.execute(self._sql(sql), params).fetchall()
        self.db.commit()  # end the read transaction: later reads see new records
        return [tuple(r) for r in rows]

    def begin(self) -> None:
        # psycopg opens a transaction with the first statement; a connection lost earlier
        # (its append was refused) is replaced by a new one
        if self.db.closed:
            self.db = self._connect()

    def commit(self) -> None:
        self.db.commit()

    def rollback(self) -> None:
        self.db.rollback()

    def close(self) -> None:
        self.db.close()


_INSERT_RECORD = "INSERT INTO audit_records (replica, seq, body, hash) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
_INSERT_INDEX = (
    "INSERT INTO audit_index (replica, seq, ts, type, session, identity, database, decision, ref) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INSERT_TABLE = "INSERT INTO audit_tables (replica, seq, tbl) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_INSERT_COLUMN = (
    "INSERT INTO audit_columns (replica, seq, ts, identity, col, clause) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_UNMASKED = "INSERT INTO audit_unmasked (replica, seq, reason) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


class AuditStore:
    """Thread-safe: one connection, one lock (the event loop appends, the writer's thread
    commits batches and syncs, the CLI reads)."""

    def __init__(self, conn: _Connection, location: StoreLocation | None = None) -> None:
        self._conn = conn
        self.location = location
        self._lock = threading.Lock()
        with self._lock:
            for ddl in _SCHEMA:
                conn.run(ddl)
            conn.commit()

    @property
    def dialect(self) -> str:
        return self._conn.dialect

    # --- writing -------------------------------------------------------------------

    def import_records(self, replica: str, batch: Sequence[StoredRecord]) -> None:
        """Store records of a replica and their search and lineage rows in one transaction;
        records already there are left as they are (``verify`` compares them with the journal)."""
        rows: list[tuple[Any, ...]] = []
        index: list[tuple[Any, ...]] = []
        tables: list[tuple[Any, ...]] = []
        columns: list[tuple[Any, ...]] = []
        unmasked: list[tuple[Any, ...]] = []
        for item in batch:
            r = item.record
            key = (replica, item.seq)
            rows.append((*key, item.body, item.hash))
            decision = r.get("decision")
            index.append((*key, str(r.get("ts", "")), str(r.get("type", "")), r.get("session"), r.get("identity"),
                          r.get("database"), rec.decision_label(decision) if isinstance(decision, dict) else None,
                          r.get("ref")))
            if r.get("type") == rec.STATEMENT:
                tables.extend((*key, t) for t in sorted(rec.tables_of(r)))
                columns.extend((*key, r.get("ts"), r.get("identity"), c, clause) for c, clause in rec.columns_of(r))
            masking = r.get("masking")
            if isinstance(masking, dict) and masking.get("unmasked") is True:
                unmasked.append((*key, str(masking.get("reason") or "")))
        with self._lock:
            try:
                self._conn.begin()
                self._conn.run_many(_INSERT_RECORD, rows)
                self._conn.run_many(_INSERT_INDEX, index)
                if tables:
                    self._conn.run_many(_INSERT_TABLE, tables)
                if columns:
                    self._conn.run_many(_INSERT_COLUMN, columns)
                if unmasked:
                    self._conn.run_many(_INSERT_UNMASKED, unmasked)
                self._conn.commit()
            except Exception as e:
                with contextlib.suppress(Exception):  # the connection itself is gone; the error says so
                    self._conn.rollback()
                raise AuditUnavailable(f"audit store unavailable: {e}") from e

    def prune(self, replica: str, through_seq: int) -> int:
        with self._lock:
            n = self._conn.query("SELECT count(*) FROM audit_records WHERE replica = ? AND seq <= ?",
                                 (replica, through_seq))[0][0]
            self._conn.begin()
            for table in ("audit_records", *_DERIVED):
                self._conn.run(f"DELETE FROM {table} WHERE replica = ? AND seq <= ?", (replica, through_seq))
            self._conn.commit()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- reading -------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.query(sql, params)

    def last(self, replica: str) -> tuple[int, str] | None:
        rows = self._query(
            "SELECT seq, hash FROM audit_records WHERE replica = ? ORDER BY seq DESC LIMIT 1", (replica,)
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def last_before(self, replica: str, type_: str, ts: str) -> tuple[int, str] | None:
        """The newest record of ``type_`` older than ``ts``: (seq, hash)."""
        rows = self._query(
            "SELECT i.seq, r.hash FROM audit_index i JOIN audit_records r ON r.replica = i.replica AND r.seq = i.seq "
            "WHERE i.replica = ? AND i.type = ? AND i.ts < ? ORDER BY i.seq DESC LIMIT 1",
            (replica, type_, ts),
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def replicas(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT DISTINCT replica FROM audit_records ORDER BY replica")]

    def chain(self, replica: str, batch: int = 5000) -> Iterator[tuple[int, str, str]]:
        """(seq column, body, hash column) of a replica's records in seq order."""
        after = -1
        while True:
            rows = self._query(
                "SELECT seq, body, hash FROM audit_records WHERE replica = ? AND seq > ? ORDER BY seq LIMIT ?",
                (replica, after, batch),
            )
            for seq, body, h in rows:
                yield int(seq), str(body), str(h)
            if len(rows) < batch:
                return
            after = int(rows[-1][0])

    def search(self, f: SearchFilter) -> list[rec.Record]:
        where, params = ["1=1"], []
        for column, value in (("r.identity", f.identity), ("r.database", f.database), ("r.decision", f.decision)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.since:
            where.append("r.ts >= ?")
            params.append(f.since)
        if f.until:
            where.append("r.ts < ?")
            params.append(f.until)
        if f.types:
            where.append(f"r.type IN ({', '.join('?' * len(f.types))})")
            params.extend(f.types)
        if f.table:
            match = "t.tbl = ?" if "." in f.table else "(t.tbl = ? OR t.tbl LIKE ?)"
            where.append(f"EXISTS (SELECT 1 FROM audit_tables t WHERE t.replica = r.replica AND t.seq = r.seq "
                         f"AND {match})")
            params.extend([f.table] if "." in f.table else [f.table, "%." + f.table])
        if f.column:
            where.append("EXISTS (SELECT 1 FROM audit_columns c WHERE c.replica = r.replica AND c.seq = r.seq "
                         "AND c.col = ?)")
            params.append(f.column)
        if f.unmasked:
            where.append("EXISTS (SELECT 1 FROM audit_unmasked u WHERE u.replica = r.replica AND u.seq = r.seq)")
        if f.text:
            where.append("b.body LIKE ?")
            params.append(f"%{f.text}%")
        sql = (f"SELECT b.body, b.hash FROM audit_index r JOIN audit_records b ON b.replica = r.replica "
               f"AND b.seq = r.seq WHERE {' AND '.join(where)} ORDER BY r.ts, r.replica, r.seq")
        if f.limit:
            sql += f" LIMIT {int(f.limit)}"
        return [{**json.loads(b), "hash": h} for b, h in self._query(sql, params)]

    def records(self, replica: str, seqs: Sequence[int]) -> dict[int, rec.Record]:
        """Records ``seqs`` of a replica, by seq."""
        out: dict[int, rec.Record] = {}
        for i in range(0, len(seqs), 500):
            chunk = list(seqs[i:i + 500])
            rows = self._query(f"SELECT seq, body FROM audit_records WHERE replica = ? "
                               f"AND seq IN ({', '.join('?' * len(chunk))})", [replica, *chunk])
            out.update((int(seq), json.loads(body)) for seq, body in rows)
        return out

    def completions(self, replica: str, seqs: Sequence[int]) -> dict[int, rec.Record]:
        """The completion records of statement records ``seqs``, by statement seq."""
        out: dict[int, rec.Record] = {}
        for i in range(0, len(seqs), 500):
            chunk = list(seqs[i:i + 500])
            rows = self._query(
                f"SELECT i.ref, b.body FROM audit_index i JOIN audit_records b ON b.replica = i.replica "
                f"AND b.seq = i.seq WHERE i.replica = ? AND i.type = 'completion' "
                f"AND i.ref IN ({', '.join('?' * len(chunk))})",
                [replica, *chunk],
            )
            out.update((int(ref), json.loads(body)) for ref, body in rows)
        return out

    def column_reads(self, column: str | None = None, identity: str | None = None,
                     since: str | None = None) -> list[tuple[str, int, str, str | None, str, str]]:
        """(replica, seq, ts, identity, column, clause) from the lineage index."""
        where, params = ["1=1"], []
        for name, value in (("col", column), ("identity", identity)):
            if value is not None:
                where.append(f"{name} = ?")
                params.append(value)
        if since:
            where.append("ts >= ?")
            params.append(since)
        rows = self._query(
            f"SELECT replica, seq, ts, identity, col, clause FROM audit_columns WHERE {' AND '.join(where)} "
            "ORDER BY ts, replica, seq, col",
            params,
        )
        return [(str(a), int(b), str(c), d, str(e), str(f)) for a, b, c, d, e, f in rows]

    def raw(self) -> _Connection:
        """The connection itself, for tests that tamper with the store."""
        return self._conn


def open_store(url: str | None, data_dir: Path | None, password: str | None = None) -> AuditStore:
    """The configured store; AuditUnavailable when it cannot be opened, ConfigError when
    there is nowhere to keep it."""
    try:
        if url is not None:
            if not url.startswith(("postgresql://", "postgres://")):
                raise ConfigError(f"audit.url: expected a postgresql:// URL, got {url.split(':', 1)[0]}:")
            return AuditStore(_Postgres(url, password), StoreLocation(url, None, password))
        if data_dir is None:
            raise ConfigError("audit: no data_dir and no audit.url: there is nowhere to keep the audit log",
                              hint="set data_dir, or audit.url, or audit.enabled: false")
        data_dir.mkdir(parents=True, exist_ok=True)
        return AuditStore(_Sqlite(data_dir / "audit.db"), StoreLocation(None, data_dir, None))
    except (ConfigError, AuditUnavailable):
        raise
    except Exception as e:
        raise AuditUnavailable(f"audit log unavailable: cannot open the audit store: {e}") from e
