"""Interrupt and determinism through a real ComfyUI (issue 15).

- Interrupt: POST /interrupt while flow_dpm_solver samples; the run must stop within one step (no progress event
  beyond the step that was running when the interrupt arrived) and report ``execution_interrupted``.
- Determinism: the same tiny graph and seed on the session server and on a second server process give identical
  pixels (the two servers never sample at the same time).
"""

import json
import time
import urllib.request

import numpy as np
import pytest

from tests.integration import bad_input_harness as h
from tests.integration.conftest import PACKAGE_ROOT, _model_files
from tests.integration.server import ComfyServer, find_comfyui

pytestmark = pytest.mark.integration

INTERRUPT_STEPS = 400  # far more than run before the interrupt arrives
INTERRUPT_AFTER_STEP = 3  # progress value at which the interrupt is sent
INTERRUPT_SIZE = 512  # 16 x 16 latent tokens: a step long enough to time, short enough to keep the test cheap
INTERRUPT_TIMEOUT_S = 120


def _latent_node(comfy) -> str:
    return "EmptySanaLatent" if "EmptySanaLatent" in comfy.object_info() else "EmptySanaLatentImage"


def _interrupt_graph(latent_node: str):
    g, b = h.base_graph(latent_node)
    latent = g.node(latent_node, width=INTERRUPT_SIZE, height=INTERRUPT_SIZE, batch_size=1)
    h.save_latent(g, h.ksampler(g, b, latent=latent, steps=INTERRUPT_STEPS, seed=5))
    return g


def _post_interrupt(comfy, prompt_id: str) -> None:
    """POST /interrupt for this prompt (the route answers with an empty body, so not through comfy._post)."""
    request = urllib.request.Request(f"{comfy.url}/interrupt", data=json.dumps({"prompt_id": prompt_id}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def _events_until_interrupted(comfy, ws, prompt_id):
    """Read events; send the interrupt after step INTERRUPT_AFTER_STEP. Returns (value at interrupt, values after,
    seconds from interrupt to execution_interrupted, seconds per step before the interrupt)."""
    at_interrupt, sent_at, after, stamps = None, None, [], []
    for kind, data in comfy.events(ws, prompt_id, INTERRUPT_TIMEOUT_S):
        if kind == "progress":
            if sent_at is None:
                stamps.append(time.monotonic())
                if data["value"] >= INTERRUPT_AFTER_STEP:
                    at_interrupt, sent_at = data["value"], time.monotonic()
                    _post_interrupt(comfy, prompt_id)
            else:
                after.append(data["value"])
        elif kind in ("execution_interrupted", "execution_error", "execution_success"):
            assert kind == "execution_interrupted", f"the run ended with {kind}: {data}"
            step_s = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
            return at_interrupt, after, time.monotonic() - sent_at, step_s
    raise AssertionError("unreachable: events() raises on timeout")


def test_interrupt_stops_within_one_step(comfy):
    import websocket

    latent_node = _latent_node(comfy)
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={comfy.client_id}")
    ws.settimeout(h.WS_TIMEOUT_S)
    try:
        payload = {"prompt": _interrupt_graph(latent_node).to_api(), "client_id": comfy.client_id}
        queued = comfy._post("/prompt", payload)
        at_interrupt, after, latency_s, step_s = _events_until_interrupted(comfy, ws, queued["prompt_id"])
    finally:
        ws.close()
    print(json.dumps({"interrupt_at_step": at_interrupt, "progress_after": after, "latency_ms": latency_s * 1e3,
                      "step_ms": step_s * 1e3}))
    beyond = [v for v in after if v > at_interrupt + 1]
    assert not beyond, f"sampling went on for steps {beyond} after the interrupt at step {at_interrupt}"
    assert at_interrupt < INTERRUPT_STEPS


def _tiny_image(server, latent_node: str) -> np.ndarray:
    g, b = h.base_graph(latent_node)
    sampled = h.ksampler(g, b, steps=2, seed=1234)
    g.node("SaveImage", images=g.node("VAEDecode", samples=sampled[0], vae=b.vae[0])[0], filename_prefix="determinism")
    result = server.run(g)
    assert len(result.images) == 1
    return result.images[0]


def test_same_seed_same_pixels_across_processes(comfy, tmp_path_factory):
    latent_node = _latent_node(comfy)
    first = _tiny_image(comfy, latent_node)
    comfy_root, reason = find_comfyui()
    second_server = ComfyServer(comfy_root, PACKAGE_ROOT, tmp_path_factory.mktemp("comfyui_second"), _model_files())
    try:
        second_server.start()
        second = _tiny_image(second_server, latent_node)
    finally:
        second_server.stop()
    assert first.shape == second.shape and first.std() > h.MIN_IMAGE_STD
    different = int((first != second).any(axis=-1).sum())
    assert different == 0, f"{different} pixels differ between two server processes with the same seed"
