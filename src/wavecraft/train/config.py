"""Training configs: frozen dataclasses filled from YAML plus ``a.b=value`` command-line overrides.

Every key is checked against the dataclass fields and every value against the field's type, so a typo in a
YAML file or a ``--set`` flag fails at start-up with the full dotted key instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..errors import WavecraftError

T = TypeVar("T")


@dataclass(frozen=True)
class LMTrainConfig:
    """Optimisation of the language model. The model's own shape lives in :class:`~wavecraft.lm.config.LMConfig`
    (the solver is given a built model), so this only holds what the training loop needs."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    total_steps: int = 1000
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # <= 0 disables clipping (the norm is still reported)
    batch_size: int = 8
    cfg_dropout: float = 0.1
    #: Per-condition dropout on top of CFG dropout, e.g. ``{self_wav: 0.5}`` so a melody model also learns text only.
    attribute_dropout: dict[str, float] = dataclasses.field(default_factory=dict)
    ema_decay: float | None = None
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    output_dir: str = "runs/lm"


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a YAML mapping at ``path`` (optional), then apply ``"a.b=value"`` overrides.

    Override values are parsed with ``yaml.safe_load`` (``lr=3e-4``, ``betas=[0.9,0.99]``, ``ema_decay=null``).
    Fields not given keep their defaults; nested dataclass fields take nested mappings, merged onto the default.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise WavecraftError(f"cannot read config {path}: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise WavecraftError(f"config {path} must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise WavecraftError(f"override {item!r} is not of the form key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(text))
    return _build(cls, data, prefix="", base=None)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (tuples as lists), ready for YAML/JSON and :func:`load_config`."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(cfg))


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            # e.g. ``lr.x=1``: lr is a scalar, so "lr.x" cannot name anything.
            raise WavecraftError(f"unknown config key {'.'.join(parents[:i + 1] + [leaf])!r}")
        node = child
    node[leaf] = value


def _build(cls: type[T], data: Any, prefix: str, base: T | None) -> T:
    if not isinstance(data, dict):
        raise WavecraftError(f"{prefix.rstrip('.') or 'config'}: expected a mapping for {cls.__name__}, "
                             f"got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, raw in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise WavecraftError(f"unknown config key {key!r}")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw, f"{key}.", _default_of(fields[name], base))
        else:
            values[name] = _coerce(raw, tp, key)
    try:
        if base is not None:
            return dataclasses.replace(base, **values)  # type: ignore[type-var]
        return cls(**values)
    except (TypeError, ValueError) as err:  # missing required fields, or the dataclass's own __post_init__ checks
        raise WavecraftError(f"invalid {prefix.rstrip('.') or cls.__name__}: {err}") from err


def _default_of(field: dataclasses.Field, base: Any) -> Any:
    """The current value of a nested field: from the instance being overridden, else the field default."""
    if base is not None:
        return getattr(base, field.name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against ``tp`` (basic types only; anything fancier is passed through)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except WavecraftError:
                continue
        raise _type_error(key, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "3e-4" (no dot) as a string: accept the numbers it leaves unparsed.
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            if origin is list:
                return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                item = args[0] if args else Any
                return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    else:
        return value  # Any, dicts, custom types: not checked
    raise _type_error(key, tp, value)


def _type_error(key: str, tp: Any, value: Any) -> WavecraftError:
    name = getattr(tp, "__name__", None) if typing.get_origin(tp) is None else None
    return WavecraftError(f"config key {key!r}: expected {name or tp}, got {value!r}")
