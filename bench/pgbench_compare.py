#!/usr/bin/env python3
"""Side-by-side pgbench: PostgreSQL direct vs PgBouncer vs rowgate vs rowgate's bare relay.

    .venv/bin/python bench/pgbench_compare.py [--duration 10] [--clients 1,8] [--scale 10]
                                              [--targets direct,pgbouncer,rowgate,relay]
                                              [--upstream-dsn DSN] [--json OUT]

It starts (or uses) an upstream PostgreSQL, loads it with ``pgbench -i``, starts a
PgBouncer (session pooling), a rowgate proxy (``rowgate serve``, a real subprocess) and
rowgate's bare relay (``bench/relay_only.py``: the same proxy and config with no pipeline
stage, i.e. without the statement gate, on a second port) in front of it, then runs
``pgbench -n -S`` (select-only) through each target for every query mode and client
count, interleaved so machine noise hits every target alike, and prints TPS, average
latency and the ratios between targets. Everything it started is stopped on exit,
Ctrl-C and errors. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qsl, unquote, urlsplit

from rowgate.embedded import BIN_DIR, EmbeddedPostgres, free_port

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("direct", "pgbouncer", "rowgate", "relay")
# (column, numerator, denominator): TPS ratios shown when both targets ran
RATIOS = (
    ("rg/direct", "rowgate", "direct"),
    ("rg/pgbouncer", "rowgate", "pgbouncer"),
    ("relay/pgbouncer", "relay", "pgbouncer"),
    ("rg/relay", "rowgate", "relay"),
)
RELAY_LAUNCHER = Path(__file__).resolve().parent / "relay_only.py"
MODES = ("simple", "prepared")
BENCH_IDENTITY = "bench"  # the rowgate identity and the PgBouncer client user
BENCH_DB = "bench"  # the rowgate upstream name and the PgBouncer database name


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A set-up step failed; the message says which and why."""


# --- connection parameters ----------------------------------------------------------


@dataclass(frozen=True)
class Conn:
    host: str
    port: int
    dbname: str
    user: str
    password: str | None = None

    def conninfo(self, *, with_password: bool = True) -> str:
        """A libpq key=value string; always sslmode=disable so every target pays the same."""
        parts = {"host": self.host, "port": str(self.port), "dbname": self.dbname, "user": self.user}
        if with_password and self.password:
            parts["password"] = self.password
        parts["sslmode"] = "disable"
        return " ".join(f"{k}={_quote_conninfo(v)}" for k, v in parts.items())


def _quote_conninfo(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_dsn(dsn: str) -> Conn:
    """A postgresql:// URI or a libpq key=value string (host must be a TCP host)."""
    params: dict[str, str] = {}
    if "://" in dsn:
        u = urlsplit(dsn)
        if u.scheme not in ("postgresql", "postgres"):
            raise BenchError(f"--upstream-dsn: unsupported scheme {u.scheme!r}")
        if u.hostname:
            params["host"] = u.hostname
        if u.port:
            params["port"] = str(u.port)
        if u.username:
            params["user"] = unquote(u.username)
        if u.password:
            params["password"] = unquote(u.password)
        if u.path.strip("/"):
            params["dbname"] = unquote(u.path.lstrip("/"))
        params.update(parse_qsl(u.query))
    else:
        for word in shlex.split(dsn):
            key, sep, value = word.partition("=")
            if not sep:
                raise BenchError(f"--upstream-dsn: cannot parse {word!r} (expected key=value)")
            params[key.strip()] = value
    host = params.get("host", "127.0.0.1")
    if host.startswith("/"):
        raise BenchError("--upstream-dsn: give a TCP host, not a Unix socket directory")
    user = params.get("user", "postgres")
    return Conn(
        host=host,
        port=int(params.get("port", "5432")),
        dbname=params.get("dbname", user),
        user=user,
        password=params.get("password") or os.environ.get("PGPASSWORD") or None,
    )


# --- processes ----------------------------------------------------------------------


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log_file: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode}:\n{tail(log_file)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise BenchError(f"{what} did not accept connections on port {port} within {timeout:g}s:\n{tail(log_file)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes], what: str) -> None:
    if proc.poll() is not None:
        return
    log(f"stopping {what} (pid {proc.pid})")
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def managed(
    cmd: list[str], what: str, log_file: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own session (so a terminal Ctrl-C reaches only us, and we
    stop it in order), output to ``log_file``; stopped when the block exits."""
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
        if proc.poll() is not None:
            raise BenchError(f"{what} died during the benchmark (code {proc.returncode}):\n{tail(log_file)}")
    finally:
        stop_process(proc, what)


def clean_env(password: str | None = None) -> dict[str, str]:
    """The environment without inherited PG* settings that could redirect a client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password:
        env["PGPASSWORD"] = password
    return env


# --- tools --------------------------------------------------------------------------


def find_pgbench(explicit: str | None) -> str:
    if explicit:
        return explicit
    found = shutil.which("pgbench")
    if found:
        return found
    candidate = BIN_DIR / "pgbench"
    if candidate.exists():
        return str(candidate)
    raise BenchError("no pgbench: not on PATH and not in the embedded PostgreSQL's bin directory")


def _which_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin:/sbin")


def find_or_install_pgbouncer() -> tuple[str | None, str]:
    """The pgbouncer binary, installing it with apt-get if needed; (None, why) if impossible."""
    found = _which_pgbouncer()
    if found:
        return found, ""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "pgbouncer is not on PATH and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "pgbouncer"]
    log("pgbouncer not found; running: " + " ".join(install))
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode != 0:
        log("install failed; running apt-get update and trying again")
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = subprocess.run(install, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            return None, f"apt-get install pgbouncer failed: {r.stderr.strip()[-300:]}"
    found = _which_pgbouncer()
    return (found, "") if found else (None, "pgbouncer was installed but its binary was not found")


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


def psql_value(conn: Conn, sql: str) -> str:
    psql = shutil.which("psql") or str(BIN_DIR / "psql")
    r = subprocess.run(
        [psql, "-X", "-qAt", "-d", conn.conninfo(), "-c", sql], capture_output=True, text=True, env=clean_env()
    )
    if r.returncode != 0:
        raise BenchError(f"psql {sql!r} failed: {r.stderr.strip()}")
    return r.stdout.strip()


# --- PgBouncer ----------------------------------------------------------------------


def unprivileged_user() -> str | None:
    """PgBouncer refuses to run as root: the user to run it as (None when not root)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    for name in ("nobody", "embedded_postgres"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise BenchError("running as root and neither 'nobody' nor 'embedded_postgres' exists to run PgBouncer as")


def _bouncer_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def pgbouncer_command(binary: str, workdir: Path, upstream: Conn, port: int, pool_size: int) -> list[str]:
    bdir = workdir / "pgbouncer"
    bdir.mkdir()
    server = f"host={upstream.host} port={upstream.port} dbname={_bouncer_value(upstream.dbname)}"
    server += f" user={_bouncer_value(upstream.user)}"
    if upstream.password:
        server += f" password={_bouncer_value(upstream.password)}"
    (bdir / "userlist.txt").write_text(f'"{BENCH_IDENTITY}" ""\n')
    (bdir / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"{BENCH_DB} = {server}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {bdir / 'userlist.txt'}",
                "pool_mode = session",
                f"default_pool_size = {pool_size}",
                f"max_client_conn = {pool_size + 10}",
                "server_tls_sslmode = disable",
                "client_tls_sslmode = disable",
                "ignore_startup_parameters = extra_float_digits",
                "log_connections = 0",
                "log_disconnections = 0",
                "",
            ]
        )
    )
    cmd = [binary, str(bdir / "pgbouncer.ini")]
    run_as = unprivileged_user()
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for p in (workdir, bdir, bdir / "userlist.txt", bdir / "pgbouncer.ini"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chown(bdir, entry.pw_uid, entry.pw_gid)
        setpriv = shutil.which("setpriv")
        if setpriv:
            cmd = [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", *cmd]
        else:
            cmd = [*cmd, "-u", run_as]  # pgbouncer drops to this user itself
    return cmd


# --- rowgate ------------------------------------------------------------------------


def rowgate_config(workdir: Path, upstream: Conn, port: int, control_port: int, token: str) -> Path:
    rdir = workdir / "rowgate"
    rdir.mkdir()
    token_file = rdir / "bench.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    up: dict[str, object] = {
        "host": upstream.host,
        "port": upstream.port,
        "database": upstream.dbname,
        "user": upstream.user,
        "tls": {"mode": "disable"},
    }
    if upstream.password:
        pw_file = rdir / "upstream.password"
        pw_file.write_text(upstream.password + "\n")
        pw_file.chmod(0o600)
        up["password"] = {"file": str(pw_file)}
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "control": {"host": "127.0.0.1", "port": control_port},
        "data_dir": str(rdir / "data"),
        "identities": {BENCH_IDENTITY: {"kind": "service", "token": {"file": str(token_file)}}},
        "upstreams": {BENCH_DB: up},
    }
    path = rdir / "rowgate.yaml"
    path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is YAML
    return path


def rowgate_binary() -> str:
    candidate = Path(sys.executable).parent / "rowgate"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rowgate")
    if found:
        return found
    raise BenchError("cannot find the rowgate command next to this Python or on PATH")


# --- pgbench ------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    mode: str
    clients: int
    jobs: int
    round: int
    tps: float
    latency_ms: float
    transactions: int
    failed: int


@dataclass
class Target:
    name: str
    conninfo: str
    password: str | None = None


_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without|excluding) initial connection", re.M)
_LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_TXN = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


def parse_pgbench(out: str) -> tuple[float, float, int, int]:
    tps, lat, txn = _TPS.search(out), _LAT.search(out), _TXN.search(out)
    if not (tps and lat and txn):
        raise BenchError(f"cannot parse pgbench output:\n{out[-1500:]}")
    failed = _FAILED.search(out)
    return float(tps.group(1)), float(lat.group(1)), int(txn.group(1)), int(failed.group(1)) if failed else 0


def run_pgbench(pgbench: str, target: Target, args: list[str], timeout: float) -> str:
    cmd = [pgbench, *args, target.conninfo]
    r = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(target.password), timeout=timeout)
    if r.returncode != 0:
        output = (r.stdout + r.stderr)[-2000:]
        raise BenchError(f"pgbench against {target.name} failed (code {r.returncode}):\n{output}")
    return r.stdout + r.stderr


def bench_one(pgbench: str, target: Target, mode: str, clients: int, duration: int, rnd: int) -> Result:
    jobs = min(clients, 2)
    args = ["-n", "-S", "-M", mode, "-T", str(duration), "-c", str(clients), "-j", str(jobs)]
    out = run_pgbench(pgbench, target, args, timeout=duration * 3 + 60)
    tps, lat, txn, failed = parse_pgbench(out)
    return Result(target.name, mode, clients, jobs, rnd, tps, lat, txn, failed)


# --- report -------------------------------------------------------------------------


@dataclass
class Row:
    mode: str
    clients: int
    tps: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)


def summarise(results: list[Result], targets: list[str], modes: list[str], clients: list[int]) -> list[Row]:
    """One row per (mode, clients): the median over rounds for each target."""
    rows = []
    for mode in modes:
        for c in clients:
            row = Row(mode, c)
            for t in targets:
                mine = [r for r in results if r.target == t and r.mode == mode and r.clients == c]
                if mine:
                    row.tps[t] = statistics.median(r.tps for r in mine)
                    row.latency_ms[t] = statistics.median(r.latency_ms for r in mine)
            rows.append(row)
    return rows


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _render(head: list[str], body: list[list[str]], left: int = 2) -> str:
    """Columns padded to width; the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= left else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(cells) for cells in body)])


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def active_ratios(targets: list[str]) -> list[tuple[str, str, str]]:
    return [r for r in RATIOS if r[1] in targets and r[2] in targets]


def format_table(rows: list[Row], targets: list[str]) -> str:
    """Two tables: TPS per target with the ratios, then average latency per target."""
    ratios = active_ratios(targets)
    head = ["mode", "clients", *(f"{t} tps" for t in targets), *(r[0] for r in ratios)]
    body = []
    for row in rows:
        cells = [row.mode, str(row.clients)]
        cells += [_num(row.tps.get(t), ".0f") for t in targets]
        cells += [_num(ratio(row.tps.get(a), row.tps.get(b)), ".2f") for _, a, b in ratios]
        body.append(cells)
    lat_head = ["mode", "clients", *(f"{t} ms" for t in targets)]
    lat_body = [[row.mode, str(row.clients), *(_num(row.latency_ms.get(t), ".3f") for t in targets)] for row in rows]
    return _render(head, body) + "\n\n" + _render(lat_head, lat_body)


# --- main ---------------------------------------------------------------------------


def _clients(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {value!r}") from None
    if not out or any(c < 1 for c in out):
        raise argparse.ArgumentTypeError("client counts must be positive integers")
    return out


def _targets(value: str) -> list[str]:
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    if bad := sorted(chosen - set(TARGETS)):
        raise argparse.ArgumentTypeError(f"unknown target(s): {', '.join(bad)} (choose from {', '.join(TARGETS)})")
    if not chosen:
        raise argparse.ArgumentTypeError("give at least one target")
    return [t for t in TARGETS if t in chosen]  # always in the canonical order


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="pgbench select-only through PostgreSQL direct, PgBouncer (session pool), rowgate and "
        "rowgate's bare relay (no statement gate), side by side. See bench/README.md.",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per pgbench run (default 10)")
    p.add_argument("--clients", type=_clients, default=[1, 8], help="comma-separated client counts (default 1,8)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor (default 10)")
    p.add_argument("--modes", default="simple,prepared", help="pgbench -M modes (default simple,prepared)")
    p.add_argument("--rounds", type=int, default=1, help="repeat every run N times and report medians (default 1)")
    p.add_argument(
        "--upstream-dsn",
        help="use this PostgreSQL (URI or key=value; its pgbench_* tables are re-created) instead of "
        "starting an embedded one",
    )
    p.add_argument("--skip-init", action="store_true", help="do not run pgbench -i (the tables must exist)")
    p.add_argument(
        "--targets",
        type=_targets,
        default=list(TARGETS),
        help=f"comma-separated targets to run (default all: {','.join(TARGETS)}); relay is rowgate with no "
        "pipeline stage, started by bench/relay_only.py",
    )
    p.add_argument(
        "--no-pgbouncer",
        action="store_true",
        help="leave out the PgBouncer column (same as leaving pgbouncer out of --targets)",
    )
    p.add_argument("--pgbench", help="pgbench binary (default: PATH, else the embedded PostgreSQL's)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write all results as JSON to OUT")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs and logs)")
    return p


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in ("simple", "extended", "prepared")]:
        raise SystemExit(f"unknown pgbench mode(s): {', '.join(bad)}")
    if args.duration < 1 or args.rounds < 1 or args.scale < 1:
        raise SystemExit("--duration, --rounds and --scale must be at least 1")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM cleans up like Ctrl-C
    workdir = Path(tempfile.mkdtemp(prefix="rowgate-bench-"))
    log(f"work directory {workdir}")
    try:
        with contextlib.ExitStack() as stack:
            return run(args, modes, workdir, stack)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; everything started has been stopped")
        return 130
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, modes: list[str], workdir: Path, stack: contextlib.ExitStack) -> int:
    pgbench = find_pgbench(args.pgbench)
    clients: list[int] = args.clients
    wanted: list[str] = [t for t in args.targets if not (t == "pgbouncer" and args.no_pgbouncer)]
    if not wanted:
        raise BenchError("no target left to run (--no-pgbouncer removed the only one)")
    meta: dict[str, object] = {
        "duration_s": args.duration,
        "scale": args.scale,
        "rounds": args.rounds,
        "clients": clients,
        "modes": modes,
        "targets": wanted,
        "pgbench": f"{pgbench} ({version_of([pgbench, '--version'])})",
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "notes": [],
    }
    notes: list[str] = meta["notes"]  # type: ignore[assignment]

    # 1. the upstream
    if args.upstream_dsn:
        upstream = parse_dsn(args.upstream_dsn)
        meta["upstream"] = "external"
    else:
        log("starting an embedded PostgreSQL")
        pg = EmbeddedPostgres(workdir / "embedded")
        stack.callback(_stop_embedded, pg)
        pg.start()
        upstream = Conn("127.0.0.1", pg.port, "postgres", pg.user)
        meta["upstream"] = "embedded"
    meta["server_version"] = psql_value(upstream, "SHOW server_version")
    log(f"upstream PostgreSQL {meta['server_version']} at {upstream.host}:{upstream.port}/{upstream.dbname}")
    if not args.skip_init:
        log(f"pgbench -i -s {args.scale} (this re-creates the pgbench_* tables)")
        t0 = time.monotonic()
        run_pgbench(pgbench, Target("direct", upstream.conninfo()), ["-i", "-q", "-s", str(args.scale)], 3600)
        log(f"initialised in {time.monotonic() - t0:.1f}s")

    direct = Target("direct", upstream.conninfo())
    targets = [direct] if "direct" in wanted else []

    # 2. PgBouncer
    if args.no_pgbouncer and "pgbouncer" in args.targets:
        notes.append("PgBouncer left out (--no-pgbouncer)")
    elif "pgbouncer" in wanted:
        binary, why = find_or_install_pgbouncer()
        if binary is None:
            log(f"continuing without PgBouncer: {why}")
            notes.append(f"PgBouncer left out: {why}")
        else:
            port = free_port()
            cmd = pgbouncer_command(binary, workdir, upstream, port, max(clients) + 2)
            log_file = workdir / "pgbouncer.log"
            log(f"starting PgBouncer on port {port}: {' '.join(cmd)}")
            proc = stack.enter_context(managed(cmd, "PgBouncer", log_file))
            wait_port(port, proc, "PgBouncer", log_file)
            meta["pgbouncer"] = version_of([binary, "--version"])
            targets.append(Target("pgbouncer", Conn("127.0.0.1", port, BENCH_DB, BENCH_IDENTITY).conninfo()))

    # 3. rowgate (`rowgate serve`) and 4. the bare relay (bench/relay_only.py): one
    # generated config; the relay listens on a second port given on its command line
    if "rowgate" in wanted or "relay" in wanted:
        token = secrets.token_urlsafe(24)
        rowgate_port, relay_port = free_port(), free_port()
        cfg = rowgate_config(workdir, upstream, rowgate_port, free_port(), token)
        launchers = {
            "rowgate": (rowgate_port, [rowgate_binary(), "serve", "-c", str(cfg)]),
            "relay": (relay_port, [sys.executable, str(RELAY_LAUNCHER), "-c", str(cfg), "--port", str(relay_port)]),
        }
        for name in ("rowgate", "relay"):
            if name not in wanted:
                continue
            port, cmd = launchers[name]
            log_file = workdir / f"{name}.log"
            log(f"starting {name} on port {port}: {' '.join(cmd)}")
            proc = stack.enter_context(managed(cmd, name, log_file, env=clean_env()))
            wait_port(port, proc, name, log_file)
            conn = Conn("127.0.0.1", port, BENCH_DB, BENCH_IDENTITY)
            targets.append(Target(name, conn.conninfo(with_password=False), password=token))

    # smoke test and warm-up: every target answers, the table is in cache
    for t in targets:
        run_pgbench(pgbench, t, ["-n", "-S", "-t", "20", "-c", "1"], 120)
    warm = min(5, args.duration)
    log(f"warming up for {warm}s (direct, prepared, {max(clients)} clients)")
    bench_one(pgbench, direct, "prepared", max(clients), warm, 0)

    # 5. the runs: for each (mode, clients) the targets back to back, order rotated
    results: list[Result] = []
    combos = [(m, c) for _ in range(args.rounds) for m in modes for c in clients]
    total = len(combos) * len(targets)
    eta = total * args.duration
    log(f"{total} runs of {args.duration}s ({eta // 60}m{eta % 60:02d}s)")
    n = 0
    for i, (mode, c) in enumerate(combos):
        rnd = i // (len(modes) * len(clients)) + 1
        shift = i % len(targets)
        for t in targets[shift:] + targets[:shift]:
            n += 1
            r = bench_one(pgbench, t, mode, c, args.duration, rnd)
            results.append(r)
            extra = f", {r.failed} failed" if r.failed else ""
            log(f"[{n}/{total}] {t.name:9} {mode:8} c={c:<3} tps={r.tps:10.1f} lat={r.latency_ms:.3f}ms{extra}")

    # 6. report
    names = [t.name for t in targets]
    rows = summarise(results, names, modes, clients)
    print()
    print(
        f"pgbench -n -S, {args.duration}s per run, scale {args.scale}, {args.rounds} round(s)"
        f"{' (medians)' if args.rounds > 1 else ''}; upstream {meta['upstream']} PostgreSQL "
        f"{meta['server_version']}; {os.cpu_count()} CPUs"
    )
    print(format_table(rows, names))
    for note in notes:
        print(f"note: {note}")
    if (os.cpu_count() or 1) <= 4:
        print(
            "note: pgbench, the proxy and PostgreSQL share few CPUs here: numbers are noisy and the "
            "proxy's cost shows up as competition for CPU as well as added latency."
        )
    if args.json:
        doc = {
            "meta": meta,
            "results": [asdict(r) for r in results],
            "summary": [
                {**asdict(row), **{f"{a}_vs_{b}": ratio(row.tps.get(a), row.tps.get(b)) for _, a, b in RATIOS}}
                for row in rows
            ],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


def _stop_embedded(pg: EmbeddedPostgres) -> None:
    log("stopping the embedded PostgreSQL")
    try:
        pg.stop()
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"could not stop the embedded PostgreSQL cleanly: {e}")


if __name__ == "__main__":
    sys.exit(main())
