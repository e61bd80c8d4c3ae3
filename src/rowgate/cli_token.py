"""``rowgate token create|list|revoke``: token identities in the state store. A token
is printed once, at creation; the store keeps only its SCRAM verifier."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rowgate.config import Config, Seconds, load_config
from rowgate.errors import ConfigError
from rowgate.identity.tokenstore import StoredToken, TokenStore
from rowgate.statestore import open_state

_SECONDS: TypeAdapter[float] = TypeAdapter(Seconds)


def add_token_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    token = sub.add_parser(
        "token",
        help="create, list and revoke token identities",
        description="Token identities live in the state store (data_dir/state.db, or state: postgresql://...). "
        "Only a SCRAM-SHA-256 verifier of each token is stored; the token itself is shown once, at creation.",
    )
    cmds = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = with_config(cmds.add_parser("create", help="issue a token for a new identity (printed once)"))
    create.add_argument("name", help="the identity's name (the user name clients connect with)")
    create.add_argument("--group", "-g", action="append", default=[], help="a group (repeat for several)")
    create.add_argument("--kind", choices=["human", "service", "agent"], default="human")
    create.add_argument("--expires", help="lifetime, e.g. 12h, 30d (default: never)")
    create.add_argument("--on-behalf-of", help="the human an agent acts for (recorded in every audit record)")
    create.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE", help="an attribute, e.g. team=x")
    create.add_argument("--json", action="store_true", help="print a JSON object (with the token)")
    listing = with_config(cmds.add_parser("list", help="list identities and their token status (no secrets)"))
    listing.add_argument("--json", action="store_true")
    revoke = with_config(cmds.add_parser("revoke", help="revoke a token; its open sessions close within seconds"))
    revoke.add_argument("name")


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _describe(t: StoredToken, now: float) -> dict[str, Any]:
    return {
        "name": t.name,
        "kind": t.kind,
        "groups": list(t.groups),
        "attributes": t.attributes,
        "on_behalf_of": t.on_behalf_of,
        "status": t.status(now),
        "created": _iso(t.created),
        "expires": _iso(t.expires),
        "revoked": _iso(t.revoked),
        "source": "store",
    }


def actor() -> str:
    """Who runs the command, for the audit log's token_change records: the OS user (and the
    user sudo was run by) on this host. The CLI has no stronger identity to offer."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    if sudo and sudo != user:
        user += f" (sudo by {sudo})"
    return f"{user}@{socket.gethostname()}"


def _attributes(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--attr {pair!r}: use KEY=VALUE")
        out[key.strip()] = value
    return out


def _create(args: argparse.Namespace, config: Config, store: TokenStore) -> int:
    if args.name in config.identities:
        raise ConfigError(
            f'identity "{args.name}" is already defined in the config file',
            hint="a name is either a config identity or a store token; choose another name",
        )
    expires = None
    if args.expires:
        try:
            expires = _SECONDS.validate_python(args.expires)
        except ValidationError:
            raise ConfigError(f"--expires {args.expires!r}: not a duration (use e.g. 12h, 30d)") from None
    now = time.time()
    token, rec = store.create(
        args.name,
        kind=args.kind,
        groups=tuple(dict.fromkeys(args.group)),
        attributes=_attributes(args.attr),
        on_behalf_of=args.on_behalf_of,
        expires=None if expires is None else now + expires,
        now=now,
        actor=actor(),
    )
    if args.json:
        print(json.dumps({**_describe(rec, now), "token": token}, indent=2))
        return 0
    groups = ", ".join(rec.groups) or "none"
    print(f'Created a token for "{rec.name}" ({rec.kind}; groups: {groups}; expires: {_iso(rec.expires) or "never"}).')
    print("It is shown only this once; rowgate keeps only a verifier:\n")
    print(f"  {token}\n")
    host = config.listen.host
    print(f"Connect: postgresql://{rec.name}:<token>@{host}:{config.listen.port}/<database>")
    return 0


def _list(args: argparse.Namespace, config: Config, store: TokenStore) -> int:
    now = time.time()
    rows = [_describe(t, now) for t in store.all()]
    for name, ident in config.identities.items():
        rows.append({"name": name, "kind": ident.kind, "groups": list(ident.groups), "status": "active",
                     "expires": None, "source": "config"})
    rows.sort(key=lambda r: str(r["name"]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("NAME", "KIND", "GROUPS", "STATUS", "EXPIRES", "SOURCE")
    table = [header] + [
        (r["name"], r["kind"], ",".join(r["groups"]) or "-", r["status"], r["expires"] or "never", r["source"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace, store: TokenStore) -> int:
    rec = store.revoke(args.name, time.time(), actor=actor())
    if rec is None:
        raise ConfigError(f'no token for identity "{args.name}" in the state store',
                          hint="rowgate token list shows the identities")
    print(f'Revoked the token of "{rec.name}" (at {_iso(rec.revoked)}); its sessions close within seconds.')
    return 0


def run_token(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    db = open_state(config.state, config.data_dir)
    try:
        store = TokenStore(db)
        if args.token_command == "create":
            return _create(args, config, store)
        if args.token_command == "list":
            return _list(args, config, store)
        return _revoke(args, store)
    finally:
        db.close()
