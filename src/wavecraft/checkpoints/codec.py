"""Codec checkpoints: AudioCraft packages, transformers' EnCodec layout, and wavecraft's own safetensors + JSON.

All parameter-name mapping between the layouts lives here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from ..codec.compression import CompressionModel, EnCodec
from ..codec.config import CodecConfig
from ..errors import CheckpointError
from .files import read_json, read_weights, write_checkpoint
from .hub import find_file
from .safe_load import load_torch_file, load_weights
from .shipped import shipped_folder
from .xp_config import parse_xp_config, section

WAVECRAFT_CODEC = "wavecraft_codec"
WAVECRAFT_MUSICGEN = "wavecraft_musicgen"  # a generator saved by wavecraft: its codec sits under the "codec." prefix
FORMAT_VERSION = 1


# -- entry points ---------------------------------------------------------------------------------------------------
def load_codec(name_or_path: str | Path, device: str | torch.device = "cpu") -> CompressionModel:
    """Load a codec from a file, a directory, a hub repo or a shipped model name (``wavecraft-small``: its codec),
    whatever its layout (see module docstring)."""
    if name_or_path is None or not isinstance(name_or_path, (str, Path)):
        raise CheckpointError(f"a codec name or path is needed, got {name_or_path!r}")
    folder = None if Path(name_or_path).expanduser().exists() else shipped_folder(name_or_path, "codec")
    model = _load(folder or name_or_path)
    model.name_or_path = str(name_or_path)
    return model.to(device).eval()


def save_codec(model: EnCodec, directory: str | Path) -> Path:
    config = {"model_type": WAVECRAFT_CODEC, "format_version": FORMAT_VERSION, "codec": model.cfg.to_dict()}
    return write_checkpoint(directory, config, model.state_dict())


def _load(name_or_path: str | Path) -> EnCodec:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix == ".json":
            return _load_config_json(path, path.parent)
        if path.suffix == ".safetensors":
            config = path.parent / "config.json"
            if not config.is_file():
                raise CheckpointError(f"{path}: a safetensors file needs a config.json beside it")
            return _load_config_json(config, path.parent, weights=path)
        return _load_torch_package(path)
    config = find_file(name_or_path, "config.json", required=False)
    model_type = read_json(config).get("model_type") if config else None
    if model_type in (WAVECRAFT_CODEC, WAVECRAFT_MUSICGEN, "encodec"):
        return _load_config_json(config, name_or_path)  # type: ignore[arg-type]
    # MusicGen-style repos: AudioCraft's codec package is smaller than the composite transformers weights.
    package = find_file(name_or_path, "compression_state_dict.bin", required=False)
    if package is not None:
        return _load_torch_package(package)
    if config is not None and model_type in ("musicgen", "musicgen_melody"):
        return _load_config_json(config, name_or_path)
    raise CheckpointError(f"{name_or_path}: no codec checkpoint found (expected config.json with model weights, "
                          "or compression_state_dict.bin)")


# -- wavecraft and transformers layouts -------------------------------------------------------------------------------
def _load_config_json(config_path: Path, source: str | Path, weights: Path | None = None) -> EnCodec:
    """``source``: the directory or hub repo the config came from (where the weight files are fetched)."""
    data = read_json(config_path)
    model_type = data.get("model_type")
    prefix = ""
    if model_type == WAVECRAFT_CODEC:
        cfg = _build_config(lambda: CodecConfig.from_dict(data["codec"]), config_path)
    elif model_type == WAVECRAFT_MUSICGEN:
        cfg = _build_config(lambda: CodecConfig.from_dict(data["codec"]), config_path)
        prefix = "codec."
    elif model_type == "encodec":
        cfg = _build_config(lambda: codec_config_from_transformers(data), config_path)
    elif model_type in ("musicgen", "musicgen_melody"):
        cfg = _build_config(lambda: codec_config_from_transformers(data["audio_encoder"]), config_path)
        prefix = "audio_encoder."
    else:
        raise CheckpointError(f"{config_path}: model_type {model_type!r} is not a codec")
    state = load_weights(weights) if weights is not None else read_weights(source, prefix)
    if weights is not None and prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if model_type not in (WAVECRAFT_CODEC, WAVECRAFT_MUSICGEN):
        state = rename_transformers_codec_keys(state, EnCodec(cfg).state_dict().keys())
    return _instantiate(cfg, state, config_path)


def _build_config(make: Any, where: Path) -> CodecConfig:
    try:
        return make()
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid codec config ({' '.join(str(e).split())[:150]})") from None


def codec_config_from_transformers(hf: dict[str, Any]) -> CodecConfig:
    """Translate a transformers ``EncodecConfig`` dict (its defaults where a field is absent)."""
    hidden = hf.get("hidden_size", 128)
    if hf.get("codebook_dim") not in (None, hidden):
        raise ValueError("codebook_dim different from hidden_size is not supported")
    bandwidths = tuple(float(b) for b in hf.get("target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0)))
    ratios = tuple(hf.get("upsampling_ratios", (8, 5, 4, 2)))
    sample_rate = hf.get("sampling_rate", 24000)
    bins = hf.get("codebook_size", 1024)
    frame_rate = math.ceil(sample_rate / math.prod(ratios))
    n_q = int(1000 * bandwidths[-1] // (frame_rate * math.ceil(math.log2(bins))))
    return CodecConfig(
        sample_rate=sample_rate, channels=hf.get("audio_channels", 1), dimension=hidden,
        n_filters=hf.get("num_filters", 32), n_residual_layers=hf.get("num_residual_layers", 1), ratios=ratios,
        norm=hf.get("norm_type", "weight_norm"), kernel_size=hf.get("kernel_size", 7),
        last_kernel_size=hf.get("last_kernel_size", 7), residual_kernel_size=hf.get("residual_kernel_size", 3),
        dilation_base=hf.get("dilation_growth_rate", 2), causal=hf.get("use_causal_conv", True),
        pad_mode=hf.get("pad_mode", "reflect"), true_skip=not hf.get("use_conv_shortcut", True),
        compress=hf.get("compress", 2), lstm_layers=hf.get("num_lstm_layers", 2),
        trim_right_ratio=hf.get("trim_right_ratio", 1.0), n_q=n_q, bins=bins,
        renormalize=hf.get("normalize", False), chunk_length_s=hf.get("chunk_length_s"), overlap=hf.get("overlap"),
        target_bandwidths=bandwidths)


_HF_CODEBOOK = re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.")
_HF_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.")
_HF_PARAMETRIZATION = {
    ".parametrizations.weight.original0": ".weight_g",
    ".parametrizations.weight.original1": ".weight_v",
}


def rename_transformers_codec_keys(state: dict[str, torch.Tensor], our_keys: Any) -> dict[str, torch.Tensor]:
    """Map transformers' EnCodec parameter names (legacy ``weight_g`` or ``parametrizations``) to ours.

    ``layers.{i}.conv.weight_g`` becomes ``model.{i}.conv.conv.weight_g`` or, for transposed convs,
    ``model.{i}.convtr.convtr.weight_g``; which one is decided by the names our model actually has.
    """
    targets = set(our_keys)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _HF_CODEBOOK.sub(r"quantizer.vq.layers.\1._codebook.", key)
        new = _HF_LAYER.sub(r"\1.model.\2.", new)
        for old, repl in _HF_PARAMETRIZATION.items():
            new = new.replace(old, repl)
        candidates = [new]
        conv = re.match(r"^(.*)\.conv\.(weight_g|weight_v|weight|bias)$", new)
        norm = re.match(r"^(.*)\.norm\.(weight|bias)$", new)
        if conv:
            candidates = [f"{conv[1]}.conv.conv.{conv[2]}", f"{conv[1]}.convtr.convtr.{conv[2]}"]
        elif norm:
            candidates = [f"{norm[1]}.conv.norm.{norm[2]}", f"{norm[1]}.convtr.norm.{norm[2]}"]
        out[next((c for c in candidates if c in targets), candidates[0])] = value
    return out


# -- AudioCraft packages ----------------------------------------------------------------------------------------------
def _load_torch_package(path: Path) -> EnCodec:
    package = load_torch_file(path)
    if not isinstance(package, dict):
        raise CheckpointError(f"{path}: not an AudioCraft codec package (top level is {type(package).__name__})")
    if "pretrained" in package and "best_state" not in package:
        # Export pointer form: the codec lives in another (transformers-layout) repo.
        return _load(str(package["pretrained"]))
    if "xp.cfg" not in package or "best_state" not in package:
        raise CheckpointError(f"{path}: not an AudioCraft codec package (needs 'xp.cfg' and 'best_state', "
                              f"has {', '.join(map(str, list(package)[:6]))})")
    cfg = _build_config(lambda: codec_config_from_xp(parse_xp_config(package["xp.cfg"])), path)
    state = package["best_state"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # training checkpoint layout
        state = state["model"]
    return _instantiate(cfg, state, path)


def codec_config_from_xp(root: dict[str, Any]) -> CodecConfig:
    """Translate the ``encodec``/``seanet``/``rvq`` sections of AudioCraft's ``xp.cfg``."""
    kind = section(root, "compression_model", "encodec")
    if kind != "encodec":
        raise ValueError(f"compression_model {kind!r} is not supported (only encodec)")
    enc = section(root, "encodec")
    seanet = dict(section(root, "seanet"))
    rvq = section(root, "rvq")
    if enc.get("autoencoder", "seanet") != "seanet" or enc.get("quantizer", "rvq") != "rvq":
        raise ValueError(f"encodec autoencoder/quantizer {enc.get('autoencoder')}/{enc.get('quantizer')} unsupported")
    if seanet.get("disable_norm_outer_blocks", 0):
        raise ValueError("seanet.disable_norm_outer_blocks > 0 is not supported")
    decoder = seanet.get("decoder") or {}
    if decoder.get("final_activation") is not None:
        raise ValueError("seanet.decoder.final_activation is not supported")
    if set(seanet.get("encoder") or {}) or set(decoder) - {"trim_right_ratio", "final_activation",
                                                            "final_activation_params"}:
        raise ValueError("per-side seanet overrides other than trim_right_ratio are not supported")
    return CodecConfig(
        sample_rate=int(enc["sample_rate"]), channels=int(enc["channels"]), dimension=seanet["dimension"],
        n_filters=seanet["n_filters"], n_residual_layers=seanet["n_residual_layers"], ratios=tuple(seanet["ratios"]),
        activation=seanet.get("activation", "ELU"),
        activation_alpha=float((seanet.get("activation_params") or {}).get("alpha", 1.0)),
        norm=seanet.get("norm", "none"), kernel_size=seanet["kernel_size"],
        last_kernel_size=seanet["last_kernel_size"], residual_kernel_size=seanet["residual_kernel_size"],
        dilation_base=seanet["dilation_base"], causal=bool(enc.get("causal", seanet.get("causal", False))),
        pad_mode=seanet.get("pad_mode", "reflect"), true_skip=bool(seanet.get("true_skip", True)),
        compress=seanet.get("compress", 2), lstm_layers=int(seanet.get("lstm", 0)),
        trim_right_ratio=float(decoder.get("trim_right_ratio", 1.0)), n_q=rvq["n_q"], bins=rvq["bins"],
        decay=rvq.get("decay", 0.99), kmeans_init=rvq.get("kmeans_init", True),
        kmeans_iters=rvq.get("kmeans_iters", 50), threshold_ema_dead_code=rvq.get("threshold_ema_dead_code", 2),
        q_dropout=rvq.get("q_dropout", False), renormalize=bool(enc.get("renormalize", False)))


# -- shared --------------------------------------------------------------------------------------------------------
def _instantiate(cfg: CodecConfig, state: dict[str, torch.Tensor], where: Path | str) -> EnCodec:
    try:
        model = EnCodec(cfg)
    except ValueError as e:
        raise CheckpointError(f"{where}: invalid codec config ({e})") from None
    check_state_dict(model, state, where)
    model.load_state_dict(state, strict=True)
    return model


def check_state_dict(model: torch.nn.Module, state: dict[str, Any], where: Path | str) -> None:
    """Raise a one-line :class:`CheckpointError` when weights do not fit the model their config describes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" (+{len(items) - 2} more)" if len(items) > 2 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:2])}{more}")
    raise CheckpointError(f"{where}: weights do not match the config: {'; '.join(parts)}")
