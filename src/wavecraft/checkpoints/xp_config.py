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


#: Largest ``xp.cfg`` parsed (AudioCraft's are a few tens of kB; YAML parsing is slow on huge inputs).
MAX_XP_CFG_CHARS = 2 * 2 ** 20
#: Bounds of one resolution: nesting depth, interpolations followed, nodes visited, length of a built string.
#: Without them a self-referencing YAML alias recurses forever and ``a: ${b}${b}`` chains grow exponentially.
MAX_DEPTH = 64
MAX_LOOKUPS = 10000
MAX_NODES = 200000
MAX_STRING = 65536


def parse_xp_config(text: str | dict) -> dict[str, Any]:
    """The YAML mapping in ``text`` (a dict is taken as already parsed); a one-line :class:`CheckpointError`
    for anything else."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise CheckpointError(f"xp.cfg must be a YAML string, got {type(text).__name__}")
    if len(text) > MAX_XP_CFG_CHARS:
        raise CheckpointError(f"xp.cfg is {len(text)} characters long, more than the {MAX_XP_CFG_CHARS} accepted")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CheckpointError(f"xp.cfg is not valid YAML ({' '.join(str(e).split())[:120]})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a date like 2024-13-45
        raise CheckpointError(f"xp.cfg has an invalid value ({' '.join(str(e).split())[:120]})") from None
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


class _Budget:
    """Work left to one :func:`resolve` call (shared by its recursive calls)."""

    def __init__(self) -> None:
        self.lookups = MAX_LOOKUPS
        self.nodes = MAX_NODES

    def visit(self) -> None:
        self.nodes -= 1
        if self.nodes < 0:
            raise CheckpointError(f"xp.cfg: a needed section expands to more than {MAX_NODES} values")

    def lookup(self) -> None:
        self.lookups -= 1
        if self.lookups < 0:
            raise CheckpointError(f"xp.cfg: more than {MAX_LOOKUPS} interpolations in a needed section")


def resolve(node: Any, root: dict[str, Any], _depth: int = 0, _budget: _Budget | None = None) -> Any:
    """Resolve interpolations inside ``node`` (a sub-tree of ``root``), recursively."""
    budget = _budget or _Budget()
    budget.visit()
    if _depth > MAX_DEPTH:
        raise CheckpointError("xp.cfg: interpolation cycle or nesting too deep")
    if isinstance(node, dict):
        return {k: resolve(v, root, _depth + 1, budget) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, root, _depth + 1, budget) for v in node]
    if isinstance(node, str):
        full = _FULL.match(node)
        if full:
            budget.lookup()
            return resolve(_lookup(root, full.group(1)), root, _depth + 1, budget)
        if "${" in node:
            def part(m: re.Match[str]) -> str:
                budget.lookup()
                value = str(resolve(_lookup(root, m.group(1)), root, _depth + 1, budget))
                if len(value) > MAX_STRING:
                    raise CheckpointError(f"xp.cfg: interpolation ${{{m.group(1)}}} is longer than {MAX_STRING}")
                return value
            built = _PART.sub(part, node)
            if len(built) > MAX_STRING:
                raise CheckpointError(f"xp.cfg: an interpolated value is longer than {MAX_STRING} characters")
            return built
    return node


def section(root: dict[str, Any], name: str, default: Any = None) -> Any:
    """The resolved sub-section ``name`` (dotted) of the config, or ``default`` when absent."""
    try:
        node = _lookup(root, name)
    except CheckpointError:
        return default
    return resolve(node, root)


def mapping(root: dict[str, Any], name: str, required: bool = False) -> dict[str, Any]:
    """The resolved section ``name`` as a dict (``{}`` when absent or null, unless ``required``); ``ValueError``
    when it is something else."""
    node = section(root, name)
    if node is None and not required:
        return {}
    if not isinstance(node, dict):
        what = "missing" if node is None else f"not a mapping ({type(node).__name__})"
        raise ValueError(f"xp.cfg section {name} is {what}")
    return node
