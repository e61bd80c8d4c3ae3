"""The policy decision engine, on hand-built statement facts (no analyzer, no database)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from rowgate.identity.principal import Principal, PrincipalKind
from rowgate.policy import (
    GUARDRAILS,
    Context,
    Decision,
    Policy,
    compile_policy,
    decide,
    decide_message,
    guardrails_hit,
)
from rowgate.sql import facts
from rowgate.sql.facts import Kind, Statement

MONDAY_NOON = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)  # Monday; 14:00 in Berlin (CEST)


def stmt(
    command: str = "SELECT",
    kind: Kind = Kind.READ,
    *,
    read: Iterable[str] = (),
    written: Iterable[str] = (),
    columns: dict[str, Iterable[str]] | None = None,
    functions: Iterable[str] = (),
    flags: Iterable[str] = (),
    error: str | None = None,
) -> Statement:
    return Statement(
        text=f"-- {command}",
        kind=kind,
        command=command,
        tables_read=frozenset(read),
        tables_written=frozenset(written),
        columns={k: frozenset(v) for k, v in (columns or {}).items()},
        functions=frozenset(functions),
        flags=frozenset(flags),
        error=error,
    )


def ctx(
    name: str = "alice",
    groups: tuple[str, ...] = ("analysts",),
    kind: PrincipalKind = "human",
    *,
    database: str = "shop",
    environment: str = "production",
    now: datetime = MONDAY_NOON,
) -> Context:
    return Context(Principal(name, kind, groups), database, environment, now)


def policy(*rules: dict[str, Any], **top: Any) -> Policy:
    return Policy.model_validate({**top, "rules": list(rules)})


SELECT = stmt(read=["public.orders"])
DELETE_ALL = stmt("DELETE", Kind.WRITE, written=["public.orders"], flags=[facts.DELETE_WITHOUT_WHERE])
TRUNCATE = stmt("TRUNCATE", Kind.DDL, written=["public.orders"], flags=[facts.TRUNCATE])

# One statement per guardrail, and a fragment of the reason users should read.
GUARDRAIL_CASES: dict[str, tuple[Statement, str]] = {
    "drop": (
        stmt("DROP TABLE", Kind.DDL, written=["public.orders"], flags=[facts.DROP_TABLE]),
        "DROP TABLE of public.orders",
    ),
    "truncate": (TRUNCATE, "TRUNCATE of public.orders"),
    "delete_without_where": (DELETE_ALL, "DELETE without an effective WHERE on public.orders"),
    "update_without_where": (
        stmt("UPDATE", Kind.WRITE, written=["public.orders"], flags=[facts.UPDATE_WITHOUT_WHERE]),
        "UPDATE without an effective WHERE on public.orders",
    ),
    "drop_column": (
        stmt("ALTER TABLE", Kind.DDL, written=["public.customers"], flags=[facts.DROP_COLUMN]),
        "DROP COLUMN on public.customers",
    ),
    "drop_owned": (stmt("DROP OWNED", Kind.DCL, flags=[facts.DROP_OWNED]), "every object a role owns"),
    "privileges": (stmt("GRANT", Kind.DCL, flags=[facts.PRIVILEGES]), "GRANT changes privileges"),
    "role_change": (stmt("CREATE ROLE", Kind.DCL, flags=[facts.ROLE_CHANGE]), "CREATE ROLE changes database roles"),
    "copy_program": (stmt("COPY", Kind.WRITE, flags=[facts.COPY_PROGRAM]), "runs a program on the database server"),
    "copy_file": (
        stmt("COPY", Kind.READ, read=["public.orders"], flags=[facts.COPY_FILE]),
        "file on the database server",
    ),
    "set_role": (stmt("SET", Kind.SESSION, flags=[facts.SET_ROLE]), "SET ROLE"),
    "alter_system": (stmt("ALTER SYSTEM", Kind.UTILITY, flags=[facts.ALTER_SYSTEM]), "server configuration"),
    "unknown_effect": (stmt("DO", Kind.PROCEDURAL, flags=[facts.UNKNOWN_EFFECT]), "DO runs code whose effect"),
    "unparseable": (
        stmt("UNPARSEABLE", Kind.UNPARSEABLE, flags=[facts.UNPARSEABLE], error='syntax error at or near "SELEC"'),
        'could not be parsed: syntax error at or near "SELEC"',
    ),
}
RELAXABLE = [g for g in GUARDRAILS if g != "unparseable"]


def test_every_guardrail_has_a_case() -> None:
    assert set(GUARDRAIL_CASES) == set(GUARDRAILS)


@pytest.mark.parametrize("name", GUARDRAILS)
def test_guardrail_denies_by_default(name: str) -> None:
    statement, fragment = GUARDRAIL_CASES[name]
    d = decide(statement, ctx(), Policy())
    assert (d.action, d.rule, d.enforced, d.guardrail) == ("deny", f"guardrail:{name}", True, name)
    assert fragment in d.reason
    assert d.message().startswith(f'rowgate: denied by guardrail "{name}": ')
    assert guardrails_hit(statement, Policy()) == [name]
    assert d.hint is not None
    if name != "unparseable":
        assert f'"relax: [{name}]"' in d.hint


@pytest.mark.parametrize("name", RELAXABLE)
def test_guardrail_lifted_by_matching_allow_rule(name: str) -> None:
    statement, _ = GUARDRAIL_CASES[name]
    p = policy({"id": "ops", "match": {"groups": ["engineers"]}, "action": "allow", "relax": [name]})
    d = decide(statement, ctx("bob", ("engineers",)), p)
    assert (d.action, d.rule, d.relaxed) == ("allow", "ops", (name,))
    # the same rule does not match alice, so the guardrail holds for her
    assert decide(statement, ctx(), p).rule == f"guardrail:{name}"


@pytest.mark.parametrize("name", RELAXABLE)
def test_guardrail_turned_off_everywhere(name: str) -> None:
    statement, _ = GUARDRAIL_CASES[name]
    p = policy(guardrails={name: False})
    assert guardrails_hit(statement, p) == []
    assert decide(statement, ctx(), p).action == "allow"


def test_relax_of_another_guardrail_does_not_lift() -> None:
    p = policy({"id": "ops", "action": "allow", "relax": ["drop"]})
    assert decide(TRUNCATE, ctx(), p).rule == "guardrail:truncate"


def test_relax_needs_the_rule_to_match_the_statement() -> None:
    p = policy({"id": "ops", "match": {"tables": ["public.scratch"]}, "action": "allow", "relax": ["truncate"]})
    assert decide(TRUNCATE, ctx(), p).rule == "guardrail:truncate"
    scratch = stmt("TRUNCATE", Kind.DDL, written=["public.scratch"], flags=[facts.TRUNCATE])
    assert decide(scratch, ctx(), p).rule == "ops"


def test_every_triggered_guardrail_must_be_relaxed() -> None:
    both = stmt("DROP TABLE", Kind.DDL, written=["public.t"], flags=[facts.DROP_TABLE, facts.UNKNOWN_EFFECT])
    p = policy({"id": "ops", "action": "allow", "relax": ["drop"]})
    assert decide(both, ctx(), p).rule == "guardrail:unknown_effect"
    p = policy(
        {"id": "a", "action": "allow", "relax": ["drop"]}, {"id": "b", "action": "allow", "relax": ["unknown_effect"]}
    )
    assert decide(both, ctx(), p).relaxed == ("drop", "unknown_effect")


def test_unparseable_is_refused_even_with_an_allow_everything_rule() -> None:
    p = policy({"id": "all", "action": "allow", "relax": RELAXABLE}, default="allow")
    for s in (GUARDRAIL_CASES["unparseable"][0], stmt("UNPARSEABLE", Kind.UNPARSEABLE)):  # flag or kind alone
        d = decide(s, ctx(), p)
        assert (d.action, d.rule) == ("deny", "guardrail:unparseable")
    assert decide(stmt("UNPARSEABLE", Kind.UNPARSEABLE), ctx(), p).reason == "the statement could not be parsed"


def test_procedural_kind_alone_is_unknown_effect() -> None:
    assert decide(stmt("CALL", Kind.PROCEDURAL), ctx(), Policy()).rule == "guardrail:unknown_effect"


def test_function_of_unknown_effect_reason() -> None:
    s = stmt("SELECT", Kind.READ, functions=["dblink_exec"], flags=[facts.UNKNOWN_EFFECT])
    assert decide(s, ctx(), Policy()).reason == "SELECT calls a function whose effect rowgate cannot check"


def test_many_tables_are_abbreviated() -> None:
    s = stmt("TRUNCATE", Kind.DDL, written=[f"public.t{i}" for i in range(5)], flags=[facts.TRUNCATE])
    assert decide(s, ctx(), Policy()).reason == "TRUNCATE of public.t0, public.t1, public.t2 and 2 more"


@pytest.mark.parametrize("order", ["deny-first", "allow-first"])
def test_deny_wins_over_allow(order: str) -> None:
    deny = {"id": "no-writes", "match": {"statement_kinds": ["write"]}, "action": "deny", "message": "read-only"}
    allow = {"id": "all", "action": "allow", "relax": ["delete_without_where"]}
    p = policy(deny, allow) if order == "deny-first" else policy(allow, deny)
    d = decide(DELETE_ALL, ctx(), p)
    assert (d.action, d.rule, d.reason) == ("deny", "no-writes", "read-only")
    assert d.message() == 'rowgate: denied by rule "no-writes": read-only'
    assert decide(SELECT, ctx(), p).rule == "all"


def test_first_matching_deny_rule_decides() -> None:
    p = policy({"id": "a", "action": "deny", "match": {"commands": ["DELETE"]}}, {"id": "b", "action": "deny"})
    assert decide(DELETE_ALL, ctx(), p).rule == "a"
    assert decide(SELECT, ctx(), p).rule == "b"


def test_require_approval() -> None:
    rule = {
        "id": "risky-deletes",
        "match": {"commands": ["DELETE"], "tables": ["payments"]},
        "action": "require_approval",
        "message": "deleting payments needs a second pair of eyes",
    }
    p = policy(rule, {"id": "writes", "action": "allow"})
    delete = stmt("DELETE", Kind.WRITE, written=["public.payments"])
    d = decide(delete, ctx(), p)
    assert (d.action, d.rule, d.refused) == ("require_approval", "risky-deletes", True)
    assert (
        d.message()
        == 'rowgate: approval required by rule "risky-deletes": deleting payments needs a second pair of eyes'
    )
    assert d.hint == "this statement needs approval by an approver before it runs"
    # an allow rule earlier in the list does not skip the approval
    assert decide(delete, ctx(), policy({"id": "writes", "action": "allow"}, rule)).action == "require_approval"
    # a deny rule wins over it, and so does an unrelaxed guardrail
    assert decide(delete, ctx(), policy(rule, {"id": "no", "action": "deny"})).rule == "no"
    delete_all = stmt("DELETE", Kind.WRITE, written=["public.payments"], flags=[facts.DELETE_WITHOUT_WHERE])
    assert decide(delete_all, ctx(), p).rule == "guardrail:delete_without_where"
    # relax + require_approval: the guardrail becomes "ask someone" instead of "no"
    lifted = policy(rule, {"id": "writes", "action": "allow", "relax": ["delete_without_where"]})
    d = decide(delete_all, ctx(), lifted)
    assert (d.action, d.rule, d.relaxed) == ("require_approval", "risky-deletes", ("delete_without_where",))


def test_default_allow_and_deny() -> None:
    d = decide(SELECT, ctx(), Policy())
    assert (d.action, d.rule) == ("allow", "default")
    d = decide(SELECT, ctx(), policy(default="deny"))
    assert (d.action, d.rule) == ("deny", "default")
    assert d.message() == "rowgate: denied by the default policy: no rule allows SELECT for alice on shop"
    assert d.hint == "ask a rowgate administrator for an allow rule that matches you and this statement"
    # guardrails apply under a default allow
    assert decide(TRUNCATE, ctx(), Policy()).action == "deny"


def allowed(match: dict[str, Any], statement: Statement = SELECT, context: Context | None = None) -> bool:
    """Whether a rule with this match applies (the only allow rule under a default deny)."""
    p = policy({"id": "r", "match": match, "action": "allow"}, default="deny")
    return decide(statement, context or ctx(), p).rule == "r"


def test_empty_match_matches_everything() -> None:
    assert allowed({})
    assert allowed({"identities": [], "tables": []})


@pytest.mark.parametrize(
    ("match", "context", "expected"),
    [
        ({"identities": ["alice"]}, ctx(), True),
        ({"identities": ["bob", "alice"]}, ctx(), True),
        ({"identities": ["bob"]}, ctx(), False),
        ({"identities": ["svc-*"]}, ctx("svc-etl", (), "service"), True),
        ({"identities": ["svc-*"]}, ctx("alice"), False),
        ({"identities": ["Alice"]}, ctx("alice"), False),  # names are case-sensitive
        ({"groups": ["analysts"]}, ctx(), True),
        ({"groups": ["dpo"]}, ctx("dana", ("dpo", "approvers")), True),
        ({"groups": ["eng*"]}, ctx("bob", ("engineers",)), True),
        ({"groups": ["engineers"]}, ctx(), False),
        ({"groups": ["*"]}, ctx("nobody", ()), False),  # a group criterion needs some group
        ({"principal_kinds": ["agent"]}, ctx("agent", ("agents",), "agent"), True),
        ({"principal_kinds": ["agent", "service"]}, ctx(), False),
        ({"databases": ["shop"]}, ctx(), True),
        ({"databases": ["sh*"]}, ctx(), True),
        ({"databases": ["crm"]}, ctx(), False),
        ({"environments": ["production"]}, ctx(), True),
        ({"environments": ["prod*"]}, ctx(environment="staging"), False),
        ({"identities": ["alice"], "databases": ["crm"]}, ctx(), False),  # criteria AND
    ],
)
def test_session_criteria(match: dict[str, Any], context: Context, expected: bool) -> None:
    assert allowed(match, SELECT, context) is expected


CUSTOMERS = stmt(
    "UPDATE",
    Kind.WRITE,
    read=["crm.accounts"],
    written=["public.customers"],
    columns={"set": ["public.customers.email"], "where": ["public.customers.ssn"]},
    functions=["pg_catalog.lower", "dblink_exec"],
)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"statement_kinds": ["write"]}, True),
        ({"statement_kinds": ["read", "ddl"]}, False),
        ({"commands": ["UPDATE"]}, True),
        ({"commands": ["update"]}, True),  # case-insensitive
        ({"commands": ["DELETE", "UPD*"]}, True),
        ({"commands": ["DROP *"]}, False),
        ({"tables": ["public.customers"]}, True),
        ({"tables": ["PUBLIC.Customers"]}, True),
        ({"tables": ["customers"]}, True),  # no schema: any schema
        ({"tables": ["*.accounts"]}, True),  # tables read count too
        ({"tables": ["public.cust"]}, False),
        ({"columns": ["public.customers.ssn"]}, True),  # any clause
        ({"columns": ["customers.email"]}, True),
        ({"columns": ["ssn"]}, True),
        ({"columns": ["*.*.pass*"]}, False),
        ({"functions": ["dblink*"]}, True),
        ({"functions": ["lower"]}, True),  # unqualified pattern, qualified call
        ({"functions": ["pg_catalog.lower"]}, True),
        ({"functions": ["public.dblink_exec"]}, True),  # unqualified call: schema unknown, match by name
        ({"functions": ["evil.lower"]}, False),  # qualified call in another schema
        ({"functions": ["pg_read_file"]}, False),
        ({"commands": ["UPDATE"], "tables": ["public.orders"]}, False),  # AND
    ],
)
def test_statement_criteria(match: dict[str, Any], expected: bool) -> None:
    assert allowed(match, CUSTOMERS) is expected


def test_table_criteria_need_a_table() -> None:
    assert not allowed({"tables": ["*"]}, stmt("SELECT"))
    assert not allowed({"columns": ["*"]}, stmt("SELECT"))
    assert not allowed({"functions": ["*"]}, stmt("SELECT"))


def at(iso: str) -> Context:
    return ctx(now=datetime.fromisoformat(iso))


BERLIN_OFFICE = {
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "from": "09:00",
    "to": "18:00",
    "timezone": "Europe/Berlin",
}


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        (BERLIN_OFFICE, "2024-06-03T07:00:00+00:00", True),  # Mon 09:00 Berlin (inclusive)
        (BERLIN_OFFICE, "2024-06-03T06:59:59+00:00", False),  # Mon 08:59 Berlin
        (BERLIN_OFFICE, "2024-06-03T15:59:59+00:00", True),
        (BERLIN_OFFICE, "2024-06-03T16:00:00+00:00", False),  # 18:00 Berlin (exclusive)
        (BERLIN_OFFICE, "2024-06-08T10:00:00+00:00", False),  # Saturday
        (BERLIN_OFFICE, "2024-01-08T08:30:00+00:00", True),  # winter: UTC+1
        (BERLIN_OFFICE, "2024-06-03T09:00:00-04:00", True),  # any aware input zone
        ({"from": "22:00", "to": "06:00"}, "2024-06-03T23:30:00+00:00", True),  # crosses midnight
        ({"from": "22:00", "to": "06:00"}, "2024-06-04T05:59:00+00:00", True),
        ({"from": "22:00", "to": "06:00"}, "2024-06-04T06:00:00+00:00", False),
        ({"from": "22:00", "to": "06:00"}, "2024-06-03T12:00:00+00:00", False),
        ({"days": ["fri"], "from": "22:00", "to": "06:00"}, "2024-06-08T03:00:00+00:00", True),  # Sat night part
        ({"days": ["fri"], "from": "22:00", "to": "06:00"}, "2024-06-07T03:00:00+00:00", False),  # Thu's night
        ({"days": ["sat", "sun"]}, "2024-06-09T23:59:00+00:00", True),
        ({"days": ["Saturday"]}, "2024-06-03T12:00:00+00:00", False),
        ({"from": "18:00"}, "2024-06-03T23:59:00+00:00", True),
        ({"to": "09:00"}, "2024-06-03T09:00:00+00:00", False),
        ({"from": "09:00", "to": "24:00"}, "2024-06-03T23:59:59+00:00", True),
    ],
)
def test_time_windows(window: dict[str, Any], now: str, expected: bool) -> None:
    assert allowed({"time": window}, SELECT, at(now)) is expected


def test_context_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ctx(now=datetime(2024, 6, 3, 12, 0))


def test_rule_in_observe_mode_is_logged_not_enforced() -> None:
    p = policy({"id": "no-deletes", "match": {"commands": ["DELETE"]}, "action": "deny", "mode": "observe"})
    delete = stmt("DELETE", Kind.WRITE, written=["public.orders"])
    d = decide(delete, ctx(), p)
    assert (d.action, d.enforced, d.would_have, d.rule, d.refused) == ("allow", False, "deny", "no-deletes", False)
    assert (
        d.message() == 'rowgate: observe mode: would have been denied by rule "no-deletes": DELETE is not allowed here'
    )
    # only that rule is observed: guardrails and other rules still enforce
    assert decide(DELETE_ALL, ctx(), p).rule == "guardrail:delete_without_where"
    p2 = policy(*p.model_dump(by_alias=True)["rules"], {"id": "hard", "action": "deny"})
    assert decide(delete, ctx(), p2).rule == "hard"
    assert decide(SELECT, ctx(), p).rule == "default"  # not matching: no observation


def test_observe_require_approval_and_observe_allow() -> None:
    approve = {"id": "approve", "action": "require_approval", "mode": "observe"}
    d = decide(SELECT, ctx(), policy(approve))
    assert (d.action, d.enforced, d.would_have) == ("allow", False, "require_approval")
    assert d.message().startswith('rowgate: observe mode: would have required approval by rule "approve"')
    # an observed allow rule does not lift a guardrail
    lift = {"id": "lift", "action": "allow", "relax": ["truncate"], "mode": "observe"}
    assert decide(TRUNCATE, ctx(), policy(lift)).rule == "guardrail:truncate"
    assert decide(SELECT, ctx(), policy(lift, default="deny")).rule == "default"


def test_policy_in_observe_mode_observes_everything() -> None:
    p = policy({"id": "no-writes", "match": {"statement_kinds": ["write"]}, "action": "deny"}, mode="observe")
    for s, rule in ((TRUNCATE, "guardrail:truncate"), (DELETE_ALL, "no-writes")):
        d = decide(s, ctx(), p)
        assert (d.action, d.enforced, d.would_have, d.rule) == ("allow", False, "deny", rule)
    d = decide(SELECT, ctx(), p)
    assert (d.action, d.enforced, d.would_have) == ("allow", False, "allow")
    assert d.message() == "rowgate: observe mode: allowed by the default policy: no rule matched; the default is allow"
    # unparseable, too: observe mode is how a team finds out what would break
    assert decide(GUARDRAIL_CASES["unparseable"][0], ctx(), p).would_have == "deny"


def test_decide_message() -> None:
    approve = {"id": "approve-deletes", "match": {"commands": ["DELETE"]}, "action": "require_approval"}
    p = policy(approve)
    delete = stmt("DELETE", Kind.WRITE, written=["public.orders"])
    d = decide_message([SELECT, TRUNCATE, SELECT], ctx(), p)
    assert (d.action, d.rule, d.statement_index) == ("deny", "guardrail:truncate", 1)
    assert (
        d.message() == 'rowgate: denied by guardrail "truncate": TRUNCATE of public.orders (statement 2 of the message)'
    )
    # a later deny beats an earlier require_approval
    assert decide_message([delete, TRUNCATE], ctx(), p).rule == "guardrail:truncate"
    d = decide_message([SELECT, delete], ctx(), p)
    assert (d.action, d.statement_index) == ("require_approval", 1)
    d = decide_message([SELECT, SELECT], ctx(), p)
    assert (d.action, d.statement_index) == ("allow", 0)
    assert decide_message([TRUNCATE], ctx(), p).statement_index is None
    assert decide_message([], ctx(), p).action == "allow"


def test_decide_message_reports_an_observed_refusal() -> None:
    p = policy({"id": "watch", "match": {"commands": ["DELETE"]}, "action": "deny", "mode": "observe"})
    d = decide_message([SELECT, stmt("DELETE", Kind.WRITE)], ctx(), p)
    assert (d.action, d.enforced, d.would_have, d.statement_index) == ("allow", False, "deny", 1)


def test_custom_message_and_hint() -> None:
    p = policy(
        {
            "id": "pii-tables",
            "description": "customer tables hold PII",
            "match": {"tables": ["public.customers"]},
            "action": "deny",
            "hint": "request access in #data-access",
        }
    )
    d = decide(stmt(read=["public.customers"]), ctx(), p)
    assert d.message() == 'rowgate: denied by rule "pii-tables": customer tables hold PII'
    assert d.hint == "request access in #data-access"
    d = decide(stmt(read=["public.customers"]), ctx(), policy({"id": "x", "action": "deny"}))
    assert d.hint == 'this is refused by policy rule "x"; ask a rowgate administrator if you need it'


def test_compiled_policy_is_cached_and_accepted() -> None:
    p = policy({"id": "a", "action": "allow"})
    cp = compile_policy(p)
    assert compile_policy(p) is cp
    assert decide(SELECT, ctx(), cp) == decide(SELECT, ctx(), p)
    assert compile_policy(policy({"id": "a", "action": "allow"})) is not cp


DEMO = policy(
    {
        "id": "agents-read-only",
        "match": {"groups": ["agents"], "statement_kinds": ["write", "ddl", "dcl", "procedural", "utility"]},
        "action": "deny",
        "message": "AI agents are read-only",
    },
    {
        "id": "analysts-read-only",
        "match": {"groups": ["analysts"], "statement_kinds": ["write", "ddl", "dcl", "procedural", "utility"]},
        "action": "deny",
        "message": "analysts may only read",
    },
    {
        "id": "payments-deletes-need-approval",
        "match": {"groups": ["engineers"], "commands": ["DELETE"], "tables": ["*.payments"]},
        "action": "require_approval",
        "message": "deleting payments needs approval",
    },
    {"id": "engineers-write", "match": {"groups": ["engineers"]}, "action": "allow"},
    {"id": "dpo-all", "match": {"groups": ["dpo"]}, "action": "allow"},
    {"id": "reads", "match": {"statement_kinds": ["read", "transaction", "session"]}, "action": "allow"},
    default="deny",
)


def demo(who: str, s: Statement) -> Decision:
    people = {
        "alice": ctx("alice", ("analysts",)),
        "bob": ctx("bob", ("engineers",)),
        "dana": ctx("dana", ("dpo", "approvers")),
        "agent": ctx("agent", ("agents",), "agent"),
        "mallory": ctx("mallory", ()),
    }
    return decide(s, people[who], DEMO)


def test_demo_policy() -> None:
    insert = stmt("INSERT", Kind.WRITE, written=["public.orders"])
    delete_payment = stmt("DELETE", Kind.WRITE, written=["public.payments"])
    for who in ("alice", "bob", "dana", "agent"):
        assert demo(who, SELECT).action == "allow", who
    assert demo("mallory", insert).rule == "default"
    assert demo("alice", insert).message() == 'rowgate: denied by rule "analysts-read-only": analysts may only read'
    assert demo("agent", insert).message() == 'rowgate: denied by rule "agents-read-only": AI agents are read-only'
    assert demo("agent", stmt("DO", Kind.PROCEDURAL)).rule == "agents-read-only"
    assert (demo("bob", insert).action, demo("bob", insert).rule) == ("allow", "engineers-write")
    assert demo("bob", delete_payment).action == "require_approval"
    assert demo("bob", DELETE_ALL).rule == "guardrail:delete_without_where"
    assert demo("dana", delete_payment).rule == "dpo-all"
    assert demo("dana", TRUNCATE).rule == "guardrail:truncate"
