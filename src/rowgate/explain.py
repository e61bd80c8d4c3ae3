"""``rowgate check``: the decision the proxy would make, through the same analysis
and policy code the statement gate runs."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from rowgate.config import Config
from rowgate.errors import ConfigError, UnknownDatabase
from rowgate.identity.principal import Principal
from rowgate.policy.engine import Context, decide_message
from rowgate.proxy.gate import analyze_for_session
from rowgate.sql.facts import Statement


def _facts(s: Statement) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for f in fields(s):
        v = getattr(s, f.name)
        if isinstance(v, frozenset):
            v = sorted(v)
        elif f.name == "columns":
            v = {clause: sorted(cols) for clause, cols in v.items()}
        elif f.name == "kind":
            v = v.value
        if v not in (None, [], {}, ""):
            d[f.name] = v
    return d


def run_check(config: Config, identity: str, database: str, sql: str, search_path: str, as_json: bool) -> int:
    ident = config.identities.get(identity)
    if ident is None:
        raise ConfigError(f"identity {identity!r} is not in the config", hint=f"known: {', '.join(config.identities)}")
    upstream = config.upstreams.get(database)
    if upstream is None:
        raise UnknownDatabase(f"database {database!r} is not an upstream in the config",
                              hint=f"known: {', '.join(config.upstreams)}")
    principal = Principal(identity, ident.kind, tuple(ident.groups))
    path = tuple(p.strip() for p in search_path.split(",") if p.strip()) or ("public",)
    stmts = analyze_for_session(sql, path, {})
    ctx = Context(principal, database, upstream.environment, datetime.now(UTC))
    decision = decide_message(stmts, ctx, config.policy)
    if as_json:
        out = {
            "identity": identity,
            "groups": list(ident.groups),
            "database": database,
            "environment": upstream.environment,
            "statements": [_facts(s) for s in stmts],
            "decision": {
                "action": decision.action,
                "enforced": decision.enforced,
                "would_have": decision.would_have,
                "rule": decision.rule,
                "reason": decision.reason,
                "hint": decision.hint,
                "message": decision.message(),
                "statement_index": decision.statement_index,
                "relaxed": list(decision.relaxed),
            },
        }
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(f"identity {identity} (groups: {', '.join(ident.groups) or '-'}) on {database} "
              f"(environment {upstream.environment})")
        for i, s in enumerate(stmts, 1):
            print(f"\nstatement {i}: {s.text.strip()}")
            for key, value in _facts(s).items():
                if key != "text":
                    print(f"  {key}: {value}")
        print(f"\ndecision: {decision.action}{'' if decision.enforced else ' (observe mode)'}")
        print(f"  {decision.message()}")
        if decision.hint:
            print(f"  hint: {decision.hint}")
    return 1 if decision.refused else 0
