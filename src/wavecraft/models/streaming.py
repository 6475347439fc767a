"""Streaming generation: audio chunks leave while the LM is still decoding.

A frame ``t`` of codes is complete once all ``K`` codebooks are sampled for it: with the delay pattern, after
sequence step ``t + 1 + max(delays)``. Complete frames are turned into audio by :class:`StreamingDecoder`, which
gives the same samples as decoding all codes at once (up to float rounding; bit-identical in the tests), because
it respects the EnCodec decoder's receptive field:

* the first convolution (kernel 7 at the frame rate) needs 3 frames of context on each side;
* the LSTM after it depends on *all* past frames (its state carries them), so re-decoding a finite left context
  could not be exact: its state is carried from chunk to chunk instead, as in a single pass;
* the upsampling stack after the LSTM (transposed convs, residual convs, last conv) is finite in both directions:
  for the 32 kHz and 16 kHz codecs an output sample depends on LSTM frames at most 1 before and 1 after its own.
  Each chunk re-decodes that left context and waits for that lookahead, then keeps only its own samples.
  At the clip's ends the window edge is the clip's edge, padded exactly as in a single pass.

So audio frames ``[a, b)`` can be emitted once code frames ``[0, b + 4)`` are complete: 4 frames (80 ms at
50 Hz) of codec lookahead, on top of the delay pattern's lag (frame ``t`` is complete after step ``t + 4``).
The contexts are computed from the layers (:func:`conv_context`), not hard-coded, and checked by the tests.

The oscillator codec's decoder (:mod:`..codec.oscillator`) has no recurrence: each chunk decodes a window of code
frames with ``context_frames`` on both sides and keeps its own samples (the oscillators' phases follow the
absolute sample index, so windows join exactly).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..codec.compression import EnCodec, InterleaveStereoCompressionModel
from ..codec.conv import StreamableConv1d, StreamableConvTranspose1d, StreamableLSTM
from ..codec.oscillator import OscillatorDecoder
from ..codec.seanet import SEANetResnetBlock, to_time_last_4d
from ..lm.generate import generate_steps
from ..lm.patterns import Pattern
from .genmodel import GenerationError

if TYPE_CHECKING:
    from .genmodel import BaseGenModel

_POINTWISE = (nn.ELU, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.PReLU)


def _input_span(layer: nn.Module, lo: int, hi: int) -> tuple[int, int]:
    """Input samples ``[lo', hi']`` (inclusive) that output samples ``[lo, hi]`` of ``layer`` depend on."""
    if isinstance(layer, nn.Sequential):
        for sub in reversed(layer):
            lo, hi = _input_span(sub, lo, hi)
        return lo, hi
    if isinstance(layer, SEANetResnetBlock):  # x + block(x) (+ a 1x1 shortcut): the union of both paths
        block_lo, block_hi = _input_span(layer.block, lo, hi)
        skip_lo, skip_hi = _input_span(layer.shortcut, lo, hi)
        return min(block_lo, skip_lo), max(block_hi, skip_hi)
    if isinstance(layer, StreamableConv1d):
        # Output n reads padded input [n*s, n*s + k - 1], shifted left by the left padding.
        padding_total = layer.kernel_eff - layer.stride
        left = padding_total if layer.causal else padding_total - padding_total // 2
        return lo * layer.stride - left, hi * layer.stride - left + layer.kernel_eff - 1
    if isinstance(layer, StreamableConvTranspose1d):
        conv = layer.convtr.convtr
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        right = math.ceil(layer.padding_total * layer.trim_right_ratio) if layer.causal else layer.padding_total // 2
        left = layer.padding_total - right
        # Kept output m is full output j = m + left, which input i reaches when i*stride <= j <= i*stride + k - 1.
        return -((kernel - 1 - (lo + left)) // stride), (hi + left) // stride
    if isinstance(layer, _POINTWISE):
        return lo, hi
    raise GenerationError(f"streaming cannot work out the receptive field of a {type(layer).__name__} layer")


def conv_context(layers: nn.Module, hop: int) -> tuple[int, int]:
    """``(left, right)``: input frames before/after its own that any output sample of a frame depends on.

    ``layers`` map ``[B, C, F]`` frames to ``[B, C', F * hop]`` samples without recurrence.
    """
    frame = 1 << 20  # far from the edges, so that no clamping at 0 hides a dependency
    lo, hi = _input_span(layers, frame * hop, (frame + 1) * hop - 1)
    return frame - lo, hi - frame


class _ExactStreamingDecoder:
    """Decoding of a code sequence that arrives frame by frame, equal to one-shot decoding.

    Shapes: ``decode(codes [B, K, N], end) -> wav [B, C, (end - emitted) * hop]`` where ``codes`` are the first
    ``N`` complete frames of a clip of ``total_frames``, and ``end <= ready(N)``.
    Use :func:`streaming_decoder` to get the right subclass for a codec.
    """

    lookahead: int  # complete code frames needed beyond the last frame of audio to emit (codec lookahead)

    def __init__(self, codec: EnCodec, total_frames: int) -> None:
        if not isinstance(codec, EnCodec) or codec.cfg.chunk_length is not None or codec.cfg.renormalize:
            raise GenerationError("streaming needs an EnCodec codec without chunking or renormalisation")
        self.codec = codec
        self.hop = codec.hop_length
        self.total = total_frames
        self.emitted = 0  # audio frames handed out so far

    def ready(self, complete: int) -> int:
        """How many leading frames of audio can be decoded exactly once ``complete`` frames of codes are known."""
        if complete >= self.total:
            return self.total
        return max(0, min(self.total, complete - self.lookahead))

    def decode(self, codes: torch.Tensor, end: int) -> torch.Tensor:
        """Audio of frames ``[emitted, end)`` from complete ``codes [B, K, N]``: ``[B, C, (end - emitted) * hop]``."""
        if end > self.ready(codes.shape[-1]) or end < self.emitted:
            raise ValueError(f"cannot decode up to frame {end} from {codes.shape[-1]} frames")
        with torch.inference_mode():
            wav = self._decode(codes, end)
        self.emitted = end
        return wav

    def _decode(self, codes: torch.Tensor, end: int) -> torch.Tensor:
        raise NotImplementedError


class StreamingDecoder(_ExactStreamingDecoder):
    """SEANet codec: the first conv and the LSTM run once per frame with the LSTM state carried; the upsampling
    stack re-decodes its finite context around each chunk."""

    def __init__(self, codec: EnCodec, total_frames: int) -> None:
        super().__init__(codec, total_frames)
        layers = list(codec.decoder.model)
        self.head = layers[0]
        self.lstm = layers[1] if len(layers) > 1 and isinstance(layers[1], StreamableLSTM) else None
        self.tail = nn.Sequential(*layers[2 if self.lstm is not None else 1:])
        self.head_context = conv_context(self.head, 1)
        self.tail_context = conv_context(self.tail, self.hop)
        self.lookahead = self.head_context[1] + self.tail_context[1]
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._recurrent: list[torch.Tensor] = []  # LSTM outputs [n, B, C] from frame _base on, time-major
        self._base = 0
        self._recurrent_frames = 0

    def _decode(self, codes: torch.Tensor, end: int) -> torch.Tensor:
        self._advance_recurrent(codes, min(self.total, end + self.tail_context[1]))
        return self._decode_tail(end)

    def _advance_recurrent(self, codes: torch.Tensor, until: int) -> None:
        """Run the first conv and the LSTM (carrying its state) over frames ``[done, until)``."""
        start = self._recurrent_frames
        if until <= start:
            return
        left, right = self.head_context
        lo, hi = max(0, start - left), min(self.total, until + right)
        latent = self.codec.decode_latent(codes[..., lo:hi])  # [B, D, hi - lo]
        x = self.head(to_time_last_4d(latent)).squeeze(2)[..., start - lo:until - lo]  # [B, C, n]
        seq = x.permute(2, 0, 1)  # [n, B, C]
        if self.lstm is not None:
            out, self._state = self.lstm.lstm(seq, self._state)
            seq = out + seq if self.lstm.skip else out
        self._recurrent.append(seq)
        self._recurrent_frames = until

    def _decode_tail(self, end: int) -> torch.Tensor:
        """Upsampling stack over LSTM frames ``[a - left, end + right)``, cropped to the samples of ``[a, end)``."""
        a = self.emitted
        left, right = self.tail_context
        lo, hi = max(0, a - left), min(self.total, end + right)
        seq = torch.cat(self._recurrent, dim=0) if len(self._recurrent) > 1 else self._recurrent[0]
        window = seq[lo - self._base:hi - self._base]  # [W, B, C]
        # A fresh channels-last [B, C, 1, W] as in one-shot decoding (the tail's first ELU works in place).
        x = torch.empty((window.shape[1], window.shape[2], 1, window.shape[0]), dtype=window.dtype,
                        device=window.device, memory_format=torch.channels_last)
        x.copy_(window.permute(1, 2, 0).unsqueeze(2))
        wav = self.tail(x).squeeze(2)[..., (a - lo) * self.hop:(end - lo) * self.hop].contiguous()
        # The next chunk starts its window at end - left: older LSTM frames are never read again.
        keep = max(self._base, end - left)
        self._recurrent = [seq[keep - self._base:]]
        self._base = keep
        return wav


class WindowedStreamingDecoder(_ExactStreamingDecoder):
    """Oscillator codec, whose decoder has no recurrence: each chunk decodes the code frames
    ``[a - context, end + context)`` and keeps the samples of ``[a, end)`` (the oscillators' phases follow the
    absolute sample index, so windows join exactly)."""

    def __init__(self, codec: EnCodec, total_frames: int) -> None:
        super().__init__(codec, total_frames)
        self.lookahead = self.context = codec.decoder.context_frames

    def _decode(self, codes: torch.Tensor, end: int) -> torch.Tensor:
        a = self.emitted
        lo, hi = max(0, a - self.context), min(self.total, end + self.context)
        wav = self.codec.decoder(self.codec.decode_latent(codes[..., lo:hi]), first_frame=lo)
        return wav[..., (a - lo) * self.hop:(end - lo) * self.hop]


def streaming_decoder(codec: EnCodec, total_frames: int) -> _ExactStreamingDecoder:
    """The streaming decoder that fits ``codec``'s decoder architecture."""
    windowed = isinstance(codec, EnCodec) and isinstance(codec.decoder, OscillatorDecoder)
    return (WindowedStreamingDecoder if windowed else StreamingDecoder)(codec, total_frames)


class _Decoders:
    """One streaming decoder per mono codec (two for interleaved stereo), concatenated on channels."""

    def __init__(self, codec: object, total_frames: int) -> None:
        self.stereo = isinstance(codec, InterleaveStereoCompressionModel)
        self.codec = codec
        base = codec.model if self.stereo else codec  # type: ignore[attr-defined]
        self.parts = [streaming_decoder(base, total_frames) for _ in range(2 if self.stereo else 1)]

    def ready(self, complete: int) -> int:
        return self.parts[0].ready(complete)

    @property
    def emitted(self) -> int:
        return self.parts[0].emitted

    def decode(self, codes: torch.Tensor, end: int) -> torch.Tensor:
        if not self.stereo:
            return self.parts[0].decode(codes, end)
        left, right = self.codec.split_codes(codes)  # type: ignore[attr-defined]
        return torch.cat([self.parts[0].decode(left, end), self.parts[1].decode(right, end)], dim=1)


def completion_steps(pattern: Pattern) -> torch.Tensor:
    """``[T]``: the sequence step after which frames ``0..t`` all have every codebook decoded (non-decreasing)."""
    steps = pattern.num_sequence_steps
    where = torch.arange(steps).expand(1, pattern.n_q, steps)
    position, _, _ = pattern.revert_pattern_sequence(where, special_token=-1)  # [1, K, T]: step holding (t, k)
    return position[0].amax(dim=0).cummax(dim=0).values


class AudioStream:
    """An iterator of audio chunks ``[B, C, n]`` (``n = chunk_frames * hop``, the last one may be shorter), in order.

    ``first_chunk_seconds`` (default ``chunk_seconds``) sizes the first chunk alone: a short one starts playback
    sooner (the first 0.2 s of audio needs about 18 decoding steps, the first 1 s about 57).

    Generation starts with the first ``next()`` and advances only as chunks are consumed. Once exhausted,
    ``tokens [B, K, F]`` holds the codes, and ``first_chunk_step`` / ``total_steps`` tell how many LM decoding steps
    had run when the first chunk left (for latency checks).
    """

    def __init__(self, model: BaseGenModel, texts: Sequence[str | None], chunk_seconds: float = 1.0,
                 progress: bool = False, first_chunk_seconds: float | None = None) -> None:
        for name, value in (("chunk_seconds", chunk_seconds), ("first_chunk_seconds", first_chunk_seconds)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise GenerationError(f"{name} must be a positive number, got {value!r}")
        self.frames = int(model.duration * model.frame_rate)
        if self.frames < 1:
            raise GenerationError(f"duration {model.duration} s is shorter than one frame")
        self.windows = list(model._windows(self.frames))  # fails early where a long clip has no extend_stride
        self.model = model
        self.texts = list(texts)
        self.chunk_frames = max(1, round(chunk_seconds * model.frame_rate))
        self.first_chunk_frames = self.chunk_frames if first_chunk_seconds is None else \
            max(1, round(first_chunk_seconds * model.frame_rate))
        self.progress = progress
        self.decoders = _Decoders(model.compression_model, self.frames)  # fails early on an unsupported codec
        self.tokens: torch.Tensor | None = None
        self.first_chunk_step: int | None = None
        self.total_steps: int | None = None
        self._chunks: Iterator[torch.Tensor] | None = None

    def __iter__(self) -> AudioStream:
        return self

    def __next__(self) -> torch.Tensor:
        if self._chunks is None:
            self._chunks = self._run()
        return next(self._chunks)

    def close(self) -> None:
        """Stop generating (what an abandoned stream would otherwise keep in memory is released)."""
        if self._chunks is not None:
            self._chunks.close()

    def _run(self) -> Iterator[torch.Tensor]:
        """Generate window by window (as :meth:`BaseGenModel.generate` does beyond ``max_duration``), handing out
        audio as frames complete; a window's prompt frames come from the previous one, already complete."""
        model = self.model
        conditions = model._conditions(self.texts)
        codes: torch.Tensor | None = None  # [B, K, frames]: the clip's codes, filled as frames complete
        prompt: torch.Tensor | None = None
        steps_run = 0
        callbacks = model._progress_callbacks(self.progress, self.windows)  # steps over all windows, as generate()
        for (offset, frames, next_offset), callback in zip(self.windows, callbacks, strict=True):
            steps = generate_steps(model.lm, conditions.cond, frames, prompt=prompt,
                                   **model._lm_kwargs(conditions, callback))
            done_after: torch.Tensor | None = None
            complete = 0  # leading frames of this window with every codebook decoded
            while True:
                try:
                    step = next(steps)
                except StopIteration as finished:
                    out = finished.value
                    break
                steps_run += 1
                if codes is None:
                    codes = step.sequence.new_full((*step.sequence.shape[:2], self.frames), -1)
                if done_after is None:
                    done_after = completion_steps(step.pattern)
                while complete < frames and int(done_after[complete]) <= step.offset:
                    complete += 1
                target = self._next_target()
                if self.decoders.ready(offset + complete) < target:
                    continue
                partial, _, _ = step.pattern.revert_pattern_sequence(step.sequence, special_token=-1)
                codes[..., offset:offset + complete] = partial[..., :complete]
                while self.decoders.ready(offset + complete) >= target:
                    if self.first_chunk_step is None:
                        self.first_chunk_step = steps_run
                    yield self.decoders.decode(codes[..., :offset + complete], target)
                    target = self._next_target()
            assert codes is not None  # every window decodes at least one step
            codes[..., offset:offset + frames] = out
            prompt = out[..., next_offset - offset:]
        self.tokens = codes
        self.total_steps = steps_run
        while self.decoders.emitted < self.frames:
            if self.first_chunk_step is None:
                self.first_chunk_step = self.total_steps
            yield self.decoders.decode(codes, min(self.frames, self._next_target()))

    def _next_target(self) -> int:
        """The frame the next chunk ends at."""
        emitted = self.decoders.emitted
        return emitted + (self.first_chunk_frames if emitted == 0 else self.chunk_frames)
