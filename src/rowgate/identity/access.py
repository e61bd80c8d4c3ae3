"""Which identities may reach which upstream, and as which database role.

An upstream without ``access`` is open to every identity (as its configured user).
With ``access`` the first rule naming the identity or one of its groups decides; a
rule with ``user`` runs the session as that role. No match: 28000."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rowgate.config import AccessRule, Upstream
from rowgate.errors import InvalidAuthorization
from rowgate.identity.principal import Principal


@dataclass(frozen=True)
class UpstreamRole:
    user: str
    password: str | None


class AccessMap:
    def __init__(self, upstreams: Mapping[str, Upstream], default_passwords: Mapping[str, str | None]) -> None:
        self._rules: dict[str, list[tuple[AccessRule, UpstreamRole]]] = {}
        self._defaults = {n: UpstreamRole(u.user, default_passwords.get(n)) for n, u in upstreams.items()}
        for name, up in upstreams.items():
            if up.access is None:
                continue
            rules = []
            for i, rule in enumerate(up.access):
                role = self._defaults[name]
                if rule.user is not None:
                    pw = rule.password.resolve(f"upstreams.{name}.access.{i}.password") if rule.password else None
                    role = UpstreamRole(rule.user, pw)
                rules.append((rule, role))
            self._rules[name] = rules

    def role(self, principal: Principal, database: str) -> UpstreamRole:
        rules = self._rules.get(database)
        if rules is None:
            return self._defaults[database]
        groups = set(principal.groups)
        for rule, role in rules:
            if principal.name in rule.identities or groups.intersection(rule.groups):
                return role
        raise InvalidAuthorization(
            f'identity "{principal.name}" may not connect to database "{database}"',
            hint="ask your administrator for access (upstreams.<name>.access in the rowgate config)",
        )


def application_name(template: str, principal: Principal, client_application: str) -> str:
    """The upstream's application_name for a session (``auth.application_name``)."""
    return template.format(
        identity=principal.name,
        kind=principal.kind,
        application_name=client_application,
        on_behalf_of=principal.on_behalf_of or "",
    )
