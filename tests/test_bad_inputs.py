"""Bad and unusual inputs through the CLI: each is one line on stderr, exit code 2, no
traceback, and the output folder exactly as it was (the user's files untouched)."""
from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgesr.cli import app
from edgesr.models.loading import save_checkpoint

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad (and a few good) input files the cases below refer to by name."""
    from edgesr.models.loading import create

    small_srconvnet = create("srconvnet", 2, seed=0, dim=16, num_blocks=1, num_heads=2, num_kernels=4)
    root = tmp_path_factory.mktemp("bad")
    good = save_checkpoint(small_srconvnet, root / "good.safetensors")
    (root / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "truncated.safetensors").write_bytes(good.read_bytes()[:200])
    (root / "empty.pth").write_bytes(b"")
    header = json.dumps({"__metadata__": {"edgesr": "{not json"},
                         "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (root / "bad-metadata.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    state = {k: v.clone() for k, v in small_srconvnet.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name].view(-1)[1] = float("nan")
    torch.save(state, root / "nan.pth")

    import argparse  # a checkpoint that needs arbitrary unpickling (a class outside the allow-list)

    torch.save({"model": argparse.Namespace(weight=torch.zeros(2))}, root / "pickled.pth")
    photos = root / "photos"
    photos.mkdir()
    pixels = (np.random.default_rng(1).random((12, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(photos / "photo.png")
    for side in ("a", "b"):
        (root / side).mkdir()
        Image.fromarray(pixels).save(root / side / "x.png")
    Image.fromarray(np.full((8, 8), 200.0, np.float32), mode="F").save(root / "float255.tif")
    Image.fromarray((np.arange(64, dtype=np.int32) * 100000).reshape(8, 8), mode="I").save(root / "int32.tif")
    (root / "not-an-image.png").write_bytes(b"not a png")
    (root / "empty-folder").mkdir()
    (root / "train-images").mkdir()
    Image.fromarray((np.random.default_rng(2).random((128, 128, 3)) * 255).astype(np.uint8)).save(
        root / "train-images" / "t.png")
    tiny = root / "hr-only"
    (tiny / "HR").mkdir(parents=True)
    Image.fromarray(pixels[:3, :3]).save(tiny / "HR" / "tiny.png")
    _onnx_without_metadata(root / "foreign.onnx")
    return root


def _onnx_without_metadata(path: Path) -> None:
    conv = torch.nn.Conv2d(3, 12, 3, padding=1).eval()
    with torch.no_grad():
        torch.onnx.export(conv, (torch.rand(1, 3, 8, 8),), str(path), dynamo=False)


CASES = {
    "random bytes as .pth": (["info", "{random.pth}"], "not a PyTorch checkpoint"),
    "empty .pth": (["info", "{empty.pth}"], "not a"),
    "truncated safetensors": (["info", "{truncated.safetensors}"], "not a readable safetensors"),
    "malformed metadata": (["info", "{bad-metadata.safetensors}"], "metadata is not valid JSON"),
    "pickled objects": (["info", "{pickled.pth}"], "refusing to unpickle"),
    "NaN weights": (["info", "{nan.pth}"], "NaN/Inf"),
    "huge input size": (["info", "{good.safetensors}", "--input-size", "99999x99999"], "GiB"),
    "bad input size": (["info", "{good.safetensors}", "--input-size", "0x5"], "positive"),
    "export huge size": (["export", "{good.safetensors}", "--target", "onnx", "--input-size", "99999x99999",
                          "--out", "{out}"], "GiB"),
    "negative threads upscale": (["upscale", "{photos}", "--model", "{good.safetensors}", "-o", "{out}",
                                  "--threads", "-1"], "--threads -1"),
    "zero threads bench": (["bench", "{good.safetensors}", "--threads", "0"], "--threads 0"),
    "too many threads": (["upscale", "{photos}", "--model", "{good.safetensors}", "-o", "{out}",
                          "--threads", "100000"], "--threads 100000"),
    "negative threads eval": (["eval", "{good.safetensors}", "--data", "{hr-only}", "--threads", "-2"],
                              "--threads -2"),
    "output over the input": (["upscale", "{photos}/photo.png", "--model", "{good.safetensors}", "-o",
                               "{photos}"], "would overwrite the input"),
    "two inputs one output": (["upscale", "{a}/x.png", "{b}/x.png", "--model", "{good.safetensors}", "-o",
                               "{out}"], "would both be written"),
    "negative tile": (["upscale", "{photos}", "--model", "{good.safetensors}", "-o", "{out}", "--tile", "-5"],
                      "--tile -5"),
    "float TIFF out of range": (["upscale", "{float255.tif}", "--model", "{good.safetensors}", "-o", "{out}"],
                                "0..1"),
    "32-bit TIFF": (["upscale", "{int32.tif}", "--model", "{good.safetensors}", "-o", "{out}"], "32-bit"),
    "not an image": (["upscale", "{not-an-image.png}", "--model", "{good.safetensors}", "-o", "{out}"],
                     "not a readable image"),
    "empty input folder": (["upscale", "{empty-folder}", "--model", "{good.safetensors}", "-o", "{out}"],
                           "no images"),
    "hparam of the wrong type": (["train", "--model", "srconvnet", "--scale", "2", "--data", "{train-images}",
                                  "--hparam", "dim=abc", "--out", "{out}"], "dim='abc'"),
    "snippet of a foreign onnx": (["snippet", "{foreign.onnx}", "--lang", "kotlin"], "no edgesr metadata"),
    "calib with fp32": (["export", "{good.safetensors}", "--target", "onnx", "--calib", "{photos}",
                         "--out", "{out}"], "--calib"),
    "int8 without calib": (["export", "{good.safetensors}", "--target", "onnx", "--precision", "int8",
                            "--out", "{out}"], "needs --calib"),
    "empty calibration folder": (["export", "{good.safetensors}", "--target", "onnx", "--precision", "int8",
                                  "--calib", "{empty-folder}", "--input-size", "16x16", "--out", "{out}"],
                                 "no images"),
    "HR images under the border crop": (["eval", "{good.safetensors}", "--data", "{hr-only}"], "too small"),
    "unknown target": (["export", "{good.safetensors}", "--target", "onnnx", "--out", "{out}"], "onnnx"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clean_line(case, files, tmp_path):
    argv, expected = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file")
    places = {p.name: str(p) for p in files.iterdir()} | {"out": str(out)}
    for name, path in places.items():
        argv = [arg.replace("{" + name + "}", path) for arg in argv]
    before = {"out": _snapshot(out), "inputs": _snapshot(files)}
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, (case, result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], (case, result.stderr)
    assert "Traceback" not in result.output
    assert _snapshot(out) == before["out"] and _snapshot(files) == before["inputs"], case


def _generated_cases(root: Path, seed: int) -> list[tuple[str, list[str]]]:
    """Bad inputs drawn at random (seeded): checkpoints and images cut at any byte, sizes
    and thread counts typed wrong. Every one must be a one-line refusal."""
    rng = np.random.default_rng(seed)
    good = (root / "good.safetensors").read_bytes()
    photo = (root / "photos" / "photo.png").read_bytes()
    folder = root / f"generated-{seed}"
    folder.mkdir(exist_ok=True)
    cut_checkpoint = folder / "cut.safetensors"
    cut_checkpoint.write_bytes(good[:int(rng.integers(1, len(good)))])
    cut_pth = folder / "cut.pth"
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(64)}, buffer)
    cut_pth.write_bytes(buffer.getvalue()[:int(rng.integers(1, len(buffer.getvalue())))])
    cut_image = folder / "cut.png"
    cut_image.write_bytes(photo[:int(rng.integers(1, len(photo) - 12))])  # the IEND chunk is 12 bytes
    sizes = ["x".join(str(v) for v in rng.integers(-5, 0, 2)), f"{rng.integers(1, 99)}x",
             f"{rng.random():.2f}x{rng.integers(1, 9)}", "".join(rng.choice(list("abx0"), 4)),
             f"{rng.integers(2**20, 2**24)}x{rng.integers(2**20, 2**24)}"]
    threads = [int(rng.integers(-10, 1)), int(rng.integers(10**4, 10**7))]
    model = str(root / "good.safetensors")
    cases = [("cut checkpoint", ["info", str(cut_checkpoint)]), ("cut .pth", ["info", str(cut_pth)]),
             ("cut image", ["upscale", str(cut_image), "--model", model, "-o", "{out}"])]
    cases += [(f"size {size!r}", ["info", model, "--input-size", size]) for size in sizes]
    cases += [(f"threads {n}", ["upscale", str(root / "photos"), "--model", model, "-o", "{out}",
                                "--threads", str(n)]) for n in threads]
    return cases


@pytest.mark.parametrize("seed", range(4))
def test_generated_bad_inputs_are_one_clean_line(seed, files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file")
    for name, argv in _generated_cases(files, seed):
        before = {"out": _snapshot(out), "inputs": _snapshot(files)}
        result = runner.invoke(app, [arg.replace("{out}", str(out)) for arg in argv])
        assert result.exit_code == 2, (name, argv, result.output, result.exception)
        assert len(result.stderr.strip().splitlines()) == 1, (name, argv, result.stderr)
        assert "Traceback" not in result.output, name
        assert _snapshot(out) == before["out"] and _snapshot(files) == before["inputs"], name


def test_train_argument_errors_create_no_output_folder(files, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--model", "srconvnet", "--scale", "2", "--data", str(files / "train-images"),
            "--iters", "-1", "--out", str(run)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2 and "--iters" in result.stderr
    assert not run.exists()


def test_float_tiff_in_0_1_is_read_with_its_range(files, tmp_path):
    from edgesr.imageio import read_image

    path = tmp_path / "float01.tif"
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), mode="F").save(path)
    image = read_image(path)
    assert image.rgb.max() == pytest.approx(1.0) and image.rgb.min() == pytest.approx(0.0)
    assert image.grayscale


def test_random_weight_exports_are_seeded_and_repeatable(tmp_path):
    """Same seed: byte-identical files, the seed in the metadata; another seed: other weights."""
    import onnx

    def export(seed: int, folder: str) -> Path:
        argv = ["export", "srconvnet", "--scale", "2", "--target", "onnx", "--input-size", "16x16",
                "--no-check", "--out", str(tmp_path / folder), "--seed", str(seed), "--json"]
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        return Path(json.loads(result.stdout)["artifact"])

    first, again, other = export(3, "a"), export(3, "b"), export(4, "c")
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    metadata = {p.key: p.value for p in onnx.load(str(first)).metadata_props}
    assert metadata["edgesr.seed"] == "3"


def _interrupt_when(argv: list[str], started, sig: int) -> str:
    """Runs the CLI with ``argv``, sends ``sig`` once ``started()`` holds; returns stderr
    after checking the exit code (130) and the one-line message."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # A test run started in the background (``make test &``, nohup) ignores SIGINT, and
    # its children inherit that; the CLI gets Python's own handler back, as from a terminal.
    cli = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from edgesr.cli import app; app()"
    process = subprocess.Popen([sys.executable, "-c", cli, *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not started():
        time.sleep(0.1)
    assert started(), "the work never started"
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted") and "Traceback" not in stderr
    return stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_export_cleans_up_and_says_one_line(sig, tmp_path):
    """Ctrl-C or SIGTERM while the export works in its temporary folder: exit 130, one
    line, nothing left in --out."""
    out = tmp_path / "out"
    out.mkdir()
    _interrupt_when(["export", "srconvnet", "--scale", "2", "--target", "onnx", "--input-size", "48x48",
                     "--out", str(out)], lambda: bool(list(out.glob(".edgesr-export-*"))), sig)
    assert list(out.iterdir()) == []


@contextmanager
def _pending_interrupt():
    """An interrupt recorded but never raised, as when Python drops the handler's
    KeyboardInterrupt inside a finalizer; cleared afterwards for the next test."""
    from edgesr.errors import note_interrupt

    note_interrupt()
    try:
        yield
    finally:
        note_interrupt(False)


def _counting_nearest_x2(calls: list):
    """A x2 upscaler that records the shape of every input it is given in ``calls``."""
    def nearest_x2(image):
        calls.append(image.shape)
        return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    return nearest_x2


def test_a_signal_lost_in_a_finalizer_still_stops_the_export(tmp_path, small_srconvnet):
    """Python drops a KeyboardInterrupt that the SIGTERM handler raises inside a finalizer;
    the export then stops at its next stage and leaves nothing (it ran to exit 0 in a CI run)."""
    from edgesr.export.pipeline import export

    out = tmp_path / "out"
    out.mkdir()
    stages = []
    with _pending_interrupt(), pytest.raises(KeyboardInterrupt):
        export(small_srconvnet, "onnx", input_size=(16, 16), out_dir=out, stage=stages.append)
    assert stages == [] and list(out.iterdir()) == []
    export(small_srconvnet, "onnx", input_size=(16, 16), out_dir=out, check=False, stage=stages.append)
    assert stages and any(out.glob("*.onnx"))


def test_a_signal_lost_in_a_finalizer_still_stops_the_upscale(tmp_path):
    """As for the export: a pending interrupt stops a tiled upscale after the tile that ran,
    and an upscale of several images before the next one, leaving no output."""
    from edgesr.tiling import TiledUpscaler
    from edgesr.upscale import OpenedUpscaler, upscale_files

    calls = []
    nearest_x2 = _counting_nearest_x2(calls)
    tiler = TiledUpscaler(nearest_x2, 2, 16, 4, fixed=True)
    out = tmp_path / "out"
    jobs = []
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / name)
        jobs.append((tmp_path / name, out / name))
    with _pending_interrupt():
        with pytest.raises(KeyboardInterrupt):
            list(tiler.bands(np.zeros((40, 40, 3), np.float32)))
        assert calls == [(16, 16, 3)]
        with pytest.raises(KeyboardInterrupt):
            upscale_files(OpenedUpscaler(nearest_x2, 2, None, None), jobs, out)
    assert calls == [(16, 16, 3)] and list(out.iterdir()) == []
    upscale_files(OpenedUpscaler(nearest_x2, 2, None, tiler), jobs, out)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_a_signal_lost_in_a_finalizer_stops_evaluate_and_bench_loops(tmp_path):
    """``edgesr evaluate`` stops before its next image and ``edgesr bench`` before its next
    timed run when an interrupt is pending, as the export and the upscale do."""
    from edgesr.bench import time_runner
    from edgesr.evaluate import evaluate

    (tmp_path / "HR").mkdir()
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(tmp_path / "HR" / "grey.png")
    calls = []
    nearest_x2 = _counting_nearest_x2(calls)

    class CountingRunner:
        def native_input(self, height, width):
            return np.zeros((1, 3, height, width), np.float32)

        def run_native(self, batch):
            calls.append(batch.shape)

    with _pending_interrupt():
        with pytest.raises(KeyboardInterrupt):
            evaluate(nearest_x2, tmp_path, 2, show_progress=False)
        with pytest.raises(KeyboardInterrupt):
            time_runner(CountingRunner(), 8, 8, warmup=0, iters=3)
    assert calls == []
    assert len(evaluate(nearest_x2, tmp_path, 2, show_progress=False).images) == 1
    assert len(time_runner(CountingRunner(), 8, 8, warmup=0, iters=3)) == 3 and len(calls) == 4


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_upscale_leaves_no_part_file(sig, tmp_path):
    """The PNG is written band by band into a ``.part`` file: a signal mid-image removes it."""
    out = tmp_path / "out"
    out.mkdir()
    photo = tmp_path / "big.png"
    Image.fromarray((np.random.default_rng(2).random((512, 512, 3)) * 255).astype(np.uint8)).save(photo)
    _interrupt_when(["upscale", str(photo), "--model", "srconvnet", "--scale", "2", "--tile", "64",
                     "-o", str(out)], lambda: bool(list(out.glob(".*.part"))), sig)
    assert list(out.iterdir()) == []


def test_a_dead_exports_temporary_folder_is_removed_by_the_next(tmp_path, small_srconvnet):
    from edgesr.export.pipeline import export

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = out / f".edgesr-export-{dead}-abc"
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"x")
    live = out / f".edgesr-export-{os.getpid()}-xyz"
    live.mkdir()
    export(small_srconvnet, "onnx", input_size=(16, 16), out_dir=out, check=False)
    assert not stale.exists() and live.exists()
