"""ComfyUI glue: collects the package's V3 nodes and registers its sampler and scheduler names."""

import importlib

from comfy_api.latest import ComfyExtension, io

NODE_MODULES = ("dit_nodes", "vae_nodes", "text_nodes", "sampling_nodes", "pe_nodes")

_modules = [importlib.import_module(f".{name}", __name__) for name in NODE_MODULES]
importlib.import_module(".sampling_nodes", __name__).register_samplers()


class SanaExtension(ComfyExtension):
    """Every node of the package, in menu order."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in _modules for node in module.NODES]


async def comfy_entrypoint() -> SanaExtension:
    """V3 entry point called by ComfyUI when it loads the package."""
    return SanaExtension()
