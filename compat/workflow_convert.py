"""Rewrite a UI-format (litegraph) workflow that uses the ExtraModels Sana nodes into this package's nodes.

Node by node (tables in ``compat/extramodels.py``): SanaCheckpointLoader → SanaDiTLoader, GemmaLoader →
SanaTextEncoderLoader, SanaTextEncode → SanaTextEncodeAdvanced with CHI, GemmaTextEncode → SanaTextEncodeAdvanced
without CHI, ExtraVAELoader → SanaVAELoader, EmptySanaLatentImage / EmptyDCAELatentImage → EmptySanaLatent,
SanaResolutionSelect → width/height widgets on the nodes it fed, SanaResolutionCond → removed (the conditioning passes
through: Sana's DiT takes no size conditioning), ScmModelSampling + sampler ``scm`` → the Sprint route (KSampler
``sana_scm`` / ``sana_sprint``, CFG 1, FluxGuidance(cfg_scale) on the positive). Every other node, link, position,
group and KSampler setting is kept. Works on the litegraph 0.4 format (``links`` as lists), the one these files use.
"""

import copy

from . import extramodels as em


class _Graph:
    """Index over a UI workflow's nodes and links, with the few edits the conversion needs."""

    def __init__(self, workflow: dict):
        if any(not isinstance(link, list) for link in workflow.get("links", [])):
            raise ValueError("convert_workflow: links are not litegraph 0.4 lists; re-save the workflow from the "
                             "ComfyUI frontend in the classic format and convert that file.")
        self.wf = workflow
        self.nodes = {node["id"]: node for node in workflow["nodes"]}
        self.links = {link[0]: link for link in workflow["links"]}

    def new_id(self, key: str) -> int:
        items = self.nodes if key == "last_node_id" else self.links
        value = max([self.wf.get(key, 0), *items]) + 1
        self.wf[key] = value
        return value

    def input_link(self, node: dict, name: str):
        for entry in node.get("inputs", []):
            if entry["name"] == name and entry.get("link") is not None:
                return self.links[entry["link"]]
        return None

    def out_links(self, node: dict, slot: int) -> list:
        outputs = node.get("outputs", [])
        ids = (outputs[slot].get("links") or []) if slot < len(outputs) else []
        return [self.links[i] for i in ids if i in self.links]

    def set_source(self, link: list, src: int, slot: int) -> None:
        """Point ``link`` at output ``slot`` of node ``src`` (updating both nodes' output lists)."""
        old = self.nodes.get(link[1])
        if old is not None and link[2] < len(old.get("outputs", [])):
            old["outputs"][link[2]]["links"] = [i for i in old["outputs"][link[2]].get("links") or [] if i != link[0]]
        outputs = self.nodes[src]["outputs"][slot]
        outputs["links"] = [*(outputs.get("links") or []), link[0]]
        link[1], link[2] = src, slot

    def remove_link(self, link: list) -> None:
        src, dst = self.nodes.get(link[1]), self.nodes.get(link[3])
        if src is not None and link[2] < len(src.get("outputs", [])):
            src["outputs"][link[2]]["links"] = [i for i in src["outputs"][link[2]].get("links") or [] if i != link[0]]
        if dst is not None:
            dst["inputs"] = [e for e in dst.get("inputs", []) if e.get("link") != link[0]]
        del self.links[link[0]]

    def remove_node(self, node: dict) -> None:
        for entry in list(node.get("inputs", [])):
            if entry.get("link") in self.links:
                self.remove_link(self.links[entry["link"]])
        del self.nodes[node["id"]]

    def bypass(self, node: dict, input_name: str, slot: int) -> None:
        """Remove ``node``; whatever fed ``input_name`` now feeds every consumer of output ``slot``."""
        feed = self.input_link(node, input_name)
        for link in self.out_links(node, slot):
            if feed is None:
                self.remove_link(link)
            else:
                self.set_source(link, feed[1], feed[2])
        self.remove_node(node)

    def finish(self) -> dict:
        for node in self.nodes.values():  # a link's target slot is its input's position, which removals may shift
            for slot, entry in enumerate(node.get("inputs", [])):
                if entry.get("link") in self.links:
                    self.links[entry["link"]][4] = slot
        self.wf["nodes"] = list(self.nodes.values())
        self.wf["links"] = list(self.links.values())
        self.wf["last_node_id"] = max([self.wf.get("last_node_id", 0), *self.nodes])
        self.wf["last_link_id"] = max([self.wf.get("last_link_id", 0), *self.links], default=0)
        return self.wf


def _retype(g: _Graph, node: dict, new_type: str, widgets: list, output_types=None) -> None:
    node["type"] = new_type
    node.setdefault("properties", {})["Node name for S&R"] = new_type
    node["widgets_values"] = widgets
    for slot, kind in (output_types or {}).items():
        output = node["outputs"][slot]
        output["type"] = output["name"] = kind
        for link in g.out_links(node, slot):
            link[5] = kind
    for entry in node.get("inputs", []):
        if entry.get("type") == "GEMMA":
            entry["type"], entry["name"] = "CLIP", "clip"
            if entry.get("link") in g.links:
                g.links[entry["link"]][5] = "CLIP"


def _checkpoint(g, node, log, unmapped):
    name, dtype, how = em.dit_file(node.get("widgets_values") or [])
    _retype(g, node, "SanaDiTLoader", [name, dtype])
    log.append(f"node {node['id']} SanaCheckpointLoader -> SanaDiTLoader: {how}, weight_dtype {dtype}")


def _gemma(g, node, log, unmapped):
    values = node.get("widgets_values") or []
    device = em.GEMMA_DEVICES.get(values[1] if len(values) > 1 else "cuda", "default")
    _retype(g, node, "SanaTextEncoderLoader", [em.LLM_FOLDER, "none", "none", device], {0: "CLIP"})
    log.append(f"node {node['id']} GemmaLoader -> SanaTextEncoderLoader: {values[:1]} -> {em.LLM_FOLDER!r}, "
               f"device {device}")


def _text(chi):
    def handler(g, node, log, unmapped):
        old = node["type"]
        text = (node.get("widgets_values") or [""])[0]
        _retype(g, node, em.TEXT_ENCODE_NODE, em.text_encode_widgets(text, chi))
        log.append(f"node {node['id']} {old} -> {em.TEXT_ENCODE_NODE} (chi {chi})")
    return handler


def _vae(g, node, log, unmapped):
    values = node.get("widgets_values") or [""]
    name = em.VAE_FILES.get(values[0], em.VAE_FILE)
    _retype(g, node, "SanaVAELoader", [name, "auto"])
    log.append(f"node {node['id']} ExtraVAELoader -> SanaVAELoader: {values[0]!r} -> {name!r}")


def _latent(g, node, log, unmapped):
    old, values = node["type"], list(node.get("widgets_values") or [1024, 1024, 1])
    _retype(g, node, "EmptySanaLatent", [*values[:3], "custom"])
    log.append(f"node {node['id']} {old} -> EmptySanaLatent")


LATENT_TYPES = ("EmptySanaLatentImage", "EmptyDCAELatentImage", "EmptySanaLatent")
SIZE_WIDGETS = {"width": 0, "height": 1}  # widget positions in the latent nodes (ExtraModels and ours)


def _resolution_select(g, node, log, unmapped):
    values = node.get("widgets_values") or ["1024px", "1.00"]
    width, height = em.latent_size(values[0], values[1] if len(values) > 1 else "1.00")
    for slot, value in enumerate((width, height)):
        for link in g.out_links(node, slot):
            target = g.nodes[link[3]]
            entry = next((e for e in target.get("inputs", []) if e.get("link") == link[0]), {})
            name = (entry.get("widget") or {}).get("name", entry.get("name"))
            if target["type"] in LATENT_TYPES and name in SIZE_WIDGETS:
                target["widgets_values"][SIZE_WIDGETS[name]] = value
            elif target["type"] != "SanaResolutionCond":
                unmapped.append(f"node {target['id']} {target['type']}.{name}: was fed {value} by "
                                f"SanaResolutionSelect {node['id']}; set it by hand")
            g.remove_link(link)
    g.remove_node(node)
    log.append(f"node {node['id']} SanaResolutionSelect({values[0]}, {values[1:2]}) -> {width}x{height} on the "
               "latent node")


def _resolution_cond(g, node, log, unmapped):
    name = next((e["name"] for e in node.get("inputs", []) if e.get("type") == "CONDITIONING"), "cond")
    g.bypass(node, name, 0)
    log.append(f"node {node['id']} SanaResolutionCond removed (Sana's DiT takes no size conditioning)")


def _scm(g, node, log, unmapped):
    values = node.get("widgets_values") or [em.SCM_DEFAULT_GUIDANCE]
    guidance = float(values[0])
    for link in g.out_links(node, 0):
        _mark_sprint(g, g.nodes[link[3]], guidance, set())
    g.bypass(node, "model", 0)
    log.append(f"node {node['id']} ScmModelSampling removed; its cfg_scale {guidance} goes to FluxGuidance")


def _mark_sprint(g, node, guidance, seen) -> None:
    """Tag every KSampler reachable through MODEL links from a ScmModelSampling with its guidance."""
    if node["id"] in seen:
        return
    seen.add(node["id"])
    if node["type"] in ("KSampler", "KSamplerAdvanced"):
        node.setdefault("_sprint_guidance", guidance)
        return
    for slot, output in enumerate(node.get("outputs", [])):
        if output.get("type") == "MODEL":
            for link in g.out_links(node, slot):
                _mark_sprint(g, g.nodes[link[3]], guidance, seen)


def _sprint_ksampler(g: _Graph, node: dict, log: list) -> None:
    """KSampler on a Sprint model: sana_scm / sana_sprint, CFG 1, FluxGuidance(guidance) on the positive."""
    guidance = node.pop("_sprint_guidance", em.SCM_DEFAULT_GUIDANCE)
    widgets = node["widgets_values"]
    first = 1 if node["type"] == "KSamplerAdvanced" else 0  # KSamplerAdvanced starts with add_noise
    widgets[first + 3], widgets[first + 4], widgets[first + 5] = 1.0, em.SPRINT_SAMPLER, em.SPRINT_SCHEDULER
    positive = g.input_link(node, "positive")
    if positive is not None:
        flux_id, link_id = g.new_id("last_node_id"), g.new_id("last_link_id")
        x, y = node.get("pos", [0, 0])
        g.nodes[flux_id] = {
            "id": flux_id, "type": "FluxGuidance", "pos": [x - 340, y - 120], "size": [300, 60], "flags": {},
            "order": node.get("order", 0), "mode": 0,
            "inputs": [{"name": "conditioning", "type": "CONDITIONING", "link": link_id}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [], "slot_index": 0}],
            "properties": {"Node name for S&R": "FluxGuidance"}, "widgets_values": [guidance],
        }
        g.links[link_id] = [link_id, positive[1], positive[2], flux_id, 0, "CONDITIONING"]
        g.nodes[positive[1]]["outputs"][positive[2]]["links"].append(link_id)
        g.set_source(positive, flux_id, 0)
    log.append(f"node {node['id']} {node['type']} -> sampler {em.SPRINT_SAMPLER}, scheduler {em.SPRINT_SCHEDULER}, "
               f"CFG 1, guidance {guidance} through FluxGuidance")


HANDLERS = {
    "SanaResolutionSelect": _resolution_select,  # first: writes sizes into latent nodes before they are retyped
    "SanaResolutionCond": _resolution_cond,
    "ScmModelSampling": _scm,
    "SanaCheckpointLoader": _checkpoint,
    "GemmaLoader": _gemma,
    "SanaTextEncode": _text(em.POSITIVE_CHI),
    "GemmaTextEncode": _text(em.NEGATIVE_CHI),
    "ExtraVAELoader": _vae,
    "EmptySanaLatentImage": _latent,
    "EmptyDCAELatentImage": _latent,
}


def convert_workflow(workflow: dict) -> tuple[dict, list[str], list[str]]:
    """(converted copy, what changed, what could not be mapped) for a UI-format workflow dict."""
    g = _Graph(copy.deepcopy(workflow))
    log, unmapped = [], []
    for kind, handler in HANDLERS.items():
        for node in [n for n in list(g.nodes.values()) if n["type"] == kind]:
            handler(g, node, log, unmapped)
    for node in list(g.nodes.values()):
        if node["type"] in ("KSampler", "KSamplerAdvanced"):
            sampler_slot = 5 if node["type"] == "KSamplerAdvanced" else 4
            if "_sprint_guidance" in node or node["widgets_values"][sampler_slot] == "scm":
                _sprint_ksampler(g, node, log)
        elif node["type"] in em.EXTRAMODELS_NODE_IDS:
            unmapped.append(f"node {node['id']} {node['type']}: no mapping, kept as it is")
    return g.finish(), log, unmapped

