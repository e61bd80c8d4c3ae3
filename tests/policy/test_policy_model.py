"""Validation of the ``policy:`` config section: every mistake is an error at its path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rowgate.policy import Policy, TimeWindow

EXAMPLE = """
mode: enforce
default: allow
guardrails:
  truncate: true
  unparseable: true
rules:
  - id: agents-read-only
    description: AI agents only read
    match:
      identities: [agent, "svc-*"]
      groups: [agents]
      principal_kinds: [agent]
      databases: [shop]
      environments: [production]
      statement_kinds: [write, ddl]
      commands: ["DELETE", "DROP *"]
      tables: ["public.customers", "*.payments"]
      columns: ["public.customers.ssn"]
      functions: ["pg_read_file", "dblink*"]
      time: {days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00", timezone: "Europe/Berlin"}
    action: deny
    message: agents are read-only
    hint: ask in #data-access
    mode: observe
  - id: engineers-cleanup
    match: {groups: [engineers], tables: [scratch.*]}
    action: allow
    relax: [truncate, delete_without_where]
"""


def errors(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str, str]]:
    with pytest.raises(ValidationError) as e:
        Policy.model_validate(data)
    return [(err["loc"], err["type"], err["msg"]) for err in e.value.errors()]


def rule(**kw: Any) -> dict[str, Any]:
    return {"id": "r", "action": "allow", **kw}


def test_example_parses() -> None:
    p = Policy.model_validate(yaml.safe_load(EXAMPLE))
    first, second = p.rules
    assert first.match.time is not None
    assert (first.match.time.from_, first.match.time.to) == ("09:00", "18:00")
    assert first.mode == "observe"
    assert second.relax == ("truncate", "delete_without_where")
    assert p.guardrails.enabled() == frozenset(
        {
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
            "unparseable",
        }
    )
    hash(p)  # immutable all the way down


def test_defaults() -> None:
    p = Policy()
    assert (p.mode, p.default, p.rules) == ("enforce", "allow", ())


def test_unknown_keys_name_their_path() -> None:
    assert errors({"rules": [rule(match={"tabels": ["x"]})]})[0][:2] == (
        ("rules", 0, "match", "tabels"),
        "extra_forbidden",
    )
    assert errors({"guardrails": {"drop_tables": False}})[0][:2] == (("guardrails", "drop_tables"), "extra_forbidden")
    assert errors({"rule": []})[0][:2] == (("rule",), "extra_forbidden")


def test_duplicate_rule_ids() -> None:
    [(loc, _, msg)] = errors({"rules": [rule(id="a"), rule(id="b"), rule(id="a")]})
    assert loc == ("rules",)
    assert "duplicate rule id 'a' (rules 0 and 2)" in msg


def test_rule_needs_id_and_action() -> None:
    locs = {e[0] for e in errors({"rules": [{"match": {}}]})}
    assert locs == {("rules", 0, "id"), ("rules", 0, "action")}
    assert errors({"rules": [rule(action="permit")]})[0][0] == ("rules", 0, "action")
    assert errors({"rules": [rule(id="")]})[0][0] == ("rules", 0, "id")


@pytest.mark.parametrize(
    ("time", "key", "fragment"),
    [
        ({"from": "9:00"}, "from", "not a time of day: '9:00'"),
        ({"from": "24:00"}, "from", "not a time of day"),
        ({"to": "18:60"}, "to", "not a time of day"),
        ({"from": "10:00", "to": "10:00"}, "to", "is empty"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus'"),
        ({"timezone": "Europe"}, "timezone", "unknown time zone 'Europe'"),
        ({"days": ["funday"]}, "days", "unknown day 'funday'"),
        ({"until": "10:00"}, "until", "Extra inputs"),
    ],
)
def test_bad_time_windows(time: dict[str, Any], key: str, fragment: str) -> None:
    [(loc, _, msg)] = errors({"rules": [rule(match={"time": time})]})
    assert loc[:5] == ("rules", 0, "match", "time", key)
    assert fragment in msg


def test_unquoted_yaml_times() -> None:
    data = yaml.safe_load("{from: 18:00, to: 9:05, days: [mon]}")
    assert data["from"] == 1080  # what YAML 1.1 makes of it
    w = TimeWindow.model_validate(data)
    assert (w.from_, w.to) == ("18:00", "09:05")
    assert TimeWindow.model_validate(yaml.safe_load("{to: 24:00}")).to == "24:00"


def test_time_window_names() -> None:
    w = TimeWindow.model_validate({"days": ["Monday", "SAT"], "to": "24:00"})
    assert (w.days, w.from_, w.to, w.timezone) == (("mon", "sat"), "00:00", "24:00", "UTC")


def test_relax_validation() -> None:
    [(loc, _, msg)] = errors({"rules": [rule(relax=["truncate", "drop_everything"])]})
    assert loc == ("rules", 0, "relax", 1)
    assert "unknown guardrail 'drop_everything'" in msg
    [(loc, _, msg)] = errors({"rules": [rule(relax=["unparseable"])]})
    assert loc == ("rules", 0, "relax", 0)
    assert "cannot be relaxed" in msg
    [(loc, _, msg)] = errors({"rules": [rule(action="deny", relax=["truncate"])]})
    assert loc == ("rules", 0, "relax")
    assert "only valid on allow rules" in msg


def test_unparseable_guardrail_cannot_be_turned_off() -> None:
    [(loc, _, msg)] = errors({"guardrails": {"unparseable": False}})
    assert loc == ("guardrails", "unparseable")
    assert "cannot be turned off" in msg


@pytest.mark.parametrize(
    ("match", "loc"),
    [
        ({"statement_kinds": ["writes"]}, ("statement_kinds", 0)),
        ({"principal_kinds": ["robot"]}, ("principal_kinds", 0)),
        ({"tables": [""]}, ("tables", 0)),
        ({"tables": "public.orders"}, ("tables",)),
    ],
)
def test_bad_match_values(match: dict[str, Any], loc: tuple[int | str, ...]) -> None:
    assert errors({"rules": [rule(match=match)]})[0][0] == ("rules", 0, "match", *loc)


def test_bad_modes() -> None:
    assert errors({"mode": "audit"})[0][0] == ("mode",)
    assert errors({"default": "require_approval"})[0][0] == ("default",)
    assert errors({"rules": [rule(mode="dry-run")]})[0][0] == ("rules", 0, "mode")
