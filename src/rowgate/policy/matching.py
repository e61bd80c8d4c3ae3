"""Rules compiled for matching: globs become one regex per criterion, zones are resolved,
and the session-constant criteria (who, which database) are evaluated once per session
key instead of once per statement."""

from __future__ import annotations

import fnmatch
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rowgate.identity.principal import Principal, PrincipalKind
from rowgate.policy.model import UNRELAXABLE, Match, Policy, Rule, TimeWindow, minutes
from rowgate.sql.facts import Kind, Statement

_WEEKDAY_NUMBERS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_MAX_SESSION_KEYS = 4096
_MAX_POLICIES = 32


def _globs(patterns: Iterable[str], *, ignore_case: bool) -> re.Pattern[str] | None:
    """One regex for a list of globs; None (match everything) for an empty list."""
    parts = [f"(?:{fnmatch.translate(p)})" for p in patterns]
    if not parts:
        return None
    return re.compile("|".join(parts), re.IGNORECASE if ignore_case else 0)


def _qualify(pattern: str, parts: int) -> str:
    # A pattern with fewer dotted parts than the names it matches leaves the leading parts
    # open, so `payments` covers every schema instead of silently never matching.
    missing = parts - 1 - pattern.count(".")
    return "*." * missing + pattern if missing > 0 else pattern


def _any(regex: re.Pattern[str] | None, values: Iterable[str]) -> bool:
    return regex is None or any(regex.match(v) for v in values)


@dataclass(frozen=True, slots=True)
class _Window:
    days: frozenset[int] | None
    start: int
    end: int
    zone: zoneinfo.ZoneInfo

    @classmethod
    def of(cls, w: TimeWindow) -> _Window:
        days = frozenset(_WEEKDAY_NUMBERS[d] for d in w.days) or None
        return cls(days, minutes(w.from_), minutes(w.to), zoneinfo.ZoneInfo(w.timezone))

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        t = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            inside = self.start <= t < self.end
        elif t >= self.start:
            inside = True
        elif t < self.end:
            inside, day = True, (day - 1) % 7  # after midnight: the window began the day before
        else:
            inside = False
        return inside and (self.days is None or day in self.days)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    identities: re.Pattern[str] | None
    groups: re.Pattern[str] | None
    principal_kinds: frozenset[PrincipalKind] | None
    databases: re.Pattern[str] | None
    environments: re.Pattern[str] | None
    statement_kinds: frozenset[Kind] | None
    commands: re.Pattern[str] | None
    tables: re.Pattern[str] | None
    columns: re.Pattern[str] | None
    has_functions: bool
    fn_bare: re.Pattern[str] | None  # unqualified patterns, against a function's own name
    fn_qualified: re.Pattern[str] | None  # qualified patterns, against qualified calls
    fn_qualified_name: re.Pattern[str] | None  # their name parts, against unqualified calls
    window: _Window | None
    relax: frozenset[str]

    @classmethod
    def of(cls, rule: Rule) -> CompiledRule:
        m: Match = rule.match
        bare = [p for p in m.functions if "." not in p]
        qualified = [p for p in m.functions if "." in p]
        return cls(
            rule=rule,
            identities=_globs(m.identities, ignore_case=False),
            groups=_globs(m.groups, ignore_case=False),
            principal_kinds=frozenset(m.principal_kinds) or None,
            databases=_globs(m.databases, ignore_case=False),
            environments=_globs(m.environments, ignore_case=False),
            statement_kinds=frozenset(m.statement_kinds) or None,
            commands=_globs(m.commands, ignore_case=True),
            tables=_globs((_qualify(p, 2) for p in m.tables), ignore_case=True),
            columns=_globs((_qualify(p, 3) for p in m.columns), ignore_case=True),
            has_functions=bool(m.functions),
            fn_bare=_globs(bare, ignore_case=True) if bare else None,
            fn_qualified=_globs(qualified, ignore_case=True) if qualified else None,
            fn_qualified_name=_globs((p.rsplit(".", 1)[1] for p in qualified), ignore_case=True) if qualified else None,
            window=_Window.of(m.time) if m.time is not None else None,
            relax=frozenset(rule.relax),
        )

    def matches_session(self, principal: Principal, database: str, environment: str) -> bool:
        return (
            (self.identities is None or self.identities.match(principal.name) is not None)
            and _any(self.groups, principal.groups)
            and (self.principal_kinds is None or principal.kind in self.principal_kinds)
            and (self.databases is None or self.databases.match(database) is not None)
            and (self.environments is None or self.environments.match(environment) is not None)
        )

    def matches_statement(self, s: Statement, now: datetime) -> bool:
        # Cheapest checks first: most rules are rejected on kind or command.
        if self.statement_kinds is not None and s.kind not in self.statement_kinds:
            return False
        if self.commands is not None and self.commands.match(s.command) is None:
            return False
        if self.tables is not None and not any(self.tables.match(t) for t in s.tables):
            return False
        if self.columns is not None and not any(self.columns.match(c) for cols in s.columns.values() for c in cols):
            return False
        if self.has_functions and not any(self._function(f) for f in s.functions):
            return False
        return self.window is None or self.window.contains(now)

    def _function(self, name: str) -> bool:
        _, dot, own = name.rpartition(".")
        if self.fn_bare is not None and self.fn_bare.match(own):
            return True
        if dot:
            return self.fn_qualified is not None and self.fn_qualified.match(name) is not None
        # Unqualified: the search_path picks the schema at run time, so match on the name.
        return self.fn_qualified_name is not None and self.fn_qualified_name.match(own) is not None


class CompiledPolicy:
    """A :class:`Policy` ready for :func:`rowgate.policy.engine.decide`; build once per policy
    (``compile_policy`` caches it)."""

    __slots__ = ("_sessions", "enabled", "observe", "policy", "rules")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.rules = tuple(CompiledRule.of(r) for r in policy.rules)
        # UNRELAXABLE guardrails are on whatever the model says (fail closed even if a
        # Policy was built without validation).
        self.enabled = policy.guardrails.enabled() | UNRELAXABLE
        self.observe = policy.mode == "observe"
        self._sessions: dict[tuple[Principal, str, str], tuple[CompiledRule, ...]] = {}

    def rules_for(self, principal: Principal, database: str, environment: str) -> tuple[CompiledRule, ...]:
        """The rules whose identity and database criteria hold, in policy order."""
        key = (principal, database, environment)
        rules = self._sessions.get(key)
        if rules is None:
            rules = tuple(r for r in self.rules if r.matches_session(principal, database, environment))
            if len(self._sessions) >= _MAX_SESSION_KEYS:
                self._sessions.clear()
            self._sessions[key] = rules
        return rules


_compiled: dict[int, CompiledPolicy] = {}


def compile_policy(policy: Policy) -> CompiledPolicy:
    """The compiled form of ``policy``, cached by identity (the cache holds the policy, so its
    id cannot be reused by another object while cached)."""
    cp = _compiled.get(id(policy))
    if cp is None or cp.policy is not policy:
        cp = CompiledPolicy(policy)
        if len(_compiled) >= _MAX_POLICIES:
            _compiled.clear()
        _compiled[id(policy)] = cp
    return cp
