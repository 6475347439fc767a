"""MusicGen decoding speed against transformers with the same weights (CPU, fp32, batch with CFG).

Builds transformers' MusicgenForConditionalGeneration at the musicgen-small size (24 layers, dim 1024, 16 heads,
4 x 2048 codebooks, a T5-base-sized text encoder, the 32 kHz EnCodec) with random weights, converts the same
weights to wavecraft in memory, and generates the same clip greedily with classifier-free guidance (3.0),
alternating the two implementations. Step time = median interval between decoding steps (prefill excluded).
Peak memory is measured in a child process per implementation. Prints times and ratios (wavecraft / transformers).

    python benchmarks/bench_generate.py [--seconds 10] [--batch 1] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
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
    return timer.step_time(), total, codes


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def worker(impl: str, frames: int, batch: int) -> None:
    hf = build_transformers()
    model = build_wavecraft(hf) if impl == "wavecraft" else hf
    if impl == "wavecraft":
        del hf
    baseline = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    (run_wavecraft if impl == "wavecraft" else run_transformers)(model, frames, batch)
    print(json.dumps({"peak_increase_mb": _rss_mb("VmHWM") - baseline, "model_mb": baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--worker", choices=["wavecraft", "transformers"])
    args = parser.parse_args()
    frames = int(args.seconds * 50)
    if args.worker:
        worker(args.worker, frames, args.batch)
        return

    hf = build_transformers()
    ours = build_wavecraft(hf)
    results: dict[str, list[tuple[float, float]]] = {"transformers": [], "wavecraft": []}
    codes = {}
    for _ in range(args.repeats):
        step, total, codes["transformers"] = run_transformers(hf, frames, args.batch)
        results["transformers"].append((step, total))
        step, total, codes["wavecraft"] = run_wavecraft(ours, frames, args.batch)
        results["wavecraft"].append((step, total))
    memory = {}
    if not args.no_memory:
        del hf, ours
        for impl in results:
            out = subprocess.run([sys.executable, __file__, "--worker", impl, "--seconds", str(args.seconds),
                                  "--batch", str(args.batch)], capture_output=True, text=True, check=True)
            memory[impl] = json.loads(out.stdout.strip().splitlines()[-1])

    print(f"MusicGen-small architecture, random weights, {args.seconds:g} s ({frames} frames), batch {args.batch} "
          f"with CFG, greedy, CPU fp32, {torch.get_num_threads()} threads, {args.repeats} run(s) each")
    print(f"identical greedy codes: {torch.equal(codes['wavecraft'], codes['transformers'])}")
    print(f"{'':22}{'transformers':>14}{'wavecraft':>12}{'ratio':>8}")
    for i, label in enumerate(("step (ms)", "total (s)")):
        hf_v, ours_v = (statistics.median(r[i] for r in results[k]) for k in ("transformers", "wavecraft"))
        scale = 1000 if i == 0 else 1
        print(f"{label:22}{hf_v * scale:14.1f}{ours_v * scale:12.1f}{ours_v / hf_v:8.2f}")
    if memory:
        hf_mb, ours_mb = (memory[k]["peak_increase_mb"] for k in ("transformers", "wavecraft"))
        print(f"{'peak RSS during gen +MB':22}{hf_mb:14.0f}{ours_mb:12.0f}{ours_mb / max(hf_mb, 1e-9):8.2f}")


if __name__ == "__main__":
    main()
