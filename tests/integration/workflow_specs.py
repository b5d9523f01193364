"""The shipped workflows, defined as graphs in code; ``python -m tests.integration.workflow_specs`` rewrites workflows/.

Each spec builds an API-format :class:`Graph` with the real released model file names (README table) and carries the
note shown inside the workflow (recommended settings and which file goes where). Writing the UI format needs a live
server's /object_info, so the generator starts a ComfyUI the same way the integration tests do.
"""

import json
import sys
import tempfile
from pathlib import Path

from tests.integration.graph import Graph

REPO = Path(__file__).resolve().parents[2]
DIT_1600M = "Sana_1600M_1024px_BF16.pth"
DIT_4K = "Sana_1600M_4Kpx_BF16.pth"
DIT_15_4800M = "SANA1.5_4.8B_1024px.pth"
DIT_SPRINT = "Sana_Sprint_1.6B_1024px.pth"
VAE = "dc-ae-f32c32-sana-1.1/model.safetensors"
LLM = "gemma-2-2b-it/"
BYT5 = "byt5_small_glyphxl_fp16.safetensors"
PROJECTOR = "sana_glyph_projector.safetensors"
FILES_NOTE = (
    "Files: {dit} -> models/diffusion_models/ ; dc-ae-f32c32-sana-1.1/model.safetensors -> models/vae/ ; "
    "the gemma-2-2b-it folder -> models/text_encoders/. From the ComfyUI folder, `python "
    "custom_nodes/sana-native/scripts/fetch_models.py --workflow custom_nodes/sana-native/workflows/{workflow}` "
    "downloads the released ones (add --list to only list what is missing). Sana weights: CC BY-NC-SA 4.0."
)
NEGATIVE = ""  # the reference pipelines' negative prompt; encoded without CHI (see SanaTextEncodeAdvanced)


def _text_to_image(dit: str, width: int, height: int, steps: int, cfg: float, prompt: str, *, tiled: bool = False,
                   byt5: str = "none", projector: str = "none", shift_mode: str | None = None) -> Graph:
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=dit, weight_dtype="default")
    if shift_mode is not None:
        model = g.node("ModelSamplingSana", model=model[0], shift_mode=shift_mode, shift=3.0, width=width,
                       height=height)
    clip = g.node("SanaTextEncoderLoader", llm_name=LLM, byt5_name=byt5, projector_name=projector, device="default")
    positive = g.node("CLIPTextEncode", clip=clip[0], text=prompt)
    negative = g.node("CLIPTextEncode", clip=clip[0], text=NEGATIVE)
    latent = g.node("EmptySanaLatent", width=width, height=height, batch_size=1)
    samples = g.node("KSampler", model=model[0], positive=positive[0], negative=negative[0], latent_image=latent[0],
                     seed=42, steps=steps, cfg=cfg, sampler_name="flow_dpm_solver", scheduler="sana_flow", denoise=1.0)
    vae = g.node("SanaVAELoader", vae_name=VAE, tiling="auto")
    if tiled:
        image = g.node("VAEDecodeTiled", samples=samples[0], vae=vae[0], tile_size=1024, overlap=128,
                       temporal_size=64, temporal_overlap=8)
    else:
        image = g.node("VAEDecode", samples=samples[0], vae=vae[0])
    g.node("SaveImage", images=image[0], filename_prefix="sana")
    return g


def t2i_1024() -> Graph:
    """Sana 1.6B at 1024 px with the official sampler: Flow-DPM-Solver, Sana's grid, 20 steps, CFG 4.5."""
    return _text_to_image(DIT_1600M, 1024, 1024, 20, 4.5, "a cyberpunk cat with a neon sign, detailed, cinematic")


def t2i_4k_tiled() -> Graph:
    """Sana 1.6B 4K: the model's own shift 6.0 (read from the checkpoint), tiled DC-AE decode."""
    return _text_to_image(DIT_4K, 4096, 4096, 20, 4.5, "a mountain lake at sunrise, ultra detailed landscape photo",
                          tiled=True)


def t2i_15_4800m() -> Graph:
    """Sana 1.5 4.8B at 1024 px."""
    return _text_to_image(DIT_15_4800M, 1024, 1024, 20, 4.5, "a red fox in a snowy birch forest, golden hour")


def glyph_poster() -> Graph:
    """Quoted text is rendered through the ByT5 glyph branch (Gemma + ByT5 fusion)."""
    prompt = 'a vintage travel poster of a lighthouse with the title "SANA BAY" and the words "since 1924"'
    return _text_to_image(DIT_1600M, 1024, 1536, 20, 4.5, prompt, byt5=BYT5, projector=PROJECTOR)


def highres_shifted() -> Graph:
    """The 1024 px model at 2048x1152 with the shift scaled to the pixel count (SD3 rule)."""
    return _text_to_image(DIT_1600M, 2048, 1152, 20, 4.5, "a wide panorama of a futuristic city at dusk",
                          shift_mode="sd3_resolution")


def sprint_2step() -> Graph:
    """Sana-Sprint 1.6B: 2 sCM steps on the TrigFlow angles (pi/2, 1.3, 0); guidance through the model's embedding."""
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=DIT_SPRINT, weight_dtype="default")
    clip = g.node("SanaTextEncoderLoader", llm_name=LLM, byt5_name="none", projector_name="none", device="default")
    positive = g.node("CLIPTextEncode", clip=clip[0], text="a tiny astronaut hatching from an egg on the moon")
    guided = g.node("FluxGuidance", conditioning=positive[0], guidance=4.5)
    negative = g.node("CLIPTextEncode", clip=clip[0], text=NEGATIVE)
    latent = g.node("EmptySanaLatent", width=1024, height=1024, batch_size=1)
    samples = g.node("KSampler", model=model[0], positive=guided[0], negative=negative[0], latent_image=latent[0],
                     seed=42, steps=2, cfg=1.0, sampler_name="sana_scm", scheduler="sana_sprint", denoise=1.0)
    vae = g.node("SanaVAELoader", vae_name=VAE, tiling="auto")
    image = g.node("VAEDecode", samples=samples[0], vae=vae[0])
    g.node("SaveImage", images=image[0], filename_prefix="sana_sprint")
    return g


DIT_2K = "Sana_1600M_2Kpx_BF16.pth"
INPUT_IMAGE = "example.png"  # LoadImage's placeholder: pick your own picture in the node


def _editing_inputs(g: Graph, dit: str, prompt: str):
    """(model, positive, negative, vae, LoadImage) nodes shared by the editing workflows."""
    model = g.node("SanaDiTLoader", dit_name=dit, weight_dtype="default")
    clip = g.node("SanaTextEncoderLoader", llm_name=LLM, byt5_name="none", projector_name="none", device="default")
    positive = g.node("CLIPTextEncode", clip=clip[0], text=prompt)
    negative = g.node("CLIPTextEncode", clip=clip[0], text=NEGATIVE)
    vae = g.node("SanaVAELoader", vae_name=VAE, tiling="auto")
    return model, positive, negative, vae, g.node("LoadImage", image=INPUT_IMAGE)


def _decode_and_save(g: Graph, samples, vae, prefix: str) -> None:
    g.node("SaveImage", images=g.node("VAEDecode", samples=samples[0], vae=vae[0])[0], filename_prefix=prefix)


def img2img() -> Graph:
    """img2img with stock nodes: LoadImage -> VAEEncode -> KSampler at denoise 0.6 (lower keeps more of the input)."""
    g = Graph()
    model, positive, negative, vae, image = _editing_inputs(g, DIT_1600M, "a watercolor painting of the scene")
    latent = g.node("VAEEncode", pixels=image[0], vae=vae[0])
    samples = g.node("KSampler", model=model[0], positive=positive[0], negative=negative[0], latent_image=latent[0],
                     seed=42, steps=20, cfg=4.5, sampler_name="flow_dpm_solver", scheduler="sana_flow", denoise=0.6)
    _decode_and_save(g, samples, vae, "sana_img2img")
    return g


def inpaint() -> Graph:
    """Inpainting: paint the mask on the LoadImage picture (right click > Open in MaskEditor); SetLatentNoiseMask
    keeps the latent outside it and ImageCompositeMasked pastes the original pixels back outside the mask."""
    g = Graph()
    model, positive, negative, vae, image = _editing_inputs(g, DIT_1600M, "a small wooden cabin")
    latent = g.node("SetLatentNoiseMask", samples=g.node("VAEEncode", pixels=image[0], vae=vae[0])[0], mask=image[1])
    samples = g.node("KSampler", model=model[0], positive=positive[0], negative=negative[0], latent_image=latent[0],
                     seed=42, steps=20, cfg=4.5, sampler_name="flow_dpm_solver", scheduler="sana_flow", denoise=1.0)
    decoded = g.node("VAEDecode", samples=samples[0], vae=vae[0])
    pasted = g.node("ImageCompositeMasked", destination=decoded[0], source=image[0], x=0, y=0, resize_source=False,
                    mask=g.node("InvertMask", mask=image[1])[0])
    g.node("SaveImage", images=pasted[0], filename_prefix="sana_inpaint")
    return g


def sprint_img2img() -> Graph:
    """Sana-Sprint img2img as diffusers SanaSprintImg2ImgPipeline: SanaSprintScheduler's denoise is its strength."""
    g = Graph()
    model, positive, _, vae, image = _editing_inputs(g, DIT_SPRINT, "a tiny astronaut hatching from an egg on the moon")
    guided = g.node("FluxGuidance", conditioning=positive[0], guidance=4.5)
    sigmas = g.node("SanaSprintScheduler", steps=2, intermediate_angle=1.3, custom_angles="", denoise=0.5)
    samples = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=42)[0],
                     guider=g.node("BasicGuider", model=model[0], conditioning=guided[0])[0],
                     sampler=g.node("KSamplerSelect", sampler_name="sana_scm")[0], sigmas=sigmas[0],
                     latent_image=g.node("VAEEncode", pixels=image[0], vae=vae[0])[0])
    _decode_and_save(g, samples, vae, "sana_sprint_img2img")
    return g


def hires_fix() -> Graph:
    """Hires fix: 1024 px with the 1024 model, LatentUpscaleBy x2 on the 32-channel latent, then 2048 px with the
    2K model (sin-cos position embedding) at denoise 0.5."""
    g = _text_to_image(DIT_1600M, 1024, 1024, 20, 4.5, "a lighthouse on a cliff at sunset, detailed oil painting")
    api = g.to_api()
    first = next(k for k, n in api.items() if n["class_type"] == "KSampler")
    positive, negative = api[first]["inputs"]["positive"], api[first]["inputs"]["negative"]
    vae = next(k for k, n in api.items() if n["class_type"] == "SanaVAELoader")
    upscaled = g.node("LatentUpscaleBy", samples=[first, 0], upscale_method="bilinear", scale_by=2.0)
    model_2k = g.node("SanaDiTLoader", dit_name=DIT_2K, weight_dtype="default")
    refined = g.node("KSampler", model=model_2k[0], positive=positive, negative=negative, latent_image=upscaled[0],
                     seed=42, steps=20, cfg=4.5, sampler_name="flow_dpm_solver", scheduler="sana_flow", denoise=0.5)
    g.node("SaveImage", images=g.node("VAEDecode", samples=refined[0], vae=[vae, 0])[0], filename_prefix="sana_hires")
    return g


SHIPPED = {
    "sana_1600m_1024px_t2i.json": (t2i_1024, DIT_1600M, "Steps 20, CFG 4.5 (official app: 5.0 + PAG 2.0), "
                                   "sampler flow_dpm_solver, scheduler sana_flow, shift 3.0 from the model."),
    "sana_1600m_4k_tiled_decode.json": (t2i_4k_tiled, DIT_4K, "Steps 20, CFG 4.5, flow_dpm_solver + sana_flow; "
                                        "shift 6.0 comes from the 4K checkpoint. VAEDecodeTiled keeps memory low."),
    "sana15_4800m_1024px_t2i.json": (t2i_15_4800m, DIT_15_4800M, "Steps 20, CFG 4.5, flow_dpm_solver + sana_flow, "
                                     "shift 3.0 from the model."),
    "sana_sprint_1600m_2step.json": (sprint_2step, DIT_SPRINT, "Steps 2, CFG 1 (guidance 4.5 goes through "
                                     "FluxGuidance into the model's guidance embedding), sampler sana_scm, scheduler "
                                     "sana_sprint."),
    "sana_glyph_text_poster.json": (glyph_poster, DIT_1600M, "Put the text to render in quotes. Needs "
                                    "byt5_small_glyphxl_fp16.safetensors and a glyph projector file in "
                                    "models/text_encoders/; without a projector the glyph branch is off."),
    "sana_highres_resolution_shift.json": (highres_shifted, DIT_1600M, "ModelSamplingSana scales the shift with "
                                           "the pixel count (SD3 rule: 3.0 x sqrt(pixels / 1024^2)). Steps 20, CFG "
                                           "4.5."),
    "sana_img2img.json": (img2img, DIT_1600M, "Load your picture in LoadImage (sizes snap to multiples of 32). "
                          "Steps 20, CFG 4.5, flow_dpm_solver + sana_flow, denoise 0.6: KSampler runs the last 60% of "
                          "a 33-step grid (ComfyUI's denoise rule); 0.3-0.5 stays close to the picture."),
    "sana_inpaint.json": (inpaint, DIT_1600M, "Draw the mask in LoadImage's mask editor (or load a PNG with "
                          "transparency). Outside the mask the latent is kept exactly and the original pixels are "
                          "pasted back. Steps 20, CFG 4.5, denoise 1.0 (lower keeps more of the masked area). "
                          "VAEEncodeForInpaint also works (it greys the masked pixels first)."),
    "sana_sprint_img2img.json": (sprint_img2img, DIT_SPRINT, "2 sCM steps, guidance 4.5 through FluxGuidance, "
                                 "SanaSprintScheduler denoise = diffusers' strength: steps - int(steps - steps x "
                                 "denoise) steps run, so with 2 steps 0.5 starts at the 1.3 angle and 0.6 is almost "
                                 "text-to-image. KSampler (sana_scm, sana_sprint, denoise) also works but follows "
                                 "ComfyUI's rule (a steps/denoise grid), not diffusers'."),
    "sana_hires_fix_2k.json": (hires_fix, f"{DIT_1600M} and {DIT_2K}", "Pass 1: 1024 px, 20 steps, CFG 4.5. "
                               "LatentUpscaleBy x2 (bilinear) on the 32-channel latent, then the 2K model at denoise "
                               "0.5 (20 steps of a 40-step grid). Both images are saved; decode at 2048 px uses "
                               "tiling when memory is short."),
}


LORA_FILE = "pytorch_lora_weights.safetensors"  # what diffusers' train_dreambooth_lora_sana.py writes
DIT_600M = "Sana_600M_1024px_MultiLing.pth"  # the 600M base of the ControlNet (README table / fetch_models name)
CONTROLNET_600M = "Sana_600M_1024px_ControlNet_HED.pth"
CONTROLNET_1600M = "Sana_1600M_1024px_BF16_ControlNet_HED.pth"
EDGE_NOTE = ("The hint is an edge map of the LoadImage picture. Stock Canny works; for the soft edges the HED "
             "ControlNet was trained on, replace Canny by HEDPreprocessor (or PiDiNetPreprocessor / "
             "TEEDPreprocessor) from comfyui_controlnet_aux (Fannovel16), or load a ready-made edge map. Connect "
             "the Sana VAE to Apply ControlNet: it encodes the hint with the DC-AE. Strength 1.0 as diffusers' "
             "SanaControlNetPipeline; 0.5-0.8 follows the edges more loosely.")


def lora_1600m() -> Graph:
    """Sana 1.6B + a LoRA through the stock LoraLoaderModelOnly: diffusers/PEFT Sana LoRAs (SanaPipeline
    save_lora_weights, train_dreambooth_lora_sana.py), kohya-style and original-name LoRAs all load; chain more
    loaders to stack LoRAs."""
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=DIT_1600M, weight_dtype="default")
    model = g.node("LoraLoaderModelOnly", model=model[0], lora_name=LORA_FILE, strength_model=1.0)
    clip = g.node("SanaTextEncoderLoader", llm_name=LLM, byt5_name="none", projector_name="none", device="default")
    positive = g.node("CLIPTextEncode", clip=clip[0], text="a portrait of a corgi astronaut, studio lighting")
    negative = g.node("CLIPTextEncode", clip=clip[0], text=NEGATIVE)
    latent = g.node("EmptySanaLatent", width=1024, height=1024, batch_size=1)
    samples = g.node("KSampler", model=model[0], positive=positive[0], negative=negative[0], latent_image=latent[0],
                     seed=42, steps=20, cfg=4.5, sampler_name="flow_dpm_solver", scheduler="sana_flow", denoise=1.0)
    _decode_and_save(g, samples, g.node("SanaVAELoader", vae_name=VAE, tiling="auto"), "sana_lora")
    return g


def _controlnet(dit: str, controlnet: str, prompt: str, prefix: str) -> Graph:
    g = Graph()
    model, positive, negative, vae, image = _editing_inputs(g, dit, prompt)
    edges = g.node("Canny", image=image[0], low_threshold=0.4, high_threshold=0.8)
    applied = g.node("ControlNetApplyAdvanced", positive=positive[0], negative=negative[0],
                     control_net=g.node("SanaControlNetLoader", control_net_name=controlnet)[0], image=edges[0],
                     strength=1.0, start_percent=0.0, end_percent=1.0, vae=vae[0])
    latent = g.node("EmptySanaLatent", width=1024, height=1024, batch_size=1)
    samples = g.node("KSampler", model=model[0], positive=applied[0], negative=applied[1], latent_image=latent[0],
                     seed=42, steps=20, cfg=4.5, sampler_name="flow_dpm_solver", scheduler="sana_flow", denoise=1.0)
    _decode_and_save(g, samples, vae, prefix)
    return g


def controlnet_hed_600m() -> Graph:
    """Sana 600M + the HED ControlNet: SanaControlNetLoader and the stock Apply ControlNet (Advanced)."""
    return _controlnet(DIT_600M, CONTROLNET_600M, "a cozy cabin in a snowy forest, warm light", "sana_controlnet")


def controlnet_hed_1600m() -> Graph:
    """Sana 1.6B + the HED ControlNet: SanaControlNetLoader and the stock Apply ControlNet (Advanced)."""
    return _controlnet(DIT_1600M, CONTROLNET_1600M, "a cozy cabin in a snowy forest, warm light", "sana_controlnet")


SHIPPED.update({
    "sana_1600m_lora.json": (lora_1600m, DIT_1600M, "Put the LoRA in models/loras/ and pick it in Load LoRA; "
                             "strength 1.0 is what diffusers applies. Steps 20, CFG 4.5, flow_dpm_solver + "
                             "sana_flow. The log names any LoRA key that did not map ('lora key not loaded')."),
    "sana_600m_controlnet_hed.json": (controlnet_hed_600m, f"{DIT_600M} (and {CONTROLNET_600M} -> models/controlnet/)",
                                      "Steps 20, CFG 4.5, flow_dpm_solver + sana_flow, shift 4.0 from the model. "
                                      + EDGE_NOTE),
    "sana_1600m_controlnet_hed.json": (controlnet_hed_1600m,
                                       f"{DIT_1600M} (and {CONTROLNET_1600M} -> models/controlnet/)",
                                       "Steps 20, CFG 4.5, flow_dpm_solver + sana_flow, shift 3.0 from the model. "
                                       + EDGE_NOTE),
})

def note_for(filename: str) -> str:
    """Text of the Note node inside a shipped workflow."""
    builder, dit, settings = SHIPPED[filename]
    return f"{builder.__doc__}\n\nRecommended: {settings}\n\n{FILES_NOTE.format(dit=dit, workflow=filename)}"


def write_workflows(object_info: dict, folder: Path) -> list[Path]:
    """Write every shipped workflow in UI format into ``folder``."""
    from tests.integration.ui_workflow import to_ui_workflow

    written = []
    for filename, (builder, _, _) in SHIPPED.items():
        path = folder / filename
        path.write_text(json.dumps(to_ui_workflow(builder(), object_info, note_for(filename)), indent=1) + "\n")
        written.append(path)
    return written


def main() -> int:
    """Start a server with the test fixtures, read /object_info, rewrite workflows/."""
    from tests.integration.conftest import PACKAGE_ROOT, _model_files
    from tests.integration.server import ComfyServer, find_comfyui

    comfy_root, reason = find_comfyui()
    if comfy_root is None:
        print(reason)
        return 1
    with tempfile.TemporaryDirectory() as base:
        server = ComfyServer(comfy_root, PACKAGE_ROOT, Path(base), _model_files())
        server.start()
        try:
            for path in write_workflows(server.object_info(), REPO / "workflows"):
                print(f"wrote {path.relative_to(REPO)}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
