"""Sana ControlNet (the released HED ControlNets for Sana 600M / 1.6B) with NVlabs parameter names, and its loader.

Sources: NVlabs/Sana `diffusion/model/nets/sana_multi_scale_controlnet.py` (key layout: the base embedders plus
`controlnet.N.copied_block.*`, `controlnet.0.before_proj`, `controlnet.N.after_proj`); diffusers
`src/diffusers/models/controlnets/controlnet_sana.py` (`SanaControlNetModel`, whose computation this module follows),
`scripts/convert_sana_controlnet_to_diffusers.py` (the key mapping) and `pipelines/sana/pipeline_sana_controlnet.py`
(the hint is the DC-AE latent times the VAE scaling factor).

Computation (diffusers `SanaControlNetModel.forward`):
    h_0 = PE(x_embedder(x)) + before_proj(PE(x_embedder(hint)))
    h_i = copied_block_i(h_{i-1}, y, t0),  residual_i = after_proj_i(h_i)      for i = 1 .. depth
The DiT adds residual_i to its hidden states after its block i (0-based), i = 1 .. depth (models/dit.py,
`CONTROL_KEY`; diffusers `SanaTransformer2DModel` `controlnet_block_samples`). NVlabs' own forward differs (its
control branch starts from block 0's output and its residuals enter one block earlier); diffusers is followed here
because `SanaControlNetPipeline` is the reference the tests compare against.
"""

import logging

import torch
from torch import nn

from .dit import (CONTROL_KEY, CROSS_HEADS_BY_HIDDEN, DEFAULT_SAMPLE_SIZE, SanaDiT, SanaDiTConfig, build_input_stage,
                  variant_config)
from .dit_blocks import SanaBlock
from .dit_checkpoint import _pe_settings, diffusers_to_original, read_checkpoint, unwrap_state_dict
from .pos_embed import build_position_encoding

logger = logging.getLogger(__name__)

NVLABS_PREFIX = "controlnet."
# Base-model tensors the control branch uses (NVlabs SanaMSControlNet shares them with the DiT it was trained on).
BASE_PREFIXES = ("x_embedder.", "t_embedder.", "t_block.", "y_embedder.y_proj.", "attention_y_norm.")
# diffusers SanaControlNetModel -> NVlabs names (diffusers scripts/convert_sana_controlnet_to_diffusers.py, inverted).
DIFFUSERS_INPUT = "input_block."
DIFFUSERS_AFTER = "controlnet_blocks."
NVLABS_BEFORE = "controlnet.0.before_proj."
NVLABS_SIGNATURE = "controlnet.0.before_proj.weight"
DIFFUSERS_SIGNATURE = "input_block.weight"
EXPECTED = ("a Sana ControlNet: the NVlabs .pth (x_embedder.*, controlnet.N.copied_block.*, controlnet.0.before_proj, "
            "controlnet.N.after_proj) or a diffusers SanaControlNetModel (input_block, transformer_blocks.N, "
            "controlnet_blocks.N)")


class ControlBlock(nn.Module):
    """One NVlabs ControlSanaMSBlock: `copied_block` (a Sana block), `before_proj` (block 0 only), `after_proj`."""

    def __init__(self, cfg: SanaDiTConfig, first: bool, dtype=None, device=None, operations=None):
        super().__init__()
        hidden = cfg.hidden_size
        self.copied_block = SanaBlock(cfg, dtype=dtype, device=device, operations=operations)
        self.before_proj = (operations.Linear(hidden, hidden, bias=True, dtype=dtype, device=device)
                            if first else None)
        self.after_proj = operations.Linear(hidden, hidden, bias=True, dtype=dtype, device=device)


class SanaControlNet(nn.Module):
    """The control branch of a Sana ControlNet; `config.depth` is the number of copied blocks (7 when released).

    Timestep and caption embedding are the DiT's own (`SanaDiT.embed_time` / `embed_text`, same attribute names).
    `operations=None` means torch.nn, and inputs are then cast to `dtype`, as in SanaDiT.
    """

    embed_time = SanaDiT.embed_time
    embed_text = SanaDiT.embed_text

    def __init__(self, config: SanaDiTConfig, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = cfg = config
        self.dtype = dtype if dtype is not None else torch.float32
        self.cast_inputs = operations is None
        ops = operations if operations is not None else nn
        kw = {"dtype": dtype, "device": device, "operations": ops}
        build_input_stage(self, cfg, False, **kw)  # no released ControlNet is built on Sprint: no cfg_embedder
        self.controlnet = nn.ModuleList([ControlBlock(cfg, i == 0, **kw) for i in range(cfg.depth)])

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                attention_mask: torch.Tensor | None = None, transformer_options: dict | None = None,
                **kwargs) -> dict:
        """Block residuals for the DiT.

        x: [B, 32, h, w] noisy raw latent (as the DiT gets it); hint: [B, 32, h, w] DC-AE latent of the control image
        times the VAE scaling factor 0.41407; timesteps: [B] sigma * 1000; context: [B, T, 2304]; attention_mask:
        [B, T] 0/1 or None. Returns {CONTROL_KEY: [depth tensors [B, h*w, C]]}, unscaled (the caller applies the
        conditioning strength), in the order the DiT adds them.
        """
        if self.cast_inputs:
            x, hint, context = x.to(self.dtype), hint.to(self.dtype), context.to(self.dtype)
        dtype, batch = x.dtype, x.shape[0]
        h, w = x.shape[-2] // self.config.patch_size, x.shape[-1] // self.config.patch_size
        pe = build_position_encoding(self.config, h, w, device=x.device, dtype=dtype, timesteps=timesteps)
        embed = self.x_embedder["proj"]
        tokens = pe.add_to_tokens(embed(x).flatten(2).transpose(1, 2))
        control = pe.add_to_tokens(embed(hint.to(dtype)).flatten(2).transpose(1, 2))
        tokens = tokens + self.controlnet[0].before_proj(control)
        t0 = self.t_block(self.embed_time(timesteps.to(x.device), None, batch, dtype))
        y, text_bias = self.embed_text(context, attention_mask, dtype)
        residuals = []
        for block in self.controlnet:
            tokens = block.copied_block(tokens, y, t0, text_bias, (h, w), rotate=pe.rotate)
            residuals.append(block.after_proj(tokens))
        return {CONTROL_KEY: residuals}


def _split_diffusers(sd: dict, source: str) -> dict:
    """diffusers SanaControlNetModel keys -> NVlabs keys (the blocks through models/dit_checkpoint.py's tables)."""
    control, rest = {}, {}
    for key, tensor in sd.items():
        if key.startswith(DIFFUSERS_INPUT):
            control[NVLABS_BEFORE + key[len(DIFFUSERS_INPUT):]] = tensor
        elif key.startswith(DIFFUSERS_AFTER):
            index, name = key[len(DIFFUSERS_AFTER):].split(".", 1)
            control[f"{NVLABS_PREFIX}{index}.after_proj.{name}"] = tensor
        else:
            rest[key] = tensor
    for key, tensor in diffusers_to_original(rest, source).items():
        if key.startswith("blocks."):
            index, name = key[len("blocks."):].split(".", 1)
            key = f"{NVLABS_PREFIX}{index}.copied_block.{name}"
        control[key] = tensor
    return control


def controlnet_config(sd: dict, diffusers_config: dict | None, pos_embed, source: str, **overrides) -> SanaDiTConfig:
    """Detect the ControlNet's config from its weights: hidden size, copied-block count, qk-norm, position encoding
    (`pos_embed` of an NVlabs file, or `sample_size` / `interpolation_scale` of a diffusers config.json)."""
    weight = sd["x_embedder.proj.weight"]
    hidden = weight.shape[0]
    depth = len({k.split(".")[1] for k in sd if k.startswith(NVLABS_PREFIX) and ".after_proj." in k})
    qk_norm = f"{NVLABS_PREFIX}0.copied_block.attn.q_norm.weight" in sd
    sample_size, use_pe, interpolation = _pe_settings(pos_embed, hidden, source)
    heads = CROSS_HEADS_BY_HIDDEN.get(hidden)
    if diffusers_config is not None:
        sample_size = diffusers_config.get("sample_size", sample_size)
        use_pe = diffusers_config.get("interpolation_scale") is not None
        interpolation = float(diffusers_config.get("interpolation_scale") or 1.0)
        heads = diffusers_config.get("num_cross_attention_heads", heads)
    fields = {"in_channels": weight.shape[1], "patch_size": weight.shape[-1], "qk_norm": qk_norm,
              "cross_norm": f"{NVLABS_PREFIX}0.copied_block.cross_attn.q_norm.weight" in sd,
              "mlp_ratio": sd[f"{NVLABS_PREFIX}0.copied_block.mlp.point_conv.conv.weight"].shape[1] / hidden}
    if heads is not None:
        fields["num_cross_heads"] = heads
    cfg = variant_config("1.5" if qk_norm else "1.0", hidden, sample_size or DEFAULT_SAMPLE_SIZE, depth,
                         **fields, **overrides)
    return cfg.replace(use_pe=use_pe, pe_interpolation=interpolation if use_pe else 1.0,
                       variant=f"Sana ControlNet, hidden {hidden}, {depth} copied blocks")


def load_controlnet_state_dict(path, **overrides) -> tuple[dict, SanaDiTConfig]:
    """Read a ControlNet file or diffusers folder -> (state dict with NVlabs control-branch keys, detected config).

    The NVlabs file holds the whole base DiT as well; only the embedders and `controlnet.*` are kept.
    """
    source = str(path)
    raw, diffusers_config = read_checkpoint(path)
    sd = unwrap_state_dict(raw)
    if NVLABS_SIGNATURE in sd:
        pos_embed, diffusers_config = sd.get("pos_embed"), None
        sd = {k: v for k, v in sd.items() if k.startswith((NVLABS_PREFIX, *BASE_PREFIXES))}
        layout = "original"
    elif DIFFUSERS_SIGNATURE in sd:
        sd, pos_embed, layout = _split_diffusers(sd, source), None, "diffusers"
    else:
        raise ValueError(f"{source}: no ControlNet keys found ({len(sd)} entries; first: {', '.join(list(sd)[:4])}); "
                         f"expected {EXPECTED}. Put Sana ControlNet files in models/controlnet.")
    cfg = controlnet_config(sd, diffusers_config, pos_embed, source, **overrides)
    logger.info("Sana ControlNet %s: %s layout, %s", source, layout, cfg.variant)
    return sd, cfg


def load_controlnet(path, dtype: torch.dtype = torch.float32, device="cpu", **overrides) -> SanaControlNet:
    """Load a Sana ControlNet (NVlabs .pth or diffusers folder) as a `SanaControlNet` in eval mode."""
    sd, cfg = load_controlnet_state_dict(path, **overrides)
    with torch.device("meta"):
        model = SanaControlNet(cfg, dtype=dtype)
    model.load_state_dict({k: v.to(dtype=dtype, device=device) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()
