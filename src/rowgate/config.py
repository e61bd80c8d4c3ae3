"""The configuration file: one YAML document validated with pydantic at start-up.
A wrong key or value is a ConfigError naming its path; the proxy does not start.
Secrets are never inline: they come from environment variables or files."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from rowgate.errors import ConfigError
from rowgate.masking.config import MaskingConfig
from rowgate.policy.model import Policy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


def _duration(v: Any) -> Any:
    if isinstance(v, str):
        m = _DURATION.match(v)
        if not m:
            raise ValueError(f"not a duration: {v!r} (use e.g. 30, 30s, 500ms, 5m, 1h)")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return v


def _size(v: Any) -> Any:
    if isinstance(v, str):
        m = _SIZE.match(v)
        if not m:
            raise ValueError(f"not a size: {v!r} (use e.g. 10000, 64KiB, 1GiB)")
        return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    return v


Seconds = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
Bytes = Annotated[int, BeforeValidator(_size), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(_Model):
    """Where a secret lives: exactly one of ``env`` (a variable name) or ``file``."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def resolve(self, where: str) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"{where}: environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read secret file {self.file}: {e.strerror}") from e


class ListenTLS(_Model):
    mode: Literal["disabled", "optional", "required"] = "disabled"
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _files(self) -> ListenTLS:
        if self.mode != "disabled" and (self.cert_file is None or self.key_file is None):
            raise ValueError(f"tls mode {self.mode!r} needs cert_file and key_file")
        return self


class Listen(_Model):
    host: str = "127.0.0.1"
    port: int = Field(6543, ge=0, le=65535)
    tls: ListenTLS = ListenTLS()


class Control(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)


class Limits(_Model):
    max_connections: int = Field(1000, gt=0)
    max_connections_per_identity: int = Field(100, gt=0)
    startup_timeout: Seconds = 10.0
    idle_timeout: Seconds = 0.0  # 0: never
    shutdown_timeout: Seconds = 30.0
    max_message_size: Bytes = 1 << 30
    max_startup_packet: Bytes = 10_000


class Identity(_Model):
    kind: Literal["human", "service", "agent"] = "human"
    groups: list[str] = []
    token: Secret


class UpstreamTLS(_Model):
    """Like libpq's sslmode: disable, prefer, require (no verification),
    verify-ca, verify-full (CA and host name)."""

    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "disable"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _ca(self) -> UpstreamTLS:
        if self.mode in ("verify-ca", "verify-full") and self.ca_file is None:
            raise ValueError(f"tls mode {self.mode!r} needs ca_file")
        return self


class AccessRule(_Model):
    """Who may reach an upstream (``identities`` or ``groups``), and optionally as which
    database role: a matching group can run as its own ``user``/``password``."""

    identities: list[str] = []
    groups: list[str] = []
    user: str | None = None
    password: Secret | None = None

    @model_validator(mode="after")
    def _who(self) -> AccessRule:
        if not self.identities and not self.groups:
            raise ValueError("an access rule needs 'identities' or 'groups'")
        if self.password is not None and self.user is None:
            raise ValueError("'password' needs 'user'")
        return self


OidcAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class Oidc(_Model):
    """JWTs from an identity provider as passwords (only over TLS). ``jwks`` is a JWKS
    file or an https:// URL (cached; fetched again on an unknown ``kid``)."""

    issuer: str
    audience: str | list[str]
    jwks: str
    name_claim: str = "sub"
    groups_claim: str = "groups"
    kind_claim: str | None = None
    kind: Literal["human", "service", "agent"] = "human"  # when there is no kind_claim or the token lacks it
    attribute_claims: dict[str, str] = {}  # principal attribute -> claim
    algorithms: list[OidcAlgorithm] = ["RS256", "ES256", "EdDSA"]
    leeway: Seconds = 30.0
    expiry_grace: Seconds = 0.0  # a session outlives its JWT by this much
    jwks_max_age: Seconds = 300.0  # an https JWKS is fetched again after this
    jwks_min_refresh: Seconds = 30.0  # unknown kids refetch at most this often

    @model_validator(mode="after")
    def _jwks(self) -> Oidc:
        if "://" in self.jwks and not self.jwks.startswith(("https://", "file://")):
            raise ValueError("jwks must be a file path or an https:// URL")
        return self


class MtlsPrincipal(_Model):
    name: str | None = None  # the principal's name; default: the certificate's name
    kind: Literal["human", "service", "agent"] = "service"
    groups: list[str] = []
    attributes: dict[str, str] = {}


class Mtls(_Model):
    """Client certificates signed by ``ca_file`` identify the principal by CN or a SAN."""

    ca_file: Path
    map: Literal["cn", "san_email", "san_dns"] = "cn"
    required: bool = False  # refuse clients without a certificate
    password: bool = False  # a certificate login must also prove the identity's token/JWT
    identities: dict[str, MtlsPrincipal] = {}  # certificate name -> principal
    any_certificate: MtlsPrincipal | None = None  # any other name from the CA, with these settings

    @model_validator(mode="after")
    def _mapping(self) -> Mtls:
        if not self.identities and self.any_certificate is None:
            raise ValueError("give 'identities' (certificate name -> principal) or 'any_certificate'")
        return self


class ThrottleLimits(_Model):
    delay_after: int = Field(gt=0)  # failures after which each further attempt waits
    lockout_after: int = Field(gt=0)  # failures after which attempts are refused for 'lockout'


class Throttle(_Model):
    """Brute-force protection: failed logins counted per identity and per client address."""

    enabled: bool = True
    identity: ThrottleLimits = ThrottleLimits(delay_after=3, lockout_after=10)
    address: ThrottleLimits = ThrottleLimits(delay_after=10, lockout_after=50)
    delay: Seconds = 0.25  # the first delay; doubles with each further failure
    max_delay: Seconds = 4.0
    lockout: Seconds = 300.0
    window: Seconds = 900.0  # a failure is forgotten after this


_APP_NAME_FIELDS = frozenset({"identity", "kind", "application_name", "on_behalf_of"})


class Auth(_Model):
    oidc: Oidc | None = None
    mtls: Mtls | None = None
    throttle: Throttle = Throttle()
    # what the upstream's application_name shows the DBA; fields: identity, kind, application_name, on_behalf_of
    application_name: str = "rowgate:{identity}"
    revocation_poll: Seconds = Field(1.0, gt=0, le=5)  # how often the token store is checked for revocations

    @model_validator(mode="after")
    def _template(self) -> Auth:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.application_name) if f is not None}
        except ValueError as e:
            raise ValueError(f"application_name: {e}") from None
        if names - _APP_NAME_FIELDS:
            raise ValueError(f"application_name: unknown field(s) {sorted(names - _APP_NAME_FIELDS)}; "
                             f"use {sorted(_APP_NAME_FIELDS)}")
        return self


class Upstream(_Model):
    host: str = "127.0.0.1"  # a path starting with '/' is a Unix socket directory
    port: int = Field(5432, ge=1, le=65535)
    database: str
    user: str
    password: Secret | None = None
    tls: UpstreamTLS = UpstreamTLS()
    environment: str = "default"
    connect_timeout: Seconds = 10.0
    access: list[AccessRule] | None = None  # None: every identity may connect


class AuditDatabase(_Model):
    fail_closed: bool = True  # False: a statement the audit log cannot record is logged and forwarded


class Audit(_Model):
    """The write-ahead audit log (``rowgate.audit``): SQLite at data_dir/audit.db unless ``url``
    names a PostgreSQL database."""

    enabled: bool = True
    url: str | None = None  # postgresql://user@host/db (the password comes from ``password``)
    password: Secret | None = None
    replica: str | None = None  # this proxy's chain; default: an id kept in data_dir
    fsync_interval: Seconds = 0.2
    fail_closed: bool = True
    databases: dict[str, AuditDatabase] = {}  # per upstream, overrides fail_closed
    signing_key_file: Path | None = None  # Ed25519 private key (PEM) signing the checkpoints
    checkpoint_records: int = Field(1000, gt=0)
    checkpoint_interval: Seconds = 60.0
    retention: Seconds | None = None  # e.g. 400d; older records are pruned up to a signed checkpoint
    # the store (search, lineage) trails the journal; statements are refused while it is further behind
    # than this, or by more records than max_backlog (fail closed when the store is unavailable)
    max_import_lag: Seconds = 5.0
    max_backlog: int = Field(50_000, gt=0)


class Lineage(_Model):
    """OpenLineage RunEvents (``rowgate.audit.lineage``); ``transport`` is openlineage-python's
    transport config, e.g. {type: file, log_file_path: ..., append: true} or {type: http, url: ...}."""

    enabled: bool = False
    per: Literal["statement", "session"] = "statement"
    namespace: str = "rowgate"
    transport: dict[str, Any] = {"type": "console"}


class Config(_Model):
    listen: Listen = Listen()
    control: Control = Control()
    limits: Limits = Limits()
    data_dir: Path | None = None
    state: str | None = None  # state store: a postgresql:// URL; None: SQLite at data_dir/state.db
    identities: dict[str, Identity] = {}
    upstreams: dict[str, Upstream]
    policy: Policy = Policy()
    auth: Auth = Auth()
    audit: Audit = Audit()
    lineage: Lineage = Lineage()
    masking: MaskingConfig = MaskingConfig()

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> Config:
        if self.listen.tls.mode == "disabled":
            if self.auth.mtls is not None:
                raise ValueError("auth.mtls needs listen.tls (client certificates come with TLS)")
            if self.auth.oidc is not None:
                raise ValueError("auth.oidc needs listen.tls: JWTs are accepted only over TLS")
        return self


def _local_jwks(key: str, value: str) -> bool:
    return key == "jwks" and "://" not in value


def _absolutise(node: Any, base: Path) -> Any:
    """Relative file paths in the config are relative to the config file."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if isinstance(v, str) and (k.endswith("_file") or k in ("file", "data_dir") or _local_jwks(k, v)):
                p = Path(v).expanduser()
                out[k] = str(p if p.is_absolute() else base / p)
            else:
                out[k] = _absolutise(v, base)
        return out
    if isinstance(node, list):
        return [_absolutise(v, base) for v in node]
    return node


def _error_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-")) or "(top level)"


def parse_config(data: Any, base: Path, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return Config.model_validate(_absolutise(data, base))
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"  {_error_path(err['loc'])}: {msg}")
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines)) from None


def default_config_path() -> Path:
    return Path(os.environ.get("ROWGATE_CONFIG", "rowgate.yaml"))


def load_config(path: Path | None = None) -> Config:
    path = path or default_config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (use -c FILE or set ROWGATE_CONFIG)") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return parse_config(data, path.resolve().parent, str(path))
