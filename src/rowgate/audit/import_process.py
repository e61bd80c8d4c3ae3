"""The importer in a process of its own, beside the proxy.

Importing a record into the store costs about 20 µs of CPU (two records per statement). On a
thread of the proxy that work would hold the GIL the event loop needs, and every statement's
latency would pay for it; in a process it runs on another core. The process reads the journal
itself (each record is in it, handed to the OS, before the statement it records is
forwarded), imports every ``interval``, and reports each pass on its stdout as one line,
``<last imported seq> <why the pass failed, if it did>``. ``ImportProcess`` keeps the
proxy's view of those reports: the writer refuses statements while the store lags.

The proxy holds the process by its stdin: the line ``stop`` asks for a last pass and an exit.
End of file without it means the proxy died (``kill -9`` included): the process exits at once,
and the next start or ``rowgate audit`` imports what is left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rowgate.audit.importer import Importer
from rowgate.audit.store import AuditStore, StoreLocation, open_store

log = logging.getLogger("rowgate.audit")

START_TIMEOUT = 30.0  # for the process to open the store and say so
STOP_TIMEOUT = 30.0  # for its last pass
RESTART_DELAY = 1.0  # before a process that died is started again


class ImportProcess:
    """The proxy's side. ``imported_seq``, ``progress_at`` and ``error`` mean what they mean on
    an ``Importer``: the last seq in the store, when a pass last left the store caught up with
    the journal (this process's monotonic clock), why the last pass failed."""

    def __init__(self, location: StoreLocation, directory: Path, replica: str, interval: float,
                 imported_seq: int) -> None:
        self.imported_seq = imported_seq
        self.progress_at = time.monotonic()
        self.error: str | None = None
        self._spec = json.dumps({"url": location.url, "password": location.password,
                                 "data_dir": None if location.data_dir is None else str(location.data_dir),
                                 "directory": str(directory), "replica": replica, "interval": interval})
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rowgate-audit-import")

    def start(self) -> ImportProcess:
        """Start the process; return once it has opened the store (or START_TIMEOUT has passed:
        the writer then refuses statements once the store lags too long, as for any failure)."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            log.error("audit: the import process did not start within %gs", START_TIMEOUT)
        return self

    def _spawn(self) -> subprocess.Popen[str] | None:
        with self._lock:
            if self._stopping:
                return None
            proc = subprocess.Popen([sys.executable, "-m", "rowgate.audit.import_process"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            proc.stdin.write(self._spec + "\n")  # the password too: never on a command line
            proc.stdin.flush()
            self._proc = proc
            return proc

    def _report(self, line: str) -> None:
        seq, _, error = line.rstrip("\n").partition(" ")
        if not seq.isdigit():
            log.warning("audit: unexpected output of the import process: %.200s", line)
            return
        self.imported_seq = max(self.imported_seq, int(seq))
        if error:
            self.error = error
        else:
            self.error = None
            self.progress_at = time.monotonic()
        self._ready.set()

    def _run(self) -> None:
        while True:
            try:
                proc = self._spawn()
            except OSError as e:
                self.error = f"the audit import process cannot start: {e}"
            else:
                if proc is None:
                    break
                assert proc.stdout is not None
                for line in proc.stdout:
                    self._report(line)
                code = proc.wait()
                if self._stopping:
                    break
                self.error = f"the audit import process exited with code {code}"
            log.error("audit: %s; starting another in %gs", self.error, RESTART_DELAY)
            self._ready.set()  # what the start waited for will not come from this one
            time.sleep(RESTART_DELAY)
        self._ready.set()

    def stop(self) -> bool:
        """Ask for a last pass and wait for the exit: whether that pass imported everything."""
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is None:
            return False
        assert proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):  # it is gone already
            proc.stdin.write("stop\n")
            proc.stdin.close()
        try:
            code = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False
        self._thread.join(STOP_TIMEOUT)
        return code == 0 and self.error is None


def _stdin_line() -> bytes:
    """The first line of stdin, read byte by byte so ``select`` on fd 0 sees what follows it."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            break
        data += chunk
    return data


def _report(seq: int, error: str | None) -> None:
    sys.stdout.write(f"{seq} {' '.join((error or '').split())}\n")  # one line, whatever the message
    sys.stdout.flush()


def main() -> int:
    # Ctrl-C in a terminal reaches the whole process group: the proxy decides when this one stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a batch job to the scheduler: its fair share of the CPU, but its wake-ups do not preempt
    # the proxy, the clients or the database, whose latency matters
    with contextlib.suppress(AttributeError, OSError):  # Linux only
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,  # as the proxy's own (server.setup_logging)
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    line = _stdin_line()
    if not line:
        return 0
    spec = json.loads(line)
    data_dir = Path(spec["data_dir"]) if spec["data_dir"] is not None else None
    store: AuditStore | None = None
    importer: Importer | None = None
    stopping = False
    while True:
        error = None
        if importer is None:
            try:
                store = open_store(spec["url"], data_dir, spec["password"])
                importer = Importer(store, Path(spec["directory"]), spec["replica"])
                _report(importer.imported_seq, None)  # ready
            except Exception as e:
                error = str(e) or type(e).__name__
                log.error("audit: the import process cannot open the store: %s", error)
        if importer is not None:
            try:
                importer.run_once()
            except Exception as e:  # logged by the importer
                error = str(e) or type(e).__name__
        _report(importer.imported_seq if importer is not None else 0, error)
        if stopping:
            break
        readable, _, _ = select.select([0], [], [], spec["interval"])
        if readable:
            if not os.read(0, 64):
                break  # the proxy is gone without a word: its next start imports what is left
            stopping = True  # "stop": one last pass
    if store is not None:
        store.close()
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
