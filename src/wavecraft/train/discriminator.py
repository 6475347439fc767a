"""EnCodec's multi-scale STFT discriminator (MS-STFTD).

Each sub-discriminator looks at the complex STFT of the waveform at one resolution, real and imaginary parts as
two channels per audio channel, laid out ``[B, 2C, frames, freq]``. A stack of weight-normalised 2-D convolutions
follows: an input conv, convs dilated along time (1, 2, 4 by default) and strided by 2 along frequency, a last
hidden conv and a one-channel output conv giving the logits. LeakyReLU(0.2) follows every conv but the output one;
the activations are the feature maps used by the feature-matching loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

DEFAULT_N_FFTS: tuple[int, ...] = (2048, 1024, 512, 256, 128)


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """Padding that keeps a stride-1 axis at its length for an odd ``kernel`` (per axis: ``(k - 1) * d / 2``)."""
    return (kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2


class STFTDiscriminator(nn.Module):
    """One sub-discriminator on the complex STFT at window ``win_length`` (``n_fft`` bins, hop ``hop_length``).

    ``forward(x [B, C, T]) -> (logits [B, 1, frames, F'], features)`` with ``frames = T // hop + 1`` (centred
    STFT), ``F'`` the ``n_fft // 2 + 1`` frequency bins after ``len(dilations)`` halvings (``ceil`` each time),
    and ``features`` the ``len(dilations) + 2`` activations ``[B, channels_i, frames, F_i]`` in network order.
    """

    def __init__(self, n_fft: int, hop_length: int | None = None, win_length: int | None = None,
                 in_channels: int = 1, filters: int = 32, max_filters: int = 1024, filters_scale: int = 1,
                 kernel_size: tuple[int, int] = (3, 9), dilations: tuple[int, ...] = (1, 2, 4),
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 4
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.activation = nn.LeakyReLU(negative_slope)

        def width(i: int) -> int:
            return min(filters * filters_scale ** i, max_filters)

        convs = [nn.Conv2d(2 * in_channels, width(0), kernel_size, padding=_same_padding(kernel_size))]
        for i, dilation in enumerate(dilations):
            convs.append(nn.Conv2d(width(i), width(i + 1), kernel_size, stride=(1, 2), dilation=(dilation, 1),
                                   padding=_same_padding(kernel_size, (dilation, 1))))
        square = (kernel_size[0], kernel_size[0])
        last = width(len(dilations))
        convs.append(nn.Conv2d(last, width(len(dilations) + 1), square, padding=_same_padding(square)))
        self.convs = nn.ModuleList(weight_norm(conv) for conv in convs)
        self.conv_post = weight_norm(nn.Conv2d(width(len(dilations) + 1), 1, square, padding=_same_padding(square)))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T] -> [B, 2C, frames, n_fft // 2 + 1]``: real parts of the C channels, then imaginary parts.

        Centred (zero-padded) STFT with a Hann window, normalised by ``sqrt(win_length)`` so the scale does not
        grow with the resolution.
        """
        batch, channels, length = x.shape
        spec = torch.stft(x.reshape(batch * channels, length), self.n_fft, self.hop_length, self.win_length,
                          self.window.to(x.dtype), center=True, pad_mode="constant", normalized=True,
                          return_complex=True)
        spec = spec.view(batch, channels, *spec.shape[-2:])  # [B, C, freq, frames]
        return torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(x)
        features = []
        for conv in self.convs:
            z = self.activation(conv(z))
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Sub-discriminators at window lengths ``n_ffts`` (hop = window / 4), as in EnCodec.

    ``forward(x [B, C, T]) -> (logits, features)``: ``logits[k]`` is sub-discriminator ``k``'s ``[B, 1, frames_k,
    F'_k]`` and ``features[k]`` its list of feature maps (see :class:`STFTDiscriminator`).
    """

    def __init__(self, in_channels: int = 1, filters: int = 32, n_ffts: tuple[int, ...] = DEFAULT_N_FFTS,
                 **kwargs: int | tuple[int, ...] | float) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n_fft, in_channels=in_channels, filters=filters, **kwargs)  # type: ignore[arg-type]
            for n_fft in n_ffts)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, features = [], []
        for disc in self.discriminators:
            out, feats = disc(x)
            logits.append(out)
            features.append(feats)
        return logits, features
