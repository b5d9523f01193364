"""The Sana latent space (DC-AE f32c32) as a ComfyUI LatentFormat."""

import comfy.latent_formats

# diffusers `mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers` config.json `scaling_factor`; NVlabs `vae.scale_factor`.
SANA_LATENT_SCALE = 0.41407
SANA_LATENT_CHANNELS = 32


class SanaLatentFormat(comfy.latent_formats.LatentFormat):
    """32-channel, 32x-downsampled DC-AE latents; LATENT dicts hold raw latents, the sampler scales by 0.41407."""

    latent_channels = SANA_LATENT_CHANNELS
    latent_dimensions = 2
    scale_factor = SANA_LATENT_SCALE
