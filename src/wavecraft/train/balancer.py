"""EnCodec's loss balancer: loss weights set each loss's share of the gradient reaching the model output.

For losses ``l_i`` of the model output ``y`` (the decoded waveform) with weights ``w_i``, the balancer computes
``g_i = d l_i / d y``, keeps a (bias-corrected) exponential moving average ``n_i`` of ``||g_i||`` and backpropagates

    ``G = sum_i  R * w_i / sum_j w_j * g_i / n_i``

into ``y`` instead of ``sum_i w_i g_i``. Each loss then contributes a gradient of norm about ``R * w_i / sum w``
whatever its scale, so a loss in the thousands cannot drown one in the thousandths. Losses that do not go through
``y`` (such as the VQ commitment loss) are backpropagated as they are, in the same backward pass.

Data parallel: every rank holds a shard of the global batch, and a loss that is a mean over its shard has a
gradient ``W`` (world size) times the single-process one on those rows. The norms are averaged over ranks and
divided by ``W`` so that the moving averages are those of the single-process run (and the state is independent of
the world size); the resulting ``G`` is ``W`` times the single-process rows, which DDP's gradient averaging brings
back to the single-process parameter gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .distributed import rank_and_world_size


class Balancer:
    """Balances the output gradients of weighted losses; see the module docstring.

    ``weights``: name → weight (``> 0``) of the balanced losses. ``total_norm``: ``R``. ``ema_decay``: decay of
    the moving average of each gradient norm (bias-corrected like Adam's moments, so the first step uses the
    current norm). ``per_batch_item``: the norm of a gradient ``[B, ...]`` is the mean over items of the per-item
    norms (EnCodec's default, insensitive to the batch size) rather than the norm of the whole tensor.
    """

    def __init__(self, weights: dict[str, float], total_norm: float = 1.0, ema_decay: float = 0.999,
                 per_batch_item: bool = True, epsilon: float = 1e-12) -> None:
        if not weights or any(w <= 0 for w in weights.values()):
            raise ValueError(f"balancer weights must be a non-empty mapping of positive numbers, got {weights}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.weights = dict(weights)
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.per_batch_item = per_batch_item
        self.epsilon = epsilon
        # Bias-corrected EMA: ``sum = decay * sum + norm``, ``count = decay * count + 1``, average ``sum / count``.
        self._sum: torch.Tensor | None = None  # [n_losses], in the order of ``weights``
        self._count = 0.0

    def _norm_stat(self, grad: torch.Tensor) -> torch.Tensor:
        """What is averaged over ranks: the mean per-item norm, or the squared norm of the whole gradient."""
        if self.per_batch_item:
            return grad.reshape(grad.shape[0], -1).norm(dim=1).mean()
        return grad.pow(2).sum()

    @torch.no_grad()
    def _norms(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """``[n_losses]`` gradient norms of the global batch (see the module docstring for the rank scaling)."""
        stats = torch.stack([self._norm_stat(g).float() for g in grads])
        world_size = rank_and_world_size()[1]
        if world_size > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            if self.per_batch_item:
                return stats / world_size / world_size  # mean over ranks, then undo the per-rank factor W
            return stats.sqrt() / world_size  # sqrt(sum_r ||W g_r||^2) / W = ||g_global||
        return stats if self.per_batch_item else stats.sqrt()

    def backward(self, losses: dict[str, torch.Tensor], output: torch.Tensor,
                 other: torch.Tensor | None = None) -> dict[str, float]:
        """Backpropagate the balanced gradient of ``losses`` (keys of ``weights``) into ``output`` ``[B, ...]``,
        together with ``other`` (a scalar loss backpropagated normally, e.g. the weighted commitment loss).

        One backward pass (as DDP requires). Returns ``gnorm_<name>``: the moving averages of the gradient norms.
        """
        if set(losses) != set(self.weights):
            raise ValueError(f"balancer expects losses {sorted(self.weights)}, got {sorted(losses)}")
        names = list(self.weights)
        grads = []
        for name in names:
            loss = losses[name]
            grad = None
            if loss.requires_grad:
                # retain_graph: losses share parts of the graph past ``output`` (e.g. one discriminator pass).
                (grad,) = torch.autograd.grad(loss, output, retain_graph=True, allow_unused=True)
            grads.append(torch.zeros_like(output) if grad is None else grad)
        norms = self._norms(grads)
        self._sum = norms if self._sum is None else self.ema_decay * self._sum.to(norms.device) + norms
        self._count = self.ema_decay * self._count + 1
        averages = self._sum / self._count
        total_weight = sum(self.weights.values())
        with torch.no_grad():
            balanced = torch.zeros_like(output)
            for name, grad, average in zip(names, grads, averages, strict=True):
                scale = self.total_norm * self.weights[name] / total_weight
                balanced.add_(grad * (scale / (average + self.epsilon)))
        roots, root_grads = [output], [balanced]
        if other is not None and other.requires_grad:
            roots.append(other)
            root_grads.append(torch.ones_like(other))
        torch.autograd.backward(roots, root_grads)
        return {f"gnorm_{name}": value for name, value in zip(names, averages.tolist(), strict=True)}

    def state_dict(self) -> dict[str, torch.Tensor | float | list[str]]:
        """The moving averages (weights-only-safe values), for exact resumption."""
        state: dict[str, torch.Tensor | float | list[str]] = {"names": list(self.weights), "count": self._count}
        if self._sum is not None:
            state["sum"] = self._sum.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != list(self.weights):
            raise ValueError(f"balancer state is for losses {state['names']}, not {list(self.weights)}")
        self._count = float(state["count"])
        self._sum = state["sum"].clone() if "sum" in state else None
