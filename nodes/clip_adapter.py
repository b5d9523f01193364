"""The Sana text encoder as a real ``comfy.sd.CLIP``, so stock CLIPTextEncode produces Sana conditioning.

Tokenizer and text-encoder classes for a ``ClipTarget`` (ComfyUI ``comfy/supported_models_base.py``, ``comfy/sd.py``
CLIP): tokenisation (CHI prefix, 300-token limit, quoted-text extraction) happens in ``tokenize_with_weights``;
``encode_token_weights`` runs Gemma-2 (+ ByT5 and the projector) and returns ``(cond [1, T, 2304], None,
{"attention_mask": mask [1, T]})``, so CONDITIONING is ``[[cond, {"pooled_output": None, "attention_mask": mask}]]``
with glyph tokens already projected and appended.

CHI and negative prompts: CLIPTextEncode cannot tell a positive from a negative prompt. The CLIP applies the NVlabs CHI
to every non-empty prompt and encodes the empty prompt "" (after stripping) without CHI, which is exactly how both
reference pipelines encode their default negative "". A non-empty negative prompt through CLIPTextEncode therefore gets
CHI; use SanaTextEncode with ``chi = none`` for it (or any other explicit choice). Options reach the tokenizer through
``clip.tokenize(text, tokenizer_options={...})`` with the ``*_OPTION`` keys below (or ``clip.set_tokenizer_option``).

Notices (prompt truncation, the glyph text sent to ByT5 or why it was not) are logged and shown as progress text on the
node that encodes (``server.PromptServer.send_progress_text``, where this ComfyUI has it), shortened to a few hundred
characters.
"""

import logging

import comfy.model_management
import comfy.sd
import comfy.supported_models_base
import torch

from ..models.text_encoder import shorten
from .common import notify_ui

ENCODER_KEY = "sana_text_encoder"  # model_options / tokenizer_data entry carrying the loaded SanaTextEncoder
TOKENS_KEY = "sana"
CHI_OPTION = "sana_chi"  # "auto" (default) | "nvlabs" | "diffusers" | "none" | list of instruction lines
GLYPH_TEXT_OPTION = "sana_glyph_text"  # None: extract quoted text; str: override (one span per line; "" = off)
LOWERCASE_OPTION = "sana_lowercase"  # diffusers lower-cases prompts; NVlabs (default) does not


def chi_for_prompt(text: str, chi="auto"):
    """The CHI choice for one prompt: "auto" means NVlabs CHI for a non-empty prompt and none for ""."""
    if isinstance(chi, str) and chi == "auto":
        return None if text.strip() == "" else "nvlabs"
    return chi


def glyph_notice(glyph: str, encoder, batch) -> str | None:
    """What the glyph branch does with this prompt's quoted text (shortened), or None without quoted text."""
    if not glyph:
        return None
    if encoder.glyph_enabled:
        return f"Sana glyph text: {shorten(glyph)!r} ({int(batch.glyph_mask[0].sum())} ByT5 tokens)"
    return f"Sana glyph text {shorten(glyph)!r} is not rendered by ByT5: {encoder.glyph_status}"


class SanaClipTokenizer:
    """ComfyUI tokenizer: text → ``{"sana": TokenBatch}`` (models.text_encoder) via the loaded encoder's tokenizers."""

    def __init__(self, embedding_directory=None, tokenizer_data=None):
        self.encoder = (tokenizer_data or {}).get(ENCODER_KEY)
        if self.encoder is None:
            raise RuntimeError("The Sana CLIP tokenizer needs a loaded encoder; create it with SanaTextEncoderLoader.")

    def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs):
        options = kwargs.get("tokenizer_options", {})
        batch = self.encoder.tokenize(
            text, chi=chi_for_prompt(text, options.get(CHI_OPTION, "auto")),
            glyph_text=options.get(GLYPH_TEXT_OPTION), lowercase=bool(options.get(LOWERCASE_OPTION, False)),
        )
        glyph = glyph_notice(batch.glyph_prompts[0], self.encoder, batch)
        if glyph:
            logging.info(glyph)
        notices = list(batch.notes) + ([glyph] if glyph else [])  # batch.notes are logged by the encoder
        if notices:
            notify_ui("\n".join(notices), level=None)
        return {TOKENS_KEY: batch}

    def untokenize(self, token_weight_pair):
        return []

    def state_dict(self):
        return {}


class SanaClipModel(torch.nn.Module):
    """ComfyUI text-encoder module wrapping a loaded ``SanaTextEncoder`` (passed in ``model_options``)."""

    def __init__(self, device="cpu", dtype=None, model_options=None):
        super().__init__()
        encoder = (model_options or {}).get(ENCODER_KEY)
        if encoder is None:
            raise RuntimeError("SanaClipModel wraps a loaded encoder; create it with SanaTextEncoderLoader.")
        self.encoder = encoder
        self.dtypes = {p.dtype for p in encoder.parameters()}

    def set_clip_options(self, options):
        if "layer" in options:
            logging.warning("Sana uses Gemma-2's last layer after the final norm; CLIPSetLastLayer is ignored.")

    def reset_clip_options(self):
        pass

    def encode_token_weights(self, token_weight_pairs):
        embeds, mask = self.encoder.encode_tokens(token_weight_pairs[TOKENS_KEY])
        out = comfy.model_management.intermediate_device()
        return embeds.float().to(out), None, {"attention_mask": mask.to(out)}

    def load_sd(self, sd):
        return self.encoder.load_state_dict(sd, strict=False)


def make_clip(encoder, load_device, offload_device) -> comfy.sd.CLIP:
    """A ``comfy.sd.CLIP`` around a loaded SanaTextEncoder (kept on ``offload_device`` until ComfyUI loads it)."""
    target = comfy.supported_models_base.ClipTarget(SanaClipTokenizer, SanaClipModel)
    options = {"load_device": load_device, "offload_device": offload_device, "initial_device": offload_device,
               "dtype": encoder.llm.dtype, ENCODER_KEY: encoder}
    parameters = sum(p.numel() for p in encoder.parameters())
    return comfy.sd.CLIP(target=target, tokenizer_data={ENCODER_KEY: encoder}, parameters=parameters,
                         model_options=options)
