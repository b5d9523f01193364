"""Harness of the bad-input suite (test_bad_inputs.py): the shared base graph, a submit that also collects the UI's
progress texts, and the "next good prompt" check.

Every prompt of the suite starts from the same base nodes (good DiT, text encoder, prompts, empty latent, VAE), so
ComfyUI's output cache keeps them loaded between prompts even when a case does not use them (the classic cache keeps
every node of the current prompt), and the good prompt after each case costs one 1-step sample.
"""

import json
from types import SimpleNamespace

from tests.fixtures import dcae, rope, text
from tests.integration.graph import Graph

WIDTH = HEIGHT = 64  # 2 x 2 latent tokens
GOOD_DIT = rope.NOPE_FILE  # hidden 1152, one block, no position encoding
GOOD_ROPE_DIT = rope.ROPE_FILE
GOOD_VAE = f"{dcae.ORIGINAL_DIR}/{dcae.ORIGINAL_FILE}"
GOOD_LLM = f"{text.GEMMA_FOLDER}/"
PROMPT = "a red fox in the snow"
WS_TIMEOUT_S = 5
RUN_TIMEOUT_S = 300
MIN_IMAGE_STD = 1.0  # a decoded random-weight image varies by far more than one 8-bit level; a black image has 0
MIN_LATENT_STD = 1e-3  # a sampled latent of the random-weight DiT varies by O(1); a constant (e.g. zero) one does not


def base_graph(latent_node: str = "EmptySanaLatent"):
    """(Graph, refs) with the good base nodes every prompt of the suite carries (see module docstring)."""
    g = Graph()
    b = SimpleNamespace()
    b.model = g.node("SanaDiTLoader", dit_name=GOOD_DIT, weight_dtype="default")
    b.clip = g.node("SanaTextEncoderLoader", llm_name=GOOD_LLM, byt5_name="none", projector_name="none", device="cpu")
    b.pos = g.node("CLIPTextEncode", clip=b.clip[0], text=PROMPT)
    b.neg = g.node("CLIPTextEncode", clip=b.clip[0], text="")
    b.latent = g.node(latent_node, width=WIDTH, height=HEIGHT, batch_size=1)
    b.vae = g.node("SanaVAELoader", vae_name=GOOD_VAE, tiling="auto", preview_colors="off")
    return g, b


def ksampler(g, b, model=None, latent=None, positive=None, sampler="flow_dpm_solver", scheduler="sana_flow",
             steps=2, cfg=2.0, seed=0):
    """A KSampler node on the base graph (any input can be swapped for a case)."""
    return g.node("KSampler", model=(model or b.model)[0], positive=(positive or b.pos)[0], negative=b.neg[0],
                  latent_image=(latent or b.latent)[0], seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                  scheduler=scheduler, denoise=1.0)


def custom_sampler(g, b, sampler, sigmas, model=None):
    """SamplerCustomAdvanced with the given SAMPLER and SIGMAS refs on the base graph."""
    guider = g.node("CFGGuider", model=(model or b.model)[0], positive=b.pos[0], negative=b.neg[0], cfg=2.0)
    return g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=1)[0], guider=guider[0],
                  sampler=sampler[0], sigmas=sigmas[0], latent_image=b.latent[0])


def save_latent(g, samples):
    return g.node("SaveLatent", samples=samples[0], filename_prefix="bad_inputs")


def submit(comfy, graph) -> SimpleNamespace:
    """Queue a graph and wait: .prompt_id (None when validation refused it), .error (text or None), .texts (the
    progress texts the UI received), .outputs (/history outputs, {} on failure)."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}")
    ws.settimeout(WS_TIMEOUT_S)
    texts: list[str] = []
    try:
        try:
            queued = comfy._post("/prompt", {"prompt": graph.to_api(), "client_id": comfy.client_id})
        except AssertionError as refused:  # validation: nothing was queued
            return SimpleNamespace(prompt_id=None, error=str(refused), texts=texts, outputs={})
        if queued.get("node_errors"):
            return SimpleNamespace(prompt_id=None, error=json.dumps(queued["node_errors"]), texts=texts, outputs={})
        prompt_id = queued["prompt_id"]
        error, _, received = comfy.wait(ws, prompt_id, RUN_TIMEOUT_S)
        texts.extend(received)
    finally:
        ws.close()
    outputs = comfy._history(prompt_id).get("outputs", {}) if error is None else _outputs_if_any(comfy, prompt_id)
    return SimpleNamespace(prompt_id=prompt_id, error=error, texts=texts, outputs=outputs)


def _outputs_if_any(comfy, prompt_id: str) -> dict:
    history = comfy._get(f"/history/{prompt_id}")
    return history.get(prompt_id, {}).get("outputs", {})


def ui_texts(result) -> list[str]:
    """Progress texts and any text the nodes returned for the UI ("text" entries of /history outputs)."""
    found = list(result.texts)
    for node_output in result.outputs.values():
        for value in node_output.get("text", []) or []:
            found.append(value if isinstance(value, str) else json.dumps(value))
    return found


def assert_no_image(result) -> None:
    """A failed prompt must not have saved any image or latent."""
    saved = [k for out in result.outputs.values() for k in ("images", "latents") if out.get(k)]
    assert not saved, f"a failing prompt still produced outputs: {result.outputs}"


class GoodPrompt:
    """The good prompt run after every case: 1 step at a fresh seed; asserts a finite latent that is not constant.
    (No decode here: the 64 px DC-AE decode costs seconds on a busy CPU; test_robustness.py decodes good images.)"""

    def __init__(self):
        self.seed = 1000

    def run(self, comfy, latent_node: str) -> None:
        self.seed += 1
        g, b = base_graph(latent_node)
        save_latent(g, ksampler(g, b, steps=1, seed=self.seed))
        result = comfy.run(g)
        assert len(result.latents) == 1, f"the good prompt after a bad one saved {len(result.latents)} latents"
        latent = result.latents[0]
        assert bool(latent.isfinite().all()) and float(latent.std()) > MIN_LATENT_STD, (
            f"the good prompt after a bad one gave a non-finite or constant latent (std {float(latent.std()):.3g})")
