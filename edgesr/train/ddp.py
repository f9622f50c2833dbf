"""DistributedDataParallel plumbing: the same `edgesr train` under torchrun.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; with more than one process the run
uses NCCL on GPUs and gloo on CPU, each rank draws its own samples, and only rank 0
writes logs and checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        from edgesr.errors import EdgeSRError

        raise EdgeSRError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local_rank, target)


def teardown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean(value: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """The mean over ranks of a scalar tensor (itself without DDP)."""
    if not ctx.enabled:
        return value.detach()
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / ctx.world


def broadcast_object(value, ctx: Dist):
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def max_param_difference(model: torch.nn.Module, ctx: Dist) -> float:
    """Largest |rank r - rank 0| over all parameters (0.0 when the ranks agree)."""
    if not ctx.enabled:
        return 0.0
    worst = torch.zeros(())
    for tensor in model.state_dict().values():
        reference = tensor.detach().clone()
        dist.broadcast(reference, src=0)
        worst = torch.maximum(worst, (reference - tensor.detach()).abs().max().float().cpu())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst)


def spawn_worker(rank: int, world: int, init_port: int, config, dump_dir: str) -> None:
    """Entry point of ``torch.multiprocessing.spawn`` (tests): one rank of a gloo run that
    also dumps its final weights, so a caller can compare the ranks."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(init_port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from edgesr.train import train

    model = train(config)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
               os.path.join(dump_dir, f"rank{rank}.pt"))
