"""Config validation and checkpoint loaders refuse bad values with one line, before allocating (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from wavecraft import validation
from wavecraft.checkpoints.codec import load_codec
from wavecraft.checkpoints.lm import LMBundle, load_lm_bundle, save_generator
from wavecraft.checkpoints.safe_load import load_torch_file
from wavecraft.codec import EnCodec
from wavecraft.codec.config import CodecConfig, codec_configs
from wavecraft.conditioning import ConditionFuser, SentenceConditioner
from wavecraft.conditioning.chroma import ChromaConditioner
from wavecraft.errors import CheckpointError, UnsafeCheckpointError
from wavecraft.lm.config import LMConfig
from wavecraft.lm.model import LMModel

TESTS = Path(__file__).resolve().parent
TINY_CODEC = CodecConfig(sample_rate=16000, n_filters=2, dimension=8, ratios=(4, 4), n_q=2, bins=16, lstm_layers=0)
TINY_LM = LMConfig(dim=16, num_heads=2, num_layers=1, n_q=2, card=16, delays=(0, 1))


def write_tiny_generator(folder: Path) -> Path:
    """A wavecraft-layout generator (LM + sentence and chroma conditioners + codec) of a few thousand weights."""
    torch.manual_seed(0)
    codec = EnCodec(TINY_CODEC)
    conditioners = torch.nn.ModuleDict({
        "description": SentenceConditioner(TINY_LM.dim, encoder_dim=8),
        "self_wav": ChromaConditioner(TINY_LM.dim, 16000, 2.0, radix2_exp=8, frame_rate=codec.frame_rate)})
    bundle = LMBundle(lm=LMModel(TINY_LM), conditioners=conditioners,
                      fuser=ConditionFuser({"cross": ["description"], "sum": ["self_wav"]}), max_duration=2.0,
                      sample_rate=16000)
    return save_generator(bundle, codec, folder)


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    return message


def _edit_config(folder: Path, path: tuple, value: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_generator(tmp_path_factory.mktemp("tiny") / "gen")


@pytest.fixture
def gen(tiny, tmp_path) -> Path:
    """A fresh copy of the tiny generator, to edit."""
    folder = tmp_path / "gen"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((tiny / name).read_bytes())
    return folder


# -- the config dataclasses --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("n_q", 1e6), ("n_q", 0), ("bins", 10 ** 9), ("bins", 1), ("dimension", 10 ** 9), ("n_filters", -1),
    ("oscillator_n_fft", 10 ** 9), ("sample_rate", 0), ("sample_rate", float("nan")), ("channels", True),
    ("ratios", ()), ("ratios", (8, "5")), ("ratios", (0, 4)), ("ratios", 8), ("kernel_size", 0),
    ("lstm_layers", 10 ** 6), ("decay", 2.0), ("decay", float("inf")), ("causal", "yes"), ("norm", "batch"),
    ("pad_mode", None), ("activation", "os.system"), ("compress", 0), ("trim_right_ratio", 0.5),
    ("target_bandwidths", (float("nan"),)), ("n_residual_layers", 2.5), ("chunk_length_s", -1.0),
    ("oscillator_layers", 10 ** 6), ("threshold_ema_dead_code", "2"),
])
def test_codec_config_refuses(field, value):
    with pytest.raises(ValueError) as excinfo:
        CodecConfig(**{field: value})
    assert field in one_line(excinfo) or "ratio" in str(excinfo.value)


@pytest.mark.parametrize(("field", "value"), [
    ("dim", 10 ** 9), ("num_heads", 0), ("num_layers", 10 ** 6), ("num_layers", 0), ("card", "2048"),
    ("n_q", -4), ("hidden_scale", 0), ("norm_eps", float("nan")), ("max_period", 0.0), ("causal", 1),
    ("pattern", "spiral"), ("delays", (0, 1, 2, 10 ** 9)), ("delays", (0, 1, 2)), ("delays", (0, -1, 2, 3)),
])
def test_lm_config_refuses(field, value):
    with pytest.raises(ValueError) as excinfo:
        LMConfig(**{field: value})
    message = one_line(excinfo)
    assert field.rstrip("s") in message or "codebooks" in message


def test_divisibility_and_integral_floats():
    with pytest.raises(ValueError, match="divisible"):
        LMConfig(dim=30, num_heads=4)
    # JSON writes 1e3 as a float: integral floats are taken, and stored as ints.
    cfg = LMConfig.from_dict({**TINY_LM.to_dict(), "dim": 16.0, "delays": [0.0, 1.0]})
    assert cfg == TINY_LM and isinstance(cfg.dim, int)


def test_weight_estimates_match_the_models():
    for cfg in (TINY_CODEC, codec_configs["debug"], TINY_CODEC.replace(norm="time_group_norm", true_skip=False),
                TINY_CODEC.replace(architecture="oscillator", oscillator_hidden=8, oscillator_layers=1,
                                   oscillator_n_fft=256, ratios=(8, 4))):
        model = EnCodec(cfg)
        actual = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
        assert abs(cfg.num_weights() - actual) <= 0.01 * actual
    for cfg in (TINY_LM, TINY_LM.replace(cross_attention=False, bias_attn=True, bias_ff=True, bias_proj=True)):
        assert cfg.num_weights() == sum(p.numel() for p in LMModel(cfg).parameters())


def test_memory_check_refuses_before_building(monkeypatch):
    huge = LMConfig(dim=16384, num_heads=16, num_layers=1024)  # ~13 TB of float32 weights: no machine has that
    with pytest.raises(ValueError, match="memory") as excinfo:
        huge.check_memory()
    one_line(excinfo)
    monkeypatch.setattr(validation, "available_memory", lambda: 10 ** 6)
    with pytest.raises(ValueError, match="memory"):
        TINY_CODEC.replace(n_q=64, bins=4096).check_memory()
    monkeypatch.setattr(validation, "available_memory", lambda: None)  # unknown: no refusal
    huge.check_memory()


def test_available_memory_reads_meminfo():
    available = validation.available_memory()
    assert available is None or available > 0


def test_conditioner_sizes_refused():
    for kwargs in ({"n_chroma": 10 ** 9}, {"radix2_exp": 10 ** 9}, {"radix2_exp": 40}, {"duration": float("nan")},
                   {"frame_rate": 0.0}, {"duration": 1e9}):
        with pytest.raises(ValueError) as excinfo:
            ChromaConditioner(**{"output_dim": 16, "sample_rate": 16000, "duration": 2.0, **kwargs})
        one_line(excinfo)
    with pytest.raises(ValueError, match="encoder_dim"):
        SentenceConditioner(16, encoder_dim=10 ** 9)


# -- wavecraft's config.json --------------------------------------------------------------------------------------
def test_tiny_generator_loads(tiny):
    bundle = load_lm_bundle(tiny)
    assert bundle.lm.cfg == TINY_LM and bundle.max_duration == 2.0
    assert load_codec(tiny).cfg == TINY_CODEC


@pytest.mark.parametrize(("path", "value", "named"), [
    (("format_version",), 99, "format_version"), (("format_version",), "1", "format_version"),
    (("sample_rate",), 0, "sample_rate"), (("max_duration",), 0, "max_duration"),
    (("max_duration",), float("nan"), "max_duration"), (("cfg_coef",), "3", "cfg_coef"),
    (("channels",), 7, "channels"), (("interleave_stereo",), "no", "interleave_stereo"),
    (("lm", "n_q"), 1e6, "n_q"), (("lm", "num_layers"), 10 ** 6, "num_layers"), (("lm", "dim"), 10 ** 9, "dim"),
    (("lm", "num_heads"), 0, "num_heads"), (("lm", "delays"), [0, 10 ** 9], "delays"),
    (("lm", "card"), 64, "card"), (("lm",), [1, 2], "lm"),
    (("conditioners", "self_wav", "frames"), 10 ** 9, "frames"),
    (("conditioners", "self_wav", "chroma_len"), -1, "chroma_len"),
    (("conditioners", "self_wav", "n_chroma"), 10 ** 9, "n_chroma"),
    (("conditioners", "self_wav", "radix2_exp"), 10 ** 9, "radix2_exp"),
    (("conditioners", "description", "encoder_dim"), 10 ** 9, "encoder_dim"),
    (("conditioners", "description"), None, "description"), (("fuser",), {"cross": "description"}, "fuser"),
])
def test_generator_config_refused(gen, path, value, named):
    _edit_config(gen, path, value)
    with pytest.raises(CheckpointError) as excinfo:
        load_lm_bundle(gen)
    message = one_line(excinfo)
    assert named in message and str(gen) in message


@pytest.mark.parametrize(("field", "value"), [
    ("n_q", 1e6), ("bins", 10 ** 9), ("oscillator_n_fft", 10 ** 9), ("sample_rate", 0), ("ratios", [0]),
    ("dimension", float("nan")), ("causal", "false")])
def test_codec_config_json_refused(gen, field, value):
    _edit_config(gen, ("codec", field), value)
    with pytest.raises(CheckpointError) as excinfo:
        load_codec(gen)
    assert field in one_line(excinfo)


def _refused_in_child(code: str) -> dict:
    """Run ``code`` in a child; it prints one JSON object; its peak RSS is added as ``peak_mb``."""
    tail = ("\nimport json as _j\n"
            "_peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print(_j.dumps({'peak_mb': int(_peak) / 1024, **RESULT}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + tail], capture_output=True, text=True,
                            env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_absurd_sizes_are_refused_before_allocating(tmp_path):
    """The issue's cases took up to 100 s and 8-11 GB each before a traceback; now each is a one-line error, and
    all of them together stay within a small fixed memory budget."""
    result = _refused_in_child(f"""
        import json, shutil
        from pathlib import Path
        from test_config_validation import write_tiny_generator
        from wavecraft.checkpoints.codec import load_codec
        from wavecraft.checkpoints.lm import load_lm_bundle
        from wavecraft.errors import CheckpointError
        base = write_tiny_generator(Path({str(tmp_path)!r}) / "base")
        cases = [("lm", "n_q", 1e6), ("lm", "num_layers", 10 ** 6), ("lm", "dim", 10 ** 9), ("lm", "card", 10 ** 9),
                 ("lm", "delays", [0, 10 ** 9]), ("codec", "n_q", 10 ** 6), ("codec", "bins", 10 ** 9),
                 ("codec", "oscillator_n_fft", 10 ** 9), ("codec", "dimension", 10 ** 9)]
        RESULT = {{"errors": []}}
        for i, (part, field, value) in enumerate(cases + [("self_wav", "frames", 10 ** 9)]):
            folder = Path({str(tmp_path)!r}) / str(i)
            shutil.copytree(base, folder)
            config = json.loads((folder / "config.json").read_text())
            (config["conditioners"]["self_wav"] if part == "self_wav" else config[part])[field] = value
            (folder / "config.json").write_text(json.dumps(config))
            try:
                (load_codec if part == "codec" else load_lm_bundle)(folder)
                RESULT["errors"].append(f"{{field}}: loaded")
            except CheckpointError as e:
                if field not in str(e) or "\\n" in str(e):
                    RESULT["errors"].append(str(e))
    """)
    assert result["errors"] == []
    assert result["peak_mb"] < 700, result  # a few hundred MB: the imports and the tiny model


# -- weights --------------------------------------------------------------------------------------------------
def _rewrite_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


@pytest.mark.parametrize("loader", ["lm", "codec"])
@pytest.mark.parametrize("kind", ["nan", "inf", "int", "bool", "overflow", "shape"])
def test_bad_weights_refused(gen, loader, kind):
    prefix = ("lm.transformer.layers.0.linear1.weight" if loader == "lm"
              else "codec.quantizer.vq.layers.1._codebook.embed")

    def edit(tensors):
        t = tensors[prefix]
        if kind == "nan":
            t.view(-1)[3] = float("nan")
        elif kind == "inf":
            t.view(-1)[-1] = float("inf")
        elif kind == "int":
            tensors[prefix] = t.to(torch.int32)
        elif kind == "bool":
            tensors[prefix] = t > 0
        elif kind == "overflow":  # finite as float64, infinite as the model's float32
            tensors[prefix] = t.double().fill_(1e300)
        else:
            tensors[prefix] = t[:-1].clone()

    _rewrite_weights(gen, edit)
    with pytest.raises(CheckpointError) as excinfo:
        (load_lm_bundle if loader == "lm" else load_codec)(gen)
    assert prefix.split(".", 1)[1] in one_line(excinfo)


def test_nan_in_audiocraft_package(golden, tmp_path):
    package = load_torch_file(golden / "encodec" / "compression_state_dict.bin")
    key = next(k for k in package["best_state"] if k.endswith("embed"))
    package["best_state"][key].view(-1)[0] = float("nan")
    torch.save(package, tmp_path / "c.bin")
    with pytest.raises(CheckpointError) as excinfo:
        EnCodec.from_pretrained(tmp_path / "c.bin")
    assert key in one_line(excinfo) and "NaN" in str(excinfo.value)


# -- transformers and AudioCraft configs ------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("codebook_size", 0), ("codebook_size", 10 ** 9), ("upsampling_ratios", []), ("sampling_rate", float("nan")),
    ("target_bandwidths", []), ("target_bandwidths", [1e300]), ("hidden_size", 10 ** 9), ("num_lstm_layers", -1),
    ("use_causal_conv", "yes"), ("num_filters", 10 ** 9)])
def test_transformers_codec_config_refused(tmp_path, field, value):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "encodec", field: value}))
    with pytest.raises(CheckpointError) as excinfo:
        load_codec(tmp_path)
    assert field in one_line(excinfo)


@pytest.mark.parametrize(("field", "value"), [
    ("num_attention_heads", 0), ("num_hidden_layers", 10 ** 6), ("hidden_size", 10 ** 9), ("vocab_size", -1),
    ("num_codebooks", 10 ** 6), ("ffn_dim", 1000), ("audio_channels", 3)])
def test_transformers_musicgen_config_refused(tmp_path, field, value):
    decoder = {"hidden_size": 32, "ffn_dim": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
               "num_codebooks": 4, "vocab_size": 64, field: value}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "musicgen", "decoder": decoder}))
    with pytest.raises(CheckpointError) as excinfo:
        load_lm_bundle(tmp_path)
    assert field in one_line(excinfo)


def test_transformers_text_encoder_size_refused(tmp_path):
    decoder = {"hidden_size": 32, "ffn_dim": 128, "num_attention_heads": 4, "num_hidden_layers": 2}
    config = {"model_type": "musicgen", "decoder": decoder, "text_encoder": {"d_model": 32, "vocab_size": 10 ** 9}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="vocab_size"):
        load_lm_bundle(tmp_path)


@pytest.fixture(scope="module")
def golden_lm(golden):
    return load_torch_file(golden / "musicgen" / "state_dict.bin")


@pytest.mark.parametrize(("where", "value", "named"), [
    ("transformer_lm.n_q", 1000000, "n_q"), ("transformer_lm.num_heads", 0, "num_heads"),
    ("transformer_lm.num_layers", 1000000, "num_layers"), ("transformer_lm.card", float("nan"), "card"),
    ("transformer_lm.dim", "64", "dim"), ("dataset.segment_duration", 0, "max_duration"),
    ("classifier_free_guidance.inference_coef", float("inf"), "cfg_coef"),
    ("codebooks_pattern.delay.delays", [0, 1, 2, 10 ** 9], "delays"), ("transformer_lm", [1], "transformer_lm"),
    ("sample_rate", 0, "sample_rate"),
])
def test_audiocraft_lm_config_refused(golden_lm, tmp_path, where, value, named):
    import yaml

    root = yaml.safe_load(golden_lm["xp.cfg"])
    *parents, leaf = where.split(".")
    node = root
    for key in parents:
        node = node[key]
    node[leaf] = value
    torch.save({**golden_lm, "xp.cfg": yaml.safe_dump(root)}, tmp_path / "state_dict.bin")
    with pytest.raises(CheckpointError) as excinfo:
        load_lm_bundle(tmp_path / "state_dict.bin")
    assert named in one_line(excinfo)


LETTERS = "abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize("xp", [
    # billion laughs: aliases make each level 9 times the previous, resolve() would walk 9**9 nodes
    "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip(LETTERS[:8], LETTERS[1:9], strict=True))
    + "encodec: *i\n",
    "encodec: &e [*e]\n",  # a list containing itself
    "a: x\n" + "".join(f"{c}: ${{{p}}}${{{p}}}\n" for p, c in zip(LETTERS[:-1], LETTERS[1:], strict=True))
    + "encodec: {sample_rate: '${z}'}\n",  # interpolations doubling a string 25 times
    "encodec: 2024-13-45\n", "encodec: 5\n", "[1, 2]\n",
])
def test_hostile_xp_cfg_is_refused_quickly(tmp_path, xp):
    torch.save({"xp.cfg": xp, "best_state": {}}, tmp_path / "c.bin")
    with pytest.raises(CheckpointError) as excinfo:
        EnCodec.from_pretrained(tmp_path / "c.bin")
    one_line(excinfo)


# -- sources and pickles --------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", [None, 3, b"x", "", "   ", ["a"], Path("x\0y").name])
def test_bad_sources(source):
    for load in (EnCodec.from_pretrained, load_lm_bundle):
        with pytest.raises(CheckpointError) as excinfo:
            load(source)
        one_line(excinfo)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


def test_refused_pickle_names_the_global_without_warnings(tmp_path):
    import pickle

    torch.save({"xp.cfg": "", "best_state": {}, "x": _Exploit()}, tmp_path / "zip.bin")
    with open(tmp_path / "raw.bin", "wb") as f:  # a raw (non-zip) pickle, protocol 4: torch warns about it
        pickle.dump({"x": _Exploit()}, f, protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UnsafeCheckpointError) as excinfo:
            load_torch_file(tmp_path / "zip.bin")
        assert "system" in one_line(excinfo) and "refused" in str(excinfo.value)
        with pytest.raises(UnsafeCheckpointError) as excinfo:
            load_torch_file(tmp_path / "raw.bin")
        one_line(excinfo)
    assert caught == []


def test_cli_prints_one_line_for_bad_config(gen, tmp_path):
    import wave

    with wave.open(str(tmp_path / "in.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(bytes(3200))
    _edit_config(gen, ("codec", "n_q"), 10 ** 6)
    result = subprocess.run([sys.executable, "-m", "wavecraft.cli", "compress", str(tmp_path / "in.wav"),
                             str(tmp_path / "out.wcodec"), "--model", str(gen)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("wavecraft: error: ") and "n_q" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out.wcodec").exists()
