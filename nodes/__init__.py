"""ComfyUI glue: collects the package's V3 nodes and registers its sampler and scheduler names."""

from comfy_api.latest import ComfyExtension, io

from . import controlnet_nodes, dit_nodes, lora_hook, pe_nodes, replacements, sampling_nodes, text_nodes, vae_nodes

NODE_MODULES = (dit_nodes, text_nodes, vae_nodes, sampling_nodes, pe_nodes, controlnet_nodes)  # menu order

sampling_nodes.register_samplers()  # idempotent: KSampler names flow_dpm_solver, flow_euler, sana_scm; sana_flow, ...
lora_hook.install_lora_key_map()  # idempotent: diffusers/PEFT/trainer Sana LoRA names for the stock LoRA loaders


class SanaExtension(ComfyExtension):
    """Every node of the package, in menu order."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in NODE_MODULES for node in module.NODES]

    async def on_load(self) -> None:
        replacements.register_node_replacements()  # ComfyUI >= 0.14 only: ExtraModels Sana ids -> these nodes


async def comfy_entrypoint() -> SanaExtension:
    """V3 entry point called by ComfyUI when it loads the package."""
    return SanaExtension()
