"""The ``rowgate`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rowgate import __version__
from rowgate.config import default_config_path, load_config
from rowgate.errors import RowgateError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rowgate",
        description="rowgate: an identity-aware governance proxy for PostgreSQL. Every connection is a "
        "verified identity; clients connect with postgresql://IDENTITY:TOKEN@host:port/UPSTREAM.",
    )
    p.add_argument("--version", action="version", version=f"rowgate {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "-c",
            "--config",
            type=Path,
            default=None,
            help="configuration file (default: $ROWGATE_CONFIG, else ./rowgate.yaml)",
        )
        return sp

    serve = with_config(sub.add_parser("serve", help="run the proxy in the foreground"))
    serve.description = (
        "Run the proxy described by the config file until SIGTERM/SIGINT. On SIGTERM rowgate stops "
        "accepting connections, lets running statements finish (limits.shutdown_timeout), then closes."
    )

    demo = sub.add_parser(
        "demo",
        help="start an embedded PostgreSQL with a sample shop database and serve it",
        description="Start an embedded PostgreSQL holding a 'shop' database of synthetic customers, orders and "
        "payments full of PII, write DIR/rowgate.yaml and DIR/connections.json, and serve in the foreground. "
        "A second start on the same directory reuses the data and tokens.",
    )
    demo.add_argument("--data-dir", default=".rowgate-demo", help="where data, config and tokens live")
    demo.add_argument("--port", type=int, default=6543, help="proxy port (default 6543)")
    demo.add_argument("--control-port", type=int, default=8765, help="control plane port (default 8765)")

    check = with_config(
        sub.add_parser(
            "check",
            help="show the decision the proxy would make for a statement",
            description="Analyse SQL as IDENTITY on DATABASE with the same code the proxy runs, and print the "
            "facts of each statement, the rule that decides and the decision. Exit 0 when allowed, 1 when not.",
        )
    )
    check.add_argument("--as", dest="identity", required=True, help="an identity from the config")
    check.add_argument("--database", required=True, help="an upstream name from the config")
    check.add_argument("--search-path", default="public", help="the session's search_path (default: public)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("sql", help="the statement(s), as the client would send them")

    check_config = with_config(sub.add_parser("config", help="validate a config file and print a summary"))
    check_config.add_argument("--json", action="store_true", help="print the validated config as JSON")

    from rowgate.cli_token import add_token_parser

    add_token_parser(sub, with_config)

    from rowgate import cli_audit

    cli_audit.add_parsers(sub, with_config)

    from rowgate import cli_discover

    cli_discover.add_parser(sub, with_config)
    return p


def report(e: RowgateError, prog: str = "rowgate") -> None:
    """A user-caused error on stderr: what, the detail, and how to fix it."""
    print(f"{prog}: {e.message}", file=sys.stderr)
    if e.detail:
        print(f"  {e.detail}", file=sys.stderr)
    if e.hint:
        print(f"  hint: {e.hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from rowgate.proxy.server import serve

            return serve(load_config(args.config))
        if args.command == "demo":
            from rowgate.demo import run_demo

            return run_demo(Path(args.data_dir), args.port, args.control_port)
        if args.command == "check":
            from rowgate.explain import run_check

            return run_check(load_config(args.config), args.identity, args.database, args.sql, args.search_path,
                             as_json=args.json)
        if args.command in ("audit", "lineage"):
            from rowgate import cli_audit

            return cli_audit.run(load_config(args.config), args)
        if args.command == "discover":
            from rowgate.cli_discover import run_discover

            return run_discover(load_config(args.config), args.database, as_json=args.json, show_all=args.all)
        if args.command == "token":
            from rowgate.cli_token import run_token

            return run_token(args)
        if args.command == "config":
            config = load_config(args.config)
            if args.json:
                print(config.model_dump_json(indent=2))
            else:
                path = args.config or default_config_path()
                print(f"{path}: valid")
                print(f"  listen {config.listen.host}:{config.listen.port} (tls {config.listen.tls.mode})")
                print(f"  {len(config.identities)} identities, upstreams: {', '.join(config.upstreams)}")
            return 0
    except RowgateError as e:
        report(e)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
