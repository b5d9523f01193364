"""The ExtraModels Sana nodes (city96 / lawrence-cj / Efficient-Large-Model ``ComfyUI_ExtraModels``) and their
counterparts in this package: node ids, widget orders, and Hugging Face ids → local model files.

Sources: the ExtraModels ``Sana/nodes.py`` widgets and the workflows NVlabs/Sana ships in ``asset/docs/ComfyUI/``
(``Sana_FlowEuler.json``, ``_2K.json``, ``_4K.json``) and ExtraModels ``examples/SANA-Sprint.json``. Local file names
are the README model table's (``scripts/fetch_models.py`` ``MODEL_SOURCES`` downloads them). One table per fact: the
converter (``compat/workflow_convert.py``) and the node-replacement registration (``nodes/__init__.py``) both read
these.
"""

import math

# Node ids registered by the ExtraModels Sana port; this package must never register any of them.
EXTRAMODELS_NODE_IDS = frozenset({
    "SanaCheckpointLoader", "SanaResolutionSelect", "SanaResolutionCond", "GemmaLoader", "SanaTextEncode",
    "GemmaTextEncode", "EmptySanaLatentImage", "EmptyDCAELatentImage", "ExtraVAELoader", "ScmModelSampling",
})

# SanaCheckpointLoader: widgets_values carry 2, 3 or 4 of these, in this order (older files have fewer).
CHECKPOINT_WIDGETS = ("ckpt_name", "model", "dtype", "enable_cfg_passthrough")
DTYPES = {"auto": "default", "FP32": "fp32", "FP16": "fp16", "BF16": "bf16"}  # ExtraModels dtype → weight_dtype

# Hugging Face repo id (as typed in ckpt_name) → file in models/diffusion_models/ (NVlabs checkpoints/<file>).
DIT_FILES = {
    "Efficient-Large-Model/Sana_1600M_1024px_BF16": "Sana_1600M_1024px_BF16.pth",
    "Efficient-Large-Model/Sana_1600M_1024px": "Sana_1600M_1024px.pth",
    "Efficient-Large-Model/Sana_1600M_1024px_MultiLing": "Sana_1600M_1024px_MultiLing.pth",
    "Efficient-Large-Model/Sana_1600M_512px": "Sana_1600M_512px.pth",
    "Efficient-Large-Model/Sana_1600M_512px_MultiLing": "Sana_1600M_512px_MultiLing.pth",
    "Efficient-Large-Model/Sana_600M_1024px": "Sana_600M_1024px_MultiLing.pth",
    "Efficient-Large-Model/Sana_600M_512px": "Sana_600M_512px_MultiLing.pth",
    "Efficient-Large-Model/Sana_1600M_2Kpx_BF16": "Sana_1600M_2Kpx_BF16.pth",
    "Efficient-Large-Model/Sana_1600M_4Kpx_BF16": "Sana_1600M_4Kpx_BF16.pth",
    "Efficient-Large-Model/SANA1.5_1.6B_1024px": "SANA1.5_1.6B_1024px.pth",
    "Efficient-Large-Model/SANA1.5_4.8B_1024px": "SANA1.5_4.8B_1024px.pth",
    "Efficient-Large-Model/Sana_Sprint_1.6B_1024px": "Sana_Sprint_1.6B_1024px.pth",
    "Efficient-Large-Model/Sana_Sprint_0.6B_1024px": "Sana_Sprint_0.6B_1024px.pth",
}
# ExtraModels config key (second widget) → the released file of that config, used when ckpt_name is not in DIT_FILES.
CONFIG_FILES = {
    "SanaMS_600M_P1_D28": "Sana_600M_1024px_MultiLing.pth",
    "SanaMS_1600M_P1_D20": "Sana_1600M_1024px_BF16.pth",
    "SanaMS_1600M_P1_D20_2K": "Sana_1600M_2Kpx_BF16.pth",
    "SanaMS_1600M_P1_D20_4K": "Sana_1600M_4Kpx_BF16.pth",
    "SanaSprint_1600M_P1_D20": "Sana_Sprint_1.6B_1024px.pth",
    "SanaSprint_600M_P1_D28": "Sana_Sprint_0.6B_1024px.pth",
}
DEFAULT_DIT_FILE = "Sana_1600M_1024px_BF16.pth"

# GemmaLoader model_name → entry in models/text_encoders/ (the Gemma-2-2b-it folder, listed with a trailing "/").
LLM_FOLDER = "gemma-2-2b-it/"
GEMMA_DEVICES = {"cuda": "default", "cpu": "cpu"}
# ExtraVAELoader vae_name → file in models/vae/. Sana 1.0 and 1.1 DC-AE share the encoder and latent space (1.1
# fine-tunes the decoder), so 1.0 names map to the 1.1 file of the README table.
VAE_FILE = "dc-ae-f32c32-sana-1.1/model.safetensors"
VAE_FILES = {
    "mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers": VAE_FILE,
    "mit-han-lab/dc-ae-f32c32-sana-1.0": VAE_FILE,
    "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers": "dc-ae-f32c32-sana-1.1-diffusers/",
    "mit-han-lab/dc-ae-f32c32-sana-1.1": VAE_FILE,
}

# SanaResolutionSelect "model" → the square side in pixels of that resolution class.
RESOLUTION_BASES = {"512px": 512, "1024px": 1024, "2K": 2048, "4K": 4096}
PIXELS_PER_LATENT = 32  # DC-AE f32: sizes snap to multiples of 32

# This package's widget orders (nodes/*.py schemas) for the nodes the converter writes.
TEXT_ENCODE_NODE = "SanaTextEncodeAdvanced"  # widgets: text, chi, custom_chi, glyph_source, glyph_text, lowercase,
TEXT_ENCODE_DEFAULTS = ("", "quoted text", "", False, "diffusers")  # … mask_policy (after text, chi)
POSITIVE_CHI, NEGATIVE_CHI = "nvlabs", "none"  # ExtraModels SanaTextEncode prepends CHI; GemmaTextEncode does not
SPRINT_SAMPLER, SPRINT_SCHEDULER = "sana_scm", "sana_sprint"
SCM_DEFAULT_GUIDANCE = 4.5  # ScmModelSampling cfg_scale default (ExtraModels)


def dit_file(widgets: list) -> tuple[str, str, str]:
    """(dit_name, weight_dtype, how) from SanaCheckpointLoader widgets_values of any arity (2, 3 or 4 values)."""
    values = dict(zip(CHECKPOINT_WIDGETS, widgets, strict=False))  # 2, 3 or 4 values
    ckpt = str(values.get("ckpt_name", ""))
    dtype = DTYPES.get(str(values.get("dtype", "auto")), "default")
    if ckpt in DIT_FILES:
        return DIT_FILES[ckpt], dtype, f"{ckpt!r} -> {DIT_FILES[ckpt]!r}"
    if ckpt.endswith((".pth", ".safetensors")):
        name = ckpt.replace("\\", "/").rsplit("/", 1)[-1]
        return name, dtype, f"local file {ckpt!r} -> {name!r}"
    config = str(values.get("model", ""))
    name = CONFIG_FILES.get(config, DEFAULT_DIT_FILE)
    return name, dtype, f"{ckpt!r} (config {config!r}) -> {name!r} (by config; check the file)"


def latent_size(model: str, ratio) -> tuple[int, int]:
    """(width, height) of SanaResolutionSelect(model, ratio): ratio = h/w, area ≈ base², both multiples of 32."""
    base = RESOLUTION_BASES.get(str(model), 1024)
    r = float(ratio)
    if not r > 0:
        raise ValueError(f"SanaResolutionSelect: ratio must be a positive h/w value such as '1.00', got {ratio!r}.")

    def snap(value: float) -> int:
        return max(PIXELS_PER_LATENT, PIXELS_PER_LATENT * round(value / PIXELS_PER_LATENT))

    return snap(base / math.sqrt(r)), snap(base * math.sqrt(r))


def text_encode_widgets(text: str, chi: str) -> list:
    """widgets_values of SanaTextEncodeAdvanced for ``text`` with the CHI choice ``chi``."""
    return [text, chi, *TEXT_ENCODE_DEFAULTS]


def _keep_output() -> list:
    return [{"new_idx": 0, "old_idx": 0}]


def _text_replacement(old: str, chi: str) -> dict:
    return {"new_node_id": TEXT_ENCODE_NODE, "old_node_id": old, "old_widget_ids": ["text"],
            "input_mapping": [{"new_id": "clip", "old_id": "GEMMA"}, {"new_id": "text", "old_id": "text"},
                              {"new_id": "chi", "set_value": chi}],
            "output_mapping": _keep_output()}


def _latent_replacement(old: str) -> dict:
    sizes = ["width", "height", "batch_size"]
    return {"new_node_id": "EmptySanaLatent", "old_node_id": old, "old_widget_ids": sizes,
            "input_mapping": [{"new_id": name, "old_id": name} for name in sizes], "output_mapping": _keep_output()}


# ComfyUI ≥ 0.14 node replacements (comfy_api/latest/_node_replace.py NodeReplace keyword arguments) for the nodes
# that map one to one; ScmModelSampling and the resolution nodes change the graph and need the converter script.
NODE_REPLACEMENTS = (
    {"new_node_id": "SanaDiTLoader", "old_node_id": "SanaCheckpointLoader",
     "old_widget_ids": list(CHECKPOINT_WIDGETS),
     "input_mapping": [{"new_id": "dit_name", "old_id": "ckpt_name"},
                       {"new_id": "weight_dtype", "set_value": "default"}],
     "output_mapping": _keep_output()},
    {"new_node_id": "SanaTextEncoderLoader", "old_node_id": "GemmaLoader",
     "old_widget_ids": ["model_name", "device", "dtype"],
     "input_mapping": [{"new_id": "llm_name", "set_value": LLM_FOLDER}, {"new_id": "byt5_name", "set_value": "none"},
                       {"new_id": "projector_name", "set_value": "none"}, {"new_id": "device", "set_value": "default"}],
     "output_mapping": _keep_output()},
    _text_replacement("SanaTextEncode", POSITIVE_CHI),
    _text_replacement("GemmaTextEncode", NEGATIVE_CHI),
    {"new_node_id": "SanaVAELoader", "old_node_id": "ExtraVAELoader",
     "old_widget_ids": ["vae_name", "vae_type", "dtype"],
     "input_mapping": [{"new_id": "vae_name", "set_value": VAE_FILE}, {"new_id": "tiling", "set_value": "auto"}],
     "output_mapping": _keep_output()},
    _latent_replacement("EmptySanaLatentImage"),
    _latent_replacement("EmptyDCAELatentImage"),
)


def register_node_replacements(node_replace) -> list[str]:
    """Register NODE_REPLACEMENTS through ComfyUI's ``comfy_api.latest.node_replace`` module (``register`` and
    ``NodeReplace``); returns the old ids registered. Registers replacements only, never a node with an old id."""
    for spec in NODE_REPLACEMENTS:
        node_replace.register(node_replace.NodeReplace(**spec))
    return [spec["old_node_id"] for spec in NODE_REPLACEMENTS]
