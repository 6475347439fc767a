"""Half-precision transformer layers (GPU path, checked here in bfloat16 on CPU): heads stay float32, logits agree."""

from __future__ import annotations

import pytest
import torch

from wavecraft import MusicGen
from wavecraft.cli import main
from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions, SamplingParams, generate
from wavecraft.lm.model import LMModel
from wavecraft.models.genmodel import GenerationError


def _pair() -> tuple[LMModel, LMModel]:
    torch.manual_seed(0)
    cfg = LMConfig(dim=64, num_heads=4, num_layers=2, card=64, n_q=4, delays=(0, 1, 2, 3), cross_attention=True)
    full = LMModel(cfg).eval()
    half = LMModel(cfg).eval()
    half.load_state_dict(full.state_dict())
    half.set_transformer_dtype(torch.bfloat16)
    return full, half


def test_bfloat16_layers_keep_float32_heads_and_agree():
    full, half = _pair()
    assert half.transformer_dtype == torch.bfloat16
    assert half.linears[0].weight.dtype == half.emb[0].weight.dtype == half.out_norm.weight.dtype == torch.float32
    sequence = torch.randint(0, 64, (2, 4, 40))
    cross, summed = torch.randn(2, 3, 64), torch.randn(2, 40, 64)
    with torch.inference_mode():
        ref = full(sequence, cross_src=cross, summed=summed)
        out = half(sequence, cross_src=cross, summed=summed)
        state = half.new_state(2, 40, cross, summed=summed)
        assert state.keys[0].dtype == torch.bfloat16
    assert out.dtype == torch.float32
    assert (ref.argmax(-1) == out.argmax(-1)).float().mean().item() >= 0.95
    cond = Conditions(cross_src=cross, cross_mask=torch.ones(2, 3, dtype=torch.long))
    null = Conditions(cross_src=torch.zeros(2, 3, 64), cross_mask=torch.zeros(2, 3, dtype=torch.long))
    codes = generate(half, cond, 12, null=null, sampling=SamplingParams(use_sampling=False))
    assert codes.shape == (2, 4, 12) and codes.min() >= 0


def test_get_pretrained_dtype_option_and_errors(tmp_path, capsys):
    model = MusicGen.get_pretrained(device="cpu", dtype="bfloat16")
    assert model.lm.transformer_dtype == torch.bfloat16
    model.set_generation_params(duration=0.5, seed=0)
    wav = model.generate(["a gentle piano waltz"])
    assert wav.shape == (1, 1, 16000) and torch.isfinite(wav).all()
    with pytest.raises(GenerationError, match="unknown dtype"):
        MusicGen.get_pretrained(device="cpu", dtype="float8")
    with pytest.raises(GenerationError, match="exclude each other"):
        MusicGen.get_pretrained(device="cpu", dtype="float16", quantize="int8")
    out = tmp_path / "half.wav"
    assert main(["generate", "a waltz", "--duration", "0.5", "--dtype", "bfloat16", "-o", str(out),
                 "--no-progress"]) == 0 and out.exists()
    assert main(["generate", "a waltz", "--dtype", "float16", "--quantize", "int8", "-o", str(tmp_path / "x.wav"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exclude each other" in err and not (tmp_path / "x.wav").exists()
