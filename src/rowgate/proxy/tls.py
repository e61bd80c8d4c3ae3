"""TLS contexts for clients (rowgate as server) and upstreams (rowgate as client)."""

from __future__ import annotations

import ssl

from rowgate.config import ListenTLS, Mtls, UpstreamTLS
from rowgate.errors import ConfigError


def server_context(cfg: ListenTLS, mtls: Mtls | None = None) -> ssl.SSLContext | None:
    if cfg.mode == "disabled":
        return None
    assert cfg.cert_file is not None and cfg.key_file is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"listen.tls: cannot load cert_file/key_file: {e}") from e
    if mtls is not None:
        try:
            ctx.load_verify_locations(mtls.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"auth.mtls.ca_file: cannot load {mtls.ca_file}: {e}") from e
        # a certificate the client sends must verify (else the handshake fails); a missing
        # one is refused after the handshake, with a message the client can read
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def upstream_context(cfg: UpstreamTLS, where: str) -> ssl.SSLContext | None:
    if cfg.mode == "disable":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.mode in ("verify-ca", "verify-full"):
        try:
            ctx.load_verify_locations(cfg.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{where}.tls.ca_file: cannot load {cfg.ca_file}: {e}") from e
        ctx.check_hostname = cfg.mode == "verify-full"
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        # libpq's 'require' and 'prefer' encrypt without authenticating the server
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file is not None:
        try:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{where}.tls.cert_file: cannot load client certificate: {e}") from e
    return ctx
