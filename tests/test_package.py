"""The package's standing rules (DESIGN.md §2, §6; STYLE.md habits 1, 5, 13), checked on the source tree."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("models", "samplers")
COMFY_MODULES = ("comfy", "comfy_api", "comfy_execution", "folder_paths", "nodes", "server", "execution")
FORBIDDEN_IN_MODELS = re.compile(r"\bnn\.(Linear|Conv2d|LayerNorm|GroupNorm|RMSNorm|Embedding)\(|torch\.randn\(")
TORCH_REQUIREMENT = re.compile(r"^\s*(torch|torchvision|torchaudio)\b", re.IGNORECASE)


def _python_files(*folders):
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


@pytest.mark.parametrize("path", _python_files(*PURE_PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_layers_never_import_comfyui(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        bad = [n for n in names if n.split(".")[0] in COMFY_MODULES]
        assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad}; models/ and samplers/ must stay pure"


@pytest.mark.parametrize("path", _python_files("models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_build_layers_through_operations(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{number}"
        assert not FORBIDDEN_IN_MODELS.search(line), f"{where}: use operations.X / torch.empty"


def test_pure_packages_import_without_comfyui():
    code = "import sys, models, samplers; bad = [m for m in sys.modules if m.split('.')[0] in %r]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code % (COMFY_MODULES,)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing models/samplers pulled in ComfyUI modules: {out.stdout}"


def test_requirements_never_list_torch():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    offending = [line for line in lines if TORCH_REQUIREMENT.match(line)]
    assert not offending, f"requirements.txt must not list torch packages (the Manager pip-installs them): {offending}"


def test_root_init_has_no_v1_mappings():
    assert "NODE_CLASS_MAPPINGS" not in (ROOT / "__init__.py").read_text(), "V1 mappings make ComfyUI ignore the V3 API"


def test_pyproject_registry_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    meta, comfy = project["project"], project["tool"]["comfy"]
    assert "comfyui" not in meta["name"].lower(), "the registry name must not contain 'ComfyUI'"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]), f"version {meta['version']!r} is not semver"
    assert meta["urls"]["Repository"] and meta["license"] and meta["requires-python"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"]


def test_ruff_clean():
    """ruff with the project's configuration (line length 120, pyflakes, bugbear, docstrings on models/samplers)."""
    ruff = pytest.importorskip("ruff")
    binary = Path(ruff.find_ruff_bin())
    out = subprocess.run([str(binary), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"ruff found problems:\n{out.stdout[-4000:]}"
