"""The masked shop behind a proxy, shared by the end-to-end masking tests."""

from __future__ import annotations

import pytest
from proxyutil import UpstreamDB
from wire_env import LeakChecker, MaskEnv, mask_env


@pytest.fixture(scope="module")
def env(upstream: UpstreamDB, tmp_path_factory: pytest.TempPathFactory) -> MaskEnv:
    return mask_env(upstream, tmp_path_factory.mktemp("masking"))


@pytest.fixture(scope="module")
def checker(env: MaskEnv) -> LeakChecker:
    return LeakChecker(env.secrets)
