"""The light (device) install: it resolves for ARM Linux from the package registry, and a
venv with only it runs exported files with no torch in it. Marked ``install`` (they use
the network and take minutes): ``make test-install``, run by .ci/run after ``make test``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# Jetson (JetPack 5: glibc 2.31, JetPack 6: 2.35) and other ARM boards take manylinux
# wheels up to their glibc; newer numpy/onnxruntime wheels are manylinux_2_28 only.
AARCH64 = [f"manylinux_2_{glibc}_aarch64" for glibc in (17, 26, 27, 28, 31)]
DEVICE_EXTRAS = ("onnxruntime", "litert")

pytestmark = pytest.mark.install


def _requirements(python: str, extras=DEVICE_EXTRAS) -> list[str]:
    """The base dependencies and ``extras`` of pyproject.toml, with their markers evaluated
    for ``python`` (pip evaluates markers for its own interpreter, not --python-version)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"]) + [t for extra in extras for t in project["optional-dependencies"][extra]]
    environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
                   "platform_machine": "aarch64"}
    chosen = []
    for text in texts:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            chosen.append(str(requirement))
    return chosen


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12"])
def test_device_install_resolves_for_aarch64_wheels_only(python, tmp_path):
    report = tmp_path / "report.json"
    platforms = [arg for tag in AARCH64 for arg in ("--platform", tag)]
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--only-binary=:all:", "--python-version", python,
               "--target", str(tmp_path / "target"), *platforms, *_requirements(python)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"numpy", "onnx", "onnxruntime", "ai-edge-litert", "typer"} <= names
    assert "torch" not in names and "coremltools" not in names


def test_no_onnxruntime_in_the_base_install():
    """A device whose onnxruntime module comes from onnxruntime-gpu or NVIDIA's Jetson build
    must not get the CPU package beside it: the runtime is an extra."""
    base = [r.split("=")[0].lower() for r in _requirements("3.11", extras=())]
    assert "onnxruntime" not in base and "torch" not in base


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A tiny SRConvNet x2 as .onnx and .tflite, exported with the full install (this one)."""
    from edgesr.export.pipeline import export
    from edgesr.models.loading import create

    out = tmp_path_factory.mktemp("artifacts")
    model = create("srconvnet", 2, seed=0, dim=16, num_blocks=1, num_heads=2, num_kernels=4)
    files = {target: Path(export(model, target, input_size=(16, 16), out_dir=out, check=False).artifact)
             for target in ("onnx", "tflite")}
    hr = out / "data" / "HR"
    hr.mkdir(parents=True)
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(hr / "img.png")
    import torch

    torch.save(model.state_dict(), out / "weights.pth")
    return files, out / "data", out / "weights.pth"


def test_device_venv_runs_exported_files_without_torch(artifacts, tmp_path):
    files, data, checkpoint = artifacts
    home = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{REPO}[onnxruntime,litert]"],
                             capture_output=True, text=True, env=env, timeout=1500)
    assert install.returncode == 0, install.stderr[-3000:]
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True, env=env).returncode != 0
    edgesr = str(home / "bin" / "edgesr")
    for artifact in files.values():
        for argv in (["bench", str(artifact), "--iters", "2", "--warmup", "1", "--json"],
                     ["eval", str(artifact), "--data", str(data)],
                     ["upscale", str(data / "HR" / "img.png"), "--model", str(artifact), "-o",
                      str(tmp_path / f"out-{artifact.suffix[1:]}")],
                     ["info", str(artifact)], ["snippet", str(artifact), "--lang", "kotlin"]):
            run = subprocess.run([edgesr, *argv], capture_output=True, text=True, env=env, timeout=600)
            assert run.returncode == 0, (argv, run.stderr[-2000:])
    assert (tmp_path / "out-onnx" / "img.png").exists() and (tmp_path / "out-tflite" / "img.png").exists()
    for argv in (["export", "srconvnet", "--scale", "2", "--target", "onnx"],
                 ["train", "--model", "srconvnet", "--scale", "2", "--data", str(data), "--out", str(tmp_path / "run")],
                 ["info", str(checkpoint)], ["bench", str(checkpoint), "--iters", "1"],
                 ["upscale", str(data / "HR" / "img.png"), "--model", str(checkpoint), "-o", str(tmp_path / "pt")]):
        refused = subprocess.run([edgesr, *argv], capture_output=True, text=True, env=env)
        assert refused.returncode == 2 and "edgesr[export]" in refused.stderr, (argv, refused.stderr[-2000:])
        assert len(refused.stderr.strip().splitlines()) == 1, (argv, refused.stderr)
    assert not (tmp_path / "run").exists() and not (tmp_path / "pt").exists()
