"""Language-model checkpoints: AudioCraft's ``state_dict.bin`` (``xp.cfg`` YAML + ``best_state``).

Turns the checkpoint into an :class:`LMBundle`: the LM, its conditioners with their trained projections, the
fuser, and the generation defaults stored with the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..conditioning import ConditionFuser, SentenceConditioner, T5Conditioner
from ..conditioning.chroma import MAX_CHROMA_FRAMES, ChromaConditioner
from ..conditioning.text import MAX_TEXT_DIM
from ..errors import CheckpointError
from ..lm.config import LMConfig
from ..lm.model import LMModel
from ..validation import WEIGHT_BYTES, ensure_memory, flag, integer, real, show, text
from .codec import FORMAT_VERSION, WAVECRAFT_MUSICGEN, check_format_version, check_source, check_state_dict
from .files import read_json, read_weights, write_checkpoint
from .hub import find_file
from .safe_load import load_torch_file
from .xp_config import mapping, parse_xp_config, section


@dataclass
class LMBundle:
    """A loaded language model with what it needs to be conditioned and sampled like the reference."""

    lm: LMModel
    conditioners: nn.ModuleDict  # name -> conditioner (e.g. 'description' -> T5Conditioner)
    fuser: ConditionFuser
    cfg_coef: float = 3.0
    two_step_cfg: bool = False
    max_duration: float | None = None
    sample_rate: int = 32000
    channels: int = 1
    interleave_stereo: bool = False

    def to(self, device: str | torch.device) -> LMBundle:
        self.lm.to(device)
        self.conditioners.to(device)
        return self


_UNSUPPORTED = {  # transformer_lm options the released models never use
    "layer_scale": None, "qk_layer_norm": False, "qk_layer_norm_cross": False, "kv_repeat": 1, "xpos": False,
    "past_context": None,
}


def lm_config_from_xp(root: dict[str, Any], cross_attention: bool) -> LMConfig:
    tlm = mapping(root, "transformer_lm", required=True)
    for key, expected in _UNSUPPORTED.items():
        if tlm.get(key, expected) != expected:
            raise ValueError(f"transformer_lm.{key}={show(tlm[key])} is not supported")
    if not tlm.get("norm_first", True) or tlm.get("positional_embedding", "sin") != "sin":
        raise ValueError("only pre-norm layers with sinusoidal positions are supported")
    if tlm.get("norm", "layer_norm") != "layer_norm" or tlm.get("activation", "gelu") != "gelu":
        raise ValueError(f"norm {tlm.get('norm')!r} / activation {tlm.get('activation')!r} not supported")
    pattern = mapping(root, "codebooks_pattern") or {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3]}}
    modeling = pattern.get("modeling", "delay")
    # Checked before the delays are made from it: range(1e9) would be a billion-entry tuple.
    n_q = integer("transformer_lm.n_q", tlm.get("n_q"), 1, 1024)
    delay = pattern.get("delay") or {}
    if not isinstance(delay, dict):
        raise ValueError(f"codebooks_pattern.delay must be a mapping, got {show(delay)}")
    if modeling == "delay" and any(delay.get(k, 0) for k in ("flatten_first", "empty_initial")):
        raise ValueError("codebooks_pattern.delay.flatten_first / empty_initial other than 0 are not supported")
    delays = delay.get("delays", list(range(n_q))) if modeling == "delay" else [0] * n_q
    # Values go to LMConfig as they are (no int()/float() here): it checks them, and float("nan") passes float().
    return LMConfig(
        dim=tlm["dim"], num_heads=tlm["num_heads"], num_layers=tlm["num_layers"],
        hidden_scale=tlm.get("hidden_scale", 4), n_q=n_q, card=tlm["card"], cross_attention=cross_attention,
        causal=tlm.get("causal", True), bias_attn=tlm.get("bias_attn", True), bias_ff=tlm.get("bias_ff", True),
        bias_proj=tlm.get("bias_proj", True), max_period=tlm.get("max_period", 10000.0),
        positional_scale=tlm.get("positional_scale", 1.0), pattern=modeling, delays=delays)


def _conditioners_from_xp(root: dict[str, Any], dim: int, state: dict[str, torch.Tensor]) -> nn.ModuleDict:
    modules = nn.ModuleDict()
    for name, spec in mapping(root, "conditioners").items():
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(spec, dict):
            raise ValueError(f"conditioners.{show(name)} must be a named mapping")
        kind = spec.get("model")
        if kind == "t5":
            proj = state.get(f"condition_provider.conditioners.{name}.output_proj.weight")
            encoder_dim = proj.shape[1] if isinstance(proj, torch.Tensor) and proj.dim() == 2 else None
            modules[name] = T5Conditioner(dim, mapping(spec, "t5", required=True).get("name"), encoder_dim)
        elif kind == "chroma_stem":
            chroma = mapping(spec, "chroma_stem", required=True)
            # AudioCraft passes these on to its ChromaExtractor; ours derives them from radix2_exp (its defaults).
            if any(chroma.get(k) is not None for k in ("nfft", "winlen", "winhop")) or \
                    chroma.get("norm", float("inf")) != float("inf"):
                raise ValueError("chroma_stem nfft/winlen/winhop/norm overrides are not supported")
            duration = mapping(root, "dataset").get("segment_duration") or 30.0
            modules[name] = ChromaConditioner(dim, chroma.get("sample_rate"), duration,
                                              n_chroma=chroma.get("n_chroma", 12),
                                              radix2_exp=chroma.get("radix2_exp", 14),
                                              argmax=chroma.get("argmax", True))
        else:
            raise ValueError(f"conditioner {name!r} of type {show(kind)} is not supported yet")
    return modules


def load_lm_bundle(name_or_path: str | Path) -> LMBundle:
    """Load a language model: AudioCraft ``state_dict.bin`` or a transformers MusicGen ``config.json`` layout.

    ``name_or_path`` is a checkpoint file, a directory, or a hub repo id. Where a repo holds both layouts (the
    official ``facebook/musicgen-*`` repos do), AudioCraft's is used: it is the reference.
    """
    check_source(name_or_path, "language model")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix != ".json":
            return _load_audiocraft(path)
        if read_json(path).get("model_type") == WAVECRAFT_MUSICGEN:
            return _load_wavecraft(path, path.parent)
        return _load_transformers(path, path.parent)
    package = find_file(name_or_path, "state_dict.bin", required=False)
    if package is not None:
        return _load_audiocraft(package)
    config = find_file(name_or_path, "config.json", required=False)
    if config is not None:
        if read_json(config).get("model_type") == WAVECRAFT_MUSICGEN:
            return _load_wavecraft(config, name_or_path)
        return _load_transformers(config, name_or_path)
    raise CheckpointError(f"{name_or_path}: no language model found (expected state_dict.bin, or config.json with "
                          "model.safetensors)")


def _load_audiocraft(path: Path) -> LMBundle:
    package = load_torch_file(path)  # type: ignore[arg-type]
    if not isinstance(package, dict) or "xp.cfg" not in package or "best_state" not in package:
        raise CheckpointError(f"{path}: not an AudioCraft LM checkpoint (needs 'xp.cfg' and 'best_state')")
    state = package["best_state"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path}: best_state must be a dict of named tensors")
    root = parse_xp_config(package["xp.cfg"])
    with _config_errors(path, "unsupported or invalid LM config"):
        fuser_cfg = mapping(root, "fuser")
        if fuser_cfg.get("cross_attention_pos_emb", False):
            raise ValueError("fuser.cross_attention_pos_emb is not supported")
        stereo = mapping(root, "interleave_stereo_codebooks")
        if stereo.get("use", False) and stereo.get("per_timestep", False):
            raise ValueError("interleave_stereo_codebooks.per_timestep is not supported")
        fuser = _fuser({k: v for k, v in fuser_cfg.items() if isinstance(v, list)})
        cfg = lm_config_from_xp(root, cross_attention=fuser.has_cross)
        conditioners = _conditioners_from_xp(root, cfg.dim, state)
        fields = _generation_fields(
            cfg, cfg_coef=mapping(root, "classifier_free_guidance").get("inference_coef", 3.0),
            two_step_cfg=mapping(root, "transformer_lm").get("two_step_cfg", False),
            max_duration=mapping(root, "dataset").get("segment_duration"),
            sample_rate=section(root, "sample_rate", 32000), channels=section(root, "channels", 1),
            interleave_stereo=stereo.get("use", False))
        cfg.check_memory()  # the checkpoint is in memory already; the LM takes one float32 copy of it
    lm_state = {k: v for k, v in state.items() if not k.startswith("condition_provider.")}
    cond_state = {k[len("condition_provider.conditioners."):]: v for k, v in state.items()
                  if k.startswith("condition_provider.conditioners.")}
    lm = build_lm(cfg, lm_state, path, owned=True)
    check_state_dict(conditioners, cond_state, path)
    conditioners.load_state_dict(cond_state)
    return LMBundle(lm=lm.eval(), conditioners=conditioners.eval(), fuser=fuser, **fields)


@contextlib.contextmanager
def _config_errors(where: Path | str, what: str) -> Iterator[None]:
    """Config checks (``ValueError``), missing fields (``KeyError``) and values of the wrong kind as one line."""
    try:
        yield
    except KeyError as e:
        raise CheckpointError(f"{where}: {what} (missing field {e})") from None
    except (TypeError, ValueError, ArithmeticError) as e:
        raise CheckpointError(f"{where}: {what} ({' '.join(str(e).split())[:150]})") from None


def _fuser(fuse2cond: Any) -> ConditionFuser:
    if not isinstance(fuse2cond, dict) or not all(
            isinstance(m, str) and isinstance(names, list) and all(isinstance(n, str) for n in names)
            for m, names in fuse2cond.items()):
        raise ValueError(f"fuser must map fusion methods to lists of condition names, got {show(fuse2cond)}")
    return ConditionFuser(fuse2cond)


def _generation_fields(cfg: LMConfig, cfg_coef: Any, two_step_cfg: Any, max_duration: Any, sample_rate: Any,
                       channels: Any, interleave_stereo: Any) -> dict[str, Any]:
    """The :class:`LMBundle` generation defaults of a checkpoint, checked (``ValueError`` naming the field)."""
    fields = {
        "cfg_coef": real("cfg_coef", cfg_coef, 0.0, 100.0), "two_step_cfg": flag("two_step_cfg", two_step_cfg),
        "max_duration": None if max_duration is None else real("max_duration", max_duration, 0.0, 3600.0,
                                                               open_lo=True),
        "sample_rate": integer("sample_rate", sample_rate, 1000, 768000),
        "channels": integer("channels", channels, 1, 2),
        "interleave_stereo": flag("interleave_stereo", interleave_stereo),
    }
    if fields["interleave_stereo"] and (fields["channels"] != 2 or cfg.n_q % 2):
        raise ValueError(f"interleave_stereo needs 2 channels and an even n_q, got {fields['channels']} and "
                         f"{cfg.n_q}")
    return fields


def build_lm(cfg: LMConfig, state: dict[str, torch.Tensor], where: Path | str, owned: bool) -> LMModel:
    """The LM of ``cfg`` with ``state`` as its float32 weights.

    It is built without weights of its own (on the meta device) and takes the checkpoint's tensors, cast to
    float32 and copied only if not ``owned`` (a caller's tensors): loading then holds one copy of the weights,
    not a random-initialised model beside the checkpoint: a musicgen-small-size model (transformers layout) loaded
    with a peak RSS of 1.9 GB instead of 4.1 GB, in 1.7 s instead of 6.1 s.
    """
    try:
        cfg.check_memory()
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    with torch.device("meta"):
        lm = LMModel(cfg)
    check_state_dict(lm, state, where)
    weights = {k: v.to(torch.float32, copy=not owned).contiguous() for k, v in state.items()}
    lm.load_state_dict(weights, assign=True)
    return lm


# -- transformers layout ------------------------------------------------------------------------------------------
_HF_LAYER_NAMES = {"self_attn_layer_norm": "norm1", "encoder_attn_layer_norm": "norm_cross",
                   "final_layer_norm": "norm2", "fc1": "linear1", "fc2": "linear2", "encoder_attn": "cross_attention",
                   "self_attn": "self_attn"}


#: transformers ``MusicgenDecoderConfig`` field -> ours; a config error is reported under the transformers name.
_HF_LM_FIELDS = {"hidden_size": "dim", "num_attention_heads": "num_heads", "num_hidden_layers": "num_layers",
                 "num_codebooks": "n_q", "vocab_size": "card"}


def lm_config_from_transformers(data: dict[str, Any]) -> LMConfig:
    dec = data.get("decoder")
    if not isinstance(dec, dict):
        raise ValueError(f"decoder must be a JSON object, got {show(dec)}")
    if dec.get("activation_function", "gelu") != "gelu" or dec.get("scale_embedding", False):
        raise ValueError("only gelu activations without embedding scaling are supported")
    hidden = integer("decoder.hidden_size", dec.get("hidden_size", 1024), 1, 16384)
    ffn = integer("decoder.ffn_dim", dec.get("ffn_dim", 4096), 1, 64 * 16384)
    if ffn % hidden:
        raise ValueError(f"decoder.ffn_dim {ffn} must be a multiple of hidden_size {hidden}")
    n_q = integer("decoder.num_codebooks", dec.get("num_codebooks", 4), 1, 1024)
    channels = integer("decoder.audio_channels", dec.get("audio_channels", 1), 1, 2)
    if channels == 2 and n_q % 2:
        raise ValueError(f"decoder.num_codebooks must be even for 2 audio channels, got {n_q}")
    # Stereo checkpoints interleave L/R codebooks, each pair sharing the delay of its mono codebook.
    delays = tuple(range(n_q)) if channels == 1 else tuple(k // 2 for k in range(n_q))
    melody = data.get("model_type") == "musicgen_melody"
    try:
        return LMConfig(dim=hidden, num_heads=dec.get("num_attention_heads", 16),
                        num_layers=dec.get("num_hidden_layers", 24), hidden_scale=ffn // hidden, n_q=n_q,
                        card=dec.get("vocab_size", 2048), cross_attention=not melody, cross_attention_mask=True,
                        delays=delays)
    except ValueError as e:
        head, _, rest = str(e).partition(" ")
        names = {v: k for k, v in _HF_LM_FIELDS.items()}
        raise ValueError(f"decoder.{names[head]} {rest}" if head in names else str(e)) from None


#: T5 encoder fields of transformers' ``text_encoder`` config that size the model, with their bounds.
_T5_FIELDS = {"d_model": (1, MAX_TEXT_DIM), "d_ff": (1, 4 * 16384), "d_kv": (1, 1024), "num_heads": (1, 1024),
              "num_layers": (1, 256), "vocab_size": (1, 2 ** 20)}


def _t5_weights(text_cfg: dict[str, Any]) -> int:
    """Elements of the T5 encoder of a transformers MusicGen config (checked first: it is built on first use)."""
    f = {k: integer(f"text_encoder.{k}", text_cfg[k], lo, hi) for k, (lo, hi) in _T5_FIELDS.items() if k in text_cfg}
    d, ff = f.get("d_model", 512), f.get("d_ff", 2048)
    inner = f.get("d_kv", 64) * f.get("num_heads", 8)
    gated = 3 if str(text_cfg.get("feed_forward_proj", "relu")).startswith("gated") else 2
    return f.get("vocab_size", 32128) * d + f.get("num_layers", 6) * (4 * d * inner + gated * d * ff + 2 * d)


def rename_transformers_lm_keys(state: dict[str, torch.Tensor]
                                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """transformers MusicGen names -> ``(lm_state, conditioner_state)``; q/k/v projections are fused."""
    lm: dict[str, torch.Tensor] = {}
    proj: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("enc_to_dec_proj."):
            proj["description.output_proj." + key[len("enc_to_dec_proj."):]] = value
        elif key.startswith("audio_enc_to_dec_proj."):
            proj["self_wav.output_proj." + key[len("audio_enc_to_dec_proj."):]] = value
        elif key.startswith("decoder.lm_heads."):
            lm["linears." + key[len("decoder.lm_heads."):]] = value
        elif key.startswith("decoder.model.decoder."):
            rest = key[len("decoder.model.decoder."):]
            if rest.startswith("embed_tokens."):
                lm["emb." + rest[len("embed_tokens."):]] = value
            elif rest.startswith("layer_norm."):
                lm["out_norm." + rest[len("layer_norm."):]] = value
            elif rest.startswith("layers."):
                _, index, module, *tail = rest.split(".")
                target = f"transformer.layers.{index}.{_HF_LAYER_NAMES.get(module, module)}"
                if tail[0] in ("q_proj", "k_proj", "v_proj"):
                    qkv.setdefault(target, {})[tail[0][0]] = value
                else:
                    lm[f"{target}.{'.'.join(tail)}"] = value
            elif not rest.startswith("embed_positions"):
                lm[key] = value  # unknown: reported by the shape/name check
    for target, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{target}: incomplete q/k/v projections in the checkpoint")
        lm[f"{target}.in_proj_weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return lm, proj


def _t5_loader(source: Path | str, text_config: dict[str, Any]) -> Any:
    """Builds the checkpoint's own T5 encoder and the repo's tokenizer, on first use."""
    def load() -> tuple[object, nn.Module]:
        try:
            from transformers import AutoTokenizer, T5Config, T5EncoderModel
        except ImportError:
            raise CheckpointError("the T5 text encoder of official checkpoints needs `transformers`: "
                                  "pip install 'wavecraft[t5]'") from None
        encoder = T5EncoderModel(T5Config.from_dict(text_config))
        missing, unexpected = encoder.load_state_dict(read_weights(source, "text_encoder."), strict=False)
        if unexpected or set(missing) - {"encoder.embed_tokens.weight"}:
            raise CheckpointError(f"{source}: text encoder weights do not match its config")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{source}: no usable tokenizer files ({' '.join(str(e).split())[:100]})") from None
        return tokenizer, encoder.eval()
    return load


def _load_transformers(config_path: Path, source: str | Path) -> LMBundle:
    data = read_json(config_path)
    if data.get("model_type") not in ("musicgen", "musicgen_melody"):
        raise CheckpointError(f"{config_path}: model_type {data.get('model_type')!r} is not a MusicGen LM")
    generation = config_path.parent / "generation_config.json"
    guidance = read_json(generation).get("guidance_scale", 3.0) if generation.is_file() else 3.0
    # The decoder and the text projections: the text encoder and the codec in the same file load on their own.
    with _config_errors(generation, "invalid generation config"):
        guidance = real("guidance_scale", guidance or 3.0, 0.0, 100.0)  # unset or 0: the reference's 3.0
    # The config is checked before any weight is read (inside _from_transformers).
    return _from_transformers(
        data, lambda: read_weights(source, ("decoder.", "enc_to_dec_proj.", "audio_enc_to_dec_proj.")), source,
        cfg_coef=guidance, owned=True)


def bundle_from_transformers(data: dict[str, Any], state: dict[str, torch.Tensor], source: str | Path,
                             cfg_coef: float = 3.0, owned: bool = False) -> LMBundle:
    """Build an :class:`LMBundle` from a transformers MusicGen(-Melody) config dict and state dict (in memory).

    ``source`` (folder or repo) is where the text encoder and tokenizer are loaded from when first needed.
    ``owned``: the LM may keep ``state``'s tensors as its weights (else it copies them; see :func:`build_lm`).
    """
    return _from_transformers(data, lambda: state, source, cfg_coef, owned)


def _from_transformers(data: dict[str, Any], read_state: Any, source: str | Path, cfg_coef: float,
                       owned: bool) -> LMBundle:
    """:func:`bundle_from_transformers` with the state dict read by ``read_state()`` once the config passed."""
    with _config_errors(source, "unsupported or invalid MusicGen config"):
        cfg = lm_config_from_transformers(data)
        text_cfg = data.get("text_encoder", {})
        if not isinstance(text_cfg, dict):
            raise ValueError(f"text_encoder must be a JSON object, got {show(text_cfg)}")
        text_weights = _t5_weights(text_cfg)
        text_dim = text_cfg.get("d_model", 768)
        conditioners = nn.ModuleDict({"description": T5Conditioner(
            cfg.dim, str(source), text_dim, encoder_loader=_t5_loader(source, text_cfg))})
        fuser = ConditionFuser({"cross": ["description"]})
        audio = data.get("audio_encoder", {})
        if not isinstance(audio, dict):
            raise ValueError(f"audio_encoder must be a JSON object, got {show(audio)}")
        sample_rate = integer("audio_encoder.sampling_rate", audio.get("sampling_rate", 32000), 1000, 768000)
        if data.get("model_type") == "musicgen_melody":
            chroma = ChromaConditioner(cfg.dim, sample_rate, 30.0, n_chroma=data.get("num_chroma", 12))
            chroma.chroma_len = integer("chroma_length", data.get("chroma_length", 235), 1, MAX_CHROMA_FRAMES)
            conditioners["self_wav"] = chroma
            fuser = ConditionFuser({"prepend": ["self_wav", "description"]})
        # The text encoder is built on first use, but from this config: a size it cannot have is refused now.
        ensure_memory(WEIGHT_BYTES * (cfg.num_weights() + text_weights), "this MusicGen config")
    lm_state, cond_state = rename_transformers_lm_keys(read_state())
    fresh = conditioners.state_dict()
    if "description.output_proj.weight" not in cond_state:  # equal widths: transformers adds no projection
        cond_state["description.output_proj.weight"] = torch.eye(cfg.dim, text_dim)
        cond_state["description.output_proj.bias"] = torch.zeros(cfg.dim)
    for key in fresh:  # buffers transformers does not store (the chroma window)
        if key.endswith("spec.window"):
            cond_state.setdefault(key, fresh[key])
    lm = build_lm(cfg, lm_state, source, owned)
    check_state_dict(conditioners, cond_state, source)
    conditioners.load_state_dict(cond_state)
    channels = data["decoder"].get("audio_channels", 1)
    return LMBundle(lm=lm.eval(), conditioners=conditioners.eval(), fuser=fuser, cfg_coef=cfg_coef, max_duration=30.0,
                    sample_rate=sample_rate, channels=channels, interleave_stereo=channels == 2)


# -- wavecraft's own layout ------------------------------------------------------------------------------------
def _conditioner_spec(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, T5Conditioner):
        return {"type": "t5", "encoder_name": module.encoder_name, "encoder_dim": module.output_proj.in_features}
    if isinstance(module, SentenceConditioner):
        return {"type": "sentence", "encoder_name": module.encoder_name,
                "encoder_dim": module.output_proj.in_features, "pooling": module.pooling}
    if isinstance(module, ChromaConditioner):
        return {"type": "chroma", "sample_rate": module.sample_rate, "chroma_len": module.chroma_len,
                "n_chroma": module.output_proj.in_features, "radix2_exp": module.chroma.n_fft.bit_length() - 1,
                "argmax": module.chroma.argmax,
                **({} if module.frame_rate is None else {"frame_rate": module.frame_rate, "frames": module.frames})}
    raise CheckpointError(f"cannot save a conditioner of type {type(module).__name__}")


def _conditioner_from_spec(name: Any, spec: Any, dim: int) -> nn.Module:
    """A conditioner of wavecraft's config; ``ValueError`` naming the field when the spec is invalid."""
    if not isinstance(name, str) or not name.isidentifier() or not isinstance(spec, dict):
        raise ValueError(f"conditioners.{show(name)} must be a named JSON object")
    kind = spec.get("type")
    if kind == "t5":
        return T5Conditioner(dim, text("encoder_name", spec["encoder_name"]), spec["encoder_dim"])
    if kind == "sentence":
        return SentenceConditioner(dim, text("encoder_name", spec["encoder_name"]), spec["encoder_dim"],
                                   spec.get("pooling", "mean"))
    if kind == "chroma":
        chroma = ChromaConditioner(dim, spec["sample_rate"], 30.0, n_chroma=spec["n_chroma"],
                                   radix2_exp=spec["radix2_exp"], argmax=spec["argmax"])
        # Sizes of tensors made at generation time (frame_index, the tiled chroma): bounded like set_window's.
        chroma.chroma_len = integer(f"conditioners.{name}.chroma_len", spec["chroma_len"], 1, MAX_CHROMA_FRAMES)
        if "frame_rate" in spec:
            chroma.frame_rate = real(f"conditioners.{name}.frame_rate", spec["frame_rate"], 0.0,
                                     float(chroma.sample_rate), open_lo=True)
            chroma.frames = integer(f"conditioners.{name}.frames", spec.get("frames"), 1, MAX_CHROMA_FRAMES)
        return chroma
    raise ValueError(f"conditioners.{name}.type {show(kind)} is unknown (t5, sentence or chroma)")


def save_generator(bundle: LMBundle, codec: Any, directory: str | Path) -> Path:
    """Write LM + conditioners + codec as one ``model.safetensors`` and a ``config.json`` (wavecraft layout)."""
    config = {
        "model_type": WAVECRAFT_MUSICGEN, "format_version": FORMAT_VERSION, "lm": bundle.lm.cfg.to_dict(),
        "conditioners": {name: _conditioner_spec(m) for name, m in bundle.conditioners.items()},
        "fuser": {method: [n for n, m in bundle.fuser.cond2fuse.items() if m == method]
                  for method in sorted(set(bundle.fuser.cond2fuse.values()))},
        "cfg_coef": bundle.cfg_coef, "two_step_cfg": bundle.two_step_cfg, "max_duration": bundle.max_duration,
        "sample_rate": bundle.sample_rate, "channels": bundle.channels, "interleave_stereo": bundle.interleave_stereo,
        "codec": codec.cfg.to_dict(),
    }
    tensors = {**{f"lm.{k}": v for k, v in bundle.lm.state_dict().items()},
               **{f"conditioners.{k}": v for k, v in bundle.conditioners.state_dict().items()},
               **{f"codec.{k}": v for k, v in codec.state_dict().items()}}
    return write_checkpoint(directory, config, tensors)


def _load_wavecraft(config_path: Path, source: str | Path) -> LMBundle:
    data = read_json(config_path)
    check_format_version(data, config_path)
    with _config_errors(config_path, "invalid wavecraft model config"):
        lm_cfg, specs = data.get("lm"), data.get("conditioners", {})
        if not isinstance(lm_cfg, dict) or not isinstance(specs, dict):
            raise ValueError("lm and conditioners must be JSON objects")
        cfg = LMConfig.from_dict(lm_cfg)
        conditioners = nn.ModuleDict({name: _conditioner_from_spec(name, spec, cfg.dim)
                                      for name, spec in specs.items()})
        fuser = _fuser(data.get("fuser", {}))
        fields = _generation_fields(cfg, data["cfg_coef"], data.get("two_step_cfg", False), data.get("max_duration"),
                                    data["sample_rate"], data["channels"], data.get("interleave_stereo", False))
        _match_codec(cfg, fields, data.get("codec"))
        cfg.check_memory()  # before the weights are read: they become the LM's (see build_lm)
    lm = build_lm(cfg, read_weights(source, "lm."), config_path, owned=True)
    cond_state = read_weights(source, "conditioners.")
    check_state_dict(conditioners, cond_state, config_path)
    conditioners.load_state_dict(cond_state)
    return LMBundle(lm=lm.eval(), conditioners=conditioners.eval(), fuser=fuser, **fields)


def _match_codec(cfg: LMConfig, fields: dict[str, Any], codec: Any) -> None:
    """The LM of a wavecraft generator must fit the codec saved with it (codes, codebooks, sample rate)."""
    if codec is None:
        return
    if not isinstance(codec, dict):
        raise ValueError(f"codec must be a JSON object, got {show(codec)}")
    bins, n_q, rate = codec.get("bins"), codec.get("n_q"), codec.get("sample_rate")
    if isinstance(bins, int) and bins != cfg.card:
        raise ValueError(f"lm.card {cfg.card} does not match the codec's {bins} bins")
    codebooks = cfg.n_q // 2 if fields["interleave_stereo"] else cfg.n_q
    if isinstance(n_q, int) and codebooks > n_q:
        raise ValueError(f"lm.n_q {cfg.n_q} needs more codebooks than the codec's {n_q}")
    if isinstance(rate, int) and rate != fields["sample_rate"]:
        raise ValueError(f"sample_rate {fields['sample_rate']} does not match the codec's {rate}")
