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
from ..validation import flag, int_tuple, integer, real_tuple, show
from .files import read_json, read_weights, write_checkpoint
from .hub import find_file
from .safe_load import load_torch_file, load_weights, verified_finite
from .shipped import shipped_folder
from .xp_config import mapping, parse_xp_config, section

WAVECRAFT_CODEC = "wavecraft_codec"
WAVECRAFT_MUSICGEN = "wavecraft_musicgen"  # a generator saved by wavecraft: its codec sits under the "codec." prefix
FORMAT_VERSION = 1


# -- entry points ---------------------------------------------------------------------------------------------------
def load_codec(name_or_path: str | Path, device: str | torch.device = "cpu") -> CompressionModel:
    """Load a codec from a file, a directory, a hub repo or a shipped model name (``wavecraft-small``: its codec),
    whatever its layout (see module docstring)."""
    check_source(name_or_path, "codec")
    folder = None if Path(name_or_path).expanduser().exists() else shipped_folder(name_or_path, "codec")
    model = _load(folder or name_or_path)
    model.name_or_path = str(name_or_path)
    return model.to(device).eval()


def check_source(name_or_path: object, what: str) -> None:
    """A one-line error unless ``name_or_path`` can name a checkpoint: a non-empty ``str`` or ``Path``."""
    if not isinstance(name_or_path, (str, Path)):
        raise CheckpointError(f"a {what} name or path is needed, got {show(name_or_path)}")
    name = str(name_or_path)
    if not name.strip() or "\0" in name or "\n" in name:
        raise CheckpointError(f"a {what} name or path is needed, got {show(name_or_path)}")


def check_format_version(data: dict[str, Any], where: Path | str) -> None:
    """wavecraft's own layouts: refuse a ``format_version`` this version cannot read (absent means 1)."""
    version = data.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: format_version must be a positive integer, got {show(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {version} was written by a newer wavecraft (this one "
                              f"reads up to {FORMAT_VERSION}); upgrade wavecraft")


def save_codec(model: EnCodec, directory: str | Path) -> Path:
    config = {"model_type": WAVECRAFT_CODEC, "format_version": FORMAT_VERSION, "codec": model.cfg.to_dict()}
    return write_checkpoint(directory, config, model.state_dict())


def _load(name_or_path: str | Path, _pointers: int = 0) -> EnCodec:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix == ".json":
            return _load_config_json(path, path.parent)
        if path.suffix == ".safetensors":
            config = path.parent / "config.json"
            if not config.is_file():
                raise CheckpointError(f"{path}: a safetensors file needs a config.json beside it")
            return _load_config_json(config, path.parent, weights=path)
        return _load_torch_package(path, _pointers)
    config = find_file(name_or_path, "config.json", required=False)
    model_type = read_json(config).get("model_type") if config else None
    if model_type in (WAVECRAFT_CODEC, WAVECRAFT_MUSICGEN, "encodec"):
        return _load_config_json(config, name_or_path)  # type: ignore[arg-type]
    # MusicGen-style repos: AudioCraft's codec package is smaller than the composite transformers weights.
    package = find_file(name_or_path, "compression_state_dict.bin", required=False)
    if package is not None:
        return _load_torch_package(package, _pointers)
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
    if model_type in (WAVECRAFT_CODEC, WAVECRAFT_MUSICGEN):
        check_format_version(data, config_path)
        cfg = _build_config(lambda: CodecConfig.from_dict(_dict_field(data, "codec")), config_path)
        prefix = "codec." if model_type == WAVECRAFT_MUSICGEN else ""
    elif model_type == "encodec":
        cfg = _build_config(lambda: codec_config_from_transformers(data), config_path)
    elif model_type in ("musicgen", "musicgen_melody"):
        cfg = _build_config(lambda: codec_config_from_transformers(_dict_field(data, "audio_encoder")), config_path)
        prefix = "audio_encoder."
    else:
        raise CheckpointError(f"{config_path}: model_type {show(model_type)} is not a codec")
    # Before the weights are read: a config asking for more memory than there is fails here, not in the OS.
    _check_memory(cfg, config_path)
    state = load_weights(weights) if weights is not None else read_weights(source, prefix)
    if weights is not None and prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    rename = model_type not in (WAVECRAFT_CODEC, WAVECRAFT_MUSICGEN)
    return _instantiate(cfg, state, config_path, rename_transformers=rename)


def _dict_field(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {show(value)}")
    return value


def _check_memory(cfg: CodecConfig, where: Path | str) -> None:
    try:
        cfg.check_memory(copies=2)  # the model, and the checkpoint's tensors it is loaded from
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def _build_config(make: Any, where: Path | str) -> Any:
    """``make()``, its ``ValueError`` (a config check), ``KeyError`` (a missing field) or ``TypeError`` as a
    one-line :class:`CheckpointError` naming ``where``."""
    try:
        return make()
    except KeyError as e:
        raise CheckpointError(f"{where}: invalid codec config (missing field {e})") from None
    except (TypeError, ValueError, ArithmeticError) as e:
        raise CheckpointError(f"{where}: invalid codec config ({' '.join(str(e).split())[:150]})") from None


#: transformers ``EncodecConfig`` field -> our field; a config error is reported under the transformers name.
_HF_CODEC_FIELDS = {
    "sampling_rate": "sample_rate", "audio_channels": "channels", "hidden_size": "dimension",
    "num_filters": "n_filters", "num_residual_layers": "n_residual_layers", "upsampling_ratios": "ratios",
    "norm_type": "norm", "kernel_size": "kernel_size", "last_kernel_size": "last_kernel_size",
    "residual_kernel_size": "residual_kernel_size", "dilation_growth_rate": "dilation_base",
    "use_causal_conv": "causal", "pad_mode": "pad_mode", "compress": "compress", "num_lstm_layers": "lstm_layers",
    "trim_right_ratio": "trim_right_ratio", "codebook_size": "bins", "normalize": "renormalize",
    "chunk_length_s": "chunk_length_s", "overlap": "overlap", "target_bandwidths": "target_bandwidths",
}
_HF_CODEC_DEFAULTS = {
    "sampling_rate": 24000, "audio_channels": 1, "hidden_size": 128, "num_filters": 32, "num_residual_layers": 1,
    "upsampling_ratios": [8, 5, 4, 2], "norm_type": "weight_norm", "kernel_size": 7, "last_kernel_size": 7,
    "residual_kernel_size": 3, "dilation_growth_rate": 2, "use_causal_conv": True, "pad_mode": "reflect",
    "compress": 2, "num_lstm_layers": 2, "trim_right_ratio": 1.0, "codebook_size": 1024, "normalize": False,
    "chunk_length_s": None, "overlap": None, "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0],
}


def codec_config_from_transformers(hf: dict[str, Any]) -> CodecConfig:
    """Translate a transformers ``EncodecConfig`` dict (its defaults where a field is absent).

    ``n_q`` follows from the largest target bandwidth, so the fields it is computed from are checked first; the
    rest is checked by :class:`CodecConfig`, and errors name the transformers field.
    """
    values = {ours: hf.get(theirs, _HF_CODEC_DEFAULTS[theirs]) for theirs, ours in _HF_CODEC_FIELDS.items()}
    if hf.get("codebook_dim") not in (None, values["dimension"]):
        raise ValueError("codebook_dim different from hidden_size is not supported")
    values["true_skip"] = not flag("use_conv_shortcut", hf.get("use_conv_shortcut", True))
    sample_rate = integer("sampling_rate", values["sample_rate"], 1000, 768000)
    ratios = int_tuple("upsampling_ratios", values["ratios"], 1, 64, 1, 16)
    bins = integer("codebook_size", values["bins"], 2, 2 ** 20)
    bandwidths = real_tuple("target_bandwidths", values["target_bandwidths"], 0.0, 1e4, 64)
    if not bandwidths or bandwidths[-1] <= 0:
        raise ValueError(f"target_bandwidths must end with a positive bandwidth, got {show(list(bandwidths))}")
    frame_rate = math.ceil(sample_rate / math.prod(ratios))
    values["n_q"] = max(1, int(1000 * bandwidths[-1] // (frame_rate * math.ceil(math.log2(bins)))))
    try:
        return CodecConfig(**values)
    except ValueError as e:
        raise ValueError(_rename_fields(str(e), {v: k for k, v in _HF_CODEC_FIELDS.items()})) from None


def _rename_fields(message: str, names: dict[str, str]) -> str:
    """``message`` with its leading field name (``bins must ...``) given in the file's own naming."""
    head, _, rest = message.partition(" ")
    field, bracket, index = head.partition("[")
    return f"{names[field]}{bracket}{index} {rest}" if field in names else message


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
def _load_torch_package(path: Path, _pointers: int = 0) -> EnCodec:
    package = load_torch_file(path)
    if not isinstance(package, dict):
        raise CheckpointError(f"{path}: not an AudioCraft codec package (top level is {type(package).__name__})")
    if "pretrained" in package and "best_state" not in package:
        # Export pointer form: the codec lives in another (transformers-layout) repo.
        target = package["pretrained"]
        check_source(target, f"{path}: 'pretrained' pointer to a codec;")
        if _pointers >= 4:
            raise CheckpointError(f"{path}: too many 'pretrained' pointers in a row (a loop?)")
        return _load(target, _pointers + 1)
    if "xp.cfg" not in package or "best_state" not in package:
        raise CheckpointError(f"{path}: not an AudioCraft codec package (needs 'xp.cfg' and 'best_state', "
                              f"has {', '.join(map(str, list(package)[:6]))})")
    cfg = _build_config(lambda: codec_config_from_xp(parse_xp_config(package["xp.cfg"])), path)
    state = package["best_state"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # training checkpoint layout
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: best_state must be a dict of tensors, got {type(state).__name__}")
    _check_memory(cfg, path)
    return _instantiate(cfg, state, path)


def codec_config_from_xp(root: dict[str, Any]) -> CodecConfig:
    """Translate the ``encodec``/``seanet``/``rvq`` sections of AudioCraft's ``xp.cfg``."""
    kind = section(root, "compression_model", "encodec")
    if kind != "encodec":
        raise ValueError(f"compression_model {show(kind)} is not supported (only encodec)")
    enc = mapping(root, "encodec", required=True)
    seanet = mapping(root, "seanet", required=True)
    rvq = mapping(root, "rvq", required=True)
    if enc.get("autoencoder", "seanet") != "seanet" or enc.get("quantizer", "rvq") != "rvq":
        raise ValueError(f"encodec autoencoder/quantizer {enc.get('autoencoder')}/{enc.get('quantizer')} unsupported")
    if seanet.get("disable_norm_outer_blocks", 0):
        raise ValueError("seanet.disable_norm_outer_blocks > 0 is not supported")
    decoder = seanet.get("decoder") or {}
    if not isinstance(decoder, dict) or not isinstance(seanet.get("encoder") or {}, dict):
        raise ValueError("seanet.encoder / seanet.decoder must be mappings")
    activation_params = seanet.get("activation_params") or {}
    if not isinstance(activation_params, dict):
        raise ValueError(f"seanet.activation_params must be a mapping, got {show(activation_params)}")
    if decoder.get("final_activation") is not None:
        raise ValueError("seanet.decoder.final_activation is not supported")
    if set(seanet.get("encoder") or {}) or set(decoder) - {"trim_right_ratio", "final_activation",
                                                            "final_activation_params"}:
        raise ValueError("per-side seanet overrides other than trim_right_ratio are not supported")
    # Values go to CodecConfig as they are (no int()/bool() here): it checks them, and bool("false") is True.
    return CodecConfig(
        sample_rate=enc["sample_rate"], channels=enc["channels"], dimension=seanet["dimension"],
        n_filters=seanet["n_filters"], n_residual_layers=seanet["n_residual_layers"], ratios=seanet["ratios"],
        activation=seanet.get("activation", "ELU"), activation_alpha=activation_params.get("alpha", 1.0),
        norm=seanet.get("norm", "none"), kernel_size=seanet["kernel_size"],
        last_kernel_size=seanet["last_kernel_size"], residual_kernel_size=seanet["residual_kernel_size"],
        dilation_base=seanet["dilation_base"], causal=enc.get("causal", seanet.get("causal", False)),
        pad_mode=seanet.get("pad_mode", "reflect"), true_skip=seanet.get("true_skip", True),
        compress=seanet.get("compress", 2), lstm_layers=seanet.get("lstm", 0),
        trim_right_ratio=decoder.get("trim_right_ratio", 1.0), n_q=rvq["n_q"], bins=rvq["bins"],
        decay=rvq.get("decay", 0.99), kmeans_init=rvq.get("kmeans_init", True),
        kmeans_iters=rvq.get("kmeans_iters", 50), threshold_ema_dead_code=rvq.get("threshold_ema_dead_code", 2),
        q_dropout=rvq.get("q_dropout", False), renormalize=enc.get("renormalize", False))


# -- shared --------------------------------------------------------------------------------------------------------
def _instantiate(cfg: CodecConfig, state: dict[str, torch.Tensor], where: Path | str,
                 rename_transformers: bool = False) -> EnCodec:
    try:
        model = EnCodec(cfg)
    except ValueError as e:
        raise CheckpointError(f"{where}: invalid codec config ({e})") from None
    if rename_transformers:
        state = rename_transformers_codec_keys(state, model.state_dict().keys())
    check_state_dict(model, state, where)
    model.load_state_dict(state, strict=True)
    return model


def check_state_dict(model: torch.nn.Module, state: dict[str, Any], where: Path | str) -> None:
    """Raise a one-line :class:`CheckpointError` when weights do not fit the model their config describes.

    Names, shapes and dtypes are compared (a floating tensor must be floating: integer or bool weights are
    refused, they would be cast silently), then every floating tensor is checked to hold only finite values as
    the model's dtype (a NaN or a float64 1e300 would propagate to every output); the first bad one is named.
    """
    expected = model.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: weights must be a dict of tensors, got {type(state).__name__}")
    missing = [k for k in expected if k not in state]
    unexpected = [show(k, 80) for k in state if k not in expected]
    wrong = [f"{k} {_describe(state[k])} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and (not _plain_tensor(state[k]) or state[k].shape != v.shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 2} more)" if len(items) > 2 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:2])}{more}")
        raise CheckpointError(f"{where}: weights do not match the config: {'; '.join(parts)}")
    for key, ours in expected.items():
        given = state[key]
        if ours.is_floating_point() != given.is_floating_point() or given.is_complex():
            raise CheckpointError(f"{where}: weight {key} has dtype {str(given.dtype).replace('torch.', '')}, "
                                  f"expected {str(ours.dtype).replace('torch.', '')}")
        checked = verified_finite(given) and given.dtype.itemsize <= ours.dtype.itemsize  # no overflow in the cast
        if given.is_floating_point() and given.numel() and not checked and not _finite_as(given, ours.dtype):
            raise CheckpointError(f"{where}: weight {key} holds NaN or infinite values (as "
                                  f"{str(ours.dtype).replace('torch.', '')}); the checkpoint is corrupt")


def _plain_tensor(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_quantized
            and value.device.type == "cpu")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape)) if _plain_tensor(value) else f"({value.layout}, {value.device.type})"
    return f"({type(value).__name__}, not a tensor)"


def _finite_as(tensor: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether every value of ``tensor`` is finite once cast to ``dtype``; one pass, no full-size copy (the
    extremes propagate NaN and show an overflow of the cast)."""
    low, high = torch.aminmax(tensor.detach())
    if dtype.is_floating_point:
        low, high = low.to(dtype), high.to(dtype)
    return bool(torch.isfinite(low) and torch.isfinite(high))
