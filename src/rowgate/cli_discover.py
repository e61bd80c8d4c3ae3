"""`rowgate discover`: the PII classification of every column of an upstream, with evidence."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict

import psycopg

from rowgate.catalog import read_catalog
from rowgate.config import Config
from rowgate.errors import ConfigError, UpstreamUnavailable
from rowgate.masking.classify import classify_catalog


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    p = with_config(sub.add_parser(
        "discover",
        help="classify the columns of an upstream database (PII, secrets)",
        description="Read the catalog of upstream DATABASE with the credentials in the config, sample up to "
        "masking.sample_rows values per text column, and print each column's class, confidence and evidence. "
        "This is the classification the proxy masks by.",
    ))
    p.add_argument("--database", required=True, help="an upstream name from the config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="also list columns that are not sensitive")


def run_discover(config: Config, database: str, *, as_json: bool, show_all: bool) -> int:
    from rowgate.proxy.masking_catalogs import conninfo

    upstream = config.upstreams.get(database)
    if upstream is None:
        raise ConfigError(f"no upstream named {database!r} in the config",
                          hint=f"upstreams: {', '.join(config.upstreams) or '(none)'}")
    try:
        catalog = read_catalog(conninfo(upstream), config.masking.sample_rows)
    except psycopg.Error as e:
        raise UpstreamUnavailable(f"cannot read the catalog of upstream database {database!r}",
                                  detail=str(e).strip()) from e
    classification = classify_catalog(catalog, config.masking)
    columns = classification.all() if show_all or as_json else classification.sensitive()
    if as_json:
        out = {
            "database": database,
            "version": classification.version,
            "columns": [
                {**asdict(c), "cls": c.cls.value if c.cls else None, "evidence": list(c.evidence)}
                for c in columns.values()
            ],
        }
        print(json.dumps(out, indent=2))
        return 0
    sensitive = classification.sensitive()
    print(f"{database}: {len(catalog.tables)} relations, {len(classification.all())} columns, "
          f"{len(sensitive)} sensitive")
    for name, c in columns.items():
        print(f"  {name}: {c.cls.value if c.cls else 'not sensitive'} (confidence {c.confidence:.2f}, {c.source})")
        for line in c.evidence:
            print(f"      {line}")
    return 0
