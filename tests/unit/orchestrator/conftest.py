"""Fixtures of the orchestrator's pure tests (builders live in orchestrator_builders)."""

from __future__ import annotations

import pytest

from services.orchestrator.state import PlanConfig
from tests.unit.orchestrator.orchestrator_builders import Clock, small_config


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cfg() -> PlanConfig:
    return small_config()
