"""ComfyUI ≥ 0.14 node replacements: workflows saved with the ExtraModels Sana nodes open with this package's nodes.

The mappings live in ``compat/extramodels.py`` (shared with ``scripts/convert_workflow.py``). ComfyUI 0.8–0.13 has no
node-replacement API; there this does nothing and the converter script is the way to open such files.
"""

import logging

from ..compat.extramodels import register_node_replacements as _register


def register_node_replacements() -> list[str]:
    """Register the ExtraModels → sana-native replacements when ComfyUI offers the API; returns the old ids."""
    try:
        from comfy_api.latest import node_replace
    except ImportError:
        return []  # ComfyUI < 0.14: no comfy_api.latest.node_replace
    try:
        registered = _register(node_replace)
    except (AttributeError, TypeError) as e:
        logging.warning("sana-native: this ComfyUI's node_replace API differs from 0.14's (%s); ExtraModels Sana "
                        "workflows need scripts/convert_workflow.py.", e)
        return []
    logging.info("sana-native: node replacements for %s", ", ".join(registered))
    return registered
