"""The principal every later decision and audit record names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PrincipalKind = Literal["human", "service", "agent"]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    kind: PrincipalKind
    groups: tuple[str, ...] = ()
