"""The Sana linear DiT (Sana 1.0, 1.5 and Sprint; 512 px to 4K) as one module with the original NVlabs parameter names.

Sources: NVlabs/Sana `diffusion/model/nets/sana_multi_scale.py` (SanaMS / SanaMSCM forward), `sana_blocks.py`;
diffusers `models/transformers/sana_transformer.py` (SanaTransformer2DModel). Architecture and per-variant settings:
docs/ARCHITECTURE.md §6.2-6.3 and §8. Arxiv: Sana 2410.10629, Sana 1.5 2501.18427, Sana-Sprint 2503.09641.

Conventions (docs/ARCHITECTURE.md §1): `forward` takes timesteps = sigma * 1000 for every variant. Non-Sprint models
truncate
them to integers before the embedding (NVlabs `timestep.long()`); Sprint divides by 1000 (NVlabs
`timestep_norm_scale_factor`) and embeds `guidance` (the CFG scale) times 0.1 (NVlabs `cfg_embed_scale`). The output
is the flow velocity v = noise - x0.
"""

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .dit_blocks import (MASK_FILL, MODULATION_CHUNKS, NORM_EPS, REFERENCE_NUMERICS, CaptionEmbedder, FinalLayer,
                         SanaBlock, TimestepEmbedder)
from .pos_embed import build_position_encoding
from .rope import ENCODINGS, OVERRIDE_KEY, RopeConfig

# Gemma-2-2b hidden size: caption channels of every released model (NVlabs configs `caption_channels`).
CAPTION_CHANNELS = 2304
# DC-AE f32c32 latent channels (in = out, `pred_sigma=False`).
LATENT_CHANNELS = 32
# `linear_head_dim` of the linear self-attention (NVlabs SanaMSBlock).
LINEAR_HEAD_DIM = 32
# GLU hidden width h = int(C * 2.5) (NVlabs configs `mlp_ratio`).
MLP_RATIO = 2.5
# Cross-attention heads by hidden size: not stored in the weights (NVlabs SanaMS_600M_P1_D28 / SanaMS_1600M_P1_D20).
CROSS_HEADS_BY_HIDDEN = {1152: 16, 2240: 20}
# DC-AE f32 pixels per latent token, and the latent side of the 1024 px training grid (NVlabs `input_size`).
PIXELS_PER_LATENT = 32
DEFAULT_SAMPLE_SIZE = 32
# NVlabs Sprint: timestep_norm_scale_factor 1000 and cfg_embed_scale 0.1 (SanaSprint_*_scm_ladd.yaml).
SPRINT_TIMESTEP_SCALE = 1000.0
SPRINT_GUIDANCE_SCALE = 0.1
# Sprint guidance when none is given: diffusers SanaSprintPipeline `guidance_scale` default and the Sprint docs.
DEFAULT_SPRINT_GUIDANCE = 4.5
REFERENCES = tuple(REFERENCE_NUMERICS)
# transformer_options key: block indices whose self-attention is replaced by the identity (PAG, docs/ARCHITECTURE.md
# §12.6).
PAG_LAYERS_KEY = "sana_pag_layers"
# PAG layers of the official configs: [8] for 1.6B (Sana_1600M_img1024.yaml), [14] from sana_base.yaml for 600M.
PAG_DEFAULT_LAYERS = {2240: (8,), 1152: (14,)}
# ComfyUI `control` dict entry holding ControlNet block residuals [B, N, C] (models/controlnet.py).
CONTROL_KEY = "input"


@dataclass
class SanaDiTConfig:
    """Architecture and numerics of one Sana DiT. Defaults: Sana 1.6B at 1024 px (NVlabs SanaMS_1600M_P1_D20).

    sample_size / base_size: side of the training latent grid (16, 32, 64, 128 for 512 px .. 4K).
    flow_shift: the NVlabs default sampling shift of the variant (docs/ARCHITECTURE.md §6.3).
    pos_encoding: None (follow `use_pe`: "sincos" or "none") or "rope"; rope: its RopeConfig (models/rope.py; a dict
    is converted, None means theta 10000 on the sample_size x sample_size training grid).
    reference: "nvlabs" (default: eps 1e-8, cross-norm eps 1e-6, timestep truncation, fp32 Sprint cross-attention)
    or "diffusers" (eps 1e-15, cross-norm eps 1e-5, float timesteps).
    """

    hidden_size: int = 2240
    depth: int = 20
    num_cross_heads: int = 20
    linear_head_dim: int = LINEAR_HEAD_DIM
    in_channels: int = LATENT_CHANNELS
    out_channels: int = LATENT_CHANNELS
    patch_size: int = 1
    caption_channels: int = CAPTION_CHANNELS
    mlp_ratio: float = MLP_RATIO
    qk_norm: bool = False
    cross_norm: bool = False
    cross_attn_type: str = "flash"
    guidance_embeds: bool = False
    guidance_embed_scale: float = SPRINT_GUIDANCE_SCALE
    timestep_norm_scale_factor: float = 1.0
    sample_size: int = DEFAULT_SAMPLE_SIZE
    use_pe: bool = False
    pe_interpolation: float = 1.0
    base_size: int = DEFAULT_SAMPLE_SIZE
    pos_encoding: str | None = None
    rope: RopeConfig | None = None
    flow_shift: float = 3.0
    variant: str = "Sana 1.6B 1024px"
    reference: str = "nvlabs"

    def __post_init__(self):
        if self.hidden_size % self.linear_head_dim:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of linear_head_dim "
                             f"{self.linear_head_dim}")
        if self.hidden_size % self.num_cross_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_cross_heads "
                             f"{self.num_cross_heads}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got '{self.reference}'")
        if self.cross_attn_type not in ("flash", "vanilla"):
            raise ValueError(f"cross_attn_type must be 'flash' or 'vanilla', got '{self.cross_attn_type}'")
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1, got {self.depth}")
        from_use_pe = "sincos" if self.use_pe else "none"  # pos_encoding None follows use_pe (released checkpoints)
        if self.pos_encoding not in (None, from_use_pe, "rope") or (self.pos_encoding == "rope" and self.use_pe):
            raise ValueError(f"pos_encoding '{self.pos_encoding}' with use_pe={self.use_pe}: expected one of "
                             f"{ENCODINGS}, None or '{from_use_pe}' as use_pe says, and use_pe False for 'rope'")
        if self.pos_encoding == "rope" and not isinstance(self.rope, RopeConfig):
            rope = {"head_dim": self.linear_head_dim, "train_grid": (self.sample_size,) * 2, **(self.rope or {})}
            self.rope = RopeConfig(**{**rope, "train_grid": tuple(rope["train_grid"])})
        if self.pos_encoding == "rope" and self.rope.head_dim != self.linear_head_dim:
            raise ValueError(f"rope.head_dim {self.rope.head_dim} must equal linear_head_dim {self.linear_head_dim}")

    def replace(self, **changes) -> "SanaDiTConfig":
        """A copy with some fields changed (e.g. `cfg.replace(reference="diffusers")`)."""
        return dataclasses.replace(self, **changes)


# The released transformers (docs/ARCHITECTURE.md §6); detection picks an entry, then reads the depth from the
# weights. Keys: family, hidden size, training latent side.
_FAMILY_FIELDS = {
    "1.0": {},
    "1.5": {"qk_norm": True, "cross_norm": True},
    "Sprint": {"qk_norm": True, "cross_norm": True, "cross_attn_type": "vanilla", "guidance_embeds": True,
               "timestep_norm_scale_factor": SPRINT_TIMESTEP_SCALE},
}
VARIANTS = {
    ("1.0", 1152, 16): {"depth": 28, "flow_shift": 3.0},
    ("1.0", 1152, 32): {"depth": 28, "flow_shift": 4.0},  # NVlabs Sana_600M_img1024.yaml; diffusers writes 3.0
    ("1.0", 2240, 16): {"depth": 20, "flow_shift": 3.0},
    ("1.0", 2240, 32): {"depth": 20, "flow_shift": 3.0},
    ("1.0", 2240, 64): {"depth": 20, "flow_shift": 3.0, "use_pe": True, "pe_interpolation": 1.0},
    ("1.0", 2240, 128): {"depth": 20, "flow_shift": 6.0, "use_pe": True, "pe_interpolation": 2.0},
    ("1.5", 2240, 32): {"depth": 20, "flow_shift": 3.0},  # 1.5 4.8B: depth 60, same table entry otherwise
    ("Sprint", 1152, 32): {"depth": 28, "flow_shift": 3.0},  # Sprint samples with sCM/TrigFlow; shift unused
    ("Sprint", 2240, 32): {"depth": 20, "flow_shift": 3.0},
}
# Released depths per hidden size and the names the model zoo uses (NVlabs asset/docs/model_zoo.md).
_SIZE_NAMES = {(1152, 28): "0.6B", (2240, 20): "1.6B", (2240, 60): "4.8B"}
_CLASS_NAMES = {1152: "0.6B", 2240: "1.6B"}
_RES_NAMES = {16: "512px", 32: "1024px", 64: "2Kpx", 128: "4Kpx"}


def variant_name(family: str, hidden_size: int, sample_size: int, depth: int) -> str:
    """Human-readable name; a depth no release has is reported as such ("1.6B-class (hidden 2240), 2 blocks")."""
    res = _RES_NAMES.get(sample_size, f"{sample_size * PIXELS_PER_LATENT}px")
    size = _SIZE_NAMES.get((hidden_size, depth))
    if size is not None:
        return f"Sana {family} {size} {res}"
    return f"Sana {family} {res}, {_CLASS_NAMES.get(hidden_size, '?')}-class (hidden {hidden_size}), {depth} blocks"


def variant_config(family: str, hidden_size: int, sample_size: int, depth: int | None = None,
                   **overrides) -> SanaDiTConfig:
    """Config of a released variant (family "1.0" | "1.5" | "Sprint") with the depth read from the weights.

    A (family, hidden, sample_size) outside the table is still built (shift 3.0, no PE) and named honestly;
    `overrides` set any field (e.g. `num_cross_heads` from a diffusers config.json, `reference`).
    """
    if family not in _FAMILY_FIELDS:
        raise ValueError(f"unknown Sana family '{family}'; expected one of {tuple(_FAMILY_FIELDS)}")
    entry = VARIANTS.get((family, hidden_size, sample_size), {"depth": depth or 1, "flow_shift": 3.0})
    depth = depth or entry["depth"]
    heads = overrides.pop("num_cross_heads", CROSS_HEADS_BY_HIDDEN.get(hidden_size))
    if heads is None:
        raise ValueError(f"no cross-attention head count is known for hidden size {hidden_size} "
                         f"(known: {sorted(CROSS_HEADS_BY_HIDDEN)}); pass num_cross_heads explicitly")
    fields = {**_FAMILY_FIELDS[family], **entry, "depth": depth, "hidden_size": hidden_size, "num_cross_heads": heads,
              "sample_size": sample_size, "base_size": sample_size,
              "variant": variant_name(family, hidden_size, sample_size, depth)}
    return SanaDiTConfig(**{**fields, **overrides})


def prepare_text_mask(mask: torch.Tensor | None, batch: int, tokens: int, device) -> torch.Tensor | None:
    """Normalise a caption mask to [B, T] bool, or None when every token is kept.

    mask: [B', T'] 0/1 (any dtype) or None. A batch of 1 or a divisor of B is repeated (NVlabs `mask.repeat`); a
    mask shorter than T is padded with ones, a longer one truncated (ComfyUI `ConditioningConcat` edits only the
    tensor).
    """
    if mask is None:
        return None
    mask = mask.reshape(mask.shape[0], -1).to(device=device) != 0
    if mask.shape[0] != batch:
        if batch % mask.shape[0]:
            raise ValueError(f"attention_mask batch {mask.shape[0]} does not divide the latent batch {batch}")
        mask = mask.repeat(batch // mask.shape[0], 1)
    if mask.shape[1] < tokens:
        mask = torch.cat([mask, mask.new_ones(batch, tokens - mask.shape[1])], dim=1)
    mask = mask[:, :tokens]
    return None if bool(mask.all()) else mask


def build_input_stage(module: nn.Module, cfg: SanaDiTConfig, guidance: bool, dtype=None, device=None,
                      operations=None) -> None:
    """Give `module` the DiT's input stage under the original key names: `x_embedder` (patch conv), `t_embedder`,
    `cfg_embedder` (Sprint's guidance embedding, or None), `t_block` (adaLN-single), `y_embedder` (caption MLP) and
    `attention_y_norm`. Shared by SanaDiT and the ControlNet branch (models/controlnet.py), which copy it."""
    ops, hidden, patch = operations, cfg.hidden_size, cfg.patch_size
    kw = {"dtype": dtype, "device": device, "operations": ops}
    module.x_embedder = nn.ModuleDict({"proj": ops.Conv2d(cfg.in_channels, hidden, patch, stride=patch, bias=True,
                                                          dtype=dtype, device=device)})
    module.t_embedder = TimestepEmbedder(hidden, **kw)
    module.cfg_embedder = TimestepEmbedder(hidden, **kw) if guidance else None
    module.t_block = nn.Sequential(
        nn.SiLU(), ops.Linear(hidden, MODULATION_CHUNKS * hidden, bias=True, dtype=dtype, device=device))
    module.y_embedder = CaptionEmbedder(cfg.caption_channels, hidden, **kw)
    module.attention_y_norm = ops.RMSNorm(hidden, eps=NORM_EPS, elementwise_affine=True, dtype=dtype, device=device)


class SanaDiT(nn.Module):
    """Sana linear DiT. Attribute names reproduce the original checkpoint keys (`x_embedder.proj`, `t_embedder`,
    `cfg_embedder` (Sprint), `t_block.1`, `y_embedder.y_proj`, `attention_y_norm`, `blocks.N`, `final_layer`).

    Built either from `config=SanaDiTConfig(...)` or from the config fields as keyword arguments (ComfyUI splats its
    `unet_config`, which also carries `image_model`). `operations=None` means torch.nn; the module then casts its
    inputs to `dtype` as NVlabs does, while with injected operations (comfy.ops) the host chooses the compute dtype.
    """

    def __init__(self, config: SanaDiTConfig | None = None, dtype=None, device=None, operations=None,
                 image_model: str | None = None, **config_fields):
        super().__init__()
        cfg = config if config is not None else SanaDiTConfig(**config_fields)
        self.config = cfg
        self.dtype = dtype if dtype is not None else torch.float32
        self.cast_inputs = operations is None
        ops = operations if operations is not None else nn
        kw = {"dtype": dtype, "device": device, "operations": ops}
        hidden, patch = cfg.hidden_size, cfg.patch_size
        build_input_stage(self, cfg, cfg.guidance_embeds, **kw)
        self.blocks = nn.ModuleList([SanaBlock(cfg, **kw) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(hidden, patch * patch * cfg.out_channels, **kw)

    def embed_time(self, timesteps: torch.Tensor, guidance, batch: int, dtype) -> torch.Tensor:
        """timesteps: [B] or scalar, sigma * 1000 -> t [B, C] (timestep embedding, plus Sprint's guidance embedding)."""
        cfg = self.config
        t = timesteps.reshape(-1).float().expand(batch) if timesteps.numel() == 1 else timesteps.reshape(-1).float()
        if cfg.timestep_norm_scale_factor != 1.0:
            t = t / cfg.timestep_norm_scale_factor  # Sprint: the flow time in [0, 1], fractional
        elif cfg.reference == "nvlabs":
            t = t.long().float()  # NVlabs SanaMS.forward truncates the model time to an integer
        emb = self.t_embedder(t, dtype)
        if self.cfg_embedder is not None:
            g = DEFAULT_SPRINT_GUIDANCE if guidance is None else guidance
            g = torch.as_tensor(g, dtype=torch.float32, device=t.device)
            g = g.reshape(-1).expand(batch) if g.numel() == 1 else g.reshape(-1)
            emb = emb + self.cfg_embedder(g * cfg.guidance_embed_scale, dtype)
        return emb

    def embed_text(self, context: torch.Tensor, attention_mask, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """context: [B, T, 2304]; attention_mask: [B', T'] 0/1 or None -> (y [B, T*, C], bias [B, 1, 1, T*] or None).

        Caption positions masked in every batch row past the last kept token are dropped: their softmax weight is
        exactly 0 (exp(-10000) underflows), so this changes no value and saves the work.
        """
        batch = context.shape[0]
        mask = prepare_text_mask(attention_mask, batch, context.shape[1], context.device)
        if mask is not None:
            keep = int(mask.any(dim=0).nonzero().max()) + 1 if bool(mask.any()) else context.shape[1]
            context, mask = context[:, :keep], mask[:, :keep]
        y = self.attention_y_norm(self.y_embedder(context.to(dtype)))
        if mask is None or bool(mask.all()):
            return y, None
        bias = (~mask).to(dtype) * MASK_FILL
        return y, bias[:, None, None, :]

    def unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: [B, h*w, p*p*out] -> [B, out, h*p, w*p] (NVlabs einsum nhwpqc->nchpwq)."""
        p, c = self.config.patch_size, self.config.out_channels
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                attention_mask: torch.Tensor | None = None, guidance=None, transformer_options: dict | None = None,
                **kwargs) -> torch.Tensor:
        """Predict the flow velocity.

        x: [B, 32, h, w] raw latent; timesteps: [B] sigma * 1000; context: [B, T, 2304] text states;
        attention_mask: [B, T] 0/1 (None = all kept); guidance: CFG scale for Sprint (float or [B]; default 4.5);
        transformer_options: ComfyUI per-call options (`rope_options` from ScaleROPE and `sana_pos_encoding` from
        SanaPositionEncoding reach the position encoding; `sana_pag_layers`, block indices whose self-attention is
        the identity, is PAG's perturbed pass).
        control: ComfyUI's ControlNet output; residual i of `control[CONTROL_KEY]` is added after block i + 1
        (diffusers SanaTransformer2DModel `controlnet_block_samples`). Other keyword arguments are ignored.
        Returns [B, 32, h, w].
        """
        options = transformer_options or {}
        if self.cast_inputs:
            x, context = x.to(self.dtype), context.to(self.dtype)
        dtype, batch = x.dtype, x.shape[0]
        h, w = x.shape[-2] // self.config.patch_size, x.shape[-1] // self.config.patch_size
        pe = build_position_encoding(self.config, h, w, device=x.device, dtype=dtype, timesteps=timesteps,
                                     rope_options=options.get("rope_options"), overrides=options.get(OVERRIDE_KEY))
        tokens = pe.add_to_tokens(self.x_embedder["proj"](x).flatten(2).transpose(1, 2))
        t = self.embed_time(timesteps.to(x.device), guidance, batch, dtype)
        t0 = self.t_block(t)
        y, text_bias = self.embed_text(context, attention_mask, dtype)
        perturbed = options.get(PAG_LAYERS_KEY, ())
        residuals = (kwargs.get("control") or {}).get(CONTROL_KEY) or ()
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, y, t0, text_bias, (h, w), rotate=pe.rotate, identity_attention=index in perturbed,
                           transformer_options=options)
            if 0 < index <= len(residuals) and residuals[index - 1] is not None:
                tokens = tokens + residuals[index - 1].to(tokens.dtype)
        return self.unpatchify(self.final_layer(tokens, t), h, w)


def pag_guidance(denoised: torch.Tensor, cond_denoised: torch.Tensor, perturbed: torch.Tensor,
                 scale: float) -> torch.Tensor:
    """CFG + PAG (NVlabs dpm_solver model_wrapper "classifier-free_PAG"): cfg + p * (cond - perturbed).

    The official formula eps_u + g (eps_c - eps_u) + p (eps_c - eps_ptb) is affine in the velocity with weights
    summing to 1, so it holds unchanged for x0 = x - sigma * v. All tensors: [B, 32, h, w] x0 estimates.
    """
    return denoised + (cond_denoised - perturbed) * scale
