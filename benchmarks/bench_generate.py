"""MusicGen decoding speed against transformers with the same weights (CPU, fp32, batch with CFG).

Builds transformers' MusicgenForConditionalGeneration at the musicgen-small size (24 layers, dim 1024, 16 heads,
4 x 2048 codebooks, a T5-base-sized text encoder, the 32 kHz EnCodec) with random weights, converts the same
weights to wavecraft in memory, and generates the same clip greedily with classifier-free guidance (3.0),
alternating the implementations: transformers fp32, wavecraft fp32, wavecraft int8 (``quantize_int8``).
Step time = median interval between decoding steps (prefill excluded). Peak memory is measured in a child
process per implementation. Prints times and ratios (wavecraft / transformers), plus:

* the fp32 step with the native kernels turned off (the PyTorch layers with the packed oneDNN fallback);
* wavecraft batch 4 vs batch 1 step time (decoding is weight-bandwidth bound: 4 rows should cost little more);
* time to the first streamed audio chunk (``generate_stream``, 1 s chunks) and the whole streamed clip; with the
  CLI's 0.2 s first chunk, the median of 5 streams (from the call, text encoding included);
* the memory-bandwidth bound, measured in the same run: the time to read once every weight a decoding step reads
  (self-attention, cross-attention query/output, FFN, norms, output heads), and step time / bound;
* the same ratios measured alternately: rounds of (bound, batch-1 steps, batch-4 steps) at the clip's median
  cache position, which the machine's bandwidth swings disturb less than numbers taken minutes apart;
* the linear-kernel ceilings: the native few-row kernel (``wavecraft.lm.native``) and the packed oneDNN linear
  alone over those weights, at 2 and 8 rows (what each kernel can read);
* int8: step time against transformers fp32, RSS of the model before/after quantization, teacher-forced top-1
  agreement of the int8 logits with fp32 on the generated codes, and on the shipped model's trained weights.

* ``--compile``: the native step, and the PyTorch layers eager against ``torch.compile``-d one-step decoding
  (``LMModel.compile_decoding``, native kernels off), on this model and on the shipped model (where per-step
  overhead, not weight reads, dominates), with the compile time.

    python benchmarks/bench_generate.py [--seconds 10] [--batch 1] [--repeats 1] [--quick] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

TEXT = [[37, 1176, 2008, 1], [8, 14, 5, 1]]  # two arbitrary token id rows (T5 vocab), end with </s>


def build_transformers():
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    torch.manual_seed(0)
    text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    audio = EncodecConfig(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
                          num_filters=64, hidden_size=128, codebook_size=2048, use_causal_conv=False,
                          use_conv_shortcut=False, pad_mode="constant")
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                    ffn_dim=4096, num_codebooks=4)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
    model = MusicgenForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = model.generation_config.decoder_start_token_id = 2048
    return model


class FixedTokenizer:
    """Stands in for the T5 tokenizer: the same ids for both implementations."""

    def __call__(self, texts, return_tensors="pt", padding=True):
        rows = [TEXT[i % len(TEXT)] for i in range(len(texts))]
        length = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
        empty = torch.tensor([not t for t in texts])[:, None]
        return {"input_ids": ids, "attention_mask": mask.masked_fill(empty, 0)}


def build_wavecraft(hf):
    from wavecraft.checkpoints.codec import codec_config_from_transformers, rename_transformers_codec_keys
    from wavecraft.checkpoints.lm import bundle_from_transformers
    from wavecraft.codec import EnCodec
    from wavecraft.models.musicgen import MusicGen

    bundle = bundle_from_transformers(hf.config.to_dict(), hf.state_dict(), source="(in memory)")
    bundle.conditioners["description"].set_encoder(FixedTokenizer(), hf.text_encoder)
    codec = EnCodec(codec_config_from_transformers(hf.config.audio_encoder.to_dict()))
    prefix = "audio_encoder."
    codec_state = {k[len(prefix):]: v for k, v in hf.state_dict().items() if k.startswith(prefix)}
    codec.load_state_dict(rename_transformers_codec_keys(codec_state, codec.state_dict().keys()))
    return MusicGen("musicgen-small-random", codec.eval(), bundle)


class StepTimer:
    """Records the wall time of every decoding step (as a transformers logits processor or a progress callback)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, *args):  # noqa: ANN002, ANN204
        self.times.append(time.perf_counter())
        return args[1] if len(args) == 2 and isinstance(args[1], torch.Tensor) else None

    def step_time(self) -> float:
        intervals = [b - a for a, b in zip(self.times[1:], self.times[2:], strict=False)]  # skip the prefill step
        return statistics.median(intervals)


def run_transformers(hf, frames: int, batch: int):
    from transformers import LogitsProcessorList

    timer = StepTimer()
    inputs = FixedTokenizer()(["x"] * batch)
    captured = {}
    decode = hf.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured["codes"] = codes[0]
        return decode(codes, *args, **kwargs)

    hf.audio_encoder.decode = spy
    begin = time.perf_counter()
    with torch.inference_mode():
        hf.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=frames + 3,
                    logits_processor=LogitsProcessorList([timer]))
    total = time.perf_counter() - begin
    hf.audio_encoder.decode = decode
    return timer.step_time(), total, captured["codes"]


def run_wavecraft(model, frames: int, batch: int):
    timer = StepTimer()
    model.set_generation_params(use_sampling=False, duration=frames / model.frame_rate, cfg_coef=3.0)
    model.set_custom_progress_callback(lambda done, total: timer())
    begin = time.perf_counter()
    _, codes = model.generate(["x"] * batch, return_tokens=True)
    total = time.perf_counter() - begin
    model.set_custom_progress_callback(None)
    return timer.step_time(), total, codes


@contextlib.contextmanager
def native_env(name: str, value: str):
    """The native kernels reloaded under ``name=value``: ``WAVECRAFT_NATIVE=0`` turns them off (the PyTorch layers
    with the packed oneDNN fallback), ``WAVECRAFT_NATIVE_ISA=avx2`` builds them for AVX2 alone."""
    from wavecraft.lm import native

    os.environ[name] = value
    native.reset()
    try:
        yield
    finally:
        del os.environ[name]
        native.reset()


def native_off():
    return native_env("WAVECRAFT_NATIVE", "0")


def run_without_native(model, frames: int, batch: int) -> float | None:
    """Step time of ``model`` with the native kernels off; None if they are not built here anyway."""
    from wavecraft.lm import native

    if not native.available():
        return None
    with native_off():
        return run_wavecraft(model, frames, batch)[0]


def run_stream(model, frames: int, batch: int, first_chunk_seconds: float | None = None):
    """``(seconds to the first chunk, seconds to the last, codes)`` of a streamed greedy generation in 1 s chunks
    (the first one ``first_chunk_seconds`` long if given)."""
    model.set_generation_params(use_sampling=False, duration=frames / model.frame_rate, cfg_coef=3.0)
    begin = time.perf_counter()
    stream = model.generate_stream(["x"] * batch, chunk_seconds=1.0, first_chunk_seconds=first_chunk_seconds)
    first = None
    for _ in stream:
        if first is None:
            first = time.perf_counter() - begin
    return first, time.perf_counter() - begin, stream.tokens


def first_audio(model, frames: int, batch: int, first_chunk_seconds: float, repeats: int = 5) -> list[float]:
    """Sorted seconds to the first streamed chunk (``first_chunk_seconds`` long) over ``repeats`` greedy streams,
    each stopped after its first chunk: one sample swings with the shared machine's bandwidth."""
    model.set_generation_params(use_sampling=False, duration=frames / model.frame_rate, cfg_coef=3.0)
    seconds = []
    for _ in range(repeats):
        begin = time.perf_counter()
        stream = model.generate_stream(["x"] * batch, chunk_seconds=1.0, first_chunk_seconds=first_chunk_seconds)
        next(stream)
        seconds.append(time.perf_counter() - begin)
        stream.close()
    return sorted(seconds)


def step_weights(lm) -> list[torch.Tensor]:
    """The weights one decoding step reads (fp32 model); cross-attention keys/values are computed once, not here."""
    dim = lm.cfg.dim
    tensors = [lm.out_norm.weight, lm.out_norm.bias, *(head.weight for head in lm.linears)]
    for layer in lm.transformer.layers:
        tensors += [layer.self_attn.in_proj_weight, layer.self_attn.out_proj.weight, layer.linear1.weight,
                    layer.linear2.weight]
        tensors += [p for norm in (layer.norm1, layer.norm2) for p in norm.parameters()]
        if hasattr(layer, "cross_attention"):
            tensors += [layer.cross_attention.in_proj_weight[:dim], layer.cross_attention.out_proj.weight,
                        *layer.norm_cross.parameters()]
    return [t.detach() for t in tensors]


def bandwidth_bound(tensors: list[torch.Tensor], repeats: int = 5) -> tuple[float, int]:
    """``(seconds, bytes)``: best time to read every tensor once (a sum per tensor: memory-bound, no writes)."""
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            begin = time.perf_counter()
            for t in tensors:
                t.sum()
            best = min(best, time.perf_counter() - begin)
    return best, nbytes


def interleaved_steps(lm, position: int, rounds: int = 8) -> dict[str, float]:
    """Step times at one cache position, measured alternately with the bandwidth bound: each round reads the
    weights (best of 2), then runs 5 one-position steps at batch 1 and 5 at batch 4 (with CFG: 2 and 8 rows), all
    at ``position`` (the median position of the clip). On a shared machine the bandwidth moves by tens of percent
    within seconds; a ratio taken inside each round is steadier than one between numbers measured minutes apart.
    Returns medians over rounds: ``bound``, ``step_b1``, ``step_b4`` (seconds) and ``b1_over_bound``,
    ``b4_over_b1`` (per-round ratios)."""
    cross = torch.randn(8, 4, lm.cfg.dim)
    weights = step_weights(lm)
    rounds_out: list[tuple[float, float, float]] = []
    with torch.inference_mode():
        states = {rows: lm.new_state(rows, position + 1, cross[:rows]) for rows in (2, 8)}
        for rows, state in states.items():
            lm.step(torch.randint(0, lm.cfg.card, (rows, lm.cfg.n_q, position)), state)
        step = torch.randint(0, lm.cfg.card, (8, lm.cfg.n_q, 1))

        def timed(rows: int) -> float:
            times = []
            for _ in range(5):
                states[rows].pos = states[rows].steps = position  # the same position every time
                begin = time.perf_counter()
                lm.step(step[:rows], states[rows])
                times.append(time.perf_counter() - begin)
            return statistics.median(times)

        timed(2), timed(8)  # warm-up (the native plans are built on the first step)
        for _ in range(rounds):
            rounds_out.append((bandwidth_bound(weights, repeats=2)[0], timed(2), timed(8)))
    med = statistics.median
    return {"bound": med(r[0] for r in rounds_out), "step_b1": med(r[1] for r in rounds_out),
            "step_b4": med(r[2] for r in rounds_out), "b1_over_bound": med(r[1] / r[0] for r in rounds_out),
            "b4_over_b1": med(r[2] / r[1] for r in rounds_out)}


def kernel_ceiling(tensors: list[torch.Tensor], rows: int, kernel: str, repeats: int = 5) -> float:
    """Best time to run one linear kernel once over every weight matrix in ``tensors`` with ``rows`` input rows:
    what a step would cost if it did nothing else. ``kernel``: ``"native"`` (:mod:`wavecraft.lm.native`, what
    decoding uses where it builds) or ``"onednn"`` (packed weights, the fallback)."""
    from wavecraft.lm import native

    matrices = [t for t in tensors if t.dim() == 2]
    inputs = [torch.randn(rows, t.shape[1]) for t in matrices]
    if kernel == "native":
        calls = [lambda x=x, w=w: native.linear(x, w) for x, w in zip(inputs, matrices, strict=True)]
    else:
        packed = [torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), rows) for w in matrices]
        calls = [lambda x=x, p=p: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")
                 for x, p in zip(inputs, packed, strict=True)]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            begin = time.perf_counter()
            for call in calls:
                call()
            best = min(best, time.perf_counter() - begin)
    return best


def trained_int8_agreement(seconds: float) -> float:
    """Teacher-forced int8/fp32 top-1 agreement on the shipped model (trained weights), on codes it generated."""
    from wavecraft import MusicGen
    from wavecraft.lm.quantize import quantize_int8

    texts = ["a gentle piano waltz in C major", "a fast rock groove with drums"]
    fp32, int8 = MusicGen.get_pretrained(), MusicGen.get_pretrained()
    quantize_int8(int8.lm)
    fp32.set_generation_params(duration=seconds, seed=0)
    _, codes = fp32.generate(texts, return_tokens=True)
    return teacher_forced_agreement(fp32, int8, codes, texts)


def fbgemm_agreement(fp32, int8, codes: torch.Tensor) -> float | None:
    """The same agreement through fbgemm (where the native kernels are not built), which also quantizes its
    inputs to 7 bits; None without fbgemm."""
    from wavecraft.lm.quantize import _fbgemm_available

    if not _fbgemm_available():
        return None
    with native_off():
        return teacher_forced_agreement(fp32, int8, codes)


def teacher_forced_agreement(fp32, int8, codes: torch.Tensor, texts: list[str] | None = None) -> float:
    """Top-1 agreement of int8 and fp32 next-code logits over every codebook and step of ``codes [B, K, T]``."""
    from wavecraft.lm.patterns import get_pattern_provider

    cfg = fp32.lm.cfg
    pattern = get_pattern_provider(cfg.pattern, cfg.n_q, delays=list(cfg.delays)).get_pattern(codes.shape[-1])
    sequence, _, _ = pattern.build_pattern_sequence(codes, cfg.special_token)
    cond = fp32._conditions(texts or ["x"] * codes.shape[0]).cond
    with torch.inference_mode():
        a = fp32.lm(sequence, cond.cross_src, cond.cross_mask, cond.prefix, cond.summed).argmax(-1)
        b = int8.lm(sequence, cond.cross_src, cond.cross_mask, cond.prefix, cond.summed).argmax(-1)
    return (a == b).float().mean().item()


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def worker(impl: str, frames: int, batch: int) -> None:
    from wavecraft.lm.quantize import _release_freed_memory, quantize_int8

    hf = build_transformers()
    model = build_wavecraft(hf) if impl.startswith("wavecraft") else hf
    if impl.startswith("wavecraft"):
        del hf
    _release_freed_memory()  # give back what building freed, for every implementation alike (quantize_int8 does)
    before = _rss_mb("VmRSS")
    if impl == "wavecraft-int8":
        quantize_int8(model.lm)
    baseline = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    (run_wavecraft if impl.startswith("wavecraft") else run_transformers)(model, frames, batch)
    print(json.dumps({"peak_increase_mb": _rss_mb("VmHWM") - baseline, "model_mb": baseline,
                      "before_quantize_mb": before, "peak_mb": _rss_mb("VmHWM")}))


IMPLS = ("transformers", "wavecraft", "wavecraft-int8")
KERNELS = {"native": "native (wavecraft.lm.native, used by decoding)", "onednn": "packed oneDNN (the fallback)"}
FIRST_CHUNK = 0.2  # seconds: the CLI's first streamed chunk


def compare_compile(model, frames: int, batch: int) -> tuple[float, float, float, float, bool]:
    """``(native step, eager PyTorch-layers step, compiled step, compile seconds, same greedy codes)`` of ``model``.

    On CPU the native step takes precedence over a compiled one wherever it applies, so compiling is measured on
    the PyTorch layers (native kernels off, as on a machine without a C compiler); compiling is left on."""
    native_time, _, native_codes = run_wavecraft(model, frames, batch)
    with native_off():
        eager_step, _, eager_codes = run_wavecraft(model, frames, batch)
        model.lm.compile_decoding()
        _, first_total, _ = run_wavecraft(model, frames, batch)  # pays for compilation
        step, total, codes = run_wavecraft(model, frames, batch)
    same = torch.equal(codes, eager_codes) and torch.equal(codes, native_codes)
    return native_time, eager_step, step, first_total - total, same


def print_compile(label: str, result: tuple[float, float, float, float, bool]) -> None:
    native_time, eager, compiled, compile_s, same = result
    print(f"torch.compile, {label}: native step {native_time * 1000:.1f} ms; PyTorch layers {eager * 1000:.1f} ms "
          f"eager -> {compiled * 1000:.1f} ms compiled (ratio {compiled / eager:.2f}); compiling took "
          f"{compile_s:.0f} s; identical greedy codes: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--quick", action="store_true", help="2 s clips, no memory child processes (a smoke run)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile-d decoding")
    parser.add_argument("--worker", choices=IMPLS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.no_memory = min(args.seconds, 2.0), True
    frames = int(args.seconds * 50)
    if args.worker:
        worker(args.worker, frames, args.batch)
        return

    from wavecraft.lm.quantize import quantize_int8, quantized_weight_bytes

    hf = build_transformers()
    ours = build_wavecraft(hf)
    quantized = build_wavecraft(hf)
    rss_before = _rss_mb("VmRSS")
    quantize_int8(quantized.lm)
    rss_freed = rss_before - _rss_mb("VmRSS")
    results: dict[str, list[tuple[float, float]]] = {impl: [] for impl in IMPLS}
    codes = {}
    for _ in range(args.repeats):
        step, total, codes["transformers"] = run_transformers(hf, frames, args.batch)
        results["transformers"].append((step, total))
        step, total, codes["wavecraft"] = run_wavecraft(ours, frames, args.batch)
        results["wavecraft"].append((step, total))
        step, total, codes["wavecraft-int8"] = run_wavecraft(quantized, frames, args.batch)
        results["wavecraft-int8"].append((step, total))
    step_b1 = statistics.median(r[0] for r in results["wavecraft"]) if args.batch == 1 else \
        run_wavecraft(ours, frames, 1)[0]
    step_b4 = run_wavecraft(ours, frames, 4)[0]
    fallback_step = run_without_native(ours, frames, args.batch)
    first_fp32, stream_fp32, stream_codes = run_stream(ours, frames, args.batch)
    first_int8, stream_int8, _ = run_stream(quantized, frames, args.batch)
    short_fp32 = first_audio(ours, frames, args.batch, FIRST_CHUNK)
    short_int8 = first_audio(quantized, frames, args.batch, FIRST_CHUNK)
    bound, bound_bytes = bandwidth_bound(step_weights(ours.lm))
    from wavecraft.lm import native

    weights = step_weights(ours.lm)
    ceilings = {kernel: kernel_ceiling(weights, 2 * args.batch, kernel) for kernel in ("native", "onednn")
                if kernel != "native" or native.available()}
    ceilings_b4 = {kernel: kernel_ceiling(weights, 8, kernel) for kernel in ceilings}
    middle = frames // 2 + len(ours.lm.cfg.delays)
    steady = interleaved_steps(ours.lm, middle)
    avx2 = {}
    if native.available() and native.isa() != "avx2":  # the same kernels with 8-float vectors, for comparison
        steady_int8 = interleaved_steps(quantized.lm, middle)
        with native_env("WAVECRAFT_NATIVE_ISA", "avx2"):
            avx2 = {"ceiling": kernel_ceiling(weights, 2 * args.batch, "native"),
                    "ceiling_b4": kernel_ceiling(weights, 8, "native"),
                    "steady": interleaved_steps(ours.lm, middle),
                    "steady_int8": interleaved_steps(quantized.lm, middle)}
    trained_agreement = trained_int8_agreement(min(args.seconds, 5.0))
    int8_bytes, replaced_bytes = quantized_weight_bytes(quantized.lm)
    int8_bound_bytes = bound_bytes - replaced_bytes + int8_bytes  # what an int8 step reads instead
    agreement = teacher_forced_agreement(ours, quantized, codes["wavecraft"])
    agreement_fbgemm = fbgemm_agreement(ours, quantized, codes["wavecraft"])
    compiled = {}
    if args.compile:
        from wavecraft import MusicGen

        compiled["musicgen-small size"] = compare_compile(build_wavecraft(hf), frames, args.batch)
        shipped = MusicGen.get_pretrained()
        compiled[f"shipped {shipped.name.split('/')[-1]}"] = compare_compile(shipped, frames, args.batch)
    memory = {}
    if not args.no_memory:
        del hf, ours, quantized
        for impl in IMPLS:
            out = subprocess.run([sys.executable, __file__, "--worker", impl, "--seconds", str(args.seconds),
                                  "--batch", str(args.batch)], capture_output=True, text=True, check=True)
            memory[impl] = json.loads(out.stdout.strip().splitlines()[-1])

    isa = native.isa() if native.available() else "none"
    print(f"MusicGen-small architecture, random weights, {args.seconds:g} s ({frames} frames), batch {args.batch} "
          f"with CFG, greedy, CPU fp32, {torch.get_num_threads()} threads, {args.repeats} run(s) each; native "
          f"kernels: {isa}")
    print(f"identical greedy codes: {torch.equal(codes['wavecraft'], codes['transformers'])}; "
          f"streamed codes identical: {torch.equal(stream_codes, codes['wavecraft'])}")
    print(f"{'':24}{'transformers':>14}{'wavecraft':>12}{'ratio':>8}{'int8':>10}{'ratio':>8}")
    for i, label in enumerate(("step (ms)", "total (s)")):
        hf_v, ours_v, q_v = (statistics.median(r[i] for r in results[k]) for k in IMPLS)
        scale = 1000 if i == 0 else 1
        print(f"{label:24}{hf_v * scale:14.1f}{ours_v * scale:12.1f}{ours_v / hf_v:8.2f}{q_v * scale:10.1f}"
              f"{q_v / hf_v:8.2f}")
    if memory:
        hf_mb, ours_mb, q_mb = (memory[k]["peak_increase_mb"] for k in IMPLS)
        print(f"{'peak RSS during gen +MB':24}{hf_mb:14.0f}{ours_mb:12.0f}{ours_mb / max(hf_mb, 1e-9):8.2f}"
              f"{q_mb:10.0f}{q_mb / max(hf_mb, 1e-9):8.2f}")
        hf_mb, ours_mb, q_mb = (memory[k]["peak_mb"] for k in IMPLS)
        print(f"{'peak RSS total (MB)':24}{hf_mb:14.0f}{ours_mb:12.0f}{ours_mb / hf_mb:8.2f}{q_mb:10.0f}"
              f"{q_mb / hf_mb:8.2f}")
        q = memory["wavecraft-int8"]
        print(f"int8: RSS of the loaded process {q['before_quantize_mb']:.0f} MB -> {q['model_mb']:.0f} MB "
              "after quantize_int8")
    wc_step = statistics.median(r[0] for r in results["wavecraft"])
    q_step = statistics.median(r[0] for r in results["wavecraft-int8"])
    hf_step = statistics.median(r[0] for r in results["transformers"])
    print(f"int8 weights: {replaced_bytes / 1e9:.2f} GB fp32 -> {int8_bytes / 1e9:.2f} GB; "
          f"RSS freed by quantize_int8 in this process: {rss_freed:.0f} MB")
    fbgemm = "" if agreement_fbgemm is None else f" (fbgemm, the fallback, {agreement_fbgemm:.4f})"
    print(f"int8 teacher-forced top-1 agreement with fp32 (all codebooks and steps): {agreement:.4f} on these "
          f"random weights{fbgemm}; on the shipped model's trained weights {trained_agreement:.4f}")
    print(f"memory-bandwidth bound: {bound_bytes / 1e9:.3f} GB read per step in {bound * 1000:.1f} ms "
          f"({bound_bytes / bound / 1e9:.1f} GB/s); int8 step reads {int8_bound_bytes / 1e9:.3f} GB "
          f"(bound {bound * int8_bound_bytes / bound_bytes * 1000:.1f} ms)")
    for kernel, ceiling in ceilings.items():
        print(f"linear-kernel ceiling, {KERNELS[kernel]}: alone over the same weights, {2 * args.batch} rows take "
              f"{ceiling * 1000:.1f} ms ({bound_bytes / ceiling / 1e9:.1f} GB/s) = {ceiling / bound:.2f} x the bound, "
              f"8 rows (batch 4) {ceilings_b4[kernel] * 1000:.1f} ms = {ceilings_b4[kernel] / ceiling:.2f} x")
    if fallback_step is None:
        print("the native kernel is not available here: decoding used the packed oneDNN kernel")
    else:
        print(f"fp32 step with the native kernel {wc_step * 1000:.1f} ms, with the packed oneDNN fallback "
              f"{fallback_step * 1000:.1f} ms (ratio {wc_step / fallback_step:.2f})")
    print(f"the fp32 step is {wc_step / min(ceilings.values()):.2f} x the fastest kernel ceiling")
    print(f"ratios: wavecraft fp32 step / bound {wc_step / bound:.2f}; int8 step / int8 bound "
          f"{q_step / (bound * int8_bound_bytes / bound_bytes):.2f}; batch 4 / batch 1 step "
          f"{step_b4 / step_b1:.2f} ({step_b4 * 1000:.1f} / {step_b1 * 1000:.1f} ms); int8 / transformers fp32 step "
          f"{q_step / hf_step:.2f}; int8 / wavecraft fp32 step {q_step / wc_step:.2f}")
    print(f"interleaved with the bound, at the clip's median position: bound {steady['bound'] * 1000:.1f} ms, fp32 "
          f"step {steady['step_b1'] * 1000:.1f} ms at batch 1, {steady['step_b4'] * 1000:.1f} ms at batch 4; "
          f"per-round medians: step / bound {steady['b1_over_bound']:.2f}, batch 4 / batch 1 "
          f"{steady['b4_over_b1']:.2f}")
    if avx2:
        steady_avx2 = avx2["steady"]
        print(f"the same kernels built for AVX2 alone: kernel ceiling {avx2['ceiling'] * 1000:.1f} ms = "
              f"{avx2['ceiling'] / bound:.2f} x the bound ({isa}: {ceilings['native'] / bound:.2f} x), 8 rows "
              f"{avx2['ceiling_b4'] * 1000:.1f} ms ({isa}: {ceilings_b4['native'] * 1000:.1f} ms); interleaved: "
              f"step / bound {steady_avx2['b1_over_bound']:.2f} ({isa}: {steady['b1_over_bound']:.2f}), batch 4 / "
              f"batch 1 {steady_avx2['b4_over_b1']:.2f} ({isa}: {steady['b4_over_b1']:.2f})")
        int8_avx2 = avx2["steady_int8"]
        print(f"int8 steps interleaved with the bound: AVX2 {int8_avx2['step_b1'] * 1000:.1f} ms at batch 1, "
              f"{int8_avx2['step_b4'] * 1000:.1f} ms at batch 4; {isa} {steady_int8['step_b1'] * 1000:.1f} ms, "
              f"{steady_int8['step_b4'] * 1000:.1f} ms")
    print(f"streaming (1 s chunks): first audio after {first_fp32:.2f} s fp32, {first_int8:.2f} s int8; "
          f"whole clip {stream_fp32:.1f} s fp32, {stream_int8:.1f} s int8")
    print(f"streaming with a {FIRST_CHUNK:g} s first chunk (as wavecraft generate --stream), {len(short_fp32)} "
          f"streams each: first audio after {statistics.median(short_fp32):.2f} s fp32 (range {short_fp32[0]:.2f}-"
          f"{short_fp32[-1]:.2f}), {statistics.median(short_int8):.2f} s int8 (range {short_int8[0]:.2f}-"
          f"{short_int8[-1]:.2f})")
    for label, result in compiled.items():
        print_compile(label, result)


if __name__ == "__main__":
    main()
