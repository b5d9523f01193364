"""Complex Human Instruction (CHI): the instruction text Sana prepends to every positive prompt before Gemma-2.

Sources (verbatim configuration data, see docs/ARCHITECTURE.md §11):
- NVlabs/Sana ``configs/sana_config/1024ms/Sana_1600M_img1024.yaml`` ``text_encoder.chi_prompt`` (the same 8 items are
  in every Sana 1.0 / 1.5 / Sprint config): ``generate an "Enhanced prompt"`` with double quotes.
- huggingface/diffusers ``pipelines/sana/pipeline_sana.py`` ``SanaPipeline.__call__`` default
  ``complex_human_instruction``: identical except ``generate an 'Enhanced prompt'`` with single quotes.

The items are joined with ``"\\n"``; the last item ends with a space and the user prompt follows it directly.
"""

_CHI_FIRST_LINE = (
    "Given a user prompt, generate an {quote}Enhanced prompt{quote} that provides detailed visual descriptions "
    "suitable for image generation. Evaluate the level of detail in the user prompt:"
)
_CHI_REST = (
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
    "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass "
    "skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
)

# NVlabs YAML `chi_prompt` (double-quoted "Enhanced prompt"): the official default.
CHI_NVLABS: tuple[str, ...] = (_CHI_FIRST_LINE.format(quote='"'), *_CHI_REST)
# diffusers SanaPipeline default `complex_human_instruction` (single-quoted 'Enhanced prompt').
CHI_DIFFUSERS: tuple[str, ...] = (_CHI_FIRST_LINE.format(quote="'"), *_CHI_REST)

CHI_PRESETS = {"nvlabs": CHI_NVLABS, "diffusers": CHI_DIFFUSERS}
CHI_JOIN = "\n"  # NVlabs app/sana_pipeline.py and diffusers both use "\n".join(chi_prompt)


def chi_text(chi) -> str | None:
    """The CHI prefix string for a CHI choice, or None for "no CHI".

    chi: "nvlabs" | "diffusers" | None | "none" | a list/tuple of instruction lines (joined with "\\n", as both
    pipelines do). An empty list means no CHI, as NVlabs ``configs/sana_base.yaml`` (``chi_prompt: []``).
    """
    if chi is None or (isinstance(chi, str) and chi == "none"):
        return None
    if isinstance(chi, str):
        if chi in CHI_PRESETS:
            return CHI_JOIN.join(CHI_PRESETS[chi])
        raise ValueError(
            f"chi={chi!r} is not a CHI choice; expected one of {sorted(CHI_PRESETS)}, 'none'/None, or a list of "
            "instruction lines."
        )
    if isinstance(chi, (list, tuple)) and all(isinstance(line, str) for line in chi):
        return CHI_JOIN.join(chi) if len(chi) > 0 else None
    raise ValueError(f"chi must be a preset name, None or a list of strings, got {type(chi).__name__}.")
