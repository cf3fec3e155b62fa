"""Paths shared by the container tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))
COMPOSE_FILES = [REPO_ROOT / "docker-compose.yml", REPO_ROOT / "docker-compose.gpu.yml"]


@pytest.fixture(scope="session")
def healthcheck() -> ModuleType:
    """docker/healthcheck.py, the image's HEALTHCHECK command, imported as a module."""
    spec = importlib.util.spec_from_file_location("container_healthcheck", DOCKER_DIR / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
