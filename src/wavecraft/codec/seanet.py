"""SEANet encoder and decoder (the EnCodec autoencoder).

Layer lists are built in the same order as AudioCraft's so that ``encoder.model.{i}`` / ``decoder.model.{i}``
indices in checkpoints line up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CodecConfig
from .conv import StreamableConv1d, StreamableConvTranspose1d, StreamableLSTM


class ELU(nn.ELU):
    """ELU that works in place at inference when its input is a temporary nobody else reads (saves memory traffic)."""

    def __init__(self, alpha: float = 1.0, reuse_input: bool = False) -> None:
        super().__init__(alpha)
        self.reuse_input = reuse_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x, self.alpha, inplace=self.reuse_input and not torch.is_grad_enabled())


def _activation(cfg: CodecConfig, reuse_input: bool = True) -> nn.Module:
    if cfg.activation == "ELU":
        return ELU(alpha=cfg.activation_alpha, reuse_input=reuse_input)
    act = getattr(nn, cfg.activation, None)
    if act is None:
        raise ValueError(f"unknown activation {cfg.activation!r}")
    return act()


class SEANetResnetBlock(nn.Module):
    """``x + block(x)``, block = act → conv(k, dilation) → act → conv(1), hidden width ``dim // compress``.

    Shapes: ``x [B, dim, T] -> [B, dim, T]``.
    """

    def __init__(self, cfg: CodecConfig, dim: int, dilation: int) -> None:
        super().__init__()
        hidden = dim // cfg.compress
        conv = dict(causal=cfg.causal, norm=cfg.norm, pad_mode=cfg.pad_mode)
        self.block = nn.Sequential(
            _activation(cfg, reuse_input=False),  # x is still needed for the skip connection
            StreamableConv1d(dim, hidden, cfg.residual_kernel_size, dilation=dilation, **conv),
            _activation(cfg),
            StreamableConv1d(hidden, dim, 1, **conv),
        )
        self.shortcut = nn.Identity() if cfg.true_skip else StreamableConv1d(dim, dim, 1, **conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out.add_(self.shortcut(x)) if not torch.is_grad_enabled() else out + self.shortcut(x)


def to_time_last_4d(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T] -> [B, C, 1, T]`` in channels-last memory, the fast layout for CPU convolutions."""
    x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    if x.shape[1] == 1:
        # With one channel both layouts are "contiguous" and oneDNN would pick NCHW for everything downstream;
        # explicit channels-last strides make it choose NHWC.
        batch, _, _, length = x.shape
        x = x.as_strided(x.shape, (length, 1, length, 1))
    return x


class SEANetEncoder(nn.Module):
    """Waveform to latent. Shapes: ``wav [B, channels, T] -> [B, dimension, ceil(T / hop)]``."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        conv = dict(causal=cfg.causal, norm=cfg.norm, pad_mode=cfg.pad_mode)
        mult = 1
        layers: list[nn.Module] = [StreamableConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size, **conv)]
        for ratio in reversed(cfg.ratios):
            width = mult * cfg.n_filters
            layers += [SEANetResnetBlock(cfg, width, cfg.dilation_base**j) for j in range(cfg.n_residual_layers)]
            layers += [_activation(cfg), StreamableConv1d(width, width * 2, ratio * 2, stride=ratio, **conv)]
            mult *= 2
        if cfg.lstm_layers:
            layers.append(StreamableLSTM(mult * cfg.n_filters, cfg.lstm_layers))
        width = mult * cfg.n_filters
        layers += [_activation(cfg), StreamableConv1d(width, cfg.dimension, cfg.last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(to_time_last_4d(x)).squeeze(2)


class SEANetDecoder(nn.Module):
    """Latent to waveform. Shapes: ``z [B, dimension, F] -> [B, channels, F * hop]``."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        conv = dict(causal=cfg.causal, norm=cfg.norm, pad_mode=cfg.pad_mode)
        mult = 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [StreamableConv1d(cfg.dimension, mult * cfg.n_filters, cfg.kernel_size, **conv)]
        if cfg.lstm_layers:
            layers.append(StreamableLSTM(mult * cfg.n_filters, cfg.lstm_layers))
        for ratio in cfg.ratios:
            width = mult * cfg.n_filters
            layers += [
                _activation(cfg),
                StreamableConvTranspose1d(width, width // 2, ratio * 2, stride=ratio, causal=cfg.causal,
                                          norm=cfg.norm, trim_right_ratio=cfg.trim_right_ratio),
            ]
            layers += [SEANetResnetBlock(cfg, width // 2, cfg.dilation_base**j) for j in range(cfg.n_residual_layers)]
            mult //= 2
        layers += [_activation(cfg), StreamableConv1d(cfg.n_filters, cfg.channels, cfg.last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(to_time_last_4d(z)).squeeze(2).contiguous()
