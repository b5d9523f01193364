"""Sana (native): NVIDIA's Sana text-to-image family as native ComfyUI models.

Inside ComfyUI this package exposes the V3 ``comfy_entrypoint``; a ComfyUI without the V3 node API gets one log line
naming the minimum version instead of a traceback. Outside ComfyUI (scripts, notebooks, tests; ``import sana_native``
after ``pip install -e .``) importing it only gives the pure-PyTorch ``models`` and ``samplers`` sub-packages.
Importing loads no weights and touches no network.
"""

import importlib.util
import logging

# ComfyUI 0.3.47 has no comfy_api.latest; the V3 API (ComfyExtension, io.ComfyNode, comfy_entrypoint) the nodes use is
# there from 0.3.50 on (conservative bound). The package is tested on ComfyUI 0.8.0.
MIN_COMFYUI_VERSION = "0.3.50"
TESTED_COMFYUI_VERSION = "0.8.0"


def _inside_comfyui() -> bool:
    """ComfyUI's top-level ``folder_paths`` module is importable only when running inside ComfyUI."""
    return importlib.util.find_spec("folder_paths") is not None


def _has_v3_api() -> bool:
    """Whether this ComfyUI provides the V3 node API the nodes are written against."""
    try:
        from comfy_api.latest import ComfyExtension, io
    except ImportError:
        return False
    return isinstance(ComfyExtension, type) and hasattr(io, "ComfyNode") and hasattr(io, "Schema")


__all__ = []
# pytest may load this file on its own (no parent package, e.g. from a checkout folder whose name has a hyphen);
# there is nothing to expose then.
if __package__:
    from . import models, samplers

    __all__ = ["models", "samplers"]
    if _inside_comfyui():
        if _has_v3_api():
            from .nodes import comfy_entrypoint

            __all__ = ["comfy_entrypoint", "models", "samplers"]
        else:
            logging.getLogger(__name__).error(
                "Sana (native): this ComfyUI lacks the V3 node API (comfy_api.latest with ComfyExtension and "
                "io.ComfyNode); the Sana nodes need ComfyUI %s or newer (tested on %s). Update ComfyUI.",
                MIN_COMFYUI_VERSION, TESTED_COMFYUI_VERSION,
            )
