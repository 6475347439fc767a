"""Residual vector quantization with EMA codebooks (k-means init, dead-code replacement).

Buffers are named as in AudioCraft checkpoints: ``vq.layers.{i}._codebook.{inited,cluster_size,embed,embed_avg}``.
Only ``embed`` matters at inference; the other three carry the EMA state for training.

Data-parallel training: with ``distributed`` set on a codebook (see :meth:`ResidualVectorQuantizer.set_distributed`)
and a ``torch.distributed`` process group of more than one rank, a training forward keeps the codebooks identical
on every rank and equal to those of one process on the concatenation of the ranks' (equal-sized) batches: the EMA
statistics (cluster sizes, embedding sums) are summed over ranks, and k-means initialisation and dead-code
replacement draw from the latents gathered from all ranks, after which rank 0's result is broadcast (so the ranks
agree even if their RNGs do not; with equal RNG states, as after a common seed, it equals the single process). Every
rank must then run the same training forwards. Without the flag, or in a single process, nothing is communicated.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidAudioError


@dataclass
class QuantizedResult:
    """Output of a quantizer's ``forward``: ``x [B, D, T]`` quantized latent, ``codes [B, K, T]``."""

    x: torch.Tensor
    codes: torch.Tensor
    bandwidth: torch.Tensor  # kbps actually used
    penalty: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Lloyd's k-means. ``samples [N, D] -> (means [num_clusters, D], counts [num_clusters])``."""
    num = samples.shape[0]
    # Sample with replacement when there are fewer vectors than clusters (tiny first batches).
    idx = torch.randperm(num, device=samples.device)[:num_clusters] if num >= num_clusters else \
        torch.randint(0, num, (num_clusters,), device=samples.device)
    means = samples[idx]
    counts = torch.zeros(num_clusters, device=samples.device, dtype=samples.dtype)
    for _ in range(num_iters):
        buckets = torch.cdist(samples, means).argmin(dim=-1)
        counts = torch.bincount(buckets, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, buckets, samples)
        new_means = sums / counts.clamp(min=1)[:, None]
        means = torch.where((counts == 0)[:, None], means, new_means)
    return means, counts


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1



class EuclideanCodebook(nn.Module):
    """One codebook: nearest neighbour by Euclidean distance, EMA updates when training.

    Shapes: ``encode(x [..., D]) -> codes [...]``, ``decode(codes [...]) -> [..., D]``.
    """

    def __init__(self, dim: int, bins: int, decay: float = 0.99, kmeans_init: bool = True,
                 kmeans_iters: int = 50, threshold_ema_dead_code: float = 2.0, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.bins = bins
        self.decay = decay
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.epsilon = epsilon
        embed = torch.zeros(bins, dim) if kmeans_init else nn.init.kaiming_uniform_(torch.empty(bins, dim))
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(bins))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        self.distributed = False  # sync the EMA state across ranks when training (see the module docstring)

    def _synced(self) -> bool:
        return self.distributed and _world_size() > 1

    def _gather(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat [N, D]`` of every rank concatenated in rank order ``[W * N, D]`` (``flat`` itself if not synced)."""
        if not self._synced():
            return flat
        parts = [torch.empty_like(flat) for _ in range(_world_size())]
        dist.all_gather(parts, flat.contiguous())
        return torch.cat(parts)

    def _broadcast_state(self) -> None:
        if self._synced():
            for buffer in (self.embed, self.embed_avg, self.cluster_size):
                dist.broadcast(buffer, src=0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        embed_t = self.embed.t()
        # Same expression (and float evaluation order) as the reference, so ties break identically.
        dist = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed_t + embed_t.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices.view(*x.shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def _init_embed(self, flat: torch.Tensor) -> None:
        means, counts = kmeans(self._gather(flat), self.bins, self.kmeans_iters)
        self.embed.copy_(means)
        self.embed_avg.copy_(means)
        self.cluster_size.copy_(counts)
        self.inited.fill_(1.0)
        self._broadcast_state()

    @torch.no_grad()
    def _replace_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.cluster_size < self.threshold_ema_dead_code
        n_dead = int(dead.sum())
        if n_dead == 0:  # cluster_size is the same on every rank when synced: all of them take this branch alike
            return
        flat = self._gather(flat)
        picks = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        self.embed[dead] = flat[picks].to(self.embed.dtype)
        self.embed_avg[dead] = self.embed[dead] * self.threshold_ema_dead_code
        self.cluster_size[dead] = self.threshold_ema_dead_code
        self._broadcast_state()

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.bins).to(flat.dtype)
        counts, sums = onehot.sum(0), onehot.t() @ flat
        if self._synced():  # the statistics of the global batch: one collective for both
            stats = torch.cat([counts[:, None], sums], dim=1)
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
            counts, sums = stats[:, 0], stats[:, 1:]
        self.cluster_size.lerp_(counts, 1 - self.decay)
        self.embed_avg.lerp_(sums, 1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.bins * self.epsilon) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [..., D] -> (quantized [..., D], codes [...])``; updates the codebook in training mode."""
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        if self.training and not bool(self.inited.item()):
            self._init_embed(flat)
        codes = self.encode(x)
        quantized = self.decode(codes)
        if self.training:
            self._replace_dead_codes(flat)
            self._ema_update(flat, codes.reshape(-1))
        return quantized, codes


class VectorQuantization(nn.Module):
    """A codebook applied over ``[B, D, T]`` latents, with straight-through gradients when training."""

    def __init__(self, dim: int, bins: int, commitment_weight: float = 1.0, **codebook_kwargs: float) -> None:
        super().__init__()
        self._codebook = EuclideanCodebook(dim, bins, **codebook_kwargs)  # type: ignore[arg-type]
        self.commitment_weight = commitment_weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, D, T] -> codes [B, T]``."""
        return self._codebook.encode(x.transpose(1, 2))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, T] -> [B, D, T]``."""
        return self._codebook.decode(codes).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xt = x.transpose(1, 2)
        quantized, codes = self._codebook(xt)
        loss = torch.zeros((), device=x.device)
        if self.training:
            loss = F.mse_loss(quantized.detach(), xt) * self.commitment_weight
            quantized = xt + (quantized - xt).detach()  # straight-through estimator
        return quantized.transpose(1, 2), codes, loss


class ResidualVectorQuantizer(nn.Module):
    """Stack of ``n_q`` codebooks, each quantizing the residual left by the previous ones.

    ``num_codebooks`` (settable, for bitrate selection) is how many stages ``encode`` uses.
    """

    def __init__(self, dim: int, n_q: int, bins: int, decay: float = 0.99, kmeans_init: bool = True,
                 kmeans_iters: int = 50, threshold_ema_dead_code: float = 2.0, q_dropout: bool = False) -> None:
        super().__init__()
        self.max_n_q = n_q
        self.n_q = n_q
        self.bins = bins
        self.dimension = dim
        self.q_dropout = q_dropout
        self.vq = nn.Module()
        self.vq.layers = nn.ModuleList(
            VectorQuantization(dim, bins, decay=decay, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
                               threshold_ema_dead_code=threshold_ema_dead_code)
            for _ in range(n_q))

    @property
    def layers(self) -> nn.ModuleList:
        return self.vq.layers  # type: ignore[return-value]

    def set_distributed(self, enabled: bool) -> None:
        """Keep the EMA codebooks identical across data-parallel ranks when training (module docstring)."""
        for layer in self.layers:
            layer._codebook.distributed = enabled

    def set_num_codebooks(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= self.max_n_q:
            raise InvalidAudioError(f"number of codebooks must be an integer in [1, {self.max_n_q}], got {n!r}")
        self.n_q = int(n)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, D, T] -> codes [B, K, T]`` with ``K = num_codebooks``."""
        residual = x
        codes = []
        for layer in self.layers[: self.n_q]:
            idx = layer.encode(residual)
            residual = residual - layer.decode(idx)
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, K, T] -> latent [B, D, T]``: the sum of the K selected codebook vectors."""
        if codes.shape[1] > self.max_n_q:
            raise ValueError(f"got {codes.shape[1]} codebooks, the quantizer has {self.max_n_q}")
        out = self.layers[0].decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.layers[k].decode(codes[:, k])
        return out

    def forward(self, x: torch.Tensor, frame_rate: float) -> QuantizedResult:
        """Training/analysis pass: quantize with ``n_q`` stages (random count under quantizer dropout)."""
        n_q = self.n_q
        if self.training and self.q_dropout:
            n_q = int(torch.randint(1, self.n_q + 1, (1,)).item())
        residual = x
        quantized_out = torch.zeros_like(x)
        codes, losses = [], []
        for layer in self.layers[:n_q]:
            quantized, idx, loss = layer(residual)
            quantized = quantized.detach()
            residual = residual - quantized
            quantized_out = quantized_out + quantized
            codes.append(idx)
            losses.append(loss)
        if self.training:
            # One straight-through estimator over the whole stack: per-stage ones would scale the gradient by n_q.
            quantized_out = x + (quantized_out - x).detach()
        bandwidth = torch.tensor(n_q * math.log2(self.bins) * frame_rate / 1000, device=x.device)
        return QuantizedResult(quantized_out, torch.stack(codes, dim=1), bandwidth, torch.stack(losses).mean())
