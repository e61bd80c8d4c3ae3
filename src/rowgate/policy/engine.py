"""The decision engine: statement facts + who is asking + policy → allow, deny or
require_approval, with the rule that decided and a reason a person can act on.

Precedence, for the rules that match a statement:
  1. a deny rule (the first one), wherever it stands relative to allow rules;
  2. an enabled guardrail the statement triggers, unless a matching allow rule relaxes it
     (``unparseable`` can never be relaxed);
  3. a require_approval rule;
  4. an allow rule;
  5. the policy's default.
Observe mode never changes what is decided, only whether it is enforced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from rowgate.identity.principal import Principal
from rowgate.policy import guardrails
from rowgate.policy.matching import CompiledPolicy, CompiledRule, compile_policy
from rowgate.policy.model import UNRELAXABLE, Action, Policy
from rowgate.sql.facts import Statement


@dataclass(frozen=True, slots=True)
class Context:
    """Who runs the statement, where, and when. ``now`` must be timezone-aware so time windows
    never depend on the server's local zone."""

    principal: Principal
    database: str
    environment: str
    now: datetime

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("Context.now must be a timezone-aware datetime")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one statement or message.

    ``rule`` is a rule id, ``guardrail:<name>`` or ``default``. When ``enforced`` is False
    (observe mode) ``action`` is always ``allow`` and ``would_have`` says what enforcement
    would have done. ``relaxed`` lists the guardrails that allow rules lifted for this
    statement, for the audit log. ``statement_index`` is set by :func:`decide_message` for
    messages of several statements (0-based).
    """

    action: Action
    rule: str
    reason: str
    enforced: bool = True
    hint: str | None = None
    would_have: Action | None = None
    statement_index: int | None = None
    relaxed: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.action != "allow"

    @property
    def guardrail(self) -> str | None:
        return self.rule.removeprefix("guardrail:") if self.rule.startswith("guardrail:") else None

    def message(self) -> str:
        """The one-line text for the client's ErrorResponse (or the log line when observed)."""
        if self.enforced or self.would_have is None:
            verb = _VERBS[self.action]
        else:
            verb = "observe mode: " + _OBSERVED_VERBS[self.would_have]
        if self.rule == "default":
            by = "the default policy"
        elif (name := self.guardrail) is not None:
            by = f'guardrail "{name}"'
        else:
            by = f'rule "{self.rule}"'
        text = f"rowgate: {verb} by {by}: {self.reason}"
        if self.statement_index is not None:
            text += f" (statement {self.statement_index + 1} of the message)"
        return text


_VERBS: dict[Action, str] = {"allow": "allowed", "deny": "denied", "require_approval": "approval required"}
_OBSERVED_VERBS: dict[Action, str] = {
    "allow": "allowed",
    "deny": "would have been denied",
    "require_approval": "would have required approval",
}


def _rule_decision(action: Action, r: CompiledRule, s: Statement, relaxed: tuple[str, ...] = ()) -> Decision:
    rule = r.rule
    text = rule.message or rule.description
    if action == "deny":
        return Decision(
            "deny",
            rule.id,
            text or f"{s.command} is not allowed here",
            hint=rule.hint or f'this is refused by policy rule "{rule.id}"; ask a rowgate administrator if you need it',
        )
    if action == "require_approval":
        return Decision(
            "require_approval",
            rule.id,
            text or f"{s.command} needs approval",
            hint=rule.hint or "this statement needs approval by an approver before it runs",
            relaxed=relaxed,
        )
    return Decision("allow", rule.id, text or "allowed", relaxed=relaxed)


def _evaluate(
    s: Statement, ctx: Context, matched: Sequence[CompiledRule], hits: Sequence[str], cp: CompiledPolicy
) -> Decision:
    """The decision as if every rule in ``matched`` were enforced."""
    for r in matched:
        if r.rule.action == "deny":
            return _rule_decision("deny", r, s)
    relaxed: list[str] = []
    if hits:
        lifts: set[str] = set()
        for r in matched:
            if r.rule.action == "allow":
                lifts |= r.relax
        for name in hits:
            if name in UNRELAXABLE or name not in lifts:
                return Decision("deny", f"guardrail:{name}", guardrails.reason(name, s), hint=guardrails.hint(name))
            relaxed.append(name)
    for r in matched:
        if r.rule.action == "require_approval":
            return _rule_decision("require_approval", r, s, tuple(relaxed))
    for r in matched:
        if r.rule.action == "allow":
            return _rule_decision("allow", r, s, tuple(relaxed))
    if cp.policy.default == "deny":
        return Decision(
            "deny",
            "default",
            f"no rule allows {s.command} for {ctx.principal.name} on {ctx.database}",
            hint="ask a rowgate administrator for an allow rule that matches you and this statement",
        )
    return Decision("allow", "default", "no rule matched; the default is allow", relaxed=tuple(relaxed))


def _observed(d: Decision) -> Decision:
    return replace(d, action="allow", enforced=False, would_have=d.action)


def _compiled(policy: Policy | CompiledPolicy) -> CompiledPolicy:
    return policy if isinstance(policy, CompiledPolicy) else compile_policy(policy)


def guardrails_hit(statement: Statement, policy: Policy | CompiledPolicy) -> list[str]:
    """Names of the enabled guardrails the statement's facts trigger (relaxed or not)."""
    enabled = _compiled(policy).enabled
    return [g for g in guardrails.triggered(statement) if g in enabled]


def decide(statement: Statement, ctx: Context, policy: Policy | CompiledPolicy) -> Decision:
    """The decision for one statement."""
    cp = _compiled(policy)
    matched = [
        r for r in cp.rules_for(ctx.principal, ctx.database, ctx.environment) if r.matches_statement(statement, ctx.now)
    ]
    hits = [g for g in guardrails.triggered(statement) if g in cp.enabled]
    if cp.observe:
        return _observed(_evaluate(statement, ctx, matched, hits, cp))
    enforcing = [r for r in matched if r.rule.mode == "enforce"]
    real = _evaluate(statement, ctx, enforcing, hits, cp)
    if real.refused or len(enforcing) == len(matched):
        return real
    # Observe-mode rules matched: report what they would have changed, enforce nothing of it.
    would = _evaluate(statement, ctx, matched, hits, cp)
    return _observed(would) if would.refused else real


def decide_message(statements: Sequence[Statement], ctx: Context, policy: Policy | CompiledPolicy) -> Decision:
    """The decision for a whole message: allowed only if every statement is. The first deny
    decides, else the first require_approval; otherwise the first statement that observe mode
    would have refused (so it gets logged), else the first statement's decision."""
    if not statements:
        return Decision("allow", "default", "the message has no statements")
    cp = _compiled(policy)
    if len(statements) == 1:
        return decide(statements[0], ctx, cp)
    first: Decision | None = None
    approval: Decision | None = None
    observed: dict[Action, Decision] = {}
    for i, s in enumerate(statements):
        d = replace(decide(s, ctx, cp), statement_index=i)
        if d.action == "deny":
            return d
        if d.action == "require_approval" and approval is None:
            approval = d
        elif not d.enforced and d.would_have is not None and d.would_have != "allow":
            observed.setdefault(d.would_have, d)
        if first is None:
            first = d
    assert first is not None
    return approval or observed.get("deny") or observed.get("require_approval") or first
