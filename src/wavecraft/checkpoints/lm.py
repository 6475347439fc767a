"""Language-model checkpoints: AudioCraft's ``state_dict.bin`` (``xp.cfg`` YAML + ``best_state``).

Turns the checkpoint into an :class:`LMBundle`: the LM, its conditioners with their trained projections, the
fuser, and the generation defaults stored with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..conditioning import ConditionFuser, T5Conditioner
from ..errors import CheckpointError
from ..lm.config import LMConfig
from ..lm.model import LMModel
from .codec import check_state_dict
from .hub import find_file
from .safe_load import load_torch_file
from .xp_config import parse_xp_config, section


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
    tlm = section(root, "transformer_lm")
    for key, expected in _UNSUPPORTED.items():
        if tlm.get(key, expected) != expected:
            raise ValueError(f"transformer_lm.{key}={tlm[key]!r} is not supported")
    if not tlm.get("norm_first", True) or tlm.get("positional_embedding", "sin") != "sin":
        raise ValueError("only pre-norm layers with sinusoidal positions are supported")
    if tlm.get("norm", "layer_norm") != "layer_norm" or tlm.get("activation", "gelu") != "gelu":
        raise ValueError(f"norm {tlm.get('norm')!r} / activation {tlm.get('activation')!r} not supported")
    pattern = section(root, "codebooks_pattern") or {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3]}}
    modeling = pattern.get("modeling", "delay")
    n_q = int(tlm["n_q"])
    delays = tuple(pattern.get("delay", {}).get("delays", range(n_q))) if modeling == "delay" else tuple([0] * n_q)
    return LMConfig(
        dim=tlm["dim"], num_heads=tlm["num_heads"], num_layers=tlm["num_layers"],
        hidden_scale=tlm.get("hidden_scale", 4), n_q=n_q, card=tlm["card"], cross_attention=cross_attention,
        causal=tlm.get("causal", True), bias_attn=tlm.get("bias_attn", True), bias_ff=tlm.get("bias_ff", True),
        bias_proj=tlm.get("bias_proj", True), pattern=modeling, delays=delays)


def _conditioners_from_xp(root: dict[str, Any], dim: int, state: dict[str, torch.Tensor]) -> nn.ModuleDict:
    modules = nn.ModuleDict()
    for name, spec in (section(root, "conditioners") or {}).items():
        kind = spec.get("model")
        if kind == "t5":
            proj = state.get(f"condition_provider.conditioners.{name}.output_proj.weight")
            encoder_dim = proj.shape[1] if proj is not None else None
            modules[name] = T5Conditioner(dim, spec["t5"]["name"], encoder_dim)
        else:
            raise ValueError(f"conditioner {name!r} of type {kind!r} is not supported yet")
    return modules


def load_lm_bundle(name_or_path: str | Path) -> LMBundle:
    """Load an AudioCraft LM checkpoint (file, directory holding ``state_dict.bin``, or hub repo)."""
    path = find_file(name_or_path, "state_dict.bin")
    package = load_torch_file(path)  # type: ignore[arg-type]
    if not isinstance(package, dict) or "xp.cfg" not in package or "best_state" not in package:
        raise CheckpointError(f"{path}: not an AudioCraft LM checkpoint (needs 'xp.cfg' and 'best_state')")
    state = package["best_state"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    root = parse_xp_config(package["xp.cfg"])
    try:
        fuser_cfg = section(root, "fuser") or {}
        fuser = ConditionFuser({k: list(v) for k, v in fuser_cfg.items() if isinstance(v, list)})
        cfg = lm_config_from_xp(root, cross_attention=fuser.has_cross)
        conditioners = _conditioners_from_xp(root, cfg.dim, state)
        lm = LMModel(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unsupported or invalid LM config ({' '.join(str(e).split())[:150]})") from None
    lm_state = {k: v for k, v in state.items() if not k.startswith("condition_provider.")}
    cond_state = {k[len("condition_provider.conditioners."):]: v for k, v in state.items()
                  if k.startswith("condition_provider.conditioners.")}
    check_state_dict(lm, lm_state, path)
    check_state_dict(conditioners, cond_state, path)
    lm.load_state_dict(lm_state)
    conditioners.load_state_dict(cond_state)
    cfg_guidance = section(root, "classifier_free_guidance") or {}
    dataset = section(root, "dataset") or {}
    stereo = section(root, "interleave_stereo_codebooks") or {}
    return LMBundle(
        lm=lm.eval(), conditioners=conditioners.eval(), fuser=fuser,
        cfg_coef=float(cfg_guidance.get("inference_coef", 3.0)),
        two_step_cfg=bool(section(root, "transformer_lm").get("two_step_cfg", False)),
        max_duration=dataset.get("segment_duration"), sample_rate=int(section(root, "sample_rate", 32000)),
        channels=int(section(root, "channels", 1)), interleave_stereo=bool(stereo.get("use", False)))
