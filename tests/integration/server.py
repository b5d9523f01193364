"""A real ComfyUI server in a subprocess, for integration tests (after ComfyUI's own tests/execution harness).

The server runs on 127.0.0.1 and a free port with ``--cpu --use-pytorch-cross-attention --fp32-text-enc``; the
package is mounted through ``--extra-model-paths-config`` with a ``custom_nodes:`` entry, and a temporary models tree
holds the generated checkpoint fixtures. Every folder the server writes (base, output, input, temp, user, bytecode
cache) is temporary or under ~/.cache, so the ComfyUI checkout may be read-only. Graphs are posted to ``/prompt``,
progress is followed on ``/ws`` and results are read from ``/history`` and the output folder.
"""

import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STARTUP_TIMEOUT_S = 240
DEFAULT_RUN_TIMEOUT_S = 600
WS_POLL_TIMEOUT_S = 5
HISTORY_WAIT_S = 10
TEXT_EVENT = 3  # server.BinaryEventTypes.TEXT: 4-byte type, 4-byte node-id length, node id, UTF-8 text
PACKAGE_LINK_NAME = "sana_native"
# ComfyUI lookup order: $COMFYUI_PATH, comfy-cli's default workspace, then ../shared/ComfyUI beside the project root.
COMFY_CLI_WORKSPACE = Path.home() / "comfy" / "ComfyUI"
SHARED_COMFYUI = Path(__file__).resolve().parents[2].parent / "shared" / "ComfyUI"
# Bytecode of the (possibly read-only) ComfyUI tree goes here instead of its __pycache__ folders.
PYCACHE_DIR = Path.home() / ".cache" / "sana-native" / "pycache"
MODEL_FOLDERS = ("diffusion_models", "vae", "text_encoders", "loras", "checkpoints", "controlnet")
SERVER_FLAGS = (
    "--cpu", "--use-pytorch-cross-attention", "--fp32-text-enc", "--disable-api-nodes", "--disable-auto-launch",
    "--database-url", "sqlite:///:memory:", "--preview-method", "latent2rgb", "--log-stdout",
)


def comfyui_candidates() -> list[Path]:
    """Where ComfyUI is looked for, in order: ``COMFYUI_PATH``, ``~/comfy/ComfyUI``, ``../shared/ComfyUI``."""
    configured = os.environ.get("COMFYUI_PATH")
    return ([Path(configured)] if configured else []) + [COMFY_CLI_WORKSPACE, SHARED_COMFYUI]


def _binary_event(message: bytes) -> tuple[str, str | None]:
    """A binary websocket frame: ("progress_text", text) or ("binary", None) for previews and other payloads."""
    if len(message) > 8 and struct.unpack(">I", message[:4])[0] == TEXT_EVENT:
        return "progress_text", message[8 + struct.unpack(">I", message[4:8])[0]:].decode("utf-8", errors="replace")
    return "binary", None


def find_comfyui() -> tuple[Path | None, str]:
    """The first ComfyUI checkout of ``comfyui_candidates()``, and a reason when none can be used here."""
    candidates = comfyui_candidates()
    root = next((c.resolve() for c in candidates if (c / "main.py").is_file()), None)
    if root is None:
        tried = ", ".join(str(c) for c in candidates)
        return None, f"ComfyUI not found at {tried} (set COMFYUI_PATH or install it with comfy-cli)"
    for module in ("torchvision", "websocket", "aiohttp"):
        if importlib.util.find_spec(module) is None:
            return None, f"'{module}' is not importable in {sys.executable}: ComfyUI cannot start here (see .ci/run)"
    return root, ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunResult:
    """What a finished prompt produced: /history outputs, saved images and latents, preview frames received."""

    prompt_id: str
    outputs: dict
    images: list = field(default_factory=list)
    latents: list = field(default_factory=list)
    previews: int = 0


class ComfyServer:
    """Starts ComfyUI on a temporary base directory; ``run`` executes an API-format graph and returns its results."""

    def __init__(self, comfy_root: Path, package_root: Path, base: Path, model_files: dict[str, Path]):
        self.comfy_root, self.base = comfy_root, base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.models_dir = base / "models"
        self.output_dir, self.temp_dir = base / "output", base / "temp"
        self._log_path = base / "comfyui.log"
        self._prepare_tree(package_root, model_files)
        self._process = None

    def _prepare_tree(self, package_root: Path, model_files: dict[str, Path]) -> None:
        models = [f"models/{f}" for f in MODEL_FOLDERS]
        folders = ("custom_nodes", "output", "input", "temp", "user", "frontend", *models)
        for sub in folders:
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "custom_nodes" / PACKAGE_LINK_NAME).symlink_to(package_root, target_is_directory=True)
        for relative, source in model_files.items():
            link = self.models_dir / relative.rstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source, target_is_directory=Path(source).is_dir())
        lines = ["sana_tests:", f"  base_path: {self.base}", "  custom_nodes: custom_nodes"]
        lines += [f"  {folder}: models/{folder}" for folder in MODEL_FOLDERS]
        (self.base / "extra_model_paths.yaml").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        command = [
            sys.executable, str(self.comfy_root / "main.py"), "--listen", "127.0.0.1", "--port", str(self.port),
            *SERVER_FLAGS, "--base-directory", str(self.base),
            "--extra-model-paths-config", str(self.base / "extra_model_paths.yaml"),
            "--front-end-root", str(self.base / "frontend"), "--output-directory", str(self.output_dir),
            "--input-directory", str(self.base / "input"), "--temp-directory", str(self.base),
            "--user-directory", str(self.base / "user"),
        ]
        log = open(self._log_path, "w")
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(PYCACHE_DIR), "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(command, cwd=self.comfy_root, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self._process.returncode} during startup:\n{self.log()}")
            try:
                self._get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log(self, since: int = 0) -> str:
        """What the server printed so far, from byte offset `since` (a `log_offset()` taken earlier) on."""
        if not self._log_path.exists():
            return ""
        with open(self._log_path, "rb") as handle:
            handle.seek(since)
            return handle.read().decode(errors="replace")

    def log_offset(self) -> int:
        """Current end of the server log: pass it to `log(since=...)` to read only what a test made the server print."""
        return self._log_path.stat().st_size if self._log_path.exists() else 0

    def _get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as response:
            return json.loads(response.read())

    def _post(self, route: str, payload: dict):
        request = urllib.request.Request(
            self.url + route, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {route} was refused ({e.code}): {e.read().decode(errors='replace')}") from e

    def object_info(self) -> dict:
        """The server's /object_info (every registered node and its schema)."""
        return self._get("/object_info")

    def submit(self, graph, extra_data: dict | None = None) -> tuple[str, str | None, int]:
        """Queue a graph and wait for it; returns (prompt_id, error message or None, preview frames received)."""
        import websocket

        api = graph.to_api() if hasattr(graph, "to_api") else graph
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}")
        ws.settimeout(WS_POLL_TIMEOUT_S)
        try:
            payload = {"prompt": api, "client_id": self.client_id, "extra_data": extra_data or {}}
            queued = self._post("/prompt", payload)
            if queued.get("node_errors"):  # ComfyUI still runs the outputs that validated; a test must not pass
                raise AssertionError(f"ComfyUI refused part of the graph: {json.dumps(queued['node_errors'])}")
            prompt_id = queued["prompt_id"]
            return (prompt_id, *self.wait(ws, prompt_id)[:2])
        finally:
            ws.close()

    def events(self, ws, prompt_id: str, timeout: float = DEFAULT_RUN_TIMEOUT_S):
        """Yield ``(type, data)`` for this prompt's websocket events; binary frames yield ``("progress_text", text)``
        (ComfyUI's send_progress_text) or ``("binary", None)`` (previews). Raises when the server dies or on timeout."""
        import websocket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-4000:]}")
            try:
                message = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if isinstance(message, bytes):
                yield _binary_event(message)
                continue
            event = json.loads(message)
            data = event.get("data", {})
            if data.get("prompt_id") == prompt_id:
                yield event["type"], data
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s; log tail:\n{self.log()[-4000:]}")

    def wait(self, ws, prompt_id: str, timeout: float = DEFAULT_RUN_TIMEOUT_S) -> tuple[str | None, int, list[str]]:
        """Follow a queued prompt to its end -> (execution_error text or None, preview frames, progress texts)."""
        previews, texts = 0, []
        for kind, data in self.events(ws, prompt_id, timeout):
            if kind == "binary":
                previews += 1
            elif kind == "progress_text":
                texts.append(data)
            elif kind == "execution_error":
                return f"{data.get('exception_type')}: {data.get('exception_message')}", previews, texts
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                return None, previews, texts
        raise AssertionError("unreachable: events() raises on timeout")

    def run(self, graph, extra_data: dict | None = None) -> RunResult:
        """Run a graph that must succeed; AssertionError carries ComfyUI's execution_error text otherwise."""
        prompt_id, error, previews = self.submit(graph, extra_data)
        if error is not None:
            raise AssertionError(f"ComfyUI execution_error: {error}\nlog tail:\n{self.log()[-3000:]}")
        outputs = self._history(prompt_id)["outputs"]
        result = RunResult(prompt_id, outputs, previews=previews)
        for node_output in outputs.values():
            result.images += [self._load_image(item) for item in node_output.get("images", [])]
            result.latents += [self._load_latent(item) for item in node_output.get("latents", [])]
        return result

    def _history(self, prompt_id: str) -> dict:
        # The websocket can report completion a moment before /history holds the entry.
        deadline = time.monotonic() + HISTORY_WAIT_S
        while time.monotonic() < deadline:
            history = self._get(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            time.sleep(0.1)
        raise AssertionError(f"prompt {prompt_id} finished but never appeared in /history")

    def run_error(self, graph, extra_data: dict | None = None) -> str:
        """Run a graph that must fail (validation or execution); returns the error text."""
        try:
            _, error, _ = self.submit(graph, extra_data)
        except AssertionError as refused:
            return str(refused)
        if error is None:
            raise AssertionError("the graph was expected to fail but ran successfully")
        return error

    def _saved_path(self, item: dict) -> Path:
        folder = self.output_dir if item.get("type", "output") == "output" else self.temp_dir / "temp"
        return folder / item.get("subfolder", "") / item["filename"]

    def _load_image(self, item: dict) -> np.ndarray:
        from PIL import Image

        with Image.open(self._saved_path(item)) as image:
            return np.asarray(image.convert("RGB"))

    def _load_latent(self, item: dict):
        import safetensors.torch

        return safetensors.torch.load_file(str(self._saved_path(item)))["latent_tensor"]
