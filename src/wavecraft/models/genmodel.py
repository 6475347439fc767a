"""What MusicGen and AudioGen share: conditioning, CFG, long-form windowing, prompts, decoding to audio."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..audio import convert_audio
from ..checkpoints.lm import LMBundle, load_lm_bundle, save_generator
from ..codec.compression import CompressionModel, InterleaveStereoCompressionModel
from ..conditioning import TextConditioner
from ..conditioning.chroma import ChromaConditioner
from ..errors import WavecraftError
from ..lm import linear as lm_linear
from ..lm.generate import Conditions, SamplingParams, generate
from ..lm.patterns import get_pattern_provider
from ..lm.quantize import check_quantize, model_is_quantized, quantize_int8

if TYPE_CHECKING:
    from .streaming import AudioStream

ProgressCallback = Callable[[int, int], None]

log = logging.getLogger(__name__)

#: Logged (one line, stderr under the CLI) when float16 is asked for on a CPU.
CPU_FLOAT16_WARNING = ("dtype float16 on CPU: most CPUs have no float16 arithmetic, so generation can run 10x slower "
                       "than in float32; on CPU keep float32 (the default) or use int8 quantization, bfloat16 only "
                       "where the CPU supports it (float16 is meant for GPUs)")


def default_device(device: str | torch.device | None) -> torch.device:
    """``device`` checked for this machine (one line naming what is wrong), or CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise GenerationError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if chosen.type == "cpu":
        return chosen
    if chosen.type != "cuda":
        raise GenerationError(f"device {device!r} is not supported for generation (use cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise GenerationError(f"device {device!r}: no CUDA GPU is usable here (this torch build or machine has "
                              "none); use --device cpu")
    if chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise GenerationError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return chosen


def _number(name: str, value: object, low: float, high: float, integer: bool = False) -> None:
    """Refuse a parameter that is not a finite number in ``[low, high]`` (an integer where ``integer``)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or not low <= value <= high:
        what, bounds = ("an integer", f"[{int(low)}, {int(high)}]") if integer else (
            "a finite number", f"[{low:g}, {high:g}]")
        raise GenerationError(f"{name} must be {what} in {bounds}, got {value!r}")


class GenerationError(WavecraftError, ValueError):
    """Invalid generation arguments: descriptions, durations, prompts."""


#: Longest clip generated unless asked for more (``max_generation_duration``, CLI ``--allow-long``): a typo such
#: as ``--duration 1e9`` (about 38,000 h) must fail at once, not run until memory runs out.
DURATION_LIMIT = 3600.0
#: The most ``--allow-long`` allows: a clip's samples, its tokens and the loudness pass are all held in memory.
LONG_DURATION_LIMIT = 24 * 3600.0
#: Longest description, in characters (tokenizers without truncation make the text encoder quadratic in it).
MAX_DESCRIPTION_CHARS = 10_000


def check_duration(duration: object, limit: float, name: str = "duration", hint: str = "") -> float:
    """``duration`` as a float: a finite number of seconds in ``(0, limit]``, else a :class:`GenerationError`
    naming ``name``; ``hint`` is appended to the message about the limit (how to raise it)."""
    if isinstance(duration, bool) or not isinstance(duration, int | float) or not math.isfinite(duration) \
            or duration <= 0:
        raise GenerationError(f"{name} must be a positive number of seconds, got {duration!r}")
    if duration > limit:
        raise GenerationError(f"{name} {duration:g} s is over the limit of {limit:g} s ({limit / 3600:g} h){hint}")
    return float(duration)


class GuidanceConditions(NamedTuple):
    """The condition batches of one generation: ``cond`` (everything), ``null`` (nothing; ``None`` without CFG)
    and ``mid`` (double CFG's middle term: no description, the other conditions kept)."""

    cond: Conditions
    null: Conditions | None
    mid: Conditions | None


def check_guidance(cfg_coef: float, cfg_coef_beta: float | None, two_step_cfg: bool,
                   names: tuple[str, str, str] = ("cfg_coef", "cfg_coef_beta", "two_step_cfg")) -> None:
    """Refuse guidance settings that cannot run together; ``names`` are how the caller calls the three."""
    cfg_name, beta_name, two_step_name = names
    if cfg_coef_beta is not None and two_step_cfg:
        raise GenerationError(f"{beta_name} (double CFG) runs in one batched pass: it excludes {two_step_name}")
    if cfg_coef_beta is not None and cfg_coef == 1.0:
        raise GenerationError(f"{beta_name} (double CFG) needs classifier-free guidance: {cfg_name} must not be 1")


#: Guidance coefficients beyond this only amplify float error (AudioCraft's largest published setting is 9).
MAX_GUIDANCE = 1000.0

TRANSFORMER_DTYPES = ("float32", "float16", "bfloat16")


def transformer_dtype(name: str | None, quantize: str | None = None) -> torch.dtype | None:
    """``dtype='float16'`` etc. of ``get_pretrained`` as a torch dtype (``None``: keep float32)."""
    if name is None or name == "float32":
        return None
    if name not in TRANSFORMER_DTYPES:
        raise GenerationError(f"unknown dtype {name!r}; supported: {', '.join(TRANSFORMER_DTYPES)}")
    if quantize is not None:
        raise GenerationError(f"dtype={name} and quantize={quantize} exclude each other")
    return getattr(torch, name)


class BaseGenModel:
    """A text-conditioned token generator plus the codec that turns its tokens into audio."""

    default_duration = 30.0
    default_extend_stride = 18.0
    #: Longest ``duration`` :meth:`set_generation_params` accepts; raise it (on the class or a model) for more.
    max_generation_duration = DURATION_LIMIT

    def __init__(self, name: str, compression_model: CompressionModel, bundle: LMBundle,
                 max_duration: float | None = None) -> None:
        self.name = name
        if bundle.interleave_stereo and compression_model.channels == 1:
            compression_model = InterleaveStereoCompressionModel(compression_model)
        if compression_model.num_codebooks != bundle.lm.cfg.n_q:
            compression_model.set_num_codebooks(bundle.lm.cfg.n_q)
        self.compression_model = compression_model.eval()
        self.bundle = bundle
        self.lm = bundle.lm.eval()
        # Packed CPU weights (the fallback without the native kernel) double the decoder's weight memory: only
        # where that fits.
        lm_linear.set_packing(lm_linear.is_packing() and lm_linear.packed_copy_fits(self.lm))
        self.max_duration = float(max_duration or bundle.max_duration or 30.0)
        self.duration = min(self.default_duration, self.max_duration)
        self.extend_stride: float | None = None
        self.sampling = SamplingParams()
        self.cfg_coef = bundle.cfg_coef
        self.cfg_coef_beta: float | None = None
        self.two_step_cfg = bundle.two_step_cfg
        self.generator: torch.Generator | None = None
        self._progress_callback: ProgressCallback | None = None

    @classmethod
    def _load(cls, name: str | Path, device: str | torch.device | None, quantize: str | None,  # noqa: ANN206
              dtype: str | None = None):
        """LM bundle + codec from ``name`` (the codec from the same folder, or beside a state-dict file)."""
        device = default_device(device)
        check_quantize(quantize, device)  # before the (long) load
        layer_dtype = transformer_dtype(dtype, quantize)
        if layer_dtype == torch.float16 and device.type == "cpu":
            log.warning(CPU_FLOAT16_WARNING)
        bundle = load_lm_bundle(name)
        location = Path(name).parent if Path(name).is_file() else name
        codec = CompressionModel.get_pretrained(location)
        bundle.to(device)
        if quantize == "int8":
            quantize_int8(bundle.lm)
        if layer_dtype is not None:
            bundle.lm.set_transformer_dtype(layer_dtype)
        return cls(str(name), codec.to(device), bundle)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.compression_model.frame_rate

    @property
    def sample_rate(self) -> int:
        return self.compression_model.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.compression_model.channels

    @property
    def device(self) -> torch.device:
        return self.lm.linears[0].weight.device

    def half(self):  # noqa: ANN201 (returns the model, of the subclass's type)
        """Run the LM's transformer layers (and KV cache) in float16, as ``get_pretrained(..., dtype='float16')``
        does, and return the model (AudioCraft tutorials call ``model.half()``).

        The embeddings, output norm, heads and the codec stay float32, as with ``dtype=``. float16 is meant for
        GPUs: on a CPU this still converts but warns (``warnings.warn`` of the one-line :data:`CPU_FLOAT16_WARNING`)
        that it is very slow there and what to use instead. An int8-quantized model (``quantize='int8'``)
        cannot be converted: :class:`GenerationError`, as ``dtype=`` with ``quantize=``.
        """
        if model_is_quantized(self.lm):
            raise GenerationError("half() (dtype=float16) and quantize=int8 exclude each other")
        if self.device.type == "cpu":
            warnings.warn(CPU_FLOAT16_WARNING, UserWarning, stacklevel=2)
        self.lm.set_transformer_dtype(torch.float16)
        return self

    # -- parameters -----------------------------------------------------------------------------------------------
    def set_generation_params(self, use_sampling: bool = True, top_k: int = 250, top_p: float = 0.0,
                              temperature: float = 1.0, duration: float = 30.0, cfg_coef: float = 3.0,
                              cfg_coef_beta: float | None = None, two_step_cfg: bool = False,
                              extend_stride: float | None = None, seed: int | None = None) -> None:
        """Set sampling and length. ``top_p > 0`` wins over ``top_k``; ``seed`` makes sampling reproducible.

        ``duration`` may exceed the model's ``max_duration``: generation then continues in windows that keep the
        last ``max_duration - extend_stride`` seconds as context (``extend_stride`` defaults to 18 s for MusicGen,
        2 s for AudioGen).
        """
        check_duration(duration, self.max_generation_duration, hint=" (set max_generation_duration to allow longer)")
        if extend_stride is None:
            extend_stride = min(self.default_extend_stride, self.max_duration / 2)
        if not isinstance(extend_stride, (int, float)) or isinstance(extend_stride, bool) \
                or not 0 < extend_stride < self.max_duration:
            raise GenerationError(f"extend_stride must be in (0, max_duration={self.max_duration:g}), "
                                  f"got {extend_stride}")
        _number("extend_stride", extend_stride, 0, self.max_duration)
        if int(self.frame_rate * extend_stride) < 1:  # a window advancing 0 frames would never end
            raise GenerationError(f"extend_stride must be at least one codec frame ({1 / self.frame_rate:g} s), "
                                  f"got {extend_stride}")
        _number("cfg_coef", cfg_coef, -MAX_GUIDANCE, MAX_GUIDANCE)
        if cfg_coef_beta is not None:
            _number("cfg_coef_beta", cfg_coef_beta, -MAX_GUIDANCE, MAX_GUIDANCE)
        check_guidance(cfg_coef, cfg_coef_beta, two_step_cfg)
        _number("temperature", temperature, 0, 100)
        _number("top_k", top_k, 0, 2**31 - 1, integer=True)
        _number("top_p", top_p, 0, 1)
        if seed is not None:
            _number("seed", seed, 0, 2**63 - 1, integer=True)
        self.sampling = SamplingParams(use_sampling, temperature, top_k, top_p)
        self.duration = float(duration)
        self.cfg_coef = cfg_coef
        self.cfg_coef_beta = cfg_coef_beta
        self.two_step_cfg = two_step_cfg
        self.extend_stride = extend_stride
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save LM, conditioners and codec to ``directory`` (``config.json`` + ``model.safetensors``).

        ``get_pretrained(directory)`` loads it back. Frozen text encoders are referenced by name, not saved.
        """
        if model_is_quantized(self.lm):
            raise GenerationError("an int8-quantized model cannot be saved; save it before quantizing")
        codec = self.compression_model
        if isinstance(codec, InterleaveStereoCompressionModel):
            codec = codec.model
        return save_generator(self.bundle, codec, directory)

    def set_text_encoder(self, name_or_path: str) -> None:
        """Load the T5 text encoder (and tokenizer) from ``name_or_path`` instead of the checkpoint's default.

        Useful offline: point it at a local copy of ``t5-base`` (or ``t5-large`` for AudioGen).
        """
        for conditioner in self.bundle.conditioners.values():
            if isinstance(conditioner, TextConditioner):
                conditioner.use_encoder(name_or_path)

    def set_custom_progress_callback(self, progress_callback: ProgressCallback | None = None) -> None:
        """``progress_callback(generated_steps, total_steps)``, called after every decoding step.

        Both count the decoding steps of the whole generation, over all its windows: ``total_steps`` is fixed
        before the first call, ``generated_steps`` goes up by one per call, from 1 to exactly ``total_steps``.
        Prompt frames (a continuation's prompt, a window's context) are read in, not decoded: they count no step.
        One window of ``F`` new frames takes ``F + max(delays)`` steps (the delay pattern's lag).
        """
        self._progress_callback = progress_callback

    # -- public generation API ----------------------------------------------------------------------------------
    def generate_unconditional(self, num_samples: int, progress: bool = False, return_tokens: bool = False):  # noqa: ANN201
        """``num_samples`` clips with no text: ``wav [num_samples, C, duration * sample_rate]``."""
        if not isinstance(num_samples, int) or num_samples < 1:
            raise GenerationError(f"num_samples must be a positive integer, got {num_samples!r}")
        return self._finish(self._generate_tokens([None] * num_samples, None, progress), return_tokens)

    def generate(self, descriptions: Sequence[str], progress: bool = False, return_tokens: bool = False):  # noqa: ANN201
        """One clip per description: ``wav [B, C, duration * sample_rate]`` (and the tokens ``[B, K, F]``)."""
        texts = self._check_descriptions(descriptions, allow_none=False)
        return self._finish(self._generate_tokens(texts, None, progress), return_tokens)

    def generate_stream(self, descriptions: Sequence[str], chunk_seconds: float = 1.0,
                        progress: bool = False, first_chunk_seconds: float | None = None) -> AudioStream:
        """Like :meth:`generate`, but iterating the result yields audio chunks ``[B, C, n]`` as soon as they exist.

        Chunks hold ``chunk_seconds`` of audio (the first ``first_chunk_seconds`` if given, the last one may be
        shorter); concatenated they equal ``generate_audio(tokens)`` up to float rounding. Beyond ``max_duration``
        generation goes on in sliding windows, as in :meth:`generate`, and so does the stream. After iteration,
        ``stream.tokens [B, K, F]`` holds the codes. See :mod:`wavecraft.models.streaming`.
        """
        from .streaming import AudioStream

        texts = self._check_descriptions(descriptions, allow_none=False)
        return AudioStream(self, texts, chunk_seconds, progress, first_chunk_seconds)

    def generate_continuation(self, prompt: torch.Tensor, prompt_sample_rate: int,
                              descriptions: Sequence[str | None] | None = None, progress: bool = False,
                              return_tokens: bool = False):  # noqa: ANN201
        """Continue ``prompt [B, C, T]`` or ``[C, T]``; the output starts with the (re-decoded) prompt.

        The output lasts ``duration`` (``set_generation_params``), the whole prompt included. A prompt longer than
        ``max_duration`` is kept whole too: generation then starts in sliding windows (see
        :meth:`set_generation_params`) conditioned on the prompt's last ``max_duration - extend_stride`` seconds.
        A prompt longer than ``duration`` is an error.
        """
        if not isinstance(prompt, torch.Tensor) or prompt.dim() not in (2, 3):
            raise GenerationError("prompt must be a tensor [B, C, T] or [C, T]")
        if prompt.dim() == 2:
            prompt = prompt[None]
        if not isinstance(prompt_sample_rate, int) or prompt_sample_rate <= 0:
            raise GenerationError(f"prompt_sample_rate must be a positive integer, got {prompt_sample_rate!r}")
        if prompt.shape[-1] == 0 or not bool(torch.isfinite(prompt).all()):
            raise GenerationError("prompt audio is empty or contains NaN/inf samples")
        texts = [None] * prompt.shape[0] if descriptions is None else \
            self._check_descriptions(descriptions, allow_none=True)
        if len(texts) != prompt.shape[0]:
            raise GenerationError(f"{len(texts)} descriptions for {prompt.shape[0]} prompts")
        prompt_seconds = prompt.shape[-1] / prompt_sample_rate
        if prompt_seconds > self.duration:
            shown = f"{prompt_seconds:.2f} s"
            if float(shown[:-2]) <= self.duration:  # rounded, it would look as long as the duration
                shown = f"{prompt.shape[-1]} samples at {prompt_sample_rate} Hz ({prompt_seconds:.6g} s)"
            raise GenerationError(f"prompt of {shown} is longer than the requested duration "
                                  f"({self.duration:g} s): ask for a longer duration or cut the prompt")
        wav = convert_audio(prompt.to(self.device), prompt_sample_rate, self.sample_rate, self.audio_channels)
        with torch.inference_mode():
            prompt_tokens, scale = self.compression_model.encode(wav)
        if scale is not None:
            raise GenerationError("this codec renormalises its input; it cannot encode prompts for generation")
        # The clip is a whole number of frames, int(duration * frame_rate), and the codec rounds a prompt up to
        # whole frames: a prompt within the duration may end in a frame the clip does not have. Such a prompt
        # fills the clip, which is then the prompt cut to the clip's length.
        prompt_tokens = prompt_tokens[..., :self._total_frames()]
        return self._finish(self._generate_tokens(texts, prompt_tokens, progress), return_tokens)

    def generate_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, K, F] -> wav [B, C, F * hop]``."""
        with torch.inference_mode():
            return self.compression_model.decode(tokens, None)

    # -- internals -----------------------------------------------------------------------------------------------
    def _finish(self, tokens: torch.Tensor, return_tokens: bool):  # noqa: ANN202
        wav = self.generate_audio(tokens)
        return (wav, tokens) if return_tokens else wav

    @staticmethod
    def _check_descriptions(descriptions: Sequence[str | None], allow_none: bool) -> list[str | None]:
        if isinstance(descriptions, str) or not isinstance(descriptions, Sequence):
            raise GenerationError("descriptions must be a list of strings")
        if len(descriptions) == 0:
            raise GenerationError("descriptions is empty: give at least one text")
        for d in descriptions:
            if d is None and allow_none:
                continue
            if not isinstance(d, str):
                raise GenerationError(f"descriptions must be strings, got {type(d).__name__}")
            if len(d) > MAX_DESCRIPTION_CHARS:
                raise GenerationError(f"a description of {len(d)} characters is too long "
                                      f"(max {MAX_DESCRIPTION_CHARS})")
        return list(descriptions)

    def _conditions(self, texts: list[str | None], melodies: list[torch.Tensor | None] | None = None
                    ) -> GuidanceConditions:
        """Project every row's conditions and their CFG nulls, batched as the reference batches them.

        ``melodies``: per row a mono waveform ``[1, T]`` at the model rate, or ``None`` (the null melody).
        Text conditioners come first, then waveform ones, which fixes the prefix order ``[melody, text]``.
        With double CFG (``cfg_coef_beta``) ``mid`` drops the description but keeps the melody; without a melody
        it is the null condition itself.
        """
        null_needed = self.cfg_coef != 1.0 or self.two_step_cfg
        batched = null_needed and not self.two_step_cfg
        rows = len(texts)
        wavs = list(melodies) if melodies is not None else [None] * rows
        no_text = [None] * rows
        # Row groups (texts, melodies): the conditional rows, then mid's, then the nulls.
        groups = [(texts, wavs)]
        mid_needed = self.cfg_coef_beta is not None and any(w is not None for w in wavs)
        if mid_needed:
            groups.append((no_text, wavs))
        if null_needed:
            groups.append((no_text, [None] * rows))
        encoded: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in groups]
        ordered = sorted(self.bundle.conditioners.items(), key=lambda item: isinstance(item[1], ChromaConditioner))
        with torch.inference_mode():
            for name, conditioner in ordered:
                waveform = isinstance(conditioner, ChromaConditioner)
                inputs = [group[1] if waveform else group[0] for group in groups]
                if batched:
                    # All groups are processed together: they share padding (text and melody).
                    emb, mask = self._run_conditioner(name, conditioner, [x for part in inputs for x in part])
                    for i, part in enumerate(encoded):
                        part[name] = emb[i * rows:(i + 1) * rows], mask[i * rows:(i + 1) * rows]
                else:
                    for part, items in zip(encoded, inputs, strict=True):
                        part[name] = self._run_conditioner(name, conditioner, items)
        cond, *others = [Conditions(*self.bundle.fuser.fuse(part)) for part in encoded]
        null = others[-1] if null_needed else None
        return GuidanceConditions(cond, null, others[0] if mid_needed else null)

    def _run_conditioner(self, name: str, conditioner: torch.nn.Module, items: list
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts through a text conditioner, waveforms (``None`` = null melody) through the chroma conditioner."""
        if isinstance(conditioner, TextConditioner):
            return conditioner(items)
        if isinstance(conditioner, ChromaConditioner):
            return conditioner(self._wav_batch(items))
        raise GenerationError(f"conditioner {name!r} ({type(conditioner).__name__}) is not supported")

    def _melody_window(self, wav: torch.Tensor | None, offset_frames: int) -> torch.Tensor | None:
        if wav is None:
            return None
        start = int(offset_frames / self.frame_rate * self.sample_rate)
        positions = (start + torch.arange(int(self.max_duration * self.sample_rate), device=wav.device)) % wav.shape[-1]
        return wav[..., positions]

    def _wav_batch(self, wavs: list[torch.Tensor | None]) -> torch.Tensor:
        """Zero-pad mono waveforms (``None`` = one silent sample, the null melody) into ``[B, 1, T_max]``."""
        items = [w if w is not None else torch.zeros(1, 1, device=self.device) for w in wavs]
        length = max(w.shape[-1] for w in items)
        return torch.stack([torch.nn.functional.pad(w, (0, length - w.shape[-1])) for w in items])

    def _window_steps(self, windows: Sequence[tuple[int, int, int]], prompt_len: int) -> list[int]:
        """Decoding steps of each of ``windows`` (from :meth:`_windows`), as :func:`generate` runs them."""
        cfg = self.lm.cfg
        provider = get_pattern_provider(cfg.pattern, cfg.n_q, delays=list(cfg.delays))
        counts, known = [], prompt_len  # frames of the clip known before each window
        for offset, frames, _ in windows:
            pattern = provider.get_pattern(frames)
            counts.append(pattern.num_sequence_steps - pattern.get_first_step_with_timesteps(known - offset))
            known = offset + frames
        return counts

    def _progress_callbacks(self, progress: bool, windows: Sequence[tuple[int, int, int]],
                            prompt_len: int = 0) -> list[ProgressCallback | None]:
        """One step callback per window, reporting ``(steps done, total steps)`` over the whole generation."""
        counts = self._window_steps(windows, prompt_len)
        total = sum(counts)
        before = [sum(counts[:i]) for i in range(len(counts))]
        return [self._progress(progress, done_before, total) for done_before in before]

    def _progress(self, progress: bool, done_before: int, total: int) -> ProgressCallback | None:
        """A window's step callback: ``done`` steps of this window, ``done_before`` steps of the earlier ones."""
        if self._progress_callback is not None:
            user = self._progress_callback
            return lambda done, _steps: user(done + done_before, total)
        if progress:
            def show(done: int, _steps: int) -> None:
                done += done_before
                print(f"{done: 6d} / {total: 6d}", end="\n" if done == total else "\r", file=sys.stderr)
            return show
        return None

    def _lm_kwargs(self, conditions: GuidanceConditions, callback: ProgressCallback | None) -> dict:
        """Keyword arguments of :func:`~wavecraft.lm.generate.generate` besides ``cond``, length and prompt."""
        # The LM's coefficient in two-step mode is the stored one, as in the reference.
        cfg_coef = self.bundle.cfg_coef if self.two_step_cfg else self.cfg_coef
        mid = conditions.mid if self.cfg_coef_beta is not None else None
        return dict(null=conditions.null, cfg_coef=cfg_coef, two_step_cfg=self.two_step_cfg, sampling=self.sampling,
                    generator=self.generator, callback=callback, cfg_coef_beta=self.cfg_coef_beta, mid=mid)

    def _total_frames(self) -> int:
        """Frames of a clip of ``duration`` seconds (at least one)."""
        total_len = int(self.duration * self.frame_rate)
        if total_len < 1:
            raise GenerationError(f"duration {self.duration} s is shorter than one frame ({1 / self.frame_rate:g} s)")
        return total_len

    def _generate_tokens(self, texts: list[str | None], prompt_tokens: torch.Tensor | None,
                         progress: bool, melodies: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        total_len = self._total_frames()
        conditions = self._conditions(texts, melodies)
        prompt_len = 0 if prompt_tokens is None else prompt_tokens.shape[-1]
        if prompt_len > total_len:
            raise GenerationError("the prompt is longer than the requested duration")

        def run(prompt: torch.Tensor | None, max_gen_len: int, offset: int,
                callback: ProgressCallback | None) -> torch.Tensor:
            nonlocal conditions
            if offset and melodies is not None:
                # Each window is conditioned on the melody from its own start time, wrapping around.
                conditions = self._conditions(texts, [self._melody_window(m, offset) for m in melodies])
            return generate(self.lm, conditions.cond, max_gen_len, prompt=prompt,
                            **self._lm_kwargs(conditions, callback))

        windows = list(self._windows(total_len, prompt_len))
        codes = prompt_tokens  # [B, K, n]: the clip's first n frames, known so far
        for (offset, frames, _), callback in zip(windows, self._progress_callbacks(progress, windows, prompt_len),
                                                 strict=True):
            # A window's context: what is known of the clip from its start (the prompt, or earlier windows).
            context = None if codes is None else codes[..., offset:]
            out = run(context, frames, offset, callback)
            new = out if context is None else out[..., context.shape[-1]:]
            codes = new if codes is None else torch.cat([codes, new], dim=-1)
        assert codes is not None  # a prompt, or at least one window
        return codes

    def _windows(self, total_len: int, prompt_len: int = 0) -> Iterator[tuple[int, int, int]]:
        """``(offset, frames, next offset)`` of each generation window over a clip of ``total_len`` frames.

        One window if the duration fits ``max_duration``; else sliding windows, each starting ``extend_stride``
        after the previous one and keeping the rest of it (``max_duration - extend_stride`` s) as its prompt;
        positions restart at 0 in every window. ``frames`` counts the window's prompt; ``prompt_len`` is the
        caller's prompt, at the start of the clip. A prompt that leaves no room in the first window (as long as a
        window or longer) is context like an earlier window's: the first window starts ``max_duration -
        extend_stride`` s before the prompt's end. No window when the prompt fills the clip.
        """
        if prompt_len >= total_len:
            return
        if self.duration <= self.max_duration:
            yield 0, total_len, total_len
            return
        if self.extend_stride is None:
            raise GenerationError("durations beyond max_duration need set_generation_params(extend_stride=...)")
        stride = int(self.frame_rate * self.extend_stride)
        window = round(self.max_duration * self.frame_rate)
        offset = 0 if prompt_len < window else prompt_len - (window - stride)
        prompt_len -= offset
        while offset + prompt_len < total_len:
            # In frames: the seconds left, min(duration - offset / rate, max_duration), could round a frame short
            # (0.7 - 0.4 s gave 14 of 15 frames, then 4 more windows of shrinking prompts).
            frames = min(total_len - offset, window)
            yield offset, frames, offset + stride
            prompt_len = frames - stride
            offset += stride

