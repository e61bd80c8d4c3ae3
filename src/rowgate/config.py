"""The configuration file: one YAML document validated with pydantic at start-up.
A wrong key or value is a ConfigError naming its path; the proxy does not start.
Secrets are never inline: they come from environment variables or files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from rowgate.errors import ConfigError
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


class Upstream(_Model):
    host: str = "127.0.0.1"  # a path starting with '/' is a Unix socket directory
    port: int = Field(5432, ge=1, le=65535)
    database: str
    user: str
    password: Secret | None = None
    tls: UpstreamTLS = UpstreamTLS()
    environment: str = "default"
    connect_timeout: Seconds = 10.0


class Config(_Model):
    listen: Listen = Listen()
    control: Control = Control()
    limits: Limits = Limits()
    data_dir: Path | None = None
    identities: dict[str, Identity] = {}
    upstreams: dict[str, Upstream]
    policy: Policy = Policy()


def _absolutise(node: Any, base: Path) -> Any:
    """Relative file paths in the config are relative to the config file."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if isinstance(v, str) and (k.endswith("_file") or k in ("file", "data_dir")):
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
