"""Glyph branch of the Sana text encoder: quoted-text extraction, ByT5 glyph encoding and the fusion projector.

Design after Seedream 2.0 (arXiv 2503.07703, "Glyph-Aligned ByT5") and the HunyuanImage 2.1 precedent in ComfyUI
(``comfy/text_encoders/hunyuan_image.py``, ``comfy/ldm/hunyuan_video/model.py`` ``ByT5Mapper``):

1. Quoted spans of the prompt are extracted (:func:`extract_quoted_spans`) and formatted as ``Text "<span>". `` each,
   in source order (:func:`glyph_prompt`), exactly the string HunyuanImage 2.1 feeds its ByT5.
2. ByT5 tokens are the UTF-8 bytes + 3 followed by EOS (id 1), as transformers ``ByT5Tokenizer``; the encoder is a
   transformers ``T5EncoderModel`` (output: last hidden state after the final layer norm), kept in float32.
3. The projector maps ByT5 features [B, G, d_byt5] into the LLM space [B, G, 2304]; the text encoder appends these
   tokens after the 300 Gemma tokens with the concatenated mask.

Glyph encoder files: ``byt5_small_glyphxl_fp16.safetensors`` (ComfyUI's HunyuanImage 2.1 file: keys ``shared.weight``,
``encoder.block.N.layer.{0,1}.*``, ``encoder.final_layer_norm.weight``; d_model 1472, vocab 1510) or a Hugging Face
T5/ByT5 folder such as ``google/byt5-small`` (its ``pytorch_model.bin`` is read with the safe reader of
models/weights_file.py; decoder weights are ignored).

Projector key layout (defined by this package; no Sana glyph projector has been released). LayerNorm → Linear → GELU →
Linear → GELU → Linear, the layout of HunyuanImage's ``byt5_in`` mapper; every width is read from the weights:

    layernorm.weight [d_byt5]         layernorm.bias [d_byt5]        (LayerNorm, eps 1e-5)
    fc1.weight [h1, d_byt5]           fc1.bias [h1]
    fc2.weight [h2, h1]               fc2.bias [h2]
    fc3.weight [d_llm, h2]            fc3.bias [d_llm]               (d_llm = 2304, the Gemma-2 hidden size)

A standalone projector file (e.g. ``text_encoders/sana_glyph_projector.safetensors``) holds these keys bare or under
``glyph_projector.``; inside a Gemma or ByT5 file they must sit under ``glyph_projector.``. Loading is strict.
"""

import re

import torch
import torch.nn.functional as F

from .text_files import (
    WeightsFileError,
    instantiate_strict,
    locate,
    read_config,
    read_text_weights,
    require_transformers,
)

BYT5_EOS_ID = 1  # transformers ByT5Tokenizer: pad 0, eos 1, unk 2, then the 256 byte values
BYT5_BYTE_OFFSET = 3  # id = byte value + 3 (ByT5Tokenizer._convert_token_to_id)
BYT5_HEAD_DIM = 64  # d_kv of ByT5-small (comfy/text_encoders/byt5_config_small_glyph.json)
BYT5_LAYER_NORM_EPS = 1e-6  # layer_norm_epsilon of byt5_config_small_glyph.json
GLYPH_MAX_TOKENS = 256  # byt5_max_length of HunyuanVideo 1.5, which uses the same byt5_small_glyphxl encoder
GLYPH_TEXT_FORMAT = 'Text "{}". '  # comfy/text_encoders/hunyuan_image.py and diffusers HunyuanImagePipeline
PROJECTOR_PREFIX = "glyph_projector."
PROJECTOR_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm default, as ComfyUI's ByT5Mapper
PROJECTOR_KEYS = frozenset(f"{m}.{p}" for m in ("layernorm", "fc1", "fc2", "fc3") for p in ("weight", "bias"))

# Quoted spans, one alternative per quote style; a finditer over the alternation yields them in source order and the
# outermost quote wins when quotes nest. ASCII double quotes must open after a non-word character and close before
# one (so 5" screens and inch marks do not open a span); the curly single quote ’ doubles as an apostrophe, so ‘…’
# closes only before a non-word character ("‘rock’n’roll’" is one span). ASCII single quotes are never used: they are
# apostrophes in "don't" and "it's" (ComfyUI removed that pattern for this reason, ComfyUI PR #9842).
_QUOTE_PATTERN = re.compile(
    r'(?<!\w)"(?P<ascii>.*?)"(?!\w)'
    r"|“(?P<curly>.*?)”"
    r"|(?<!\w)‘(?P<single>.*?)’(?!\w)"
    r"|「(?P<corner>.*?)」"
    r"|『(?P<white_corner>.*?)』"
    r"|《(?P<angle>.*?)》",
    re.DOTALL,
)


def extract_quoted_spans(text: str) -> list[str]:
    """Quoted substrings of ``text`` in source order: "…", “…”, ‘…’, 「…」, 『…』, 《…》; never apostrophes.

    Unmatched quotes are ignored and empty or whitespace-only spans are skipped; every returned item is a substring of
    ``text``. Example: ``'a sign "OPEN" and 「営業中」, don't'`` → ``["OPEN", "営業中"]``.
    """
    spans = []
    for match in _QUOTE_PATTERN.finditer(text):
        span = next(group for group in match.groups() if group is not None)
        if span.strip():
            spans.append(span)
    return spans


def glyph_prompt(prompt: str, glyph_text: str | None = None) -> str:
    """The ByT5 input for one prompt: ``Text "<span>". `` per span, or "" when there is nothing to render.

    glyph_text: None extracts the quoted spans of ``prompt``; a string overrides extraction, one span per non-empty
    line ("" therefore turns the glyph branch off for this prompt).
    """
    if glyph_text is None:
        spans = extract_quoted_spans(prompt)
    else:
        spans = [line for line in glyph_text.splitlines() if line.strip()]
    return "".join(GLYPH_TEXT_FORMAT.format(span) for span in spans)


def byt5_token_ids(text: str, max_tokens: int = GLYPH_MAX_TOKENS) -> tuple[list[int], bool]:
    """ByT5 token ids of ``text`` (UTF-8 bytes + 3, then EOS), cut to ``max_tokens``; returns (ids, truncated).

    Matches transformers ``ByT5Tokenizer(text)["input_ids"]`` for text without ``<extra_id_N>`` markers.
    """
    ids = [byte + BYT5_BYTE_OFFSET for byte in text.encode("utf-8")]
    truncated = len(ids) + 1 > max_tokens
    return ids[: max_tokens - 1] + [BYT5_EOS_ID], truncated


class GlyphProjector(torch.nn.Module):
    """LayerNorm → Linear → GELU → Linear → GELU → Linear: ByT5 features [B, G, in_dim] → LLM space [B, G, out_dim].

    Layout of HunyuanImage 2.1's ``byt5_in`` mapper (ComfyUI ``ByT5Mapper``, no residual); keys in the module docstring.
    """

    def __init__(self, in_dim, hidden_dim, mid_dim, out_dim, dtype=None, device=None, operations=None):
        super().__init__()
        operations = torch.nn if operations is None else operations
        self.layernorm = operations.LayerNorm(in_dim, eps=PROJECTOR_LAYER_NORM_EPS, dtype=dtype, device=device)
        self.fc1 = operations.Linear(in_dim, hidden_dim, dtype=dtype, device=device)
        self.fc2 = operations.Linear(hidden_dim, mid_dim, dtype=dtype, device=device)
        self.fc3 = operations.Linear(mid_dim, out_dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, G, in_dim] ByT5 last hidden states → [B, G, out_dim] tokens in the LLM caption space."""
        x = F.gelu(self.fc1(self.layernorm(x)))
        return self.fc3(F.gelu(self.fc2(x)))


def projector_from_state_dict(sd: dict, source: str, dtype=torch.float32, device="cpu") -> GlyphProjector:
    """A :class:`GlyphProjector` with widths read from ``sd`` (bare keys, see module docstring), loaded strictly."""
    missing, unexpected = PROJECTOR_KEYS - set(sd), set(sd) - PROJECTOR_KEYS
    if missing or unexpected:
        raise ValueError(
            f"{source} is not a Sana glyph projector: missing keys {sorted(missing)}, unexpected keys "
            f"{sorted(unexpected)[:5]}. Expected exactly {sorted(PROJECTOR_KEYS)} (optionally under "
            f"'{PROJECTOR_PREFIX}')."
        )
    in_dim, hidden_dim = sd["fc1.weight"].shape[1], sd["fc1.weight"].shape[0]
    mid_dim, out_dim = sd["fc2.weight"].shape[0], sd["fc3.weight"].shape[0]
    projector = GlyphProjector(in_dim, hidden_dim, mid_dim, out_dim, dtype=dtype, device=device)
    try:
        projector.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: the projector's layer widths do not chain ({e}).") from e
    return projector.eval().requires_grad_(False)


def read_projector_file(path) -> dict:
    """Projector tensors of a standalone file, with an optional ``glyph_projector.`` prefix removed."""
    sd = read_text_weights(locate(path))
    return {(k[len(PROJECTOR_PREFIX):] if k.startswith(PROJECTOR_PREFIX) else k): v for k, v in sd.items()}


def _t5_config_from_weights(sd: dict):
    """transformers T5Config for an encoder-only ByT5 state dict without config.json (widths read from tensors)."""
    transformers = require_transformers()
    q = sd["encoder.block.0.layer.0.SelfAttention.q.weight"]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    ff = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
    blocks = {k.split(".")[2] for k in sd if k.startswith("encoder.block.")}
    buckets = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[0]
    return transformers.T5Config(
        vocab_size=sd["shared.weight"].shape[0], d_model=q.shape[1], d_kv=BYT5_HEAD_DIM,
        num_heads=q.shape[0] // BYT5_HEAD_DIM, d_ff=ff.shape[0], num_layers=len(blocks),
        relative_attention_num_buckets=buckets,
        feed_forward_proj="gated-gelu" if gated else "relu", layer_norm_epsilon=BYT5_LAYER_NORM_EPS,
        is_encoder_decoder=False, use_cache=False,
    )


def load_byt5(path, dtype=torch.float32, device="cpu"):
    """ByT5 glyph encoder from a file or Hugging Face folder → (T5EncoderModel, projector tensors found inside or None).

    The model maps ids [B, G] and mask [B, G] to last hidden states [B, G, d_model] (1472 for ByT5-small).
    """
    transformers = require_transformers()
    files = locate(path)
    sd = read_text_weights(files, dtype=dtype)
    inside = {k[len(PROJECTOR_PREFIX):]: v for k, v in sd.items() if k.startswith(PROJECTOR_PREFIX)}
    if "encoder.embed_tokens.weight" in sd and "shared.weight" not in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    if "encoder.block.0.layer.0.SelfAttention.q.weight" not in sd or "shared.weight" not in sd:
        raise WeightsFileError(
            f"{files.source}: not a T5/ByT5 encoder checkpoint (no 'shared.weight' / 'encoder.block.0.layer.0."
            f"SelfAttention.q.weight'; first keys: {', '.join(sorted(sd)[:3])}). Choose "
            "byt5_small_glyphxl_fp16.safetensors or a google/byt5-small folder for the ByT5 input."
        )
    sd = {k: v for k, v in sd.items() if k == "shared.weight" or k.startswith("encoder.")}
    sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    if files.config is not None:
        config = transformers.T5Config.from_dict(read_config(files.config, "T5/ByT5 configuration"))
    else:
        config = _t5_config_from_weights(sd)
    detected = f"a T5/ByT5 encoder ({config.num_layers} layers, d_model {config.d_model}, vocab {config.vocab_size})"
    model = instantiate_strict(transformers.T5EncoderModel, config, sd, dtype, device, files.source, detected)
    return model, (inside or None)
