"""The model registry: named configurations, listed and looked up with "did you mean" errors."""

from __future__ import annotations

import difflib
import fnmatch

from medseg_zoo._contract import ModelConfig
from medseg_zoo.errors import UnknownModelError

__all__ = ["get_config", "has_published_weights", "list_models", "model_info", "register_model"]

_REGISTRY: dict[str, ModelConfig] = {}


def register_model(config: ModelConfig, *, overwrite: bool = False) -> ModelConfig:
    """Add a named configuration to the registry.

    Args:
        config: The configuration; its ``name`` is the registry key.
        overwrite: Replace an existing entry of the same name instead of raising.

    Returns:
        The configuration, so a model file can keep a reference.

    Raises:
        ValueError: If the name is taken and ``overwrite`` is false.
    """
    if config.name in _REGISTRY and not overwrite:
        raise ValueError(f"model name {config.name!r} is already registered; pass overwrite=True to replace it")
    unknown = [m for m in config.members if m not in _REGISTRY]
    if unknown:
        raise ValueError(f"ensemble {config.name!r}: members {unknown} are not registered (register them first)")
    _REGISTRY[config.name] = config
    return config


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered model names, sorted.

    Args:
        pattern: Shell-style wildcard filter, e.g. ``"unetr*"``.
        pretrained: Only names whose weights are published.
    """
    return sorted(
        name
        for name, cfg in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern) and (not pretrained or has_published_weights(cfg))
    )


def has_published_weights(cfg: ModelConfig) -> bool:
    """Whether a configuration's weights can be downloaded (an ensemble's: every member's)."""
    if cfg.members:
        return all(_REGISTRY[m].has_weights for m in cfg.members if m in _REGISTRY)
    return cfg.has_weights


def get_config(name: str) -> ModelConfig:
    """The registered configuration of ``name``.

    Raises:
        UnknownModelError: If the name is not registered; the message lists the closest names.
    """
    if not isinstance(name, str):
        raise UnknownModelError(f"a model name is a string such as 'unetr_brats', got {name!r}; see list_models()")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_REGISTRY))}") from None


def model_info(name: str) -> dict:
    """A JSON-serialisable description of a registered configuration (architecture, arguments, contract)."""
    return get_config(name).to_dict()
