"""Integration fixtures: one real ComfyUI server per test session, with the package and generated checkpoints."""

import importlib
from pathlib import Path

import pytest

from tests.integration.server import ComfyServer, find_comfyui

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MODULES = ("tests.fixtures.dit", "tests.fixtures.dcae", "tests.fixtures.text", "tests.fixtures.rope")


def _model_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for name in FIXTURE_MODULES:
        files.update(importlib.import_module(name).comfy_model_files())
    return files


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A running ComfyUI server (skips the test with a one-line reason when ComfyUI cannot run here)."""
    comfy_root, reason = find_comfyui()
    if comfy_root is None:
        pytest.skip(reason)
    server = ComfyServer(comfy_root, PACKAGE_ROOT, tmp_path_factory.mktemp("comfyui"), _model_files())
    try:
        server.start()
        yield server
    finally:
        server.stop()
