"""Opening shared Sana workflows: node ids are unique (none is an ExtraModels id, none is core's), the node-replacement
table names real inputs, and workflows in the shape of the NVlabs / ExtraModels files, converted by
scripts/convert_workflow.py, run headless through `comfy run` with the generated checkpoints."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compat import extramodels as em
from tests.fixtures import extramodels_workflows as fx
from tests.integration.server import PACKAGE_LINK_NAME
from tests.integration.test_workflows import RUN_TIMEOUT_S, _comfy_cli, cpu_sized

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _package_ids(info: dict) -> set[str]:
    return {k for k, v in info.items() if PACKAGE_LINK_NAME in str(v.get("python_module", ""))}


def test_node_ids_unique_and_not_extramodels(comfy):
    declared = [m for path in sorted((REPO / "nodes").glob("*.py"))
                for m in re.findall(r'node_id="([^"]+)"', path.read_text())]
    registered = _package_ids(comfy.object_info())
    assert len(declared) == len(set(declared)), f"a node id is declared twice: {sorted(declared)}"
    assert set(declared) == registered, f"declared {sorted(declared)} but /object_info has {sorted(registered)}"
    assert not registered & em.EXTRAMODELS_NODE_IDS, f"ExtraModels ids reused: {registered & em.EXTRAMODELS_NODE_IDS}"


def test_node_replacements_name_real_inputs(comfy):
    info = comfy.object_info()
    for spec in em.NODE_REPLACEMENTS:
        schema = info[spec["new_node_id"]]["input"]
        inputs = {**schema.get("required", {}), **schema.get("optional", {})}
        missing = [m["new_id"] for m in spec["input_mapping"] if m["new_id"].split(".")[0] not in inputs]
        assert not missing and spec["old_node_id"] not in info, (spec["old_node_id"], missing)


@pytest.mark.parametrize("name", sorted(fx.WORKFLOWS))
def test_converted_workflow_runs_with_comfy_run(comfy, tmp_path, name):
    source, converted = tmp_path / name, tmp_path / f"converted_{name}"
    source.write_text(json.dumps(fx.WORKFLOWS[name]()))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "convert_workflow.py"), str(source),
                           str(converted)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "NOT MAPPED" not in done.stdout, done.stdout + done.stderr
    converted.write_text(json.dumps(cpu_sized(json.loads(converted.read_text()))))
    before = set(comfy.output_dir.rglob("*.png"))
    command = [_comfy_cli(), "--skip-prompt", "run", "--workflow", str(converted), "--wait", "--host", "127.0.0.1",
               "--port", str(comfy.port), "--timeout", str(RUN_TIMEOUT_S)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 60)
    assert run.returncode == 0, f"comfy run failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    assert set(comfy.output_dir.rglob("*.png")) - before, f"{name} ran but saved no image:\n{run.stdout[-2000:]}"
