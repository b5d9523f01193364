"""Sana (native): NVIDIA's Sana text-to-image family as native ComfyUI models.

Inside ComfyUI this package exposes the V3 ``comfy_entrypoint``; outside ComfyUI (scripts, notebooks, tests) importing
it only gives the pure-PyTorch ``models`` and ``samplers`` sub-packages. Importing loads no weights and touches no
network.
"""

import importlib.util

__all__ = []
# pytest may load this file on its own (no parent package, e.g. from a checkout folder whose name has a hyphen);
# there is nothing to expose then.
if __package__:
    from . import models, samplers

    __all__ = ["models", "samplers"]
    if importlib.util.find_spec("comfy_api") is not None:
        from .nodes import comfy_entrypoint

        __all__ = ["comfy_entrypoint", "models", "samplers"]
