#!/usr/bin/env python3
"""Bench-only launcher: rowgate's bare relay, with NO pipeline stage.

    .venv/bin/python bench/relay_only.py -c rowgate.yaml [--port PORT]

Serves exactly what ``rowgate serve -c rowgate.yaml`` serves (start-up, TLS
negotiation, token login, upstream SCRAM, limits, cancel, graceful shutdown) except
that the statement gate is left out: ``ProxyServer(config, Pipeline([]))`` instead of
``ProxyServer(config)``. No statement is parsed or checked against the policy, so
this is NOT a governance proxy. It exists only so that bench/pgbench_compare.py can
measure the relay's cost apart from the gate's; it is deliberately a script under
bench/ and not an option of rowgate itself, so a production config cannot turn the
gate off. ``--port`` overrides ``listen.port`` so it can run next to a ``rowgate
serve`` that uses the same config file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rowgate.cli import report
from rowgate.config import load_config
from rowgate.errors import RowgateError
from rowgate.proxy.hooks import Pipeline
from rowgate.proxy.server import serve, setup_logging

log = logging.getLogger("rowgate.bench.relay_only")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Bench-only: serve a rowgate config with no pipeline stage (no statement gate) until "
        "SIGTERM/SIGINT. Never use this in front of real data. See bench/README.md."
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="a rowgate config file")
    p.add_argument("--port", type=int, help="listen on this port instead of the config's listen.port")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    try:
        config = load_config(args.config)
        if args.port is not None:
            config = config.model_copy(update={"listen": config.listen.model_copy(update={"port": args.port})})
        log.warning("BENCHMARK ONLY: no pipeline stage, statements are relayed without any policy check")
        return serve(config, Pipeline([]))
    except RowgateError as e:
        report(e, "relay_only")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
