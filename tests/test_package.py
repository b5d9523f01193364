"""The package's standing rules (docs/ARCHITECTURE.md: layers, conventions), checked on the source tree; the Python
API as the package ``sana_native`` (README example, ``pip install -e .``); the old-ComfyUI message."""

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
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
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy.get("Icon", "")
    assert not icon or (ROOT / icon).is_file() or icon.startswith("http"), f"[tool.comfy] Icon {icon!r} does not exist"
    assert "icon.png" not in icon or (ROOT / "icon.png").is_file(), "Icon points to an icon.png the repository lacks"


def test_pyproject_lists_every_runtime_package():
    """The packages of `pip install` are listed by hand (the root is the package): none may be forgotten."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    on_disk = {"sana_native"} | {f"sana_native.{p.parent.relative_to(ROOT).as_posix().replace('/', '.')}"
                                 for p in ROOT.glob("*/**/__init__.py")
                                 if p.relative_to(ROOT).parts[0] not in ("tests",) and not p.relative_to(ROOT)
                                 .parts[0].startswith(".")}
    assert sorted(packages) == sorted(on_disk), f"pyproject [tool.setuptools] packages {packages} != {on_disk}"


def _requirement_names(lines):
    return sorted(re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0].lower() for line in lines
                  if line.strip() and not line.strip().startswith("#"))


def test_pyproject_dependencies_match_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert sorted(project["dependencies"]) == sorted(line.strip() for line in requirements
                                                     if line.strip() and not line.startswith("#"))
    assert "torch" not in _requirement_names(project["dependencies"])


def test_ruff_clean():
    """ruff with the project's configuration (line length 120, pyflakes, bugbear, docstrings on models/samplers)."""
    ruff = pytest.importorskip("ruff")
    binary = Path(ruff.find_ruff_bin())
    out = subprocess.run([str(binary), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"ruff found problems:\n{out.stdout[-4000:]}"


# --- The Python API as the package `sana_native` ------------------------------------------------------------------

README_EXAMPLE = re.compile(r"<!-- python-api-example -->\s*```python\n(.*?)```", re.DOTALL)
EXAMPLE_FILES = {  # README path -> key of the fixtures' comfy_model_files()
    "diffusion_models/Sana_1600M_1024px_BF16.pth": "diffusion_models/Sana_1600M_1024px_BF16.pth",
    "vae/dc-ae-f32c32-sana-1.1/model.safetensors": "vae/dc-ae-f32c32-sana-1.1/model.safetensors",
    "text_encoders/gemma-2-2b-it": "text_encoders/gemma-2-2b-it/",
}
CPU_SIZED = {"1024 // 32": "128 // 32", "sana_sigmas(20,": "sana_sigmas(2,"}  # the only edits to the README's text
EXAMPLE_TIMEOUT_S = 300


def _package_parent(tmp_path: Path) -> Path:
    """A folder holding the checkout under the name sana_native (as a clone into a folder of that name would)."""
    parent = tmp_path / "site"
    parent.mkdir()
    (parent / "sana_native").symlink_to(ROOT, target_is_directory=True)
    return parent


def test_readme_python_example_runs_on_generated_checkpoints(tmp_path):
    """The README example, run as written (smaller latent, 2 steps) against the small generated checkpoints."""
    from tests.fixtures import dcae, dit, text

    code = README_EXAMPLE.search((ROOT / "README.md").read_text()).group(1)
    for old, new in CPU_SIZED.items():
        assert old in code, f"README example no longer contains {old!r}; update CPU_SIZED"
        code = code.replace(old, new)
    files = {**dit.comfy_model_files(), **dcae.comfy_model_files(), **text.comfy_model_files()}
    models = tmp_path / "ComfyUI" / "models"
    for path, key in EXAMPLE_FILES.items():
        (models / path).parent.mkdir(parents=True, exist_ok=True)
        (models / path).symlink_to(files[key])
    code += "\nprint('LATENT', tuple(latent.shape), 'IMAGE', tuple(image.shape), bool(torch.isfinite(image).all()))\n"
    env = {**os.environ, "PYTHONPATH": str(_package_parent(tmp_path))}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=EXAMPLE_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LATENT (1, 32, 4, 4) IMAGE (1, 3, 128, 128) True" in out.stdout, out.stdout


def test_pip_install_editable_provides_sana_native(tmp_path):
    """`pip install -e .` (no deps, no build isolation) in a throwaway venv that borrows this environment's packages."""
    pytest.importorskip("setuptools")
    pytest.importorskip("pip")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    source = tmp_path / "pack"  # only what the package declares: a package missing from the list fails the import
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "requirements.txt", "__init__.py"):
        shutil.copy(ROOT / name, source / name)
    for package in packages[1:]:
        folder = package.split(".", 1)[1].replace(".", "/")
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--disable-pip-version-check", "-e", str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    probe = ("import sana_native, sana_native.models as m, sana_native.samplers, sana_native.compat; "
             "print(m.__file__, sana_native.__all__)")
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(source / "models" / "__init__.py") in out.stdout and "['models', 'samplers']" in out.stdout
    assert not list(source.glob("*.egg-info")), "the editable install left build metadata in the pack folder"


def test_old_comfyui_gets_one_line_naming_the_minimum_version(tmp_path):
    """Inside a ComfyUI without comfy_api.latest: one error line, no traceback, no comfy_entrypoint."""
    fake = tmp_path / "old_comfyui"
    (fake / "comfy_api").mkdir(parents=True)
    (fake / "comfy_api" / "__init__.py").write_text("")
    (fake / "folder_paths.py").write_text("")
    code = ("import logging, sana_native; logging.shutdown(); "
            "print('ENTRYPOINT', hasattr(sana_native, 'comfy_entrypoint'))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(_package_parent(tmp_path))])}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ENTRYPOINT False" in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "ComfyUI 0." in lines[0] and "comfy_api.latest" in lines[0], lines[0]
