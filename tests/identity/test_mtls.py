"""Client certificates: a certificate from the configured CA names the principal (no
password); a certificate from another CA, a missing one when required, one for
another name, or one not mapped to an identity are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from certs import CertSet, make_certs, make_client_cert
from proxyutil import TOKENS, RunningProxy, UpstreamDB, start_proxy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertSet, CertSet, Path]:
    tmp = tmp_path_factory.mktemp("pki")
    return make_certs(tmp / "ca"), make_certs(tmp / "rogue", ca_name="rogue CA"), tmp


def _proxy(upstream: UpstreamDB, tmp: Path, pki: tuple[CertSet, CertSet, Path], **mtls: Any) -> RunningProxy:
    ca = pki[0]
    return start_proxy(
        upstream,
        tmp,
        listen={"tls": {"mode": "optional", "cert_file": str(ca.server_cert), "key_file": str(ca.server_key)}},
        auth={"mtls": {"ca_file": str(ca.ca_cert), **mtls}},
    )


@pytest.fixture(scope="module")
def mtls_proxy(upstream: UpstreamDB, pki: tuple[CertSet, CertSet, Path],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    p = _proxy(upstream, tmp_path_factory.mktemp("mtls"), pki, required=True,
               identities={"etl-service": {"kind": "service", "groups": ["etl"], "attributes": {"team": "data"}},
                           "alice": {"kind": "human", "groups": ["analysts"]}})
    yield p
    p.stop()


def _connect(p: RunningProxy, user: str, cert: tuple[Path, Path] | None, password: str | None = None,
             sslmode: str = "require") -> psycopg.Connection:
    kw: dict[str, Any] = {"sslcert": str(cert[0]), "sslkey": str(cert[1])} if cert else {}
    if password is not None:
        kw["password"] = password
    return psycopg.connect(host="127.0.0.1", port=p.port, user=user, dbname="app", sslmode=sslmode,
                           autocommit=True, connect_timeout=10, **kw)


def test_certificate_identifies_the_client(mtls_proxy: RunningProxy, pki: tuple[CertSet, CertSet, Path]) -> None:
    cert = make_client_cert(pki[0], pki[2] / "clients", "etl-service")
    with _connect(mtls_proxy, "etl-service", cert) as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("rowgate:etl-service",)
        s = next(s for s in mtls_proxy.server.sessions.values() if s.login and s.login.method == "certificate")
        assert s.info.principal is not None and s.info.principal.groups == ("etl",)
        assert dict(s.info.principal.attributes) == {"team": "data"}


def test_refused_certificates(mtls_proxy: RunningProxy, pki: tuple[CertSet, CertSet, Path]) -> None:
    rogue = make_client_cert(pki[1], pki[2] / "rogue-clients", "etl-service")
    with pytest.raises(psycopg.OperationalError):  # the TLS handshake itself fails
        _connect(mtls_proxy, "etl-service", rogue)
    with pytest.raises(psycopg.OperationalError, match="requires a client certificate"):
        _connect(mtls_proxy, "alice", None, TOKENS["alice"])
    with pytest.raises(psycopg.OperationalError, match="requires a client certificate"):
        _connect(mtls_proxy, "alice", None, TOKENS["alice"], sslmode="disable")
    theirs = make_client_cert(pki[0], pki[2] / "clients", "alice")
    with pytest.raises(psycopg.OperationalError, match='identifies "alice", not "etl-service"'):
        _connect(mtls_proxy, "etl-service", theirs)
    stranger = make_client_cert(pki[0], pki[2] / "clients", "mallory")
    with pytest.raises(psycopg.OperationalError, match='"mallory" is not mapped to an identity'):
        _connect(mtls_proxy, "mallory", stranger)


def test_any_certificate_by_email_san_and_password_too(
    upstream: UpstreamDB, tmp: Path, pki: tuple[CertSet, CertSet, Path]
) -> None:
    p = _proxy(upstream, tmp, pki, map="san_email", password=True,
               any_certificate={"kind": "human", "groups": ["staff"]})
    try:
        cert = make_client_cert(pki[0], tmp / "c", "Alice Example", email="alice")
        # both the certificate and the token: the password is still asked for
        with pytest.raises(psycopg.OperationalError, match="password"):
            _connect(p, "alice", cert, "wrong-token-wrong-token")
        with _connect(p, "alice", cert, TOKENS["alice"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # no certificate and not required: the token alone
        with _connect(p, "bob", None, TOKENS["bob"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        p.stop()
