"""One training spread over processes (torch.distributed: torchrun, or Nerfstudio's launcher): what
the processes exchange so that each holds the same Gaussians. Every process renders its own view;
the gradients are averaged before the optimizer step; the densification strategy sees the step's
views together, as one render of all of them; the strategy's random draws come from one generator
state that every process holds. In one process every operation is the identity, so the core and its
tests need no process group.

A step of N processes is then the step of one process with a batch of N views and the mean loss:
gsplat's batched `info` ([C, N, ...], C cameras) is what the strategies see, so a strategy (a
plugin's too) sums the statistics of all N views without knowing that there are processes."""

import re
from contextlib import contextmanager
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


class ProcessLost(RuntimeError):
    """A collective operation failed: another process of the training has stopped."""


@contextmanager
def _collective():
    try:
        yield
    except RuntimeError as e:  # gloo and NCCL raise RuntimeError (DistBackendError) for a lost peer
        # gloo's: "[.../pair.cc:545] Read error [127.0.0.1]:31419: Connection reset by peer. This is ..."
        reason = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(e).split())).split(". ")[0]
        raise ProcessLost(reason) from None


class Collectives:
    """The collective operations of the processes of one training (all of them, or `group`)."""

    def __init__(self, group: Optional[Any] = None):
        joined = dist.is_available() and dist.is_initialized()
        self.group = group
        self.world_size = dist.get_world_size(group) if joined else 1
        self.rank = dist.get_rank(group) if joined else 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mean_gradients(self, params: Sequence[Tensor], stop: bool = False) -> bool:
        """Replace each parameter's `.grad` by its mean over the processes (one all_reduce of one flat
        buffer). A parameter without a gradient here but with one elsewhere counts zeros here; one
        without a gradient anywhere keeps none. Returns whether any process asked to `stop`: a
        request seen by all of them at the same step."""
        if not self.distributed:
            return stop
        # which gradients exist somewhere, and the stop requests: one small reduction first
        present = torch.tensor([p.grad is not None for p in params] + [stop], dtype=torch.float32)
        present = present.to(params[0].device if params else "cpu")
        with _collective():
            dist.all_reduce(present, group=self.group)
        stop_anywhere = bool(present[-1] > 0)
        reduced = [p for p, here in zip(params, present[:-1].tolist()) if here > 0]
        if not reduced:
            return stop_anywhere
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in reduced])
        with _collective():
            dist.all_reduce(flat, group=self.group)
        flat /= self.world_size
        offset = 0
        for p in reduced:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return stop_anywhere

    def views_of_step(self, info: Dict[str, Any]) -> Dict[str, Any]:
        """The rasterizer's `info` of every process's view, gathered as gsplat's batched form: the 2D
        means [P*C, N, 2] with their gradients (each view's as the mean loss over the P processes
        gives it: 1/P of its own; `absgrad` too), `radii` and `n_cameras`. A view of another size than
        the first process's is expressed in that one's pixels, so the strategy's width and height
        (the first view's) normalise every view as its own would."""
        if not self.distributed:
            return info
        means2d = info["means2d"]
        size = torch.tensor([float(info["width"]), float(info["height"])], device=means2d.device)
        sizes = self._gather(size[None])  # [P, 2]
        width, height = sizes[0].tolist()
        # gsplat scales x gradients by width / 2 (pixels to NDC): in the first view's pixels a
        # gradient is this view's times its size over the first's
        scale = (size / sizes[0]) / self.world_size
        grad = means2d.grad if means2d.grad is not None else torch.zeros_like(means2d)
        means = self._gather(means2d.detach()).requires_grad_()
        means.grad = self._gather(grad * scale)
        absgrad = getattr(means2d, "absgrad", None)
        if absgrad is not None:
            means.absgrad = self._gather(absgrad * scale)
        radii = info["radii"]
        if (sizes != sizes[0]).any():  # (known alike everywhere: the radii's dtype stays the same on all)
            # gsplat compares radii with max(width, height): a view's radius in the first view's pixels
            radii = radii.float() * (max(width, height) / max(info["width"], info["height"]))
        return dict(
            info, means2d=means, radii=self._gather(radii), width=int(width), height=int(height),
            n_cameras=info["n_cameras"] * self.world_size,
        )  # fmt: skip

    def broadcast_object(self, obj: Any) -> Any:
        """`obj` as process 0 has it."""
        if not self.distributed:
            return obj
        holder: List[Any] = [obj]
        with _collective():
            dist.broadcast_object_list(holder, src=self._global_rank(0), group=self.group)
        return holder[0]

    def broadcast_(self, tensors: Sequence[Tensor]) -> None:
        """Overwrite each tensor, in place, with process 0's."""
        if not self.distributed:
            return
        with _collective():
            for tensor in tensors:
                dist.broadcast(tensor, src=self._global_rank(0), group=self.group)

    def barrier(self) -> None:
        if self.distributed:
            with _collective():
                dist.barrier(group=self.group)

    def _gather(self, tensor: Tensor) -> Tensor:
        """The processes' tensors of equal shape, concatenated along the first dimension."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        with _collective():
            dist.all_gather(parts, tensor.contiguous(), group=self.group)
        return torch.cat(parts)

    def _global_rank(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)


@contextmanager
def shared_random_state(state: Dict[str, Any], device: torch.device):
    """Inside the block, torch's random generator of the CPU (and of `device` when it is a GPU)
    draws from `state`, which every process holds alike; on leaving, `state` has advanced and the
    process's own generator is as before. So draws (MCMC's relocation and noise) agree everywhere."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.set_rng_state(state["cpu"])
        if cuda and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], device)
        elif cuda:
            torch.cuda.manual_seed(int(state["seed"]))
        yield
        state["cpu"] = torch.get_rng_state()
        if cuda:
            state["cuda"] = torch.cuda.get_rng_state(device)


def new_random_state(seed: int) -> Dict[str, Any]:
    """A generator state for `shared_random_state`, the same in every process for the same seed."""
    return {"cpu": torch.Generator().manual_seed(seed).get_state(), "seed": seed}
