"""Name handling shared by the analyzer: relation resolution against a search_path, and
PostgreSQL's own rules for quoting identifiers and storing list-valued settings."""

from __future__ import annotations

from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

DEFAULT_SCHEMA = "public"

# Settings PostgreSQL flattens with quote_identifier (GUC_LIST_QUOTE): "SET search_path = 'a, b'"
# is stored as the single schema "a, b", exactly as the server would.
LIST_QUOTE_SETTINGS = frozenset(
    {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
     "shared_preload_libraries", "unix_socket_directories"}
)


def creation_schema(search_path: tuple[str, ...]) -> str:
    """The schema an unqualified relation name resolves to.

    Without the catalog we cannot know which schema actually holds a name, so we take the
    first schema a user's own tables plausibly live in: "$user" is skipped (we do not know
    whether the schema exists), as are pg_catalog and pg_temp (their contents are
    recognised by the ``pg_`` prefix, or are the session's own temp tables)."""
    for schema in search_path:
        if schema == "$user" or schema == "pg_catalog" or schema.startswith("pg_temp"):
            continue
        return schema
    return DEFAULT_SCHEMA


def resolve_relation(schema: str | None, name: str, search_path: tuple[str, ...]) -> str:
    if schema:
        return f"{schema}.{name}"
    if name.startswith("pg_"):
        return f"pg_catalog.{name}"
    return f"{creation_schema(search_path)}.{name}"


def builtins_shadowable(search_path: tuple[str, ...]) -> bool:
    """True when a schema is searched before pg_catalog, so an unqualified function name
    may resolve to a user-defined function rather than the built-in of that name.
    pg_catalog is searched first implicitly unless the path names it explicitly later."""
    return "pg_catalog" in search_path and search_path.index("pg_catalog") > 0


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_identifier(): quote unless the name is a plain lower-case
    identifier that is not a keyword (unreserved keywords need no quotes)."""
    safe = bool(name) and (name[0].islower() or name[0] == "_") and all(
        (c.islower() and c.isascii()) or c.isdigit() or c == "_" for c in name
    )
    if safe and (name in RESERVED_KEYWORDS or name in COL_NAME_KEYWORDS or name in TYPE_FUNC_NAME_KEYWORDS):
        safe = False
    if safe:
        return name
    return '"' + name.replace('"', '""') + '"'


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The double-quoted identifier starting at ``text[i]`` ('""' is a quote) and the
    index of its closing quote (``len(text)`` when it is unterminated)."""
    j, n = i + 1, len(text)
    buf: list[str] = []
    while j < n:
        if text[j] == '"':
            if j + 1 < n and text[j + 1] == '"':
                buf.append('"')
                j += 2
                continue
            break
        buf.append(text[j])
        j += 1
    return "".join(buf), j


def split_identifier_list(value: str) -> tuple[str, ...]:
    """PostgreSQL's SplitIdentifierString for a stored list setting such as search_path:
    comma-separated, double quotes keep case and commas, unquoted parts are lower-cased."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            name, j = _quoted(value, i)
            items.append(name)
            i = j + 1
        else:
            j = i
            while j < n and value[j] != "," and not value[j].isspace():
                j += 1
            items.append(value[i:j].lower())
            i = j
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == ",":
            i += 1
            continue
        break
    return tuple(items)


def parse_search_path(value: str) -> tuple[str, ...]:
    """The schemas of a search_path value as SHOW or SET renders it ("$user", public)."""
    return split_identifier_list(value)


def split_qualified_name(text: str) -> tuple[str | None, str] | None:
    """A relation name written inside a string literal, as regclass input reads it:
    ``'app.orders'``, ``'"My Seq"'``. None when it is not a plain [schema.]name."""
    parts: list[str] = []
    text = text.strip()
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            name, j = _quoted(text, i)
            if j >= n:
                return None
            parts.append(name)
            i = j + 1
        else:
            j = i
            while j < n and text[j] != ".":
                j += 1
            part = text[i:j]
            if not part or any(c.isspace() or c == '"' for c in part):
                return None
            parts.append(part.lower())
            i = j
        if i < n:
            if text[i] != ".":
                return None
            i += 1
            if i >= n:
                return None
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) in (2, 3):
        return parts[-2], parts[-1]
    return None
