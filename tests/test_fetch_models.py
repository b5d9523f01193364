"""scripts/fetch_models.py: which files the shipped workflows need, and the offline report of what is missing."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fetcher():
    spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "scripts" / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_models_every_workflow_file_has_a_source():
    fetch = _fetcher()
    needed = fetch.needed_files(sorted((ROOT / "workflows").glob("*.json")))
    assert "diffusion_models/Sana_1600M_1024px_BF16.pth" in needed
    assert "text_encoders/gemma-2-2b-it" in needed and "vae/dc-ae-f32c32-sana-1.1/model.safetensors" in needed
    assert set(needed) <= set(fetch.MODEL_SOURCES)


def test_fetch_models_list_reports_missing_files_and_targets(tmp_path, capsys):
    fetch = _fetcher()
    workflow = ROOT / "workflows" / "sana_1600m_1024px_t2i.json"
    status = fetch.main(["--comfyui", str(tmp_path), "--workflow", str(workflow), "--list"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert any(str(tmp_path / "models" / "diffusion_models" / "Sana_1600M_1024px_BF16.pth") in line for line in lines)
    assert all("hf://" in line or "no public release" in line for line in lines), lines


def test_fetch_models_skips_present_files(tmp_path, capsys):
    fetch = _fetcher()
    workflow = ROOT / "workflows" / "sana_1600m_1024px_t2i.json"
    for key in fetch.needed_files([workflow]):
        target = tmp_path / "models" / key
        if fetch.MODEL_SOURCES[key].repo_path:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"x")
        else:
            target.mkdir(parents=True)
            (target / "config.json").write_text("{}")
    assert fetch.main(["--comfyui", str(tmp_path), "--workflow", str(workflow), "--list"]) == 0
    assert "are present" in capsys.readouterr().out
