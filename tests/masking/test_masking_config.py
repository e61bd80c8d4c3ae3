"""The masking: section: defaults, rules, pins, detectors and the pseudonym key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rowgate.config import parse_config
from rowgate.errors import ConfigError
from rowgate.identity.principal import Principal
from rowgate.masking.classes import PiiClass
from rowgate.masking.config import MaskingConfig, load_key, masking_decision, masking_for

ANALYST = Principal("alice", "human", ("analysts",))
DPO = Principal("dana", "human", ("dpo",))
AGENT = Principal("bot", "agent", ("agents",))


def masking(doc: dict[str, object]) -> MaskingConfig:
    return parse_config({"upstreams": {"a": {"database": "d", "user": "u"}}, "masking": doc}, Path(".")).masking


def test_masked_by_default_for_everyone() -> None:
    profile = masking_for(ANALYST, "production", MaskingConfig())
    assert profile is not None
    assert profile.strategy(PiiClass.EMAIL) == "pseudonym" and profile.strategy(PiiClass.SECRET) == "redact"
    assert masking_for(ANALYST, "production", masking({"enabled": False})) is None


def test_rules_unmask_and_change_strategies() -> None:
    cfg = masking({
        "strategies": {"phone": "redact"},
        "rules": [
            {"groups": ["dpo"], "environments": ["prod*"], "unmask": True, "reason": "GDPR"},
            {"principal_kinds": ["agent"], "strategies": {"email": "null"}},
        ],
        "columns": {"crm.leads.memo": {"class": "free_text", "strategy": "partial"}, "products.name": "none"},
    })
    assert masking_for(DPO, "production", cfg) is None
    dpo_staging = masking_for(DPO, "staging", cfg)
    assert dpo_staging is not None and dpo_staging.strategy(PiiClass.PHONE) == "redact"
    agent = masking_for(AGENT, "production", cfg)
    assert agent is not None and agent.strategy(PiiClass.EMAIL) == "null" and agent.rule == 1
    assert agent.strategy(PiiClass.FREE_TEXT, "crm.leads.memo") == "partial"
    pinned = cfg.column_setting("public.products.name")
    assert pinned is not None and not pinned[1].sensitive


def test_the_decision_says_why() -> None:
    """What the audit log records for every session: raw or masked, and why."""
    cfg = masking({"rules": [
        {"groups": ["dpo"], "environments": ["prod*"], "unmask": True, "reason": "GDPR"},
        {"identities": ["b*"], "principal_kinds": ["agent"], "strategies": {"email": "null"}},
    ]})
    raw = masking_decision(DPO, "production", cfg)
    assert raw.unmasked and raw.profile is None
    assert raw.audit_fields() == {"unmasked": True, "reason": "GDPR", "rule": 0,
                                  "matched": {"group": "dpo", "environment": "production"}}
    agent = masking_decision(AGENT, "production", cfg)
    assert agent.profile is not None and agent.profile.rule == 1
    assert agent.audit_fields() == {"unmasked": False, "reason": "rule 1", "rule": 1,
                                    "matched": {"identity": "bot", "kind": "agent"}}
    assert masking_decision(DPO, "staging", cfg).audit_fields() == {
        "unmasked": False, "reason": "defaults", "rule": None, "matched": {}}
    off = masking_decision(DPO, "production", masking({"enabled": False}))
    assert off.unmasked and off.reason == "masking disabled"
    # masking_for is the same decision
    assert masking_for(DPO, "production", cfg) is None
    assert masking_for(AGENT, "production", cfg) == agent.profile


@pytest.mark.parametrize(("doc", "message"), [
    ({"rules": [{"groups": ["dpo"], "unmask": True}]}, "needs a 'reason'"),
    ({"rules": [{"groups": ["dpo"], "unmask": True, "reason": "  "}]}, "needs a 'reason'"),
    ({"strategies": {"email": "shuffle"}}, "masking.strategies.email"),
    ({"columns": {"t.c": "not_a_class"}}, "masking.columns"),
    ({"detectors": [{"name": "x", "class": "email", "pattern": "("}]}, "not a valid regular expression"),
    ({"detectors": [{"name": "x", "class": "email", "pattern": "x", "validator": "md5"}]}, "unknown validator"),
    ({"refresh_interval": "soon"}, "not a duration"),
    ({"key": {}}, "exactly one of 'env' or 'file'"),
])
def test_invalid_config_is_explained(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        masking(doc)


def test_key_is_generated_once_with_private_permissions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_key(MaskingConfig(), tmp_path)
    assert first == load_key(MaskingConfig(), tmp_path) and len(first) == 64
    assert stat.S_IMODE((tmp_path / "mask.key").stat().st_mode) == 0o600
    monkeypatch.setenv("RG_TEST_MASK_KEY", "from-env")
    assert load_key(masking({"key": {"env": "RG_TEST_MASK_KEY"}}), tmp_path) == b"from-env"
    with pytest.raises(ConfigError, match="RG_TEST_MISSING"):
        load_key(masking({"key": {"env": "RG_TEST_MISSING"}}), tmp_path)
    assert load_key(MaskingConfig(), None) != load_key(MaskingConfig(), None)  # per-process random keys
