"""Pure-PyTorch Sana models: linear DiT, DC-AE f32c32, Gemma-2 + ByT5 text encoder, position encodings.

Nothing here imports ComfyUI. Public loaders (DESIGN.md §4b) are re-exported from this package.
"""
