"""The package loads in a real ComfyUI: every node id of docs/ARCHITECTURE.md §3.1 is registered, with no import
failure."""

import re

import pytest

pytestmark = pytest.mark.integration

NODE_IDS = (
    "SanaDiTLoader", "SanaVAELoader", "SanaTextEncoderLoader", "SanaTextEncodeAdvanced", "EmptySanaLatent",
    "ModelSamplingSana", "SanaFlowDPMSolverSampler", "SanaFlowScheduler", "SanaPositionEncoding", "SanaPAG",
    "SanaSprintScheduler",
)
IMPORT_TIME_PATTERN = r"(\d+\.\d+) seconds(?: \(IMPORT FAILED\))?: \S*sana_native"


def test_package_nodes_registered(comfy):
    info = comfy.object_info()
    missing = [node_id for node_id in NODE_IDS if node_id not in info]
    assert not missing, f"node ids missing from /object_info: {missing}\nlog tail:\n{comfy.log()[-3000:]}"


def test_package_imports_cleanly(comfy):
    log = comfy.log()
    match = re.search(IMPORT_TIME_PATTERN, log)
    assert match, f"the package is not listed in the custom-node import times:\n{log[-3000:]}"
    assert "IMPORT FAILED" not in match.group(0), f"ComfyUI could not import the package:\n{log[-3000:]}"
    print(f"sana_native import time: {match.group(1)} s")


def test_every_input_and_output_has_a_tooltip(comfy):
    info = comfy.object_info()
    undocumented = []
    for node_id in NODE_IDS:
        schema = info.get(node_id, {})
        for group in ("required", "optional"):
            for name, spec in schema.get("input", {}).get(group, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not options.get("tooltip"):
                    undocumented.append(f"{node_id}.{name}")
        tooltips = schema.get("output_tooltips") or []
        if len(tooltips) != len(schema.get("output", [])) or not all(tooltips):
            undocumented.append(f"{node_id} outputs")
    assert not undocumented, f"inputs/outputs without a tooltip: {undocumented}"
