"""Statement analysis entry point: SQL text of one message in, one ``Statement`` per
statement out, in order.

Conventions (see also ``rowgate.sql.walker`` for columns):

- Unqualified relation names resolve to the first schema of the search_path that is not
  "$user", pg_catalog or pg_temp (default ``public``); names starting with ``pg_`` resolve to
  pg_catalog; CTE names are not tables. A ``SET search_path`` earlier in the same message is
  applied to the statements after it (RESET returns to the path the caller passed).
- Text that does not parse, or nests too deeply to walk, is one UNPARSEABLE statement for
  the whole message: the message is refused as a whole.
- nextval/setval with a literal sequence name are writes of that sequence (in
  ``tables_written``, kind WRITE for a SELECT) without UNKNOWN_EFFECT; with a computed name
  the sequence is unknown, so the statement carries UNKNOWN_EFFECT.
- EXPLAIN ANALYZE has the explained statement's kind, tables and flags plus
  EXPLAIN_ANALYZE. Plain EXPLAIN is READ: every table the statement names is in
  tables_read, none is written, and only UNKNOWN_EFFECT survives (the planner may evaluate
  functions it believes immutable).
- EXECUTE is PROCEDURAL with UNKNOWN_EFFECT and ``execute_name``: only the proxy knows the
  PREPARE it refers to, and substitutes that statement's facts.

Results are cached per (text, search_path); statements are immutable (``columns`` is a
read-only mapping), so cached ones are handed out as they are. Applications that inline literals send a new
text every time, so single plain reads are also cached by their *shape*: the text with
the values of its literals left out (its tokens from PostgreSQL's scanner). Only statements
whose facts cannot depend on a literal are cached that way: one SELECT that reads, with no
flags, no function calls and no reg* casts. A literal can only change what a statement
touches through a function argument (nextval('t'), set_config('role', ...)), a reg* cast,
a COPY file name, a SET value or a WHERE that is trivially true; all of those are left to
the full analysis.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from types import MappingProxyType

from pglast import parser

from rowgate.sql import facts
from rowgate.sql.classify import Outcome, classify
from rowgate.sql.facts import Kind, Statement
from rowgate.sql.names import parse_search_path

CACHE_SIZE = 4096
# longer texts (bulk INSERTs) are analysed every time rather than pinned in the cache
CACHE_MAX_TEXT = 64 * 1024

__all__ = ["analyze", "cache_clear", "cache_info", "literal_free_shape"]


def analyze(
    sql: str, search_path: tuple[str, ...] = ("public",), *, extra_safe_functions: frozenset[str] = frozenset()
) -> list[Statement]:
    """Analyse every statement of ``sql``. ``extra_safe_functions`` adds vetted functions
    (``app.fn`` or bare ``fn``) to the built-in allowlist."""
    if len(sql) > CACHE_MAX_TEXT:
        result = _analyze(sql, search_path, extra_safe_functions)
    else:
        shape = _shape(sql)
        cached = _shapes.get((shape, search_path, extra_safe_functions)) if shape is not None else None
        if cached is not None:
            return [replace(cached, text=_text_of(sql))]
        result = _cached(sql, search_path, extra_safe_functions)
        if shape is not None and _literal_free(sql, result):
            if len(_shapes) >= CACHE_SIZE:
                _shapes.clear()
            _shapes[(shape, search_path, extra_safe_functions)] = result[0]
    return list(result)


# a statement's shape: its tokens, with the values of its literals left out
Shape = tuple[str, ...]
_shapes: dict[tuple[Shape, tuple[str, ...], frozenset[str]], Statement] = {}
_LITERALS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
# where an integer may be an output column's position (ORDER BY 2, DISTINCT ON (1), GROUP BY
# ROLLUP (1)): with any of these, integers stay in the shape
_POSITIONAL = frozenset({"ORDER", "GROUP_P", "DISTINCT", "OVER", "WINDOW", "ROLLUP", "CUBE", "GROUPING"})
_REG_TYPE = re.compile(r'^"?reg[a-z]*"?$', re.IGNORECASE)


def literal_free_shape(sql: str, search_path: tuple[str, ...] = ("public",)) -> Shape | None:
    """The shape under which ``analyze`` caches ``sql`` when no literal can change its facts,
    else None: what other caches of per-statement work may key on."""
    if len(sql) > CACHE_MAX_TEXT:
        return None
    analyze(sql, search_path)  # cached; it is what records a shape as literal-free
    shape = _shape(sql)
    return shape if shape is not None and (shape, search_path, frozenset()) in _shapes else None


@lru_cache(maxsize=CACHE_SIZE)  # a text is analysed by the gate, then looked up by lineage
def _shape(sql: str) -> Shape | None:
    """The scanner's tokens: keywords by name, literals by kind only (integers by value too
    where they may be positions), everything else by its text. Two texts of one shape differ
    in literal values only; a text (normalize's ``$n``) could not tell ``N'x'`` from the
    identifier ``N$1``. None: no literal, a reg* type (a literal naming an object), or not
    scannable: the exact-text cache and the full analysis still apply."""
    try:
        tokens = parser.scan(sql)
    except Exception:
        return None
    names = {t.name for t in tokens}
    if not names & _LITERALS:
        return None
    keep_integers = bool(names & _POSITIONAL)
    shape: list[str] = []
    for t in tokens:
        if (t.name in _LITERALS and not (keep_integers and t.name == "ICONST")) or t.kind != "NO_KEYWORD":
            shape.append(t.name)
        else:
            text = sql[t.start : t.end + 1]
            if t.name == "IDENT" and _REG_TYPE.match(text):
                return None
            shape.append(f"{t.name} {text}")
    return tuple(shape)


def _text_of(sql: str) -> str:
    """A single statement's text as the full analysis cuts it (without its semicolon)."""
    return sql.strip().removesuffix(";").rstrip()


def _literal_free(sql: str, result: tuple[Statement, ...]) -> bool:
    if len(result) != 1:
        return False
    s = result[0]
    return (
        s.kind is Kind.READ
        and s.command == "SELECT"
        and not s.flags
        and not s.functions
        and s.prepare_name is None
        and s.execute_name is None
        and s.setting is None
        and s.text == _text_of(sql)
    )


@lru_cache(maxsize=CACHE_SIZE)
def _cached(sql: str, search_path: tuple[str, ...], extra: frozenset[str]) -> tuple[Statement, ...]:
    return _analyze(sql, search_path, extra)


cache_info = _cached.cache_info


def cache_clear() -> None:
    _cached.cache_clear()
    _shape.cache_clear()
    _shapes.clear()


def _unparseable(sql: str, error: str) -> tuple[Statement, ...]:
    flags = frozenset({facts.UNPARSEABLE})
    return (Statement(text=sql, kind=Kind.UNPARSEABLE, command="UNPARSEABLE", flags=flags, error=error),)


def _analyze(sql: str, search_path: tuple[str, ...], extra: frozenset[str]) -> tuple[Statement, ...]:
    try:
        raw = parser.parse_sql(sql)
    except parser.ParseError as exc:
        return _unparseable(sql, str(exc))
    except RecursionError:
        return _unparseable(sql, "statement nested too deeply to analyse")
    except Exception as exc:  # any parser failure refuses the message, never passes it
        return _unparseable(sql, f"{type(exc).__name__}: {exc}")
    statements: list[Statement] = []
    path = search_path
    try:
        for stmt in raw or ():
            start = stmt.stmt_location or 0
            end = start + stmt.stmt_len if stmt.stmt_len else len(sql)
            text = sql[start:end].strip()
            if stmt.stmt is None:
                continue
            outcome = classify(stmt.stmt, path, extra)
            statements.append(_statement(text, outcome))
            if outcome.setting is not None and outcome.setting[0] in ("search_path", "all"):
                value = outcome.setting[1]
                path = parse_search_path(value) if value is not None else search_path
    except RecursionError:
        return _unparseable(sql, "statement nested too deeply to analyse")
    return tuple(statements)


def _fingerprint(text: str) -> str:
    try:
        return str(parser.fingerprint(text))
    except Exception:  # a fingerprint groups statements; it is no safety fact
        return ""


def _statement(text: str, o: Outcome) -> Statement:
    return Statement(
        text=text,
        kind=o.kind,
        command=o.command,
        tables_read=frozenset(o.reads),
        tables_written=frozenset(o.writes),
        columns=MappingProxyType({clause: frozenset(names) for clause, names in sorted(o.columns.items()) if names}),
        functions=frozenset(o.functions),
        flags=frozenset(o.flags),
        fingerprint=_fingerprint(text),
        prepare_name=o.prepare_name,
        execute_name=o.execute_name,
        deallocate_name=o.deallocate_name,
        setting=o.setting,
        language=o.language,
    )
