"""The masking wire tests' world: the demo shop (the data users will try) plus a table
whose sensitive columns have misleading names, loaded into the test upstream; a rowgate
with masking on, a masked analyst (pseudonyms), a masked agent (redaction) and a DPO who
sees raw values; and a TCP tap in front of rowgate that records every byte the clients
receive, so a leak check sees rows, errors, notices and COPY data alike."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from proxyutil import TOKENS, RunningProxy, UpstreamDB, start_proxy

from rowgate.demo.data import ensure_shop

SHOP = "shop"
DPO_TOKEN = "dana-Tok3n-dpo-0123456789abcdef"

EXTRA = """
CREATE TABLE IF NOT EXISTS leads (
    id int PRIMARY KEY,
    contact text,   -- emails
    ref text,       -- US SSNs
    label text,     -- free text with phone numbers and emails
    score int
);
INSERT INTO leads
SELECT c.id, c.email, c.national_id, 'call ' || c.phone || ' or mail ' || c.email, c.id % 7
FROM customers c WHERE c.id <= 300
ON CONFLICT DO NOTHING;
CREATE OR REPLACE VIEW customer_contacts AS SELECT id, full_name AS who, email AS addr FROM customers;
"""

_CLASSES = ("email", "phone", "person_name", "address", "date_of_birth", "national_id", "payment_card", "iban",
            "ip_address")
MASKING = {
    "enabled": True,
    "key": {"env": "ROWGATE_TEST_MASKING_KEY"},
    "rules": [
        {"groups": ["analysts"], "strategies": dict.fromkeys(_CLASSES, "pseudonym")},
        {"groups": ["agents"], "strategies": dict.fromkeys(_CLASSES, "redact")},
        {"groups": ["dpo"], "unmask": True, "reason": "data protection officer"},
    ],
}


def _after_login(stream: bytearray) -> bytes | None:
    """What follows the login in a server's stream: from its first ReadyForQuery on, or from
    an ErrorResponse that ends it; None while the login is not over."""
    pos = 0
    while pos + 5 <= len(stream):
        kind, end = stream[pos], pos + 1 + int.from_bytes(stream[pos + 1:pos + 5], "big")
        if kind == ord("E"):
            return bytes(stream[pos:])
        if end > len(stream):
            return None
        pos = end
        if kind == ord("Z"):
            return bytes(stream[pos:])
    return None


@dataclass
class Tap:
    """A TCP forwarder that records what the upstream side sends to clients."""

    target: int
    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        # the login (SCRAM nonces and proofs, BackendKeyData) is random bytes that match a
        # 6-character fragment of some seeded value about once in 7000 logins: not recorded
        login: bytearray | None = bytearray() if record else None
        try:
            while data := src.recv(65536):
                if login is not None:
                    login += data
                    after = _after_login(login)
                    if after is not None:
                        login = None
                        with self.lock:
                            self.received += after
                elif record:
                    with self.lock:
                        self.received += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def take(self) -> bytes:
        with self.lock:
            data = bytes(self.received)
            self.received.clear()
            return data


@dataclass
class MaskEnv:
    upstream: UpstreamDB
    proxy: RunningProxy
    tap: Tap
    secrets: dict[str, list[str]]  # column -> seeded raw values

    def dsn(self, identity: str = "alice", via_tap: bool = True, **params: str) -> str:
        token = DPO_TOKEN if identity == "dana" else TOKENS[identity]
        port = self.tap.port if via_tap else self.proxy.port
        extra = "".join(f"&{k}={v}" for k, v in params.items())
        return f"postgresql://{identity}:{token}@127.0.0.1:{port}/{SHOP}?sslmode=disable{extra}"

    def direct(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.upstream.dsn(SHOP), autocommit=True)


def _seed(upstream: UpstreamDB) -> dict[str, list[str]]:
    ensure_shop(upstream.dsn("postgres"))
    with psycopg.connect(upstream.dsn(SHOP), autocommit=True) as conn:
        conn.execute(EXTRA)
        secrets: dict[str, list[str]] = {}
        for table, cols in (("customers", ("full_name", "email", "phone", "street_address", "national_id")),
                            ("payments", ("card_number", "iban", "card_holder"))):
            for col in cols:
                rows = conn.execute(f"SELECT DISTINCT {col} FROM {table} WHERE {col} IS NOT NULL").fetchall()
                secrets[col] = [str(r[0]) for r in rows]
        # the schema's names reach clients in RowDescriptions: not leaks
        names = conn.execute("SELECT DISTINCT column_name FROM information_schema.columns "
                             "WHERE table_schema = 'public' UNION SELECT table_name FROM information_schema.tables "
                             "WHERE table_schema = 'public'").fetchall()
        secrets["_identifiers"] = sorted((str(r[0]) for r in names), key=len, reverse=True)
    return secrets


_ENV: MaskEnv | None = None


def mask_env(upstream: UpstreamDB, tmp: Path) -> MaskEnv:
    """One masking rowgate for the whole test session (classifying the shop takes a while)."""
    global _ENV
    if _ENV is not None:
        return _ENV
    import os

    os.environ["ROWGATE_TEST_MASKING_KEY"] = "test-masking-key-0123456789abcdef"
    secrets = _seed(upstream)
    (tmp / "secrets").mkdir(parents=True, exist_ok=True)
    (tmp / "secrets" / "dana.token").write_text(DPO_TOKEN)
    shop = {"host": upstream.host, "port": upstream.port, "database": SHOP, "user": upstream.user}
    dana = {"kind": "human", "groups": ["dpo"], "token": {"file": str(tmp / "secrets" / "dana.token")}}
    proxy = start_proxy(
        upstream, tmp,
        identities={"dana": dana},
        upstreams={SHOP: shop},
        masking=MASKING,
    )
    stage = proxy.server.masking
    assert stage is not None and stage.catalogs.wait_ready(120), "the shop was not classified in time"
    _ENV = MaskEnv(upstream, proxy, Tap(proxy.port), secrets)
    return _ENV


# --- leak checks ----------------------------------------------------------------------

FRAGMENT = 6
# columns whose pieces are distinctive enough to mean a leak (names and addresses share
# pieces with cities and streets, which are not sensitive). Digits: pseudonyms keep the
# shape of ids, cards and phones (digits stay digits), so among thousands of seeded values
# short runs of digits match by chance; pieces of digits count from 8 digits up for
# redaction, and from 12 up where pseudonyms are made of digits
DIGIT_FRAGMENT = {"redact": 8, "pseudonym": 12}


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


class LeakChecker:
    def __init__(self, secrets: dict[str, list[str]]) -> None:
        self.whole: dict[str, str] = {}
        self.fragments: dict[str, str] = {}
        self.digit_fragments: dict[int, dict[str, str]] = {n: {} for n in DIGIT_FRAGMENT.values()}
        self.identifiers = secrets.get("_identifiers", [])
        for col, values in secrets.items():
            if col.startswith("_"):
                continue
            for v in values:
                forms = {v, v[::-1], base64.b64encode(v.encode()).decode(), hashlib.md5(v.encode()).hexdigest()}
                if len(_digits(v)) >= 9 and col != "street_address":
                    forms.add(_digits(v))
                for f in forms:
                    if len(f) >= FRAGMENT:
                        self.whole[f.lower()] = f"{col} {v!r}"
                if col == "email":
                    local = v.split("@")[0].lower()
                    for text in (local, local[::-1]):
                        for i in range(len(text) - FRAGMENT + 1):
                            self.fragments.setdefault(text[i:i + FRAGMENT], f"{col} {v!r}")
                elif col in ("national_id", "card_number", "iban", "phone"):
                    d = _digits(v)
                    for n, table in self.digit_fragments.items():
                        for text in (d, d[::-1]):
                            for i in range(len(text) - n + 1):
                                table.setdefault(text[i:i + n], f"{col} {v!r}")
        self._by_prefix: dict[str, list[str]] = {}
        for w in self.whole:
            self._by_prefix.setdefault(w[:FRAGMENT], []).append(w)

    def leaks(self, received: bytes, strategy: str = "redact", sent: Sequence[str] = ()) -> list[str]:
        """Seeded values (or their pieces) in ``received``; the words of the statements the
        client ``sent`` do not count (``xmlelement`` names its column, and "lement" is a piece
        of "clements")."""
        text = received.decode("utf-8", "replace").lower()
        words = {w for w in re.findall(r"[a-z_][a-z0-9_]*", " ".join(sent).lower()) if len(w) >= FRAGMENT}
        for ident in (*self.identifiers, *sorted(words, key=len, reverse=True)):
            text = text.replace(ident, " ")
        found = []
        for i in range(len(text) - FRAGMENT + 1):
            piece = text[i:i + FRAGMENT]
            for w in self._by_prefix.get(piece, ()):
                if text.startswith(w, i):
                    found.append(f"{w!r} ({self.whole[w]})")
            if piece in self.fragments:
                found.append(f"fragment {piece!r} of {self.fragments[piece]}")
        n = DIGIT_FRAGMENT[strategy]
        table = self.digit_fragments[n]
        for run in re.findall(rf"\d{{{n},}}", text):
            for i in range(len(run) - n + 1):
                if run[i:i + n] in table:
                    found.append(f"digits {run[i:i + n]!r} of {table[run[i:i + n]]}")
        return found[:5]
