"""The catalog and classification of each upstream, kept current for masking.

A daemon thread reads and classifies each upstream's catalog at start (the event loop
never waits for it), then checks a cheap fingerprint of the schema every
``masking.refresh_interval`` seconds and classifies again when it changed, or at once
when a statement names a relation the catalog does not know. Until an upstream's first
classification is ready, masked identities' statements that read its tables are refused.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg

from rowgate.catalog import Catalog, read_catalog, schema_fingerprint
from rowgate.config import Config, Upstream
from rowgate.masking.classify import Classification, classify_catalog
from rowgate.masking.config import load_key

log = logging.getLogger("rowgate.masking")

_MIN_GAP = 1.0  # seconds between two reads of one upstream's catalog
_MAX_UNSEEN = 4096  # relations remembered as unknown; forgetting one only delays it again


@dataclass
class UpstreamMasking:
    catalog: Catalog | None = None
    classification: Classification | None = None
    fingerprint: str | None = None
    loaded_at: float = 0.0


def conninfo(up: Upstream) -> str:
    params: dict[str, object] = {"host": up.host, "port": up.port, "dbname": up.database, "user": up.user,
                                 "connect_timeout": max(1, int(up.connect_timeout)),
                                 "application_name": "rowgate-catalog"}
    if up.password is not None:
        params["password"] = up.password.resolve("upstreams.password")
    params["sslmode"] = up.tls.mode
    for key, value in (("sslrootcert", up.tls.ca_file), ("sslcert", up.tls.cert_file), ("sslkey", up.tls.key_file)):
        if value is not None:
            params[key] = str(value)
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


class MaskingCatalogs:
    """The catalogs and classifications of all upstreams of one server."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._cfg = config.masking
        self.key = load_key(self._cfg, config.data_dir)
        self.detectors = self._cfg.custom_detectors
        self._state = {name: UpstreamMasking() for name in config.upstreams}
        self._wake = threading.Event()
        self._wanted: set[str] = set(config.upstreams)
        self._lock = threading.Lock()
        self._stopped = False
        self._unseen: dict[tuple[str, str], float] = {}  # (upstream, relation) -> first named

    def start(self) -> None:
        """Classify every upstream now (blocking: the server calls it in a worker thread
        before it listens), then keep the classifications current in the background."""
        for name in self._config.upstreams:
            self._refresh(name, self._state[name], force=False)
        with self._lock:
            self._wanted.clear()
        threading.Thread(target=self._run, name="rowgate-masking-catalog", daemon=True).start()

    def upstream(self, name: str) -> UpstreamMasking:
        return self._state.get(name) or UpstreamMasking()

    def refresh_soon(self, name: str) -> None:
        """A statement named a relation the catalog does not know: read it again."""
        with self._lock:
            self._wanted.add(name)
        self._wake.set()

    def read_since_named(self, name: str, relation: str) -> bool:
        """Whether upstream ``name``'s catalog was read after a statement first named
        ``relation``, which it does not know; if not, a read is asked for. A relation still
        unknown after that (a temporary table, a typo) is then left to the content scanner
        and to the upstream's own error."""
        key = (name, relation)
        first = self._unseen.setdefault(key, time.monotonic())
        loaded_at = self.upstream(name).loaded_at
        if loaded_at > first:
            return True
        if len(self._unseen) > _MAX_UNSEEN:
            self._unseen = {k: t for k, t in self._unseen.items() if t >= loaded_at}
            if len(self._unseen) > _MAX_UNSEEN:
                self._unseen = {key: first}
        self.refresh_soon(name)
        return False

    def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.classification is not None for s in self._state.values()):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _run(self) -> None:
        interval = float(self._cfg.refresh_interval)
        while not self._stopped:
            with self._lock:
                wanted, self._wanted = self._wanted, set()
            for name in self._config.upstreams:
                state = self._state[name]
                due = time.monotonic() - state.loaded_at >= interval
                if name in wanted or due or state.classification is None:
                    self._refresh(name, state, force=name in wanted and state.classification is None)
            self._wake.wait(timeout=min(interval, 5.0) if any(
                s.classification is None for s in self._state.values()) else interval)
            self._wake.clear()
            time.sleep(_MIN_GAP if wanted else 0)

    def _refresh(self, name: str, state: UpstreamMasking, force: bool) -> None:
        info = conninfo(self._config.upstreams[name])
        # what existed when the read began is in what it finds: ``read_since_named`` compares a
        # relation's first mention with this, so it is taken before, and published only with
        # the classification that covers it (publishing it earlier let a statement through
        # against the old classification while the new one was still being made)
        started = time.monotonic()
        try:
            with psycopg.connect(info, autocommit=True) as conn:
                fingerprint = schema_fingerprint(conn)
            if fingerprint == state.fingerprint and state.classification is not None and not force:
                state.loaded_at = started
                return
            catalog = read_catalog(info, self._cfg.sample_rows)
            classification = classify_catalog(catalog, self._cfg)
        except Exception:
            log.exception("masking: cannot read the catalog of upstream %s (will retry)", name)
            return
        # a new object: readers on the event loop see the old or the new pair, never a mix
        self._state[name] = UpstreamMasking(catalog, classification, fingerprint, started)
        log.info("masking: classified upstream %s: %d sensitive columns", name, len(classification.sensitive()))
