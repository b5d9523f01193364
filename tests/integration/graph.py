"""A tiny builder for ComfyUI API-format graphs, so integration tests read like the graph they run."""

import itertools


class NodeRef:
    """A node in a :class:`Graph`; ``ref[i]`` is a link to its output slot ``i``."""

    def __init__(self, node_id: str):
        self.id = node_id

    def __getitem__(self, slot: int) -> list:
        return [self.id, slot]


class Graph:
    """API-format graph: ``g.node(class_type, **inputs)`` adds a node; ``g.to_api()`` returns the /prompt payload."""

    def __init__(self):
        self._nodes: dict[str, dict] = {}
        self._ids = itertools.count(1)

    def node(self, class_type: str, **inputs) -> NodeRef:
        node_id = str(next(self._ids))
        self._nodes[node_id] = {"class_type": class_type, "inputs": dict(inputs)}
        return NodeRef(node_id)

    def to_api(self) -> dict:
        return {key: {"class_type": n["class_type"], "inputs": dict(n["inputs"])} for key, n in self._nodes.items()}
