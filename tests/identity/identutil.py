"""Helpers for identity tests: a proxy with a state store (data_dir) and a config file
the ``rowgate`` CLI can use against the same store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from proxyutil import RunningProxy, UpstreamDB, base_config

from rowgate.config import load_config


def write_config(upstream: UpstreamDB, tmp: Path, **overrides: Any) -> Path:
    overrides.setdefault("data_dir", str(tmp / "data"))
    path = tmp / "rowgate.yaml"
    path.write_text(yaml.safe_dump(base_config(upstream, tmp / "secrets", **overrides)))
    return path


def proxy_from(path: Path) -> RunningProxy:
    return RunningProxy(load_config(path))


def rowgate(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    out = subprocess.run(
        [sys.executable, "-m", "rowgate.cli", *args[:2], "-c", str(config), *args[2:]]
        if args[0] == "token"
        else [sys.executable, "-m", "rowgate.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"rowgate {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


def create_token(config: Path, name: str, *args: str) -> dict[str, Any]:
    out = rowgate(config, "token", "create", name, "--json", *args)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc
