"""EnCodec speed and memory against transformers' EncodecModel with the same weights (CPU, fp32).

Both models get the musicgen 32 kHz architecture (random weights saved once by transformers and loaded by
wavecraft) and 10 s of 32 kHz audio. Each measurement runs in a fresh child process (so neither implementation
inherits the other's allocator state), alternating transformers / wavecraft for ``--rounds`` rounds; a child
warms up, times ``--repeats`` encode+decode runs (median) and measures its peak RSS increase for one run.
Prints times and ratios (wavecraft / transformers; lower is better).

    python benchmarks/bench_codec.py [--seconds 10] [--rounds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HF_32KHZ = dict(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_filters=64,
                hidden_size=128, codebook_size=2048, use_causal_conv=False, use_conv_shortcut=False,
                pad_mode="constant")


def make_checkpoint(directory: Path) -> None:
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(**HF_32KHZ)).eval()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("codebook.embed"):
                buf.normal_()
    model.save_pretrained(directory)


def load(impl: str, directory: Path):
    if impl == "transformers":
        from transformers import EncodecModel

        return EncodecModel.from_pretrained(directory).eval()
    from wavecraft.codec import EnCodec

    return EnCodec.from_pretrained(directory)


def test_audio(seconds: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(int(seconds * 32000)) / 32000
    wav = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(t.shape, generator=g)
    return wav[None, None]


def run(impl: str, model, wav: torch.Tensor, codes=None):
    """One encode and one decode; returns (encode_s, decode_s, codes [B, K, F])."""
    with torch.inference_mode():
        begin = time.perf_counter()
        if impl == "transformers":
            out = model.encode(wav, bandwidth=2.2)
            new_codes = out.audio_codes[0]
        else:
            new_codes, _ = model.encode(wav)
        encode_s = time.perf_counter() - begin
        codes = new_codes if codes is None else codes
        begin = time.perf_counter()
        if impl == "transformers":
            model.decode(codes[None], [None])
        else:
            model.decode(codes)
        decode_s = time.perf_counter() - begin
    return encode_s, decode_s, new_codes


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(impl: str, directory: Path, seconds: float, repeats: int) -> None:
    """Child process: median encode/decode times, and the peak RSS increase of one encode + decode."""
    model = load(impl, directory)
    run(impl, model, test_audio(1.0))
    wav = test_audio(seconds)
    baseline = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    encode, decode, codes = run(impl, model, wav)
    peak = _rss_mb("VmHWM") - baseline
    times = [run(impl, model, wav)[:2] for _ in range(repeats - 1)] + [(encode, decode)]
    torch.save(codes, directory / f"codes-{impl}.pt")
    print(json.dumps({"encode": statistics.median(t[0] for t in times),
                      "decode": statistics.median(t[1] for t in times), "peak_increase_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["wavecraft", "transformers"])
    parser.add_argument("--checkpoint", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.checkpoint, args.seconds, args.repeats)
        return

    results: dict[str, list[dict]] = {"transformers": [], "wavecraft": []}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_checkpoint(directory)
        for _ in range(args.rounds):
            for impl in results:  # alternate so that machine noise hits both alike
                out = subprocess.run([sys.executable, __file__, "--worker", impl, "--checkpoint", str(directory),
                                      "--seconds", str(args.seconds), "--repeats", str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                results[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
        codes = [torch.load(directory / f"codes-{impl}.pt") for impl in results]
        same = torch.equal(*codes)

    print(f"EnCodec 32 kHz (musicgen architecture), {args.seconds:g} s of audio, CPU fp32, "
          f"{torch.get_num_threads()} threads, median over {args.rounds} alternating rounds x {args.repeats} runs")
    print(f"codes identical: {same}")
    print(f"{'':14}{'transformers':>14}{'wavecraft':>12}{'ratio':>8}")
    for key, label in (("encode", "encode (s)"), ("decode", "decode (s)"), ("peak_increase_mb", "peak +MB")):
        hf, ours = (statistics.median(r[key] for r in results[i]) for i in ("transformers", "wavecraft"))
        fmt = "{:14.0f}{:12.0f}" if key == "peak_increase_mb" else "{:14.3f}{:12.3f}"
        print(f"{label:14}" + fmt.format(hf, ours) + f"{ours / max(hf, 1e-9):8.2f}")


if __name__ == "__main__":
    main()
