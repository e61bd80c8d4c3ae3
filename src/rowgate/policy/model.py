"""The ``policy:`` section of the configuration: guardrails and an ordered list of rules.

Pure data with validation; the decision logic lives in :mod:`rowgate.policy.engine`.
Every list in the config is a tuple here so a loaded policy is immutable and hashable.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from rowgate.identity.principal import PrincipalKind
from rowgate.sql.facts import Kind

Action = Literal["allow", "deny", "require_approval"]
Mode = Literal["enforce", "observe"]

# The order is the order guardrails are checked in, so the most specific, most
# dangerous finding names a statement that triggers several.
GUARDRAILS: tuple[str, ...] = (
    "unparseable",
    "drop",
    "truncate",
    "delete_without_where",
    "update_without_where",
    "drop_column",
    "drop_owned",
    "privileges",
    "role_change",
    "copy_program",
    "copy_file",
    "set_role",
    "alter_system",
    "unknown_effect",
)
# Fail closed: a statement rowgate cannot parse has no facts a rule could reason about.
UNRELAXABLE = frozenset({"unparseable"})

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = {
    full: full[:3] for full in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _weekday(v: Any) -> Any:
    if isinstance(v, str):
        day = v.strip().lower()
        day = _FULL_WEEKDAYS.get(day, day)
        if day not in _WEEKDAYS:
            raise ValueError(f"unknown day {v!r} (use {', '.join(_WEEKDAYS)})")
        return day
    return v


def _yaml_time(v: Any) -> Any:
    # YAML 1.1 reads an unquoted 18:00 as the base-60 integer 1080; take it back.
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1440:
        return f"{v // 60:02d}:{v % 60:02d}"
    return v


def _hhmm(v: str) -> str:
    if not _HHMM.match(v):
        raise ValueError(f"not a time of day: {v!r} (use HH:MM, 24-hour, e.g. 09:00 or 18:30)")
    return v


def _hhmm_or_midnight(v: str) -> str:
    # "to: 24:00" reads naturally as "until the end of the day".
    return v if v == "24:00" else _hhmm(v)


def _relaxable(v: str) -> str:
    if v in UNRELAXABLE:
        raise ValueError(f"guardrail {v!r} cannot be relaxed: rowgate always refuses statements it cannot parse")
    if v not in GUARDRAILS:
        raise ValueError(f"unknown guardrail {v!r} (known: {', '.join(g for g in GUARDRAILS if g not in UNRELAXABLE)})")
    return v


def minutes(hhmm: str) -> int:
    """Minutes since midnight of a validated ``HH:MM`` (``24:00`` is 1440)."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


Weekday = Annotated[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], BeforeValidator(_weekday)]
Globs = tuple[Annotated[str, Field(min_length=1)], ...]


class TimeWindow(_Model):
    """When a rule applies, in local time of ``timezone``.

    - ``days``: weekdays (``mon`` … ``sun``, full names accepted); empty or absent: every day.
    - ``from``: start, ``HH:MM`` 24-hour, inclusive; absent: ``00:00``.
    - ``to``: end, ``HH:MM``, exclusive (``24:00`` allowed); absent: end of the day.
      A window whose ``to`` is earlier than its ``from`` crosses midnight (``22:00`` to ``06:00``);
      its after-midnight part belongs to the day it started on, so ``days: [fri]`` with
      ``22:00`` to ``06:00`` covers Friday night until Saturday 06:00.
    - ``timezone``: an IANA zone name (``Europe/Berlin``); default ``UTC``.

    Times may be quoted or not (YAML reads an unquoted ``18:00`` as a number; it is taken back).
    """

    days: tuple[Weekday, ...] = ()
    from_: Annotated[str, BeforeValidator(_yaml_time), AfterValidator(_hhmm)] = Field("00:00", alias="from")
    to: Annotated[str, BeforeValidator(_yaml_time), AfterValidator(_hhmm_or_midnight)] = "24:00"
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as UTC or Europe/Berlin)") from None
        return v

    @field_validator("to")
    @classmethod
    def _not_empty(cls, v: str, info: ValidationInfo) -> str:
        start = info.data.get("from_")
        if start is not None and minutes(start) == minutes(v):
            raise ValueError(f"window from {start} to {v} is empty; omit 'from' and 'to' for the whole day")
        return v


class Match(_Model):
    """What a rule applies to. All given criteria must hold; within one list any entry may
    match; an empty or absent criterion matches everything.

    - ``identities``: principal names, globs (``svc-*``), case-sensitive.
    - ``groups``: the principal's groups, globs, case-sensitive; any group may match.
    - ``principal_kinds``: ``human``, ``service``, ``agent``.
    - ``databases``: upstream names as clients connect to them, globs, case-sensitive.
    - ``environments``: the upstream's ``environment`` label (``production``), globs.
    - ``statement_kinds``: ``read``, ``write``, ``ddl``, ``dcl``, ``transaction``, ``session``,
      ``utility``, ``procedural``, ``unparseable``.
    - ``commands``: command tags (``DELETE``, ``DROP *``, ``ALTER TABLE``), globs, case-insensitive.
    - ``tables``: ``schema.table`` globs, case-insensitive; a name without a schema
      (``payments``) means any schema. Matches if any table the statement reads or writes matches.
    - ``columns``: ``schema.table.column`` globs over every clause, case-insensitive; missing
      leading parts mean any (``customers.ssn``, ``ssn``).
    - ``functions``: function names, globs, case-insensitive. A name without a schema matches in
      any schema; an unqualified call matches a qualified pattern by name, since its schema
      depends on the search_path.
    - ``time``: a :class:`TimeWindow`.
    """

    identities: Globs = ()
    groups: Globs = ()
    principal_kinds: tuple[PrincipalKind, ...] = ()
    databases: Globs = ()
    environments: Globs = ()
    statement_kinds: tuple[Kind, ...] = ()
    commands: Globs = ()
    tables: Globs = ()
    columns: Globs = ()
    functions: Globs = ()
    time: TimeWindow | None = None


class Rule(_Model):
    """One policy rule.

    - ``id``: required, unique in the policy; named in refusals and audit records.
    - ``description``: free text for people reading the config.
    - ``match``: a :class:`Match`; absent: every statement.
    - ``action``: ``allow``, ``deny`` or ``require_approval``.
    - ``message``: the reason users see when this rule decides (defaults to the description).
    - ``hint``: how to get access, shown as the error's HINT (a sensible default otherwise).
    - ``relax``: allow rules only: guardrails lifted for what this rule matches. ``unparseable``
      cannot be relaxed.
    - ``mode``: ``enforce`` (default) or ``observe``: log what the rule would have done, do not
      enforce it.
    """

    id: str = Field(min_length=1)
    description: str = ""
    match: Match = Match()
    action: Action
    message: str | None = None
    hint: str | None = None
    relax: tuple[Annotated[str, AfterValidator(_relaxable)], ...] = ()
    mode: Mode = "enforce"

    @field_validator("relax")
    @classmethod
    def _only_on_allow(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        action = info.data.get("action")
        if v and action is not None and action != "allow":
            raise ValueError(f"relax is only valid on allow rules (this rule's action is {action})")
        return v


class Guardrails(_Model):
    """Built-in guardrails, all on by default. ``false`` turns one off for everybody; to lift
    one for some people or tables only, use an allow rule with ``relax``.

    - ``drop``: DROP of tables, views, sequences, indexes, schemas, databases and other objects.
    - ``truncate``: TRUNCATE.
    - ``delete_without_where`` / ``update_without_where``: no WHERE, or a trivially true one.
    - ``drop_column``: ALTER TABLE … DROP COLUMN.
    - ``drop_owned``: DROP OWNED, REASSIGN OWNED.
    - ``privileges``: GRANT, REVOKE, ALTER DEFAULT PRIVILEGES.
    - ``role_change``: CREATE / ALTER / DROP ROLE, USER or GROUP.
    - ``copy_program``: COPY … TO/FROM PROGRAM.
    - ``copy_file``: COPY … TO/FROM a file on the database server.
    - ``set_role``: SET ROLE, SET SESSION AUTHORIZATION and their set_config() forms.
    - ``alter_system``: ALTER SYSTEM.
    - ``unknown_effect``: DO, CALL, functions not known to be safe, EXECUTE of an unseen PREPARE.
    - ``unparseable``: statements rowgate cannot parse; always on (fail closed).
    """

    drop: bool = True
    truncate: bool = True
    delete_without_where: bool = True
    update_without_where: bool = True
    drop_column: bool = True
    drop_owned: bool = True
    privileges: bool = True
    role_change: bool = True
    copy_program: bool = True
    copy_file: bool = True
    set_role: bool = True
    alter_system: bool = True
    unknown_effect: bool = True
    unparseable: bool = True

    @field_validator("unparseable")
    @classmethod
    def _fail_closed(cls, v: bool) -> bool:
        if not v:
            raise ValueError("cannot be turned off: rowgate always refuses statements it cannot parse (fail closed)")
        return v

    def enabled(self) -> frozenset[str]:
        return frozenset(name for name in GUARDRAILS if getattr(self, name))


class Policy(_Model):
    """The ``policy:`` section.

    - ``mode``: ``enforce`` (default) or ``observe``: decide and log, but let every statement
      run, guardrails included.
    - ``default``: ``allow`` (default) or ``deny``: the action for statements no rule matches.
      Guardrails apply either way.
    - ``guardrails``: a :class:`Guardrails`.
    - ``rules``: ordered :class:`Rule` list. A matching deny rule always wins over allow rules,
      wherever they stand; among rules of the same action the first one decides.
    """

    mode: Mode = "enforce"
    default: Literal["allow", "deny"] = "allow"
    guardrails: Guardrails = Guardrails()
    rules: tuple[Rule, ...] = ()

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, v: tuple[Rule, ...]) -> tuple[Rule, ...]:
        first: dict[str, int] = {}
        for i, rule in enumerate(v):
            if rule.id in first:
                raise ValueError(f"duplicate rule id {rule.id!r} (rules {first[rule.id]} and {i})")
            first[rule.id] = i
        return v
