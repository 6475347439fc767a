"""Loading holds one copy of the LM's weights, and int8 loading keeps none of the fp32 ones afterwards.

Measured in a fresh process (its peak RSS is not blurred by what earlier tests freed) on a transformers-layout
MusicGen whose decoder is about 130 MB of fp32 weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from textenc import tiny_hf_sub_configs, tiny_t5

transformers = pytest.importorskip("transformers")

MEASURE = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import torch

    def rss_mb(field):
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
        return int(line.split()[1]) / 1024

    from wavecraft import MusicGen
    from wavecraft.lm.quantize import quantize_int8

    torch.ones(1) @ torch.ones(1)  # first-op setup, not loading
    base = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts here
    model = MusicGen.get_pretrained(sys.argv[1])
    loaded_peak = rss_mb("VmHWM") - base
    quantize_int8(model.lm)
    print(json.dumps({"loaded_peak": loaded_peak, "quantized": rss_mb("VmRSS") - base}))
""")


def _checkpoint(folder) -> int:
    """Write a random MusicGen (decoder dim 512, 8 layers) in the transformers layout; its decoder's fp32 bytes."""
    tokenizer, _ = tiny_t5()
    torch.manual_seed(0)
    text, audio = tiny_hf_sub_configs()
    decoder = transformers.MusicgenDecoderConfig(vocab_size=64, hidden_size=512, num_hidden_layers=8,
                                                 num_attention_heads=8, ffn_dim=2048, num_codebooks=4,
                                                 pad_token_id=64, bos_token_id=64)
    config = transformers.MusicgenConfig(text_encoder=text, audio_encoder=audio,
                                         decoder=decoder.to_dict())
    model = transformers.MusicgenForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() * 4 for p in model.decoder.parameters())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_loading_holds_one_copy_of_the_weights(tmp_path):
    decoder_bytes = _checkpoint(tmp_path)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path)], capture_output=True, text=True,
                         check=True, timeout=300)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    decoder_mb = decoder_bytes / 2**20
    # A fresh random-initialised model beside the read checkpoint peaked at over twice the weights.
    assert measured["loaded_peak"] < 1.3 * decoder_mb, (measured, decoder_mb)
    # After int8 quantization nothing keeps the fp32 weights (nor the file's pages) resident: int8 is a quarter.
    assert measured["quantized"] < 0.5 * decoder_mb, (measured, decoder_mb)
