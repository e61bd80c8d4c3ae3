"""The principal every later decision and audit record names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

PrincipalKind = Literal["human", "service", "agent"]
PRINCIPAL_KINDS: tuple[PrincipalKind, ...] = ("human", "service", "agent")

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    kind: PrincipalKind
    groups: tuple[str, ...] = ()
    # e.g. team, purpose; left out of hashing so principals stay usable as keys
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    on_behalf_of: str | None = None  # the human an agent acts for
