"""Built-in guardrails: which statement facts trigger which guardrail, and the sentences
users read in psql when one refuses a statement."""

from __future__ import annotations

from collections.abc import Callable

from rowgate.policy.model import GUARDRAILS
from rowgate.sql import facts
from rowgate.sql.facts import Kind, Statement

FLAG_GUARDRAIL: dict[str, str] = {
    facts.DROP_TABLE: "drop",
    facts.DROP_SCHEMA: "drop",
    facts.DROP_DATABASE: "drop",
    facts.DROP_OTHER: "drop",
    facts.TRUNCATE: "truncate",
    facts.DELETE_WITHOUT_WHERE: "delete_without_where",
    facts.UPDATE_WITHOUT_WHERE: "update_without_where",
    facts.DROP_COLUMN: "drop_column",
    facts.DROP_OWNED: "drop_owned",
    facts.PRIVILEGES: "privileges",
    facts.ROLE_CHANGE: "role_change",
    facts.COPY_PROGRAM: "copy_program",
    facts.COPY_FILE: "copy_file",
    facts.SET_ROLE: "set_role",
    facts.ALTER_SYSTEM: "alter_system",
    facts.UNKNOWN_EFFECT: "unknown_effect",
    facts.UNPARSEABLE: "unparseable",
}
# The kind alone is enough to fail closed, even if the analyzer forgot the flag.
_KIND_GUARDRAIL: dict[Kind, str] = {Kind.UNPARSEABLE: "unparseable", Kind.PROCEDURAL: "unknown_effect"}
_MAX_NAMED = 3


def triggered(statement: Statement) -> list[str]:
    """Every guardrail the statement's facts trigger, enabled or not, in ``GUARDRAILS`` order."""
    if not statement.flags and statement.kind not in _KIND_GUARDRAIL:
        return []  # the common case: a plain read or write
    names = {FLAG_GUARDRAIL[f] for f in statement.flags if f in FLAG_GUARDRAIL}
    by_kind = _KIND_GUARDRAIL.get(statement.kind)
    if by_kind is not None:
        names.add(by_kind)
    if not names:
        return []
    return [g for g in GUARDRAILS if g in names]


def _targets(s: Statement) -> str:
    tables = sorted(s.tables_written or s.tables)
    if len(tables) > _MAX_NAMED:
        return f"{', '.join(tables[:_MAX_NAMED])} and {len(tables) - _MAX_NAMED} more"
    return ", ".join(tables)


def _on(s: Statement, word: str) -> str:
    t = _targets(s)
    return f" {word} {t}" if t else ""


def _unparseable(s: Statement) -> str:
    return f"the statement could not be parsed: {s.error}" if s.error else "the statement could not be parsed"


def _unknown_effect(s: Statement) -> str:
    if s.kind is Kind.PROCEDURAL or s.command in ("DO", "CALL", "EXECUTE"):
        return f"{s.command} runs code whose effect rowgate cannot check"
    return f"{s.command} calls a function whose effect rowgate cannot check"


_REASONS: dict[str, Callable[[Statement], str]] = {
    "unparseable": _unparseable,
    "drop": lambda s: f"{s.command}{_on(s, 'of')}",
    "truncate": lambda s: f"TRUNCATE{_on(s, 'of')}",
    "delete_without_where": lambda s: f"DELETE without an effective WHERE{_on(s, 'on')}",
    "update_without_where": lambda s: f"UPDATE without an effective WHERE{_on(s, 'on')}",
    "drop_column": lambda s: f"ALTER TABLE … DROP COLUMN{_on(s, 'on')}",
    "drop_owned": lambda s: f"{s.command} acts on every object a role owns",
    "privileges": lambda s: f"{s.command} changes privileges",
    "role_change": lambda s: f"{s.command} changes database roles",
    "copy_program": lambda s: "COPY … PROGRAM runs a program on the database server",
    "copy_file": lambda s: f"COPY{_on(s, 'of')} to or from a file on the database server",
    "set_role": lambda s: "changing the session's database role (SET ROLE / SET SESSION AUTHORIZATION)",
    "alter_system": lambda s: "ALTER SYSTEM changes the server configuration",
    "unknown_effect": _unknown_effect,
}


def reason(name: str, statement: Statement) -> str:
    """What the guardrail detected, as users read it after ``denied by guardrail "name": ``."""
    return _REASONS[name](statement)


def hint(name: str) -> str:
    if name == "unparseable":
        return "rowgate refuses statements it cannot parse; check the statement's syntax"
    return (
        f'if you need this, ask a rowgate administrator for an allow rule with "relax: [{name}]" '
        "that matches you and this statement"
    )
