"""PyTorch eager (cpu, cuda) on a checkpoint: the reference every artifact is compared with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgesr.errors import EdgeSRError
from edgesr.runtimes.base import ArtifactInfo, Runner, reject_options, require


class TorchRunner(Runner):
    runtime = "pytorch"

    def __init__(self, path: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                 model: Any = None, scale: int | None = None, arch: str | None = None, **unused: Any):
        reject_options(unused, "pytorch")
        torch = require("torch", "torch", "running a PyTorch checkpoint")
        from edgesr.models.contract import with_unit_range
        from edgesr.models.descriptor import describe

        if model is None:
            from edgesr.cli_common import resolve_model

            if path is None:
                raise EdgeSRError("TorchRunner needs a checkpoint path or a model")
            model = resolve_model(str(path), scale, arch)
        device = str(device or "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EdgeSRError("device cuda was asked for but torch sees no CUDA GPU here; use cpu")
        if device != "cpu" and not device.startswith("cuda"):
            raise EdgeSRError(f"--device {device!r}: choose cpu or cuda")
        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.device = torch.device(device)
        self.threads = threads
        described = describe(model)
        self.model = with_unit_range(model).to(self.device).eval()
        info = ArtifactInfo(path=str(path or described.source or "<in-memory model>"), format="pytorch",
                            arch=described.arch, scale=described.scale, layout="NCHW", input_size=None,
                            precision="fp32", sha256=described.sha256,
                            metadata={"edgesr.arch": described.arch, "edgesr.scale": str(described.scale)})
        super().__init__(Path(info.path), info)
        self.network = model

    def run_native(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            output = self.model(torch.from_numpy(batch).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            return output.float().cpu().numpy()

    def options(self) -> dict[str, Any]:
        return {"device": str(self.device), "threads": self.threads or self.torch.get_num_threads()}
