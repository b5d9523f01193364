"""Sana (native): NVIDIA's Sana text-to-image family as native ComfyUI models.

Inside ComfyUI this package exposes the V3 ``comfy_entrypoint``; outside ComfyUI (scripts, notebooks, tests) importing
it only gives the pure-PyTorch ``models`` and ``samplers`` sub-packages. Importing loads no weights and touches no
network.
"""

import importlib.util

from . import models, samplers

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint", "models", "samplers"]
else:
    __all__ = ["models", "samplers"]
