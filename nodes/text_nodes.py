"""Text-encoder nodes: SanaTextEncoderLoader (Gemma-2 + optional ByT5 glyph encoder + projector → CLIP) and
SanaTextEncode (explicit CHI, glyph-text and null-prompt mask options).

The CLIP also works with stock CLIPTextEncode: CHI (NVlabs text) on every non-empty prompt, none on the empty prompt
"" (the reference pipelines' negative); see nodes/clip_adapter.py.
"""

from pathlib import Path

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..models.text_encoder import MASK_POLICIES, load_text_encoder, null_prompt_mask, shorten
from .clip_adapter import CHI_OPTION, GLYPH_TEXT_OPTION, LOWERCASE_OPTION, TOKENS_KEY, make_clip
from .common import CATEGORY, resolve_model_file

FOLDER = "text_encoders"
NONE = "none"
DEVICES = ["default", "cpu"]
CHI_CHOICES = ["auto", "nvlabs", "diffusers", "none", "custom"]
GLYPH_SOURCES = ["quoted text", "glyph_text input", "off"]
HF_CONFIG = "config.json"


def text_encoder_choices() -> list[str]:
    """Files in text_encoders; the weight shards of a Hugging Face folder appear once, as ``folder/``."""
    entries = []
    for name in folder_paths.get_filename_list(FOLDER):
        path, parent = folder_paths.get_full_path(FOLDER, name), Path(name).parent
        in_hf_folder = path is not None and parent != Path(".") and (Path(path).parent / HF_CONFIG).is_file()
        entry = parent.as_posix() + "/" if in_hf_folder else name
        if entry not in entries:
            entries.append(entry)
    return entries


def resolve_text_encoder(name: str) -> Path:
    """Path of a text_encoders entry: a file, or a Hugging Face folder for entries ending in '/'."""
    if not name.endswith("/"):
        return resolve_model_file(FOLDER, name)
    for root in folder_paths.get_folder_paths(FOLDER):
        if (Path(root) / name / HF_CONFIG).is_file():
            return Path(root) / name
    raise ValueError(f"Model folder '{name}' was not found in {folder_paths.get_folder_paths(FOLDER)}.")


def devices_and_dtype(device: str):
    """(load device, offload device, Gemma dtype): bf16 where supported, else fp32; never fp16 (Gemma-2 overflows)."""
    if device == "cpu":
        load = offload = torch.device("cpu")
    else:
        load, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
    dtype = mm.text_encoder_dtype(load)
    if dtype not in (torch.float32, torch.bfloat16):
        dtype = torch.bfloat16 if mm.should_use_bf16(load) else torch.float32
    return load, offload, dtype


class SanaTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = text_encoder_choices()
        return io.Schema(
            node_id="SanaTextEncoderLoader",
            display_name="Load Sana Text Encoder",
            category=CATEGORY + "/loaders",
            description="Loads Gemma-2-2b-it for Sana, optionally with a ByT5 glyph encoder and its projector that add "
                        "rendered-text tokens for quoted text. Works with the stock CLIP Text Encode node. Files in "
                        "models/text_encoders: Comfy-Org's gemma_2_2b_it_elm_bf16.safetensors (or its _fp8_scaled "
                        "sibling), the Efficient-Large-Model gemma-2-2b-it folder, or a diffusers pipeline's "
                        "text_encoder/ folder with its tokenizer/ beside it. Lumina 2's gemma_2_2b_fp16.safetensors "
                        "is probably the base Gemma, not -it: it loads with a warning but follows prompts worse.",
            inputs=[
                io.Combo.Input("llm_name", options=files, tooltip="Gemma-2-2b-it: gemma_2_2b_it_elm_bf16.safetensors "
                               "(tokenizer inside; bf16 or _fp8_scaled) or a Hugging Face / pipeline folder (shown as "
                               "'name/')."),
                io.Combo.Input("byt5_name", options=[NONE] + files, default=NONE, tooltip="ByT5 glyph encoder, e.g. "
                               "byt5_small_glyphxl_fp16.safetensors or a google/byt5-small folder; 'none' turns the "
                               "glyph branch off."),
                io.Combo.Input("projector_name", options=[NONE] + files, default=NONE, tooltip="Glyph projector "
                               "(ByT5 → Gemma space). 'none' uses projector keys inside the loaded files if present; "
                               "without a projector the glyph branch stays off."),
                io.Combo.Input("device", options=DEVICES, default="default", tooltip="'cpu' keeps the text encoder "
                               "on the CPU in float32; 'default' follows ComfyUI's text-encoder placement."),
            ],
            outputs=[io.Clip.Output(tooltip="The Sana text encoder, usable by CLIP Text Encode and Sana Text Encode. "
                                    "The node shows the glyph branch state and any warning about the files.")],
        )

    @classmethod
    def execute(cls, llm_name, byt5_name, projector_name, device) -> io.NodeOutput:
        load, offload, dtype = devices_and_dtype(device)
        encoder = load_text_encoder(
            resolve_text_encoder(llm_name),
            byt5_path=None if byt5_name == NONE else resolve_text_encoder(byt5_name),
            projector_path=None if projector_name == NONE else resolve_text_encoder(projector_name),
            dtype=dtype, device=offload,
        )
        shown = "\n".join([*encoder.load_notes, encoder.glyph_status])
        return io.NodeOutput(make_clip(encoder, load, offload), ui=ui.PreviewText(shown))


def tokenizer_options(chi, custom_chi, glyph_source, glyph_text, lowercase) -> dict:
    """The CLIP tokenizer options (nodes/clip_adapter.py) for SanaTextEncode's inputs."""
    if chi == "custom" and not custom_chi.strip():
        raise ValueError("chi is 'custom' but custom_chi is empty; write the instruction text or pick another chi.")
    return {
        CHI_OPTION: [custom_chi] if chi == "custom" else chi,
        GLYPH_TEXT_OPTION: {"quoted text": None, "off": ""}.get(glyph_source, glyph_text),
        LOWERCASE_OPTION: lowercase,
    }


def with_mask_policy(conditioning, positive, policy: str):
    """CONDITIONING whose attention masks follow ``policy`` ("nvlabs" copies the positive prompt's mask)."""
    if policy == "diffusers":
        return conditioning
    if not positive or "attention_mask" not in positive[0][1]:
        raise ValueError("mask_policy 'nvlabs' needs the positive CONDITIONING (from a Sana text encoder) connected.")
    donor = positive[0][1]["attention_mask"]
    return [[c, {**d, "attention_mask": null_prompt_mask(d["attention_mask"], donor, policy)}] for c, d in conditioning]


class SanaTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaTextEncodeAdvanced",
            display_name="Sana Text Encode (Advanced)",
            category=CATEGORY + "/conditioning",
            description="Encodes a prompt with explicit Sana options: the CHI instruction, the glyph text rendered by "
                        "the ByT5 branch, and the mask of the unconditional branch (NVlabs or diffusers).",
            inputs=[
                io.Clip.Input("clip", tooltip="A CLIP from Load Sana Text Encoder."),
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="The prompt."),
                io.Combo.Input("chi", options=CHI_CHOICES, default="auto", tooltip="Complex Human Instruction: auto "
                               "= NVlabs text for non-empty prompts and none for an empty one; 'none' for negative "
                               "prompts; 'diffusers' is the single-quoted variant; 'custom' uses custom_chi."),
                io.String.Input("custom_chi", multiline=True, default="", tooltip="Instruction text prepended when "
                                "chi is 'custom' (end it with 'User Prompt: ' like the official text)."),
                io.Combo.Input("glyph_source", options=GLYPH_SOURCES, default="quoted text", tooltip="Text for the "
                               "ByT5 glyph branch: quoted spans of the prompt, the glyph_text input, or none."),
                io.String.Input("glyph_text", multiline=True, default="", tooltip="Text to render, one span per line "
                                "(used when glyph_source is 'glyph_text input')."),
                io.Boolean.Input("lowercase", default=False, tooltip="Lower-case the prompt as diffusers does; the "
                                 "official NVlabs code does not."),
                io.Combo.Input("mask_policy", options=list(MASK_POLICIES), default="diffusers", tooltip="For a "
                               "negative prompt: 'diffusers' keeps its own mask; 'nvlabs' uses the positive "
                               "prompt's mask like the official app (connect 'positive')."),
                io.Conditioning.Input("positive", optional=True, tooltip="The positive conditioning whose mask the "
                                      "'nvlabs' mask policy copies."),
            ],
            outputs=[
                io.Conditioning.Output(tooltip="Sana conditioning: Gemma tokens (+ projected glyph tokens) and mask."),
                io.String.Output(display_name="glyph_text", tooltip="The text given to the ByT5 glyph encoder."),
            ],
        )

    @classmethod
    def execute(cls, clip, text, chi, custom_chi, glyph_source, glyph_text, lowercase, mask_policy,
                positive=None) -> io.NodeOutput:
        options = tokenizer_options(chi, custom_chi, glyph_source, glyph_text, lowercase)
        tokens = clip.tokenize(text, tokenizer_options=options)
        if TOKENS_KEY not in tokens:
            raise ValueError("Sana Text Encode needs the CLIP of 'Load Sana Text Encoder'; this CLIP is another model.")
        conditioning = with_mask_policy(clip.encode_from_tokens_scheduled(tokens), positive, mask_policy)
        shown = tokens[TOKENS_KEY].glyph_prompts[0]
        return io.NodeOutput(conditioning, shown, ui=ui.PreviewText(shorten(shown) or "(no glyph text)"))


NODES = [SanaTextEncoderLoader, SanaTextEncode]
