"""SanaPositionEncoding: choose or override the position encoding of a Sana DiT at inference (models/rope.py).

The node clones the MODEL and writes its choice into `model_options["transformer_options"]["sana_pos_encoding"]`;
the DiT reads it on every call (`models.rope.resolve_encoding`). Core's ScaleROPE node keeps working alongside it: its
`rope_options` rescale the RoPE positions after this node's scaling.
"""

from comfy_api.latest import io

from ..models.rope import MODES, OVERRIDE_KEY, YARN_BETA_FAST, YARN_BETA_SLOW, resolve_encoding
from .common import CATEGORY

TIME_SCHEDULES = ["linear", "watershed"]
DEFAULT_WATERSHED = 0.3  # Lumina-Next sample script `scaling_watershed` (arXiv 2406.18583 §2.3)
MAX_BASE_SIZE = 512  # latent tokens per side: 16K px, far above any released Sana grid
MAX_INTERPOLATION = 16.0
MAX_BETA = 1024.0

MODE_TIP = (
    "model: the checkpoint's own encoding. none: switch the position encoding off. sincos: Sana 2K/4K absolute "
    "sin-cos, with the base size / interpolation below. rope: plain 2-D RoPE (extrapolates on larger grids). "
    "scaled: Seedream-style scaled RoPE (positions rescaled onto the training grid, centre-aligned). ntk: NTK-aware "
    "base scaling. yarn: YaRN per-frequency ramp plus attention temperature. time_aware: Lumina-Next, interpolation "
    "early in sampling and NTK extrapolation late. RoPE modes need a RoPE checkpoint, sincos a 2K/4K checkpoint."
)


class SanaPositionEncoding(io.ComfyNode):
    """Per-model position-encoding override (mode and its parameters)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SanaPositionEncoding",
            display_name="Sana Position Encoding",
            category=f"{CATEGORY}/model patches",
            description="Choose the position encoding of a Sana DiT for unseen resolutions: sin-cos interpolation "
                        "of the 2K/4K models, or plain / scaled / NTK / YaRN / time-aware RoPE for RoPE models.",
            inputs=[
                io.Model.Input("model", tooltip="A Sana DiT model from SanaDiTLoader."),
                io.Combo.Input("mode", options=list(MODES), default="model", tooltip=MODE_TIP),
                io.Int.Input("base_size", default=0, min=0, max=MAX_BASE_SIZE,
                             tooltip="sincos: grid side (latent tokens) that each axis is stretched to; 0 keeps "
                                     "the model's (64 for 2K, 128 for 4K)."),
                io.Float.Input("pe_interpolation", default=0.0, min=0.0, max=MAX_INTERPOLATION, step=0.1,
                               tooltip="sincos: positions are divided by this; 0 keeps the model's (1 for 2K, "
                                       "2 for 4K)."),
                io.Int.Input("train_height", default=0, min=0, max=MAX_BASE_SIZE,
                             tooltip="RoPE: training grid height in latent tokens (pixels / 32); 0 keeps the "
                                     "checkpoint's. Set it with train_width."),
                io.Int.Input("train_width", default=0, min=0, max=MAX_BASE_SIZE,
                             tooltip="RoPE: training grid width in latent tokens (pixels / 32); 0 keeps the "
                                     "checkpoint's."),
                io.Float.Input("yarn_beta_fast", default=YARN_BETA_FAST, min=0.0, max=MAX_BETA, step=0.5,
                               tooltip="yarn: frequencies with more rotations than this over the training grid "
                                       "are kept unscaled."),
                io.Float.Input("yarn_beta_slow", default=YARN_BETA_SLOW, min=0.0, max=MAX_BETA, step=0.5,
                               tooltip="yarn: frequencies with fewer rotations than this are fully interpolated."),
                io.Boolean.Input("yarn_temperature", default=True,
                                 tooltip="yarn: apply the attention temperature 0.1·ln(s)+1 (as a gain on the "
                                         "rotated attention numerator)."),
                io.Combo.Input("time_schedule", options=TIME_SCHEDULES, default="linear",
                               tooltip="time_aware: linear blends interpolation → NTK as the noise level falls; "
                                       "watershed switches at the fraction below (Lumina-Next)."),
                io.Float.Input("time_watershed", default=DEFAULT_WATERSHED, min=0.0, max=1.0, step=0.05,
                               tooltip="time_aware with watershed: fraction of the trajectory (from pure noise) "
                                       "that uses interpolation before switching to NTK."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the chosen position encoding.")],
        )

    @classmethod
    def execute(cls, model, mode, base_size, pe_interpolation, train_height, train_width, yarn_beta_fast,
                yarn_beta_slow, yarn_temperature, time_schedule, time_watershed) -> io.NodeOutput:
        if bool(train_height) != bool(train_width):
            raise ValueError(f"SanaPositionEncoding: train_height={train_height} and train_width={train_width}: set "
                             f"both (latent tokens, pixels / 32, e.g. 32 and 32 for 1024 px) or leave both at 0.")
        options = {
            "mode": mode, "base_size": base_size, "pe_interpolation": pe_interpolation,
            "train_grid": (train_height, train_width) if train_height and train_width else None,
            "yarn_beta_fast": yarn_beta_fast, "yarn_beta_slow": yarn_beta_slow, "yarn_temperature": yarn_temperature,
            "time_watershed": time_watershed if time_schedule == "watershed" else None,
        }
        config = getattr(model.get_model_object("diffusion_model"), "config", None)
        if not hasattr(config, "pos_encoding"):
            raise ValueError("SanaPositionEncoding: the model is not a Sana DiT (no position-encoding config); "
                             "connect the MODEL output of SanaDiTLoader.")
        resolve_encoding(config, options)  # raises now, not in the middle of sampling
        patched = model.clone()
        patched.model_options["transformer_options"][OVERRIDE_KEY] = options
        return io.NodeOutput(patched)


NODES = [SanaPositionEncoding]
