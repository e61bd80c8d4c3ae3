"""The ``masking:`` section of the configuration, and who sees what.

Masking is on by default for every identity; rules only refine it: change strategies for some
identities, groups or environments, or ``unmask`` them (e.g. the DPO group). The first matching
rule applies; no matching rule means the default strategies.

This module does not import :mod:`rowgate.config` (which imports it), so the key source and
duration parsing are defined here."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from rowgate.errors import ConfigError
from rowgate.identity.principal import Principal, PrincipalKind
from rowgate.masking.classes import ColumnClass, CustomDetector, PiiClass
from rowgate.masking.validators import VALIDATORS

log = logging.getLogger("rowgate.masking")

Strategy = Literal["redact", "partial", "pseudonym", "fake", "null"]
KEY_FILE = "mask.key"

DEFAULT_STRATEGIES: Mapping[PiiClass, Strategy] = {
    PiiClass.EMAIL: "pseudonym",
    PiiClass.PHONE: "partial",
    PiiClass.PERSON_NAME: "pseudonym",
    PiiClass.ADDRESS: "redact",
    PiiClass.DATE_OF_BIRTH: "partial",
    PiiClass.NATIONAL_ID: "redact",
    PiiClass.PAYMENT_CARD: "partial",
    PiiClass.IBAN: "partial",
    PiiClass.IP_ADDRESS: "pseudonym",
    PiiClass.SECRET: "redact",
    PiiClass.JWT: "redact",
    PiiClass.FREE_TEXT: "redact",
}
_NOT_SENSITIVE = frozenset({"none", "not_sensitive", "not sensitive", "false"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _seconds(v: Any) -> Any:
    if isinstance(v, str):
        m = _DURATION.match(v)
        if not m:
            raise ValueError(f"not a duration: {v!r} (use e.g. 30, 30s, 5m, 1h)")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class KeySource(_Model):
    """Where the pseudonym key lives: exactly one of ``env`` (a variable) or ``file``."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> KeySource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class MaskRule(_Model):
    """Who a rule applies to (all given criteria must hold; globs) and what they see.

    - ``unmask: true``: raw values (every such read is audited; ``reason`` says why it is allowed).
    - ``strategies``: class -> strategy for these principals; other classes keep the defaults.
    """

    identities: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    principal_kinds: tuple[PrincipalKind, ...] = ()
    environments: tuple[str, ...] = ()
    unmask: bool = False
    reason: str = ""
    strategies: dict[PiiClass, Strategy] = {}

    @model_validator(mode="after")
    def _reasoned(self) -> MaskRule:
        # the reason is written into every audit record of the sessions it unmasks
        if self.unmask and not self.reason.strip():
            raise ValueError("a rule with 'unmask: true' needs a 'reason' (it is audited with every raw read)")
        return self

    def matches(self, principal: Principal, environment: str) -> bool:
        return self.matched(principal, environment) is not None

    def matched(self, principal: Principal, environment: str) -> dict[str, str] | None:
        """None if the rule does not apply; else what it matched on, per criterion the rule
        gives (e.g. ``{"group": "dpo", "environment": "production"}``), for the audit log."""
        found: dict[str, str] = {}
        for key, patterns, values in (("identity", self.identities, (principal.name,)),
                                      ("group", self.groups, principal.groups),
                                      ("environment", self.environments, (environment,))):
            if not patterns:
                continue
            hit = next((v for v in values for p in patterns if fnmatch.fnmatchcase(v, p)), None)
            if hit is None:
                return None
            found[key] = hit
        if self.principal_kinds:
            if principal.kind not in self.principal_kinds:
                return None
            found["kind"] = principal.kind
        return found


def _column_setting(v: Any) -> Any:
    if isinstance(v, str):
        return {"sensitive": False} if v.strip().lower() in _NOT_SENSITIVE else {"class": v}
    return v


class ColumnSetting(_Model):
    """A column's class pinned by the operator. In YAML: ``schema.table.column: email``,
    ``...: none`` (not sensitive) or ``...: {class: email, strategy: redact}``."""

    cls: PiiClass | None = Field(None, alias="class")
    sensitive: bool = True
    strategy: Strategy | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSetting:
        if self.sensitive and self.cls is None:
            raise ValueError("give 'class' (e.g. email) or mark the column not sensitive with 'none'")
        if not self.sensitive and (self.cls is not None or self.strategy is not None):
            raise ValueError("a column that is not sensitive has no class or strategy")
        return self


class DetectorConfig(_Model):
    """A custom content detector: values (or parts of text) matching ``pattern`` are of ``class``,
    if the optional ``validator`` (luhn, iban, ssn, nino, ...) agrees."""

    name: str = Field(min_length=1)
    cls: PiiClass = Field(alias="class")
    pattern: str = Field(min_length=1)
    validator: str | None = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v

    @field_validator("validator")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in VALIDATORS:
            raise ValueError(f"unknown validator {v!r} (use one of {', '.join(sorted(VALIDATORS))})")
        return v


class MaskingConfig(_Model):
    enabled: bool = True
    key: KeySource | None = None  # default: generated once into data_dir/mask.key
    strategies: dict[PiiClass, Strategy] = dict(DEFAULT_STRATEGIES)
    rules: tuple[MaskRule, ...] = ()
    columns: dict[str, Annotated[ColumnSetting, BeforeValidator(_column_setting)]] = {}
    detectors: tuple[DetectorConfig, ...] = ()
    inference: Literal["refuse", "off"] = "refuse"
    sample_rows: int = Field(200, ge=0, le=100_000)
    threshold: float = Field(0.6, gt=0, le=1)  # fraction of sampled values that must match a class
    refresh_interval: Annotated[float, BeforeValidator(_seconds), Field(ge=0)] = 60.0

    @cached_property
    def custom_detectors(self) -> tuple[CustomDetector, ...]:
        return tuple(CustomDetector(d.name, d.cls, d.pattern, d.validator) for d in self.detectors)

    @cached_property
    def _column_patterns(self) -> tuple[tuple[re.Pattern[str], str, ColumnSetting], ...]:
        out = []
        for pattern, setting in self.columns.items():
            # "customers.ssn" means the column in any schema, as in policy rules
            full = "*." * max(0, 2 - pattern.count(".")) + pattern
            out.append((re.compile(fnmatch.translate(full), re.IGNORECASE), pattern, setting))
        return tuple(out)

    def column_setting(self, qualified: str) -> tuple[str, ColumnSetting] | None:
        """The pin for "schema.table.column" (first matching pattern), with the pattern itself."""
        for regex, pattern, setting in self._column_patterns:
            if regex.match(qualified):
                return pattern, setting
        return None


@dataclass(frozen=True)
class MaskProfile:
    """How one principal sees sensitive data: a strategy per class, column pins first."""

    strategies: Mapping[PiiClass, str]
    config: MaskingConfig = field(repr=False)
    rule: int | None = None  # index of the masking rule that chose the strategies

    def strategy(self, cls: PiiClass, column: str | None = None) -> str:
        if column is not None:
            pinned = self.config.column_setting(column)
            if pinned is not None and pinned[1].strategy is not None:
                return pinned[1].strategy
        return self.strategies.get(cls, "redact")

    def column_strategy(self, c: ColumnClass) -> str:
        assert c.cls is not None
        return self.strategy(c.cls, c.column)


MASKING_DISABLED = "masking disabled"
DEFAULTS = "defaults"


@dataclass(frozen=True)
class MaskingDecision:
    """How a principal sees sensitive data and why: the profile the masking stage applies
    (None: raw values) and what the audit log records in every record of the session."""

    profile: MaskProfile | None
    reason: str  # an unmask rule's reason, "masking disabled", a masking rule's reason, or "defaults"
    rule: int | None = None  # index of the masking rule that decided (None: no rule did)
    matched: Mapping[str, str] = field(default_factory=dict)  # what the rule matched on

    @property
    def unmasked(self) -> bool:
        return self.profile is None

    def audit_fields(self) -> dict[str, Any]:
        return {"unmasked": self.unmasked, "reason": self.reason, "rule": self.rule, "matched": dict(self.matched)}


def masking_decision(principal: Principal, environment: str, cfg: MaskingConfig) -> MaskingDecision:
    """The first matching rule decides; with none, the default strategies apply."""
    if not cfg.enabled:
        return MaskingDecision(None, MASKING_DISABLED)
    strategies: dict[PiiClass, str] = {**DEFAULT_STRATEGIES, **cfg.strategies}
    for i, rule in enumerate(cfg.rules):
        matched = rule.matched(principal, environment)
        if matched is None:
            continue
        if rule.unmask:
            return MaskingDecision(None, rule.reason, i, matched)
        return MaskingDecision(MaskProfile({**strategies, **rule.strategies}, cfg, i), rule.reason or f"rule {i}",
                               i, matched)
    return MaskingDecision(MaskProfile(strategies, cfg), DEFAULTS)


def masking_for(principal: Principal, environment: str, cfg: MaskingConfig) -> MaskProfile | None:
    """None: this principal sees raw values (masking disabled, or an ``unmask`` rule matches)."""
    return masking_decision(principal, environment, cfg).profile


def load_key(cfg: MaskingConfig, data_dir: Path | None) -> bytes:
    """The pseudonym key: from the configured source, else data_dir/mask.key (created once, 0600),
    else a random key for this process only (pseudonyms then change at every restart)."""
    if cfg.key is not None:
        if cfg.key.env is not None:
            value = os.environ.get(cfg.key.env)
            if not value:
                raise ConfigError(f"masking.key: environment variable {cfg.key.env} is not set")
            return value.encode()
        assert cfg.key.file is not None
        try:
            value = cfg.key.file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"masking.key: cannot read key file {cfg.key.file}: {e.strerror}") from e
        if not value:
            raise ConfigError(f"masking.key: key file {cfg.key.file} is empty")
        return value.encode()
    if data_dir is None:
        log.warning("masking: no masking.key and no data_dir: pseudonyms use a random key and change at restart")
        return secrets.token_bytes(32)
    path = data_dir / KEY_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made earlier, or just now by another process
    except OSError as e:
        raise ConfigError(f"cannot create the masking key {path}: {e.strerror}") from e
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    try:
        value = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the masking key {path}: {e.strerror}") from e
    if not value:
        raise ConfigError(f"the masking key file {path} is empty", hint="delete it to generate a new key")
    return value.encode()
