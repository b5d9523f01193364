"""The ExtraModels → sana-native workflow converter (compat/workflow_convert.py, scripts/convert_workflow.py) on
workflows in the shape of the NVlabs and ExtraModels files (tests/fixtures/extramodels_workflows.py). Running the
converted files in ComfyUI is tests/integration/test_convert_workflow.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compat import extramodels as em
from compat.workflow_convert import convert_workflow
from tests.fixtures import extramodels_workflows as fx

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_workflow.py"


def _types(workflow: dict) -> list[str]:
    return [node["type"] for node in workflow["nodes"]]


def _by_type(workflow: dict, kind: str) -> list[dict]:
    return [node for node in workflow["nodes"] if node["type"] == kind]


def _check_links(workflow: dict) -> None:
    """Every link joins existing nodes, sits in its source's output list and in its target's input at its slot."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for link_id, src, slot, dst, dst_slot, _ in workflow["links"]:
        assert link_id in nodes[src]["outputs"][slot]["links"], f"link {link_id} missing from node {src} outputs"
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id, f"link {link_id} not at input {dst_slot} of {dst}"
    listed = {i for node in nodes.values() for out in node.get("outputs", []) for i in out.get("links") or []}
    assert listed == {link[0] for link in workflow["links"]}, "output link lists and the links table disagree"
    assert workflow["last_node_id"] >= max(nodes) and workflow["last_link_id"] >= max(listed, default=0)


@pytest.mark.parametrize("name", sorted(fx.WORKFLOWS))
def test_converted_workflows_use_no_extramodels_node(name):
    source = fx.WORKFLOWS[name]()
    converted, changed, unmapped = convert_workflow(source)
    assert not set(_types(converted)) & em.EXTRAMODELS_NODE_IDS, _types(converted)
    assert not unmapped and changed, (changed, unmapped)
    _check_links(converted)
    assert converted["groups"] == source["groups"] and _by_type(converted, "Note") == _by_type(source, "Note")
    assert source["nodes"][0]["type"] == "SanaCheckpointLoader", "the input must not be modified in place"


@pytest.mark.parametrize("name,dit,dtype", [
    ("Sana_FlowEuler.json", "Sana_1600M_1024px_MultiLing.pth", "default"),  # 2 widget values
    ("Sana_FlowEuler_2K.json", "Sana_1600M_2Kpx_BF16.pth", "bf16"),  # 3 values
    ("SANA-Sprint.json", "Sana_Sprint_1.6B_1024px.pth", "fp32"),  # 4 values
])
def test_checkpoint_loader_every_arity(name, dit, dtype):
    converted, _, _ = convert_workflow(fx.WORKFLOWS[name]())
    assert _by_type(converted, "SanaDiTLoader")[0]["widgets_values"] == [dit, dtype]


def test_unknown_checkpoint_falls_back_to_its_config():
    assert em.dit_file(["my-org/some_sana_finetune", "SanaMS_1600M_P1_D20_4K"])[0] == "Sana_1600M_4Kpx_BF16.pth"
    assert em.dit_file(["sana/Sana_600M_1024px_MultiLing.pth", "SanaMS_600M_P1_D28"])[0] == \
        "Sana_600M_1024px_MultiLing.pth"


def test_text_encoders_chi_and_kept_ksampler_settings():
    source = fx.flow_euler_1024()
    converted, _, _ = convert_workflow(source)
    positive, negative = _by_type(converted, em.TEXT_ENCODE_NODE)
    assert positive["widgets_values"][:2] == [source["nodes"][2]["widgets_values"][0], "nvlabs"]
    assert negative["widgets_values"][:2] == ["", "none"]
    assert _by_type(converted, "KSampler")[0]["widgets_values"] == [42, "fixed", 28, 4.5, "euler", "normal", 1.0]
    assert _by_type(converted, "SanaTextEncoderLoader")[0]["widgets_values"][0] == em.LLM_FOLDER
    assert {link[5] for link in converted["links"] if link[3] in (positive["id"], negative["id"])} == {"CLIP"}


def test_resolution_select_becomes_latent_size():
    converted, _, _ = convert_workflow(fx.flow_euler_2k())
    latent = _by_type(converted, "EmptySanaLatent")[0]
    assert latent["widgets_values"] == [2048, 2048, 1, "custom"] and latent["inputs"] == []
    assert em.latent_size("1024px", "0.57") == (1344, 768)  # area ≈ 1024², h/w ≈ 0.57 (Sana's 1344x768 bucket)


def test_resolution_cond_is_bypassed():
    source = fx.flow_euler_4k()
    converted, _, _ = convert_workflow(source)
    ksampler = _by_type(converted, "KSampler")[0]
    positive_link = next(e["link"] for e in ksampler["inputs"] if e["name"] == "positive")
    src = next(link[1] for link in converted["links"] if link[0] == positive_link)
    assert src == _by_type(converted, em.TEXT_ENCODE_NODE)[0]["id"]


def test_sprint_route():
    converted, changed, _ = convert_workflow(fx.sprint())
    ksampler = _by_type(converted, "KSampler")[0]
    assert ksampler["widgets_values"][2:6] == [2, 1.0, em.SPRINT_SAMPLER, em.SPRINT_SCHEDULER]
    flux = _by_type(converted, "FluxGuidance")[0]
    assert flux["widgets_values"] == [4.5]
    links = {link[0]: link for link in converted["links"]}
    positive = links[next(e["link"] for e in ksampler["inputs"] if e["name"] == "positive")]
    model = links[next(e["link"] for e in ksampler["inputs"] if e["name"] == "model")]
    assert positive[1] == flux["id"] and _by_type(converted, "SanaDiTLoader")[0]["id"] == model[1]
    assert any("FluxGuidance" in line for line in changed)


def _unmappable() -> dict:
    """A SanaResolutionSelect feeding another pack's width input, next to a converted loader."""
    b = fx._UiBuilder()
    b.node("SanaCheckpointLoader", ["Efficient-Large-Model/Sana_1600M_4Kpx_BF16", "SanaMS_1600M_P1_D20_4K"],
           outputs=["MODEL"])
    select = b.node("SanaResolutionSelect", ["4K", "1.00"], outputs=["INT", "INT"])
    b.node("SomePack_ImageResize", [512, "lanczos"], {"width": (select, 0, "INT")}, ["IMAGE"], widget_inputs=("width",))
    return b.workflow()


def test_script_prints_changes_and_unmapped(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps(_unmappable()))
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "changed: node 1 SanaCheckpointLoader -> SanaDiTLoader" in done.stdout, done.stdout
    assert "NOT MAPPED: node 3 SomePack_ImageResize.width: was fed 4096" in done.stdout, done.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    assert _types(out) == ["SanaDiTLoader", "SomePack_ImageResize"]
    _check_links(out)
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing.json"), str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "missing.json" in bad.stderr


def test_node_replacements_register_without_old_nodes():
    registered = []

    class FakeNodeReplace:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class FakeModule:
        NodeReplace = FakeNodeReplace

        @staticmethod
        def register(replacement):
            registered.append(replacement.kwargs)

    old_ids = em.register_node_replacements(FakeModule)
    assert set(old_ids) <= em.EXTRAMODELS_NODE_IDS and len(old_ids) == len(registered) == len(em.NODE_REPLACEMENTS)
    assert not {r["new_node_id"] for r in registered} & em.EXTRAMODELS_NODE_IDS
    chi = {r["old_node_id"]: m["set_value"] for r in registered for m in r["input_mapping"] if m["new_id"] == "chi"}
    assert chi == {"SanaTextEncode": em.POSITIVE_CHI, "GemmaTextEncode": em.NEGATIVE_CHI}
