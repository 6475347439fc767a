"""Convolutions with EnCodec's padding rules, weight norm stored as ``weight_g``/``weight_v``, and the LSTM block.

Module and parameter names mirror AudioCraft's checkpoints (``conv.conv.weight_g``, ``convtr.convtr.bias``,
``lstm.weight_ih_l0``) so that a native state dict loads without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("none", "weight_norm", "time_group_norm")


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last window of a strided conv full, so no input sample is dropped."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "constant") -> torch.Tensor:
    """``F.pad`` on the last (time) axis that also reflects inputs shorter than the padding.

    Works on ``[B, C, T]`` and on the ``[B, C, 1, T]`` layout used inside SEANet. Reflect padding needs
    ``length > pad``; for shorter inputs zeros are appended first and trimmed after.
    """
    left, right = paddings
    if mode in ("constant", "zero"):
        return F.pad(x, (left, right))
    spatial = (left, right) if x.dim() == 3 else (left, right, 0, 0)
    length = x.shape[-1]
    max_pad = max(left, right)
    extra = max_pad - length + 1 if mode == "reflect" and length <= max_pad else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, spatial, mode=mode)
    return padded[..., : padded.shape[-1] - extra]


def unpad1d(x: torch.Tensor, paddings: tuple[int, int]) -> torch.Tensor:
    left, right = paddings
    return x[..., left : x.shape[-1] - right]


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1,
           dilation: int = 1, padding: int = 0) -> torch.Tensor:
    """Conv over the last axis of ``[B, C, T]`` or ``[B, C, 1, T]``.

    The 4-D form runs as a 2-D convolution; in channels-last memory it is several times faster on CPU (oneDNN's
    NHWC kernels) than ``conv1d`` on ``[B, C, T]``.
    """
    if x.dim() == 3:
        return F.conv1d(x, weight, bias, stride, padding, dilation)
    return F.conv2d(x, weight.unsqueeze(2), bias, (1, stride), (0, padding), (1, dilation))


def conv_transpose1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1
                     ) -> torch.Tensor:
    """Transposed conv over the last axis of ``[B, C, T]`` or ``[B, C, 1, T]`` (see :func:`conv1d`)."""
    if x.dim() == 3:
        return F.conv_transpose1d(x, weight, bias, stride)
    return F.conv_transpose2d(x, weight.unsqueeze(2), bias, (1, stride))


class _WeightNorm:
    """Weight normalisation with the legacy ``weight_g``/``weight_v`` parameters (norm over all dims but 0).

    ``weight = weight_g * weight_v / ||weight_v||``; for transposed convs dim 0 is the *input* channel, as in
    ``torch.nn.utils.weight_norm``, which wrote the official checkpoints.
    """

    weight_g: nn.Parameter
    weight_v: nn.Parameter

    def _init_weight_norm(self) -> None:
        weight = self._parameters.pop("weight")  # type: ignore[attr-defined]
        self.weight_g = nn.Parameter(torch.norm_except_dim(weight, 2, 0).detach())
        self.weight_v = nn.Parameter(weight.detach())

    def normalized_weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)


class WNConv1d(_WeightNorm, nn.Conv1d):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor, padding: int = 0) -> torch.Tensor:
        return conv1d(x, self.normalized_weight(), self.bias, self.stride[0], self.dilation[0], padding)


class WNConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return conv_transpose1d(x, self.normalized_weight(), self.bias, self.stride[0])


class PlainConv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor, padding: int = 0) -> torch.Tensor:
        return conv1d(x, self.weight, self.bias, self.stride[0], self.dilation[0], padding)


class PlainConvTranspose1d(nn.ConvTranspose1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return conv_transpose1d(x, self.weight, self.bias, self.stride[0])


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown conv norm {norm!r}; expected one of {NORMS}")


class NormConv1d(nn.Module):
    """Conv1d followed by an optional GroupNorm(1) (``time_group_norm``) or with weight norm."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 norm: str = "none") -> None:
        super().__init__()
        _check_norm(norm)
        conv_cls = WNConv1d if norm == "weight_norm" else PlainConv1d
        self.conv = conv_cls(in_ch, out_ch, kernel_size, stride, dilation=dilation)
        self.norm = nn.GroupNorm(1, out_ch) if norm == "time_group_norm" else nn.Identity()

    def forward(self, x: torch.Tensor, symmetric_padding: int = 0) -> torch.Tensor:
        return self.norm(self.conv(x, symmetric_padding))


class NormConvTranspose1d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, norm: str = "none") -> None:
        super().__init__()
        _check_norm(norm)
        conv_cls = WNConvTranspose1d if norm == "weight_norm" else PlainConvTranspose1d
        self.convtr = conv_cls(in_ch, out_ch, kernel_size, stride)
        self.norm = nn.GroupNorm(1, out_ch) if norm == "time_group_norm" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convtr(x))


class StreamableConv1d(nn.Module):
    """Conv1d that pads its input so that ``T_out = ceil(T_in / stride)``.

    Non-causal: ``kernel_eff - stride`` samples split with the extra one on the left, plus right padding so that
    the last window is full. Causal: all of it on the left.

    Shapes: ``x [B, C_in, T] -> [B, C_out, ceil(T / stride)]``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 causal: bool = False, norm: str = "none", pad_mode: str = "reflect") -> None:
        super().__init__()
        self.conv = NormConv1d(in_ch, out_ch, kernel_size, stride, dilation, norm)
        self.causal = causal
        self.pad_mode = pad_mode
        self.kernel_eff = (kernel_size - 1) * dilation + 1
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding_total = self.kernel_eff - self.stride
        extra = extra_padding_for_conv1d(x.shape[-1], self.kernel_eff, self.stride, padding_total)
        if self.causal:
            left, right = padding_total, extra
        else:
            half = padding_total // 2
            left, right = padding_total - half, half + extra
        if left == right and self.pad_mode in ("constant", "zero"):
            return self.conv(x, symmetric_padding=left)  # no padded copy of the input
        return self.conv(pad1d(x, (left, right), self.pad_mode))


class StreamableConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed back to ``T_in * stride`` samples.

    Shapes: ``x [B, C_in, T] -> [B, C_out, T * stride]``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, causal: bool = False,
                 norm: str = "none", trim_right_ratio: float = 1.0) -> None:
        super().__init__()
        if not (causal or trim_right_ratio == 1.0):
            raise ValueError("trim_right_ratio != 1.0 only makes sense for causal convolutions")
        self.convtr = NormConvTranspose1d(in_ch, out_ch, kernel_size, stride, norm)
        self.causal = causal
        self.trim_right_ratio = trim_right_ratio
        self.padding_total = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        # Causal: trim (a ratio of) the padding on the right only; otherwise split it like the encoder does.
        right = math.ceil(self.padding_total * self.trim_right_ratio) if self.causal else self.padding_total // 2
        return unpad1d(y, (self.padding_total - right, right))


class StreamableLSTM(nn.Module):
    """Multi-layer LSTM over the time axis with a residual connection.

    Shapes: ``x [B, C, T] -> [B, C, T]`` (or ``[B, C, 1, T]`` in and out).
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        four_d = x.dim() == 4
        seq = (x.squeeze(2) if four_d else x).permute(2, 0, 1)  # [T, B, C]: nn.LSTM is time-major
        y, _ = self.lstm(seq)
        if self.skip:
            y = y + seq
        if not four_d:
            return y.permute(1, 2, 0)
        # Rebuild an explicit channels-last [B, C, 1, T] so the next convolutions keep oneDNN's NHWC kernels.
        out = torch.empty((y.shape[1], y.shape[2], 1, y.shape[0]), dtype=y.dtype, device=y.device,
                          memory_format=torch.channels_last)
        out.copy_(y.permute(1, 2, 0).unsqueeze(2))
        return out
