"""AudioCraft's public module paths resolve to wavecraft's own objects (aliases, never copies), and
``model.half()`` of the tutorials works."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import wavecraft
import wavecraft.audio
import wavecraft.audio.convert
import wavecraft.audio.io
import wavecraft.audio.normalize
import wavecraft.codec
from wavecraft.models.genmodel import CPU_FLOAT16_WARNING, GenerationError


def test_models_aliases_are_the_canonical_classes() -> None:
    from wavecraft.models import AudioGen, CompressionModel, EnCodec, MusicGen
    from wavecraft.models.audiogen import AudioGen as audiogen_cls
    from wavecraft.models.musicgen import MusicGen as musicgen_cls

    assert MusicGen is musicgen_cls is wavecraft.MusicGen
    assert AudioGen is audiogen_cls is wavecraft.AudioGen
    assert CompressionModel is wavecraft.codec.CompressionModel is wavecraft.CompressionModel
    assert EnCodec is wavecraft.codec.EnCodec is wavecraft.EnCodec
    import wavecraft.models as models

    assert {"MusicGen", "AudioGen", "CompressionModel", "EnCodec"} <= set(dir(models))
    with pytest.raises(AttributeError, match="MAGNeT"):
        models.MAGNeT  # noqa: B018 - not implemented: no alias


def test_data_audio_aliases_are_the_canonical_functions() -> None:
    from wavecraft.data import audio, audio_utils

    assert audio.audio_write is wavecraft.audio.io.audio_write is wavecraft.audio.audio_write
    assert audio.audio_read is wavecraft.audio.io.audio_read is wavecraft.audio.audio_read
    assert audio.audio_info is wavecraft.audio.io.audio_info is wavecraft.audio.audio_info
    assert audio.AudioFileInfo is wavecraft.audio.io.AudioInfo
    assert audio_utils.convert_audio is wavecraft.audio.convert.convert_audio is wavecraft.audio.convert_audio
    assert audio_utils.convert_audio_channels is wavecraft.audio.convert.convert_audio_channels
    assert audio_utils.normalize_audio is wavecraft.audio.normalize.normalize_audio is wavecraft.audio.normalize_audio
    assert audio_utils.normalize_loudness is wavecraft.audio.normalize.normalize_loudness


def test_normalize_audio_has_audiocraft_signature() -> None:
    import inspect

    from wavecraft.data.audio_utils import normalize_audio

    params = inspect.signature(normalize_audio).parameters
    expected = {"wav": inspect.Parameter.empty, "normalize": True, "strategy": "peak", "peak_clip_headroom_db": 1,
                "rms_headroom_db": 18, "loudness_headroom_db": 14, "loudness_compressor": False,
                "log_clipping": False, "sample_rate": None, "stem_name": None}
    assert list(params) == list(expected)
    assert {name: p.default for name, p in params.items()} == expected
    wav = torch.tensor([[0.5, -0.25]])
    torch.testing.assert_close(normalize_audio(wav, True, "peak", 0), torch.tensor([[1.0, -0.5]]))


def test_models_package_is_lazy() -> None:
    code = ("import sys, wavecraft.models, wavecraft.models.streaming; "
            "print(sorted(m for m in ('wavecraft.models.musicgen', 'wavecraft.models.audiogen') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_half_converts_the_transformer_and_returns_the_model() -> None:
    from wavecraft.models import MusicGen

    model = MusicGen.get_pretrained(device="cpu")
    with pytest.warns(UserWarning) as record:
        assert model.half() is model
    assert [str(w.message) for w in record] == [CPU_FLOAT16_WARNING] and "\n" not in CPU_FLOAT16_WARNING
    assert model.lm.transformer_dtype == torch.float16
    assert model.lm.linears[0].weight.dtype == model.lm.emb[0].weight.dtype == torch.float32
    assert next(model.compression_model.parameters()).dtype == torch.float32
    model.set_generation_params(duration=0.2, seed=0)
    wav = model.generate(["a gentle piano waltz"])
    assert wav.dtype == torch.float32 and wav.shape[:2] == (1, 1) and torch.isfinite(wav).all()


def test_half_refuses_an_int8_model() -> None:
    from wavecraft.models import MusicGen

    model = MusicGen.get_pretrained(device="cpu", quantize="int8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any warning
        with pytest.raises(GenerationError, match="exclude each other"):
            model.half()
