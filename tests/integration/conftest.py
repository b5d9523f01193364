"""Integration fixtures: one real ComfyUI server per test session, with the package and generated checkpoints."""

import importlib
import os
from pathlib import Path

import pytest

from tests.integration.server import ComfyServer, find_comfyui

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MODULES = ("tests.fixtures.dit", "tests.fixtures.dcae", "tests.fixtures.text", "tests.fixtures.rope",
                   "tests.fixtures.editing", "tests.fixtures.lora", "tests.fixtures.controlnet",
                   "tests.fixtures.dit_files")


def _model_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for name in FIXTURE_MODULES:
        files.update(importlib.import_module(name).comfy_model_files())
    return files


# Set by .ci/run when it found ComfyUI: a test that cannot get a server then fails instead of skipping.
REQUIRE_ENV = "SANA_REQUIRE_COMFYUI"


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A running ComfyUI server (skips the test with a one-line reason when ComfyUI cannot run here, or fails when
    SANA_REQUIRE_COMFYUI=1)."""
    comfy_root, reason = find_comfyui()
    if comfy_root is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    server = ComfyServer(comfy_root, PACKAGE_ROOT, tmp_path_factory.mktemp("comfyui"), _model_files())
    try:
        server.start()
        yield server
    finally:
        server.stop()
