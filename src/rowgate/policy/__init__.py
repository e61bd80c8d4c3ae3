"""Policy: the rules and built-in guardrails that decide whether a statement may run.
Pure: no I/O."""

from rowgate.policy.engine import Context, Decision, decide, decide_message, guardrails_hit
from rowgate.policy.matching import CompiledPolicy, compile_policy
from rowgate.policy.model import GUARDRAILS, Guardrails, Match, Policy, Rule, TimeWindow

__all__ = [
    "GUARDRAILS",
    "CompiledPolicy",
    "Context",
    "Decision",
    "Guardrails",
    "Match",
    "Policy",
    "Rule",
    "TimeWindow",
    "compile_policy",
    "decide",
    "decide_message",
    "guardrails_hit",
]
