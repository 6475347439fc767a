"""Bad sampling / guidance parameters and devices are one-line errors, never a torch traceback (issue 21)."""

from __future__ import annotations

import math

import pytest
import torch

from wavecraft import MusicGen
from wavecraft.cli import main
from wavecraft.errors import WavecraftError


@pytest.fixture(scope="module")
def model() -> MusicGen:
    return MusicGen.get_pretrained()


@pytest.mark.parametrize("bad", [
    {"temperature": math.nan}, {"temperature": -1}, {"temperature": math.inf}, {"cfg_coef": math.inf},
    {"cfg_coef": math.nan}, {"cfg_coef": 1e30}, {"cfg_coef_beta": math.nan}, {"top_k": 3.7}, {"top_k": "abc"},
    {"top_p": math.nan}, {"top_p": 1.5}, {"seed": 1.5}, {"seed": "abc"}, {"seed": 2**64}, {"seed": -1},
    {"extend_stride": math.nan}, {"duration": math.inf}, {"top_k": True},
])
def test_bad_generation_params(model: MusicGen, bad: dict) -> None:
    with pytest.raises(WavecraftError) as err:
        model.set_generation_params(**{"duration": 1.0, **bad})
    assert "\n" not in str(err.value)


# "cuda" is a bad device only where no GPU is usable (CI's machines); "cuda:99" is one everywhere.
@pytest.mark.parametrize("device", [*(["cuda"] if not torch.cuda.is_available() else []), "cuda:99", "bogus",
                                    "meta"])
def test_bad_devices(device: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "x", "--duration", "0.5", "--device", device, "-o", str(tmp_path / "x.wav")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavecraft: error:") and "\n" not in err and device.split(":")[0] in err


@pytest.mark.parametrize("flag", [["--temperature", "nan"], ["--cfg", "inf"], ["--cfg-beta", "nan"]])
def test_bad_cli_numbers(flag: list[str], tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "x", "--duration", "0.5", *flag, "-o", str(tmp_path / "x.wav")]) == 1
    assert "\n" not in capsys.readouterr().err.strip()
    assert not (tmp_path / "x.wav").exists()
