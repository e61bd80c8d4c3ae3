"""Record real libpq exchanges as byte fixtures for the pgwire codec tests.

This is not a test module; run it by hand when the fixtures need refreshing:

    cd /work/main   # the repository root
    .venv/bin/python tests/pgwire/record_fixtures.py

It starts a throwaway embedded PostgreSQL (``rowgate.embedded.EmbeddedPostgres``) in a
temporary directory, puts a small recording TCP relay in front of it, and drives real
clients through the relay: ``psql`` (simple query protocol, multi-statement strings,
errors, NOTICE, LISTEN/NOTIFY, transaction states, ``\\copy`` in and out) and psycopg
(extended protocol, binary parameters, named prepared statements, pipeline mode,
COPY aborted with CopyFail). Every client connects with ``sslmode=disable`` and
``gssencmode=disable`` as the trust-authenticated superuser, so the first client packet
is a plain StartupMessage.

For each scenario it rewrites ``fixtures/<name>.client.bin`` (client to server bytes)
and ``fixtures/<name>.server.bin`` (server to client bytes). The tests only rely on
properties every recording has (message kinds, SQL text, column names, statuses), not
on volatile values such as backend pids or ParameterStatus values, so re-recording
against another PostgreSQL version keeps them passing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class Recording:
    def __init__(self) -> None:
        self.client = bytearray()  # client -> server
        self.server = bytearray()  # server -> client


class RecordingRelay:
    """Accepts TCP connections, connects each to the upstream, pumps bytes both ways
    and records them. Finished connections are put on ``done``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.done: queue.Queue[Recording] = queue.Queue()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, sink: bytearray) -> None:
        try:
            while data := src.recv(65536):
                sink += data
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        rec = Recording()
        threads = [
            threading.Thread(target=self._pump, args=(client, upstream, rec.client)),
            threading.Thread(target=self._pump, args=(upstream, client, rec.server)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        upstream.close()
        self.done.put(rec)

    def close(self) -> None:
        self.listener.close()


def _conninfo(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable gssencmode=disable"


def psql_simple(psql: Path, port: int, workdir: Path) -> None:
    commands = [
        "SELECT 1 AS one, 'two' AS two, NULL::text AS three",
        # one Query message carrying several statements
        "SELECT 'multi' AS first_col; SELECT 2 AS second_col; CREATE TEMP TABLE simple_t(x int); "
        "INSERT INTO simple_t VALUES (1), (2)",
        "SELECT 1/0",
        "DO $$BEGIN RAISE NOTICE 'hello from a DO block'; END$$",
        "LISTEN rowgate_chan",
        "NOTIFY rowgate_chan, 'hello payload'",
        "BEGIN",
        "SELECT x FROM simple_t ORDER BY x",
        "SELECT no_such_column",
        "ROLLBACK",
        ";",
    ]
    args = [str(psql), "-X", "-d", _conninfo(port)]
    for c in commands:
        args += ["-c", c]
    subprocess.run(args, capture_output=True, check=False, timeout=60)


def psql_copy(psql: Path, port: int, workdir: Path) -> None:
    data = workdir / "copy_in.csv"
    data.write_text("1,alpha\n2,beta\n3,\"gamma, with comma\"\n")
    commands = [
        "CREATE TEMP TABLE copy_t(a int, b text)",
        f"\\copy copy_t from '{data}' with (format csv)",
        "\\copy copy_t to stdout",
        "\\copy (SELECT a * 10 AS a10 FROM copy_t ORDER BY a) to stdout with (format csv, header)",
    ]
    args = [str(psql), "-X", "-d", _conninfo(port)]
    for c in commands:
        args += ["-c", c]
    subprocess.run(args, capture_output=True, check=True, timeout=60)


def psycopg_extended(psql: Path, port: int, workdir: Path) -> None:
    import psycopg

    with psycopg.connect(_conninfo(port), autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT %b::int4 + 1 AS answer, %b::text AS label, %b::bytea AS blob, %b::int4 AS nothing",
            (41, "héllo", b"\x00\x01\xff", None),
            binary=True,
        )
        cur.fetchall()
        for n in (7, 8):  # a named server-side prepared statement, executed twice
            cur.execute("SELECT %s::int8 * 2 AS doubled", (n,), prepare=True)
            cur.fetchall()
        with conn.pipeline():
            cur.execute("CREATE TEMP TABLE pipe_t(id int PRIMARY KEY, v text)")
            cur.executemany("INSERT INTO pipe_t VALUES (%s, %s)", [(1, "a"), (2, "b"), (3, None)])
            cur.execute("SELECT id, v FROM pipe_t ORDER BY id")
        cur.fetchall()
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            cur.execute("SELECT 1 / %s::int4", (0,))
        try:
            with cur.copy("COPY pipe_t FROM STDIN") as copy:
                copy.write_row((4, "d"))
                raise RuntimeError("abort the copy")
        except (RuntimeError, psycopg.errors.QueryCanceled):
            pass


SCENARIOS: dict[str, Callable[[Path, int, Path], None]] = {
    "psql_simple": psql_simple,
    "psql_copy": psql_copy,
    "psycopg_extended": psycopg_extended,
}


def main() -> int:
    from rowgate.embedded import BIN_DIR, EmbeddedPostgres

    FIXTURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rowgate-record-") as tmp:
        os.chmod(tmp, 0o755)  # the server may run as an unprivileged user
        pg = EmbeddedPostgres(Path(tmp) / "pg").start()
        relay = RecordingRelay(pg.port)
        try:
            for name, scenario in SCENARIOS.items():
                scenario(BIN_DIR / "psql", relay.port, Path(tmp))
                rec = relay.done.get(timeout=60)
                (FIXTURES / f"{name}.client.bin").write_bytes(bytes(rec.client))
                (FIXTURES / f"{name}.server.bin").write_bytes(bytes(rec.server))
                print(f"{name}: client {len(rec.client)} bytes, server {len(rec.server)} bytes")
        finally:
            relay.close()
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
