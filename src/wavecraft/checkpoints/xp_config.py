"""AudioCraft's embedded training config (``xp.cfg``): a YAML string with OmegaConf ``${...}`` interpolations.

Only the sections a model is built from are resolved, relative to the config root, as OmegaConf would; the
unrelated ones (``dora.dir: ${oc.env:USER}``, ...) are never touched.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..errors import CheckpointError

_FULL = re.compile(r"^\$\{([^${}]+)\}$")
_PART = re.compile(r"\$\{([^${}]+)\}")


def parse_xp_config(text: str | dict) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CheckpointError(f"xp.cfg is not valid YAML ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(data, dict):
        raise CheckpointError("xp.cfg is not a mapping")
    return data


def _lookup(root: dict[str, Any], dotted: str) -> Any:
    if dotted.startswith("oc.") or ":" in dotted:
        raise CheckpointError(f"xp.cfg: cannot resolve resolver interpolation ${{{dotted}}} in a needed section")
    node: Any = root
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise CheckpointError(f"xp.cfg: interpolation ${{{dotted}}} points to a missing key")
        node = node[part]
    return node


def resolve(node: Any, root: dict[str, Any], _depth: int = 0) -> Any:
    """Resolve interpolations inside ``node`` (a sub-tree of ``root``), recursively."""
    if _depth > 32:
        raise CheckpointError("xp.cfg: interpolation cycle")
    if isinstance(node, dict):
        return {k: resolve(v, root, _depth) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, root, _depth) for v in node]
    if isinstance(node, str):
        full = _FULL.match(node)
        if full:
            return resolve(_lookup(root, full.group(1)), root, _depth + 1)
        if "${" in node:
            return _PART.sub(lambda m: str(resolve(_lookup(root, m.group(1)), root, _depth + 1)), node)
    return node


def section(root: dict[str, Any], name: str, default: Any = None) -> Any:
    """The resolved sub-section ``name`` (dotted) of the config, or ``default`` when absent."""
    try:
        node = _lookup(root, name)
    except CheckpointError:
        return default
    return resolve(node, root)
