"""The shipped workflows (workflows/*.json, UI format) match their specs and run headless through `comfy run`.

The model files are the generated small checkpoints saved under the workflows' real file names. To keep the suite
CPU-sized, each run patches only the image size (EmptySanaLatent) and the step count of a copy of the file; the
graph, the nodes and every other setting are the shipped ones.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.editing_image import write_input_image
from tests.integration.workflow_specs import SHIPPED

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
TEST_SIZE = (128, 96)  # pixels: a 4x3 latent keeps the real-width DiT and DC-AE fast on a CPU
TEST_STEPS = 2
RUN_TIMEOUT_S = 600


def _comfy_cli() -> str:
    path = shutil.which("comfy", path=str(Path(sys.executable).parent)) or shutil.which("comfy")
    if path is None:
        pytest.skip("comfy-cli is not installed in this environment")
    return path


def cpu_sized(ui: dict) -> dict:
    """A UI workflow shrunk for a CPU run: latent TEST_SIZE, at most TEST_STEPS KSampler steps."""
    for node in ui["nodes"]:
        if node["type"] == "EmptySanaLatent":
            node["widgets_values"][:2] = list(TEST_SIZE)
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = min(node["widgets_values"][2], TEST_STEPS)
    return ui


def _without_defaults(node: dict, info: dict) -> dict:
    """Inputs minus optional widgets left at their schema default (the converter fills those in)."""
    optional = info[node["class_type"]]["input"].get("optional", {})
    defaults = {name: spec[1].get("default") for name, spec in optional.items() if len(spec) > 1}
    return {k: v for k, v in node["inputs"].items() if not (k in defaults and defaults[k] == v)}


def test_shipped_workflow_files_match_their_specs(comfy):
    from comfy_cli.workflow_to_api import convert_ui_to_api

    info = comfy.object_info()
    assert sorted(p.name for p in WORKFLOWS.glob("*.json")) == sorted(SHIPPED)
    for name, (builder, _, _) in SHIPPED.items():
        converted = convert_ui_to_api(json.loads((WORKFLOWS / name).read_text()), info)
        expected = builder().to_api()
        got = {k: {"class_type": n["class_type"], "inputs": _without_defaults(n, info)} for k, n in converted.items()}
        assert got == expected, f"{name} differs from its spec; regenerate: python -m tests.integration.workflow_specs"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_workflow_runs_with_comfy_run(comfy, tmp_path, name):
    write_input_image(comfy.base / "input", *TEST_SIZE)  # the editing workflows' LoadImage("example.png")
    workflow = tmp_path / name
    workflow.write_text(json.dumps(cpu_sized(json.loads((WORKFLOWS / name).read_text()))))
    before = set(comfy.output_dir.rglob("*.png"))
    command = [_comfy_cli(), "--skip-prompt", "run", "--workflow", str(workflow), "--wait", "--host", "127.0.0.1",
               "--port", str(comfy.port), "--timeout", str(RUN_TIMEOUT_S)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 60)
    assert done.returncode == 0, f"comfy run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    new_images = set(comfy.output_dir.rglob("*.png")) - before
    assert new_images, f"{name} ran but saved no image:\n{done.stdout[-2000:]}"
