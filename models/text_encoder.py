"""Sana text encoder: Gemma-2-2b-it with the Complex Human Instruction (CHI), optionally fused with a ByT5 glyph branch.

Encoding follows NVlabs/Sana ``app/sana_pipeline.py`` and diffusers ``SanaPipeline.encode_prompt`` (docs/ARCHITECTURE.md
§11), float32-exact against the latter:

1. The prompt is stripped (diffusers also lower-cases it: ``lowercase=True``); with CHI it becomes ``chi + prompt``.
2. ``num_chi = len(tokenizer.encode(chi))`` (BOS included); the sequence is cut/right-padded to ``num_chi + 300 − 2``
   tokens ("magic number 2: [bos], [_]" in NVlabs), or to 300 without CHI.
3. Gemma-2 runs on the full padded sequence; its ``last_hidden_state`` (after the final RMSNorm) is kept.
4. With CHI, positions ``[0] + last 299`` are selected: [B, 300, 2304] and the mask sliced alike.
5. With the glyph branch on, projected ByT5 tokens of the quoted text (models/glyph.py) are appended:
   [B, 300 + G, 2304] and the concatenated mask [B, 300 + G].

The LLM may be a Hugging Face folder (``Efficient-Large-Model/gemma-2-2b-it``: config.json, tokenizer files,
safetensors shards), a diffusers pipeline folder (its ``text_encoder/`` + ``tokenizer/``), or a single file in ComfyUI's
repackaged layout (``model.layers.N.*`` keys; bf16, fp16 or scaled fp8, e.g. Comfy-Org
``gemma_2_2b_it_elm_bf16.safetensors``) carrying its tokenizer as a uint8 tensor: ``spiece_model`` (a SentencePiece
model proto, as ComfyUI's ``comfy/text_encoders/lumina2.py`` uses) or ``tokenizer_json`` (the UTF-8 bytes of a Hugging
Face ``tokenizer.json``; a convention of this package). Without config.json the Gemma-2-2b architecture is assumed, with
sizes read from weights. File handling: models/text_files.py.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .chi import chi_text
from .glyph import (
    PROJECTOR_PREFIX,
    byt5_token_ids,
    glyph_prompt,
    load_byt5,
    projector_from_state_dict,
    read_projector_file,
)
from .text_files import (
    ModelFiles,
    WeightsFileError,
    check_tokenizer_files,
    instantiate_strict,
    locate,
    read_config,
    read_text_weights,
    require_transformers,
)

logger = logging.getLogger(__name__)

MAX_SEQUENCE_LENGTH = 300  # NVlabs text_encoder.model_max_length, diffusers max_sequence_length
CHI_TOKEN_OVERLAP = 2  # NVlabs app/sana_pipeline.py: "magic number 2: [bos], [_]"
GEMMA_HEAD_DIM = 256  # Gemma-2-2b head_dim (transformers Gemma2Config default)
GEMMA_KEY_PREFIX = "model."  # Gemma2ForCausalLM / ComfyUI repackaged keys; Gemma2Model keys lack it
GEMMA_SIGNATURE = "layers.0.post_feedforward_layernorm.weight"  # Gemma-2 only (ComfyUI sd.py detect_te_model)
IGNORED_LLM_KEYS = ("lm_head.weight",)  # tied to embed_tokens in Gemma-2
SPIECE_KEY = "spiece_model"  # ComfyUI repackaged text encoders: SentencePiece proto as uint8
TOKENIZER_JSON_KEY = "tokenizer_json"  # this package: tokenizer.json bytes as uint8
# "-it" / "_it" / ".it" as a word of the name: instruction-tuned (gemma-2-2b-it, gemma_2_2b_it_elm_bf16).
INSTRUCT_NAME = re.compile(r"(?:^|[-_. /])it(?:$|[-_. /])")
DROPPED_TEXT_PREVIEW_TOKENS = 12
SHOWN_TEXT_CHARS = 200  # longer texts are shortened in logs and UI notices
MASK_POLICIES = ("diffusers", "nvlabs")  # docs/ARCHITECTURE.md §9


@dataclass(frozen=True)
class GemmaTokenizer:
    """A Gemma tokenizer behind one interface: ``encode(text)`` → ids with BOS and no EOS, ``decode(ids)`` → text."""

    encode: object
    decode: object
    pad_id: int
    source: str


def _hf_tokenizer(folder: Path) -> GemmaTokenizer:
    check_tokenizer_files(folder)
    try:
        tok = require_transformers().AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as e:
        raise WeightsFileError(f"{folder}: the Gemma tokenizer files cannot be loaded ({type(e).__name__}: {e}). "
                               "Re-download tokenizer.json / tokenizer.model into this folder.") from e
    encode = lambda t: tok(t, add_special_tokens=True)["input_ids"]  # noqa: E731
    return GemmaTokenizer(encode, tok.decode, tok.pad_token_id, str(folder))


def _embedded_tokenizer(blob: torch.Tensor, key: str, source) -> GemmaTokenizer:
    data = blob.cpu().numpy().tobytes()
    if key == TOKENIZER_JSON_KEY:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # tokenizers raises a plain Exception on bad JSON
            raise WeightsFileError(f"{source}: the embedded '{key}' tokenizer is damaged ({e}); re-download the "
                                   "file.") from e
        return GemmaTokenizer(lambda t: tok.encode(t).ids, tok.decode, tok.token_to_id("<pad>"), str(source))
    try:
        import sentencepiece
    except ImportError as e:
        raise RuntimeError(f"{source} embeds a SentencePiece tokenizer: pip install sentencepiece") from e
    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=data)
    except (RuntimeError, TypeError) as e:
        raise WeightsFileError(f"{source}: the embedded '{SPIECE_KEY}' tensor ({len(data)} bytes) is not a "
                               f"SentencePiece model ({e}); re-download the file.") from e
    return GemmaTokenizer(_spm_encoder(sp), sp.decode, sp.pad_id(), str(source))


def _spm_encoder(sp):
    """``text → [BOS] + ids`` as Hugging Face's tokenizer.json for the same model: literal control pieces in the text
    (``<bos>``, ``<pad>``, ``<unk>``, ...) become their ids (tokenizers matches added special tokens before the model
    runs), everything else goes through SentencePiece."""
    specials = {sp.id_to_piece(i): i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    pattern = re.compile("|".join(re.escape(p) for p in sorted(specials, key=len, reverse=True)))

    def encode(text: str) -> list[int]:
        ids, start = [sp.bos_id()], 0
        for match in pattern.finditer(text):
            ids += sp.encode(text[start : match.start()]) + [specials[match.group()]]
            start = match.end()
        return ids + sp.encode(text[start:])

    return encode


def _find_tokenizer(files: ModelFiles, blobs: dict) -> GemmaTokenizer:
    if files.tokenizer is not None:
        return _hf_tokenizer(files.tokenizer)
    for key in (TOKENIZER_JSON_KEY, SPIECE_KEY):
        if key in blobs:
            return _embedded_tokenizer(blobs[key], key, files.source)
    raise WeightsFileError(
        f"No Gemma tokenizer found for {files.source}: detected Gemma-2 weights; expected tokenizer.json / "
        f"tokenizer.model next to config.json (or in a sibling 'tokenizer' folder), or a '{SPIECE_KEY}' / "
        f"'{TOKENIZER_JSON_KEY}' tensor inside the file. Use Comfy-Org's gemma_2_2b_it_elm_bf16.safetensors "
        "(tokenizer inside) or the complete Efficient-Large-Model/gemma-2-2b-it folder."
    )


def _gemma_config(files: ModelFiles, sd: dict):
    transformers = require_transformers()
    if files.config is not None:
        config = read_config(files.config, "Gemma-2 configuration")
        if config.get("model_type") != "gemma2":
            raise WeightsFileError(f"{files.config / 'config.json'}: model_type {config.get('model_type')!r}; Sana "
                                   "needs Gemma-2 ('gemma2'). Pick the gemma-2-2b-it folder for the LLM input.")
        return transformers.Gemma2Config.from_dict(config)
    embed, gate = sd["embed_tokens.weight"], sd["layers.0.mlp.gate_proj.weight"]
    return transformers.Gemma2Config(
        vocab_size=embed.shape[0], hidden_size=embed.shape[1], intermediate_size=gate.shape[0],
        num_hidden_layers=len({k.split(".")[1] for k in sd if k.startswith("layers.")}),
        num_attention_heads=sd["layers.0.self_attn.q_proj.weight"].shape[0] // GEMMA_HEAD_DIM,
        num_key_value_heads=sd["layers.0.self_attn.k_proj.weight"].shape[0] // GEMMA_HEAD_DIM, head_dim=GEMMA_HEAD_DIM,
    )


def base_gemma_warning(files: ModelFiles) -> str | None:
    """A warning when the chosen name looks like a base (non-instruction) Gemma-2, e.g. Lumina 2's
    ``gemma_2_2b_fp16.safetensors``; Sana was trained with gemma-2-2b-it, and both have identical shapes."""
    names = [files.source.name, files.weights.name] + ([files.config.name] if files.config is not None else [])
    lowered = " ".join(names).lower()
    if "gemma" not in lowered or INSTRUCT_NAME.search(lowered):
        return None
    return (f"{files.source.name} looks like the base Gemma-2 (no '-it' in its name, e.g. Lumina 2's "
            "gemma_2_2b_fp16.safetensors), not the instruction-tuned gemma-2-2b-it Sana was trained with; it loads, "
            "but images follow prompts worse. Use Comfy-Org's gemma_2_2b_it_elm_bf16.safetensors.")


def load_gemma(path, dtype=torch.float32, device="cpu"):
    """Gemma-2 trunk from a folder or single file → (Gemma2Model, GemmaTokenizer, projector tensors inside or None).

    The model maps ids [B, L] and mask [B, L] to ``last_hidden_state`` [B, L, 2304] (after the final norm).
    """
    files = locate(path)
    sd = read_text_weights(files, dtype=dtype, keep_prefix=PROJECTOR_PREFIX)
    blobs = {k: sd.pop(k) for k in (SPIECE_KEY, TOKENIZER_JSON_KEY) if k in sd}
    projector = {k[len(PROJECTOR_PREFIX):]: sd.pop(k) for k in list(sd) if k.startswith(PROJECTOR_PREFIX)}
    sd = {(k[len(GEMMA_KEY_PREFIX):] if k.startswith(GEMMA_KEY_PREFIX) else k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if k not in IGNORED_LLM_KEYS}
    if GEMMA_SIGNATURE not in sd:
        raise WeightsFileError(
            f"{files.source}: not a Gemma-2 checkpoint (no '{GEMMA_KEY_PREFIX}{GEMMA_SIGNATURE}'; first keys: "
            f"{', '.join(sorted(sd)[:3])}). Choose the gemma-2-2b-it file or folder for the LLM input; ByT5 and "
            "projector files belong to the other inputs."
        )
    config = _gemma_config(files, sd)
    tokenizer = _find_tokenizer(files, blobs)
    model = instantiate_strict(require_transformers().Gemma2Model, config, sd, dtype, device, files.source,
                               f"Gemma-2 ({config.num_hidden_layers} layers, hidden {config.hidden_size})")
    return model, tokenizer, (projector or None), base_gemma_warning(files)


@dataclass(frozen=True)
class TokenBatch:
    """Tokenised prompts, ready for :meth:`SanaTextEncoder.encode_tokens` (plain tensors on the CPU).

    input_ids / attention_mask: [B, L] Gemma ids (right-padded) and 0/1 mask, L = num_chi + 298 with CHI else 300;
    select_chi: keep positions [0] + last 299 (CHI was prepended); glyph_ids / glyph_mask: [B, G] ByT5 ids and mask,
    or None when no prompt has glyph text or the glyph branch is off; glyph_prompts: the ByT5 input text per prompt.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    select_chi: bool
    glyph_ids: torch.Tensor | None
    glyph_mask: torch.Tensor | None
    glyph_prompts: tuple[str, ...]
    notes: tuple[str, ...] = ()  # warnings for the user (truncation), already logged


def _pad_rows(rows: list[list[int]], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


class SanaTextEncoder(torch.nn.Module):
    """Gemma-2 (+ optional ByT5 glyph encoder and projector) producing Sana caption tokens [B, T, 2304] and mask [B, T].

    llm: transformers Gemma2Model; tokenizer: :class:`GemmaTokenizer`; byt5 / projector: T5EncoderModel and
    :class:`models.glyph.GlyphProjector`, both or neither; glyph_status: a sentence saying whether the glyph branch is
    on and why, shown to users by the nodes; load_notes: warnings about the loaded files (e.g. a base Gemma).
    """

    def __init__(self, llm, tokenizer: GemmaTokenizer, byt5=None, projector=None, glyph_status: str = "",
                 load_notes=()):
        super().__init__()
        self.llm, self.byt5, self.projector = llm, byt5, projector
        self.tokenizer, self.glyph_status, self.load_notes = tokenizer, glyph_status, tuple(load_notes)

    @property
    def glyph_enabled(self) -> bool:
        """True when both the ByT5 encoder and the projector are loaded."""
        return self.byt5 is not None and self.projector is not None

    def _truncation_note(self, index: int, row: list[int], limit: int) -> str:
        dropped = self.tokenizer.decode(row[limit : limit + DROPPED_TEXT_PREVIEW_TOKENS])
        note = (f"Sana text encoder: prompt {index} is longer than the {MAX_SEQUENCE_LENGTH}-token limit and was "
                f"truncated: {len(row) - limit} tokens from '{shorten(dropped.strip())}…' on are ignored.")
        logger.warning(note)
        return note

    def _glyph_tokens(self, glyph_prompts: list[str], notes: list[str]):
        if not self.glyph_enabled or not any(glyph_prompts):
            return None, None
        rows = []
        for i, text in enumerate(glyph_prompts):
            ids, truncated = byt5_token_ids(text) if text else ([], False)
            if truncated:
                notes.append(f"Sana text encoder: glyph text of prompt {i} ({len(text)} characters) was cut to "
                             f"{len(ids)} ByT5 tokens.")
                logger.warning(notes[-1])
            rows.append(ids)
        return _pad_rows(rows, max(len(r) for r in rows), pad_id=0)

    def tokenize(self, prompts, chi="nvlabs", glyph_text=None, lowercase: bool = False) -> TokenBatch:
        """Tokenise prompts (str or list of str) as Sana does; see the module docstring and :class:`TokenBatch`.

        chi: "nvlabs" | "diffusers" | None | list of instruction lines (models/chi.py); glyph_text: None extracts
        quoted text, a string overrides it (one span per line); lowercase: diffusers' ``text.lower()``.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        texts = [p.lower().strip() if lowercase else p.strip() for p in prompts]
        prefix = chi_text(chi)
        limit = MAX_SEQUENCE_LENGTH
        if prefix is not None:
            limit = len(self.tokenizer.encode(prefix)) + MAX_SEQUENCE_LENGTH - CHI_TOKEN_OVERLAP
            texts = [prefix + t for t in texts]
        rows = [self.tokenizer.encode(t) for t in texts]
        notes = [self._truncation_note(i, row, limit) for i, row in enumerate(rows) if len(row) > limit]
        ids, mask = _pad_rows([row[:limit] for row in rows], limit, self.tokenizer.pad_id)
        glyph_prompts = [glyph_prompt(p, glyph_text) for p in prompts]
        glyph_ids, glyph_mask = self._glyph_tokens(glyph_prompts, notes)
        return TokenBatch(ids, mask, prefix is not None, glyph_ids, glyph_mask, tuple(glyph_prompts), tuple(notes))

    @torch.no_grad()
    def encode_tokens(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """TokenBatch → (embeds [B, 300 (+G), 2304] in the LLM dtype, mask [B, 300 (+G)] long 0/1)."""
        device = self.llm.get_input_embeddings().weight.device
        mask = batch.attention_mask.to(device)
        embeds = self.llm(input_ids=batch.input_ids.to(device), attention_mask=mask, use_cache=False)[0]
        if batch.select_chi:
            select_index = [0] + list(range(-MAX_SEQUENCE_LENGTH + 1, 0))
            embeds, mask = embeds[:, select_index], mask[:, select_index]
        if batch.glyph_ids is None or not self.glyph_enabled:
            return embeds, mask
        glyph_mask = batch.glyph_mask.to(device)
        features = self.byt5(input_ids=batch.glyph_ids.to(device), attention_mask=glyph_mask)[0]
        glyph = self.projector(features.to(self.projector.fc1.weight.dtype))
        glyph = glyph * glyph_mask[..., None].to(glyph.dtype)  # padded glyph positions carry zeros
        return torch.cat([embeds, glyph.to(embeds.dtype)], dim=1), torch.cat([mask, glyph_mask], dim=1)

    def encode(self, prompts, chi="nvlabs", glyph_text=None, lowercase: bool = False):
        """Prompts → (embeds [B, T, 2304], mask [B, T]); T = 300 plus the glyph tokens. Arguments as :meth:`tokenize`.

        Positive prompts use CHI ("nvlabs" by default); encode negative prompts with ``chi=None`` as both pipelines do.
        """
        return self.encode_tokens(self.tokenize(prompts, chi=chi, glyph_text=glyph_text, lowercase=lowercase))


def shorten(text: str, limit: int = SHOWN_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters with the full length noted, for logs and UI notices."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def null_prompt_mask(negative_mask: torch.Tensor, positive_mask: torch.Tensor, policy: str) -> torch.Tensor:
    """Mask for the unconditional branch [B, T] under a policy of docs/ARCHITECTURE.md §9.

    "diffusers": the negative prompt's own mask. "nvlabs": the positive prompt's mask ([1 or B, T']) over the first
    min(T, T') positions (the official app runs "" with the positive mask), the negative's own mask beyond.
    """
    if policy == "diffusers":
        return negative_mask
    if policy != "nvlabs":
        raise ValueError(f"mask policy {policy!r} is unknown; expected one of {MASK_POLICIES}.")
    if positive_mask.shape[0] not in (1, negative_mask.shape[0]):
        raise ValueError(
            f"positive mask batch {positive_mask.shape[0]} does not match the negative batch {negative_mask.shape[0]}."
        )
    n = min(negative_mask.shape[1], positive_mask.shape[1])
    out = negative_mask.clone()
    out[:, :n] = positive_mask[:, :n].to(device=out.device, dtype=out.dtype)
    return out


def _load_glyph_branch(byt5_path, projector_path, llm_projector, llm_hidden: int, dtype, device):
    """(byt5, projector, status): both modules, or (None, None, why the branch is off)."""
    if byt5_path is None:
        if projector_path is not None:
            return None, None, "glyph branch off: a projector was given but no ByT5 glyph encoder"
        return None, None, "glyph branch off: no ByT5 glyph encoder loaded"
    byt5, byt5_projector = load_byt5(byt5_path, dtype=dtype, device=device)
    if projector_path is not None:
        sd, source = read_projector_file(projector_path), str(projector_path)
    elif llm_projector is not None or byt5_projector is not None:
        sd = llm_projector if llm_projector is not None else byt5_projector
        source = f"'{PROJECTOR_PREFIX}*' keys inside the {'LLM' if llm_projector is not None else 'ByT5'} file"
    else:
        return None, None, (
            f"glyph branch off: ByT5 {Path(byt5_path).name} is loaded but no glyph projector was found (no projector "
            f"file and no '{PROJECTOR_PREFIX}*' keys), so quoted text is encoded by Gemma only"
        )
    projector = projector_from_state_dict(sd, source, dtype=dtype, device=device)
    in_dim, out_dim = projector.fc1.in_features, projector.fc3.out_features
    if in_dim != byt5.config.d_model or out_dim != llm_hidden:
        raise ValueError(
            f"Glyph projector from {source} maps {in_dim} → {out_dim}, but the ByT5 encoder gives "
            f"{byt5.config.d_model} features and the LLM space has {llm_hidden}. Use a projector made for these two "
            "encoders."
        )
    widths = f"{in_dim}→{projector.fc1.out_features}→{projector.fc2.out_features}→{out_dim}"
    return byt5, projector, f"glyph branch on: ByT5 {Path(byt5_path).name} + projector from {source} ({widths})"


def load_text_encoder(llm_path, byt5_path=None, projector_path=None, dtype=torch.float32, device="cpu",
                      glyph_dtype=torch.float32) -> SanaTextEncoder:
    """Load the Sana text encoder (docs/ARCHITECTURE.md §11).

    llm_path: Gemma-2-2b-it folder or single file; byt5_path: ByT5 glyph encoder file/folder or None; projector_path:
    glyph projector file or None (then ``glyph_projector.*`` keys inside the LLM or ByT5 file are used). Without
    ByT5 or a projector the glyph branch is off (``encoder.glyph_status`` says why); random projector weights are never
    used. dtype: Gemma weights (bf16 or fp32; Gemma-2 is not fp16-safe); glyph_dtype: ByT5 and projector (float32).
    Returns a :class:`SanaTextEncoder`; ``encode(prompts, chi=..., glyph_text=...)`` → (embeds [B, T, 2304], mask).
    """
    llm, tokenizer, llm_projector, warning = load_gemma(llm_path, dtype=dtype, device=device)
    if warning:
        logger.warning("Sana text encoder: %s", warning)
    byt5, projector, status = _load_glyph_branch(
        byt5_path, projector_path, llm_projector, llm.config.hidden_size, glyph_dtype, device
    )
    (logger.info if projector is not None or byt5_path is None else logger.warning)("Sana text encoder: %s.", status)
    return SanaTextEncoder(llm, tokenizer, byt5, projector, status, load_notes=[warning] if warning else ())
