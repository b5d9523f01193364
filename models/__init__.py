"""Pure-PyTorch Sana models: linear DiT, DC-AE f32c32, Gemma-2 + ByT5 text encoder, position encodings.

Nothing here imports ComfyUI. The public loaders of docs/ARCHITECTURE.md §3.2 are re-exported here; transformers and
diffusers are
imported only when a loader needs them.
"""

from .dcae_checkpoint import load_dcae
from .dit_checkpoint import load_dit, save_dit
from .text_encoder import load_text_encoder

__all__ = ["load_dcae", "load_dit", "load_text_encoder", "save_dit"]
