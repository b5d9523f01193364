"""scripts/fetch_models.py: which files a job needs, the report and exit status, offline behaviour, no leftovers.

Offline: the network is never used (downloads are replaced by a fake ``huggingface_hub``; the probe targets a closed
local port).
"""

import importlib.util
import socket
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
MAIN_JOB = {"diffusion_models/Sana_1600M_1024px_BF16.pth", "text_encoders/gemma-2-2b-it",
            "vae/dc-ae-f32c32-sana-1.1/model.safetensors"}
MAIN_JOB_GB = 6.43 + 5.23 + 1.25
PROBE_LIMIT_S = 5.0  # an unreachable hub must be detected in about one probe timeout, not ~47 s of retries


def _fetcher():
    spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "scripts" / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(tmp_path: Path, keys, fetch) -> Path:
    """A ComfyUI folder whose models/ holds stand-ins for the given keys."""
    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    for key in keys:
        target = models / key
        if fetch.MODEL_SOURCES[key].repo_path:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"x")
        else:
            target.mkdir(parents=True)
            (target / "config.json").write_text("{}")
            (target / "model-00001-of-00001.safetensors").write_bytes(b"x")
    return tmp_path


@pytest.fixture
def fetch(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return _fetcher()


def test_every_workflow_file_has_a_source(fetch):
    needed = fetch.needed_files(sorted(WORKFLOWS.glob("*.json")))
    assert MAIN_JOB <= set(needed)
    assert set(needed) <= set(fetch.MODEL_SOURCES)
    assert all(fetch.MODEL_SOURCES[k].size_gb > 0 for k in needed if fetch.MODEL_SOURCES[k].required)


def test_default_is_the_main_job_with_sizes_and_total(fetch, tmp_path, capsys):
    comfy = _tree(tmp_path, [], fetch)
    assert fetch.main(["--comfyui", str(comfy), "--list"]) == 1
    out = capsys.readouterr().out
    missing = [line for line in out.splitlines() if line.startswith("missing")]
    assert len(missing) == len(MAIN_JOB), out
    assert all(" GB " in line and "hf://" in line for line in missing), out
    assert str(comfy / "models" / "diffusion_models" / "Sana_1600M_1024px_BF16.pth") in out
    assert f"{MAIN_JOB_GB:.2f} GB to download" in out


def test_all_covers_every_shipped_workflow(fetch, tmp_path, capsys):
    comfy = _tree(tmp_path, [], fetch)
    fetch.main(["--comfyui", str(comfy), "--all", "--list"])
    out = capsys.readouterr().out
    assert "SANA1.5_4.8B_1024px.pth" in out and "Sana_1600M_4Kpx_BF16.pth" in out
    assert f"for {len(list(WORKFLOWS.glob('*.json')))} workflow(s)" in out


def test_complete_main_job_tree_exits_0_without_network(fetch, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fetch, "hub_reachable", lambda: pytest.fail("nothing to fetch must not touch the network"))
    comfy = _tree(tmp_path, MAIN_JOB, fetch)
    assert fetch.main(["--comfyui", str(comfy), "--list"]) == 0
    assert fetch.main(["--comfyui", str(comfy)]) == 0
    assert "all required model files are present" in capsys.readouterr().out


def test_unreleased_optional_file_is_reported_not_a_failure(fetch, tmp_path, capsys):
    workflow = WORKFLOWS / "sana_glyph_text_poster.json"
    needed = fetch.needed_files([workflow])
    assert "text_encoders/sana_glyph_projector.safetensors" in needed
    comfy = _tree(tmp_path, [k for k in needed if fetch.MODEL_SOURCES[k].required], fetch)
    assert fetch.main(["--comfyui", str(comfy), "--workflow", str(workflow)]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("optional") and "sana_glyph_projector" in line for line in out.splitlines()), out


def test_offline_reports_quickly_and_downloads_nothing(fetch, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fetch, "download", lambda *a: pytest.fail("offline must not try to download"))
    comfy = _tree(tmp_path, [], fetch)
    assert fetch.main(["--comfyui", str(comfy)]) == 1
    assert "offline (HF_HUB_OFFLINE is set)" in capsys.readouterr().out
    assert not any((comfy / "models").iterdir()), "the offline attempt left files or folders in models/"


def test_unreachable_hub_is_detected_in_one_short_probe(fetch, monkeypatch):
    with socket.socket() as s:  # a port that was free a moment ago: connecting is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    online, reason = fetch.hub_reachable()
    assert not online and f"127.0.0.1:{port}" in reason
    assert time.monotonic() - start < PROBE_LIMIT_S


def _fake_hub(calls: list) -> types.ModuleType:
    """huggingface_hub stand-in writing what the real one writes into local_dir, resume metadata included."""
    def hf_hub_download(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        (Path(local_dir) / ".cache" / "huggingface" / "download").mkdir(parents=True, exist_ok=True)
        return str(path)

    def snapshot_download(repo_id, local_dir, allow_patterns=None):
        calls.append((repo_id, tuple(allow_patterns or ())))
        for name in ("config.json", "model-00001-of-00002.safetensors", "tokenizer.json"):
            (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(local_dir) / name).write_bytes(b"{}")
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
        return str(local_dir)

    return types.SimpleNamespace(hf_hub_download=hf_hub_download, snapshot_download=snapshot_download)


def test_download_moves_finished_files_and_leaves_nothing_behind(fetch, tmp_path, capsys, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", _fake_hub(calls))
    monkeypatch.setattr(fetch, "hub_reachable", lambda: (True, ""))
    monkeypatch.setenv("SANA_FETCH_CACHE", str(tmp_path / "staging"))
    comfy = _tree(tmp_path / "comfy", [], fetch)
    assert fetch.main(["--comfyui", str(comfy)]) == 0, capsys.readouterr().out
    assert len(calls) == len(MAIN_JOB)
    models = comfy / "models"
    found = sorted(str(p.relative_to(models)) for p in models.rglob("*"))
    assert not [p for p in found if ".cache" in p or "sana-fetch" in p], found
    assert all(fetch.is_present(models / key) for key in MAIN_JOB)
    assert not any((tmp_path / "staging").iterdir()), "the staging folder kept a finished download"


def test_missing_models_folder_is_a_usage_error(fetch, tmp_path, capsys):
    assert fetch.main(["--comfyui", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().out
