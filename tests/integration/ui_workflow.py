"""Turn an API-format :class:`Graph` into a UI-format (litegraph) workflow, using a live server's /object_info.

The UI format is what users share and what the ComfyUI frontend opens: nodes with positions, positional
``widgets_values`` in schema order (seed-like INT widgets followed by their "control after generate" value), and a
``links`` table. Widget order and input types come from /object_info, exactly as the frontend reads them, so a workflow
written here converts back to the same API graph (comfy-cli's ``convert_ui_to_api`` does that in ``comfy run``).
"""

COLUMN_WIDTH, ROW_HEIGHT, NODE_WIDTH, NOTE_HEIGHT = 360, 260, 320, 220
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _ordered_inputs(schema: dict) -> list[tuple[str, list]]:
    spec = schema["input"]
    order = schema.get("input_order", {})
    names = [*order.get("required", spec.get("required", {})), *order.get("optional", spec.get("optional", {}))]
    merged = {**spec.get("optional", {}), **spec.get("required", {})}
    return [(name, merged[name]) for name in names if name in merged]


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _depth(api: dict, node_id: str, memo: dict) -> int:
    if node_id not in memo:
        parents = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
        memo[node_id] = 1 + max((_depth(api, p, memo) for p in parents), default=-1)
    return memo[node_id]


def to_ui_workflow(graph, object_info: dict, note: str) -> dict:
    """UI-format workflow of ``graph`` (laid out in columns by dependency depth) plus a Note node holding ``note``."""
    api = graph.to_api()
    memo: dict = {}
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs_by_node: dict[str, list] = {}
    for node_id, node in api.items():
        schema = object_info[node["class_type"]]
        column = _depth(api, node_id, memo)
        row = rows[column] = rows.get(column, -1) + 1
        ui_inputs, widgets = [], []
        for name, spec in _ordered_inputs(schema):
            value = node["inputs"].get(name)
            if isinstance(value, list):
                link_id = len(links) + 1
                src, slot = value
                links.append([link_id, int(src), slot, int(node_id), len(ui_inputs), spec[0] if isinstance(spec[0], str)
                              else "COMBO"])
                ui_inputs.append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO",
                                  "link": link_id})
            elif _is_widget(spec) and value is not None:
                widgets.append(value)
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if options.get("control_after_generate"):
                    widgets.append("fixed")
        outputs_by_node[node_id] = [
            {"name": name, "type": kind, "links": [], "slot_index": i}
            for i, (name, kind) in enumerate(zip(schema["output_name"], schema["output"], strict=True))
        ]
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [column * COLUMN_WIDTH, row * ROW_HEIGHT],
            "size": [NODE_WIDTH, ROW_HEIGHT - 40], "flags": {}, "order": 0, "mode": 0, "inputs": ui_inputs,
            "outputs": outputs_by_node[node_id], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        })
    for link_id, src, slot, _dst, _dst_slot, _kind in links:
        outputs_by_node[str(src)][slot]["links"].append(link_id)
    for order, node in enumerate(sorted(nodes, key=lambda n: memo[str(n["id"])])):
        node["order"] = order
    note_id = max(n["id"] for n in nodes) + 1
    nodes.append({
        "id": note_id, "type": "Note", "pos": [0, -NOTE_HEIGHT - 40], "size": [2 * COLUMN_WIDTH, NOTE_HEIGHT],
        "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
        "widgets_values": [note], "color": "#432", "bgcolor": "#653",
    })
    return {
        "last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
        "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [40, 300]}}, "version": 0.4,
    }
