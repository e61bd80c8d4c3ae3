"""Client certificates (mTLS): the TLS layer has already verified the certificate
against ``auth.mtls.ca_file``; this maps its CN or a SAN to a principal."""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from rowgate.config import Mtls, MtlsPrincipal
from rowgate.errors import InvalidAuthorization
from rowgate.identity.principal import Principal

_SAN_TYPE = {"san_email": "email", "san_dns": "DNS"}


def certificate_names(peercert: dict[str, Any], how: str) -> list[str]:
    """The names a verified certificate (``SSLObject.getpeercert()``) carries for ``how``."""
    if how == "cn":
        rdns: Iterable[Iterable[tuple[str, str]]] = peercert.get("subject", ())
        return [v for rdn in rdns for k, v in rdn if k == "commonName"]
    return [v for k, v in peercert.get("subjectAltName", ()) if k == _SAN_TYPE[how]]


class CertificateMapper:
    def __init__(self, cfg: Mtls) -> None:
        self.cfg = cfg

    def principal(self, peercert: dict[str, Any]) -> Principal:
        names = certificate_names(peercert, self.cfg.map)
        if not names:
            raise InvalidAuthorization(
                f"the client certificate has no {self.cfg.map.replace('_', ' ').upper()} name",
                hint=f"auth.mtls.map is {self.cfg.map!r}",
            )
        if self.cfg.map == "cn" and len(names) > 1:
            # which CN names the holder is ambiguous (a CA may have vetted only one of them)
            raise InvalidAuthorization(
                "the client certificate has more than one CN",
                hint="use a certificate with a single CN, or map a SAN (auth.mtls.map)",
            )
        for name in names:  # a certificate with several SANs: the first one configured wins
            if name in self.cfg.identities:
                return _make(name, self.cfg.identities[name])
        if self.cfg.any_certificate is not None:
            return _make(names[0], self.cfg.any_certificate)
        raise InvalidAuthorization(
            f'the client certificate for "{names[0]}" is not mapped to an identity',
            hint="ask your administrator to add it to auth.mtls.identities",
        )


def _make(cert_name: str, p: MtlsPrincipal) -> Principal:
    return Principal(p.name or cert_name, p.kind, tuple(p.groups), MappingProxyType(dict(p.attributes)))
