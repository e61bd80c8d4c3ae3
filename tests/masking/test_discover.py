"""Discovery against the real (embedded) PostgreSQL: sensitive columns with misleading names are
found by their content; lookalikes (order numbers, product names, UUIDs) are not flagged."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from faker import Faker
from proxyutil import UpstreamDB

from rowgate.catalog import Catalog, read_catalog, schema_fingerprint
from rowgate.config import parse_config
from rowgate.demo.data import card_number, ssn
from rowgate.masking.classes import PiiClass
from rowgate.masking.classify import Classification, classify_catalog
from rowgate.masking.config import MaskingConfig

SCHEMA = "discover_t"
ROWS = 150


def _seed(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(11)
    fake = Faker("en_US")
    fake.seed_instance(11)
    de = Faker("de_DE")
    de.seed_instance(12)
    conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    conn.execute(f"CREATE SCHEMA {SCHEMA}")
    conn.execute(f"""
        CREATE TABLE {SCHEMA}.accounts (id int, contact text, ref text, misc varchar(40), blob text, code text,
                                        remarks text, seen_from inet, born date, pwd text);
        CREATE TABLE {SCHEMA}.lookalikes (id int, order_no text, name text, token_id text, created date,
                                          sku text, version text, amount numeric);
        CREATE TABLE {SCHEMA}.members (id int, name text, display text, reach text);
        COMMENT ON COLUMN {SCHEMA}.accounts.remarks IS 'not sensitive: internal test data';
        COMMENT ON COLUMN {SCHEMA}.lookalikes.sku IS 'pii:national_id';
    """)
    with conn.cursor() as cur:
        with cur.copy(f"COPY {SCHEMA}.accounts FROM STDIN") as copy:
            for i in range(ROWS):
                card = card_number(rng)
                spaced = " ".join(card[j:j + 4] for j in range(0, 16, 4))
                blob = (f"debug dump: api_key={uuid.UUID(int=rng.getrandbits(128)).hex}" if i % 3 == 0 else
                        f"customer sent ghp_{''.join(rng.choice('abcdefABCDEF0123456789') for _ in range(36))}"
                        if i % 3 == 1 else "nothing interesting here")
                copy.write_row((i, fake.email(), ssn(rng), spaced, blob, de.iban(), fake.email(),
                                fake.ipv4(), fake.date_of_birth(), fake.password()))
        with cur.copy(f"COPY {SCHEMA}.lookalikes FROM STDIN") as copy:
            for i in range(ROWS):
                order_no = str(rng.randrange(10**15, 10**16))
                product = f"{rng.choice(['Classic', 'Rugged', 'Sleek'])} {rng.choice(['Oak', 'Steel'])} " \
                          f"{rng.choice(['Mug', 'Chair', 'Lamp'])}"
                copy.write_row((i, order_no, product, str(uuid.UUID(int=rng.getrandbits(128))), fake.date_object(),
                                f"SKU-{i:06d}", f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
                                rng.randint(1, 10**6)))
        with cur.copy(f"COPY {SCHEMA}.members FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, fake.name(), fake.user_name(), fake.email() if i % 2 else "(555)123-4567"))
    conn.execute(f"""
        CREATE VIEW {SCHEMA}.contacts_v AS
            SELECT a.id, a.contact AS who, upper(a.ref) AS r, l.name AS product FROM {SCHEMA}.accounts a
            JOIN {SCHEMA}.lookalikes l ON l.id = a.id
    """)


@pytest.fixture(scope="module")
def seeded(upstream: UpstreamDB) -> Iterator[UpstreamDB]:
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        _seed(conn)
    yield upstream
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture(scope="module")
def catalog(seeded: UpstreamDB) -> Catalog:
    return read_catalog(seeded.dsn(), 200)


@pytest.fixture(scope="module")
def classification(catalog: Catalog) -> Classification:
    cfg = MaskingConfig.model_validate({"columns": {f"{SCHEMA}.lookalikes.version": "ip_address",
                                                    "members.display": "none"}})
    return classify_catalog(catalog, cfg)


def cls_of(c: Classification, column: str) -> PiiClass | None:
    found = c.column(f"{SCHEMA}.{column}")
    assert found is not None, column
    return found.cls


@pytest.mark.parametrize(("column", "expected"), [
    ("accounts.contact", PiiClass.EMAIL),
    ("accounts.ref", PiiClass.NATIONAL_ID),
    ("accounts.misc", PiiClass.PAYMENT_CARD),
    ("accounts.blob", PiiClass.FREE_TEXT),
    ("accounts.code", PiiClass.IBAN),
    ("accounts.seen_from", PiiClass.IP_ADDRESS),  # by type
    ("accounts.born", PiiClass.DATE_OF_BIRTH),  # by name and type
    ("accounts.pwd", PiiClass.SECRET),  # by name
    ("accounts.remarks", None),  # emails, but the comment says not sensitive
    ("lookalikes.order_no", None),
    ("lookalikes.name", None),  # product names in a product table
    ("lookalikes.token_id", None),  # UUIDs
    ("lookalikes.created", None),
    ("lookalikes.sku", PiiClass.NATIONAL_ID),  # by comment
    ("lookalikes.version", PiiClass.IP_ADDRESS),  # pinned in config
    ("lookalikes.amount", None),
    ("members.name", PiiClass.PERSON_NAME),  # a bare "name" with real names in a person table
    ("members.display", None),  # config: not sensitive
    ("members.reach", PiiClass.FREE_TEXT),  # half emails, half phone numbers: scanned value by value
    ("contacts_v.who", PiiClass.EMAIL),  # through the view's lineage or its own sample
    ("contacts_v.r", PiiClass.NATIONAL_ID),
    ("contacts_v.product", None),
])
def test_discovery(classification: Classification, column: str, expected: PiiClass | None) -> None:
    assert cls_of(classification, column) is expected


def test_evidence_and_sources(classification: Classification) -> None:
    contact = classification.column(f"{SCHEMA}.accounts.contact")
    assert contact is not None and contact.source == "content" and contact.confidence >= 0.9
    assert contact.evidence[0] == f"content: {ROWS}/{ROWS} sampled values are email addresses"
    misc = classification.column(f"{SCHEMA}.accounts.misc")
    assert misc is not None and "Luhn-valid card numbers" in misc.evidence[0]
    sku = classification.column(f"{SCHEMA}.lookalikes.sku")
    assert sku is not None and sku.source == "comment"
    version = classification.column(f"{SCHEMA}.lookalikes.version")
    assert version is not None and version.source == "config" and version.confidence == 1.0


def test_by_attr_and_catalog_view(catalog: Catalog, classification: Classification) -> None:
    table = catalog.table(f"{SCHEMA}.accounts")
    assert table is not None and table.kind == "table"
    assert catalog.columns(f"{SCHEMA}.accounts") == ("id", "contact", "ref", "misc", "blob", "code", "remarks",
                                                      "seen_from", "born", "pwd")
    by_attr = classification.by_attr(table.oid, 2)
    assert by_attr is not None and by_attr.cls is PiiClass.EMAIL
    view_sql = catalog.view_sql(f"{SCHEMA}.contacts_v")
    assert view_sql is not None and "upper" in view_sql
    assert catalog.view_sql(f"{SCHEMA}.accounts") is None and catalog.columns("nope.nope") is None
    assert f"{SCHEMA}.accounts.contact" in classification.sensitive()
    assert f"{SCHEMA}.lookalikes.name" not in classification.sensitive()


def test_schema_fingerprint_detects_changes(seeded: UpstreamDB, catalog: Catalog) -> None:
    with psycopg.connect(seeded.dsn(), autocommit=True) as conn:
        before = schema_fingerprint(conn)
        assert before == catalog.version
        conn.execute(f"INSERT INTO {SCHEMA}.members VALUES (999, 'Data Only', 'x', 'y')")
        assert schema_fingerprint(conn) == before  # data changes are not schema changes
        conn.execute(f"CREATE TABLE {SCHEMA}.later (secret_note text)")
        added = schema_fingerprint(conn)
        assert added != before
        conn.execute(f"COMMENT ON COLUMN {SCHEMA}.later.secret_note IS 'pii:none'")
        commented = schema_fingerprint(conn)
        assert commented != added
        conn.execute(f"CREATE OR REPLACE VIEW {SCHEMA}.contacts_v AS SELECT a.id, a.ref AS who, a.ref AS r, "
                     f"'x'::text AS product FROM {SCHEMA}.accounts a")
        assert schema_fingerprint(conn) != commented
        conn.execute(f"DROP TABLE {SCHEMA}.later")


def _config(tmp: Path, upstream: UpstreamDB) -> Path:
    up: dict[str, Any] = {"host": upstream.host, "port": upstream.port, "database": upstream.database,
                          "user": upstream.user}
    env = {}
    if upstream.password:
        up["password"] = {"env": "ROWGATE_TEST_DISCOVER_PW"}
        env["ROWGATE_TEST_DISCOVER_PW"] = upstream.password
    doc = {"upstreams": {"app": up}, "masking": {"sample_rows": 100}}
    path = tmp / "rowgate.yaml"
    path.write_text(yaml.safe_dump(doc))
    parse_config(doc, tmp)  # the test's own config must be valid
    return path


def discover(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rowgate.cli", "discover", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_json(seeded: UpstreamDB, tmp: Path) -> None:
    import os

    env = dict(os.environ)
    if seeded.password:
        env["ROWGATE_TEST_DISCOVER_PW"] = seeded.password
    config = _config(tmp, seeded)
    out = discover(config, "--database", "app", "--json", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    columns = {c["column"]: c for c in doc["columns"]}
    assert columns[f"{SCHEMA}.accounts.contact"]["cls"] == "email"
    assert columns[f"{SCHEMA}.accounts.misc"]["cls"] == "payment_card"
    assert columns[f"{SCHEMA}.lookalikes.order_no"]["cls"] is None
    assert columns[f"{SCHEMA}.accounts.ref"]["evidence"][0].startswith("content: 100/100 sampled values")
    text = discover(config, "--database", "app", env=env)
    assert text.returncode == 0 and f"{SCHEMA}.accounts.code: iban (confidence" in text.stdout
    assert f"{SCHEMA}.lookalikes.order_no" not in text.stdout  # only sensitive columns without --all
    missing = discover(config, "--database", "nope", env=env)
    assert missing.returncode == 2 and "no upstream named 'nope'" in missing.stderr
