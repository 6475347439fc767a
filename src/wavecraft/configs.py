"""Shared behaviour of the frozen config dataclasses (``CodecConfig``, ``LMConfig``, ...)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T", bound="ConfigMixin")


class ConfigMixin:
    """``replace``, and a JSON-friendly ``to_dict`` / strict ``from_dict`` (tuples stored as lists)."""

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) and str(fields[k].type).startswith("tuple") else v
                  for k, v in data.items()}
        return cls(**values)
