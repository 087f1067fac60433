"""Loading a configuration's published weights into a built model: fetch, read safely, convert, cache, adapt,
load strictly, and report what was adapted."""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource, channel_order
from medseg_zoo._download import WeightsError, cache_root, evict, fetch, record_hash

__all__ = ["LoadReport", "fill_computed", "is_computed", "load_pretrained", "read_checkpoint"]

logger = logging.getLogger("medseg_zoo")


@dataclass
class LoadReport:
    """What happened to the weights on their way into the model.

    Attributes:
        source: Where they came from.
        adapted: Stem parameters adapted to another number of input channels.
        reordered: Stem parameters whose input channels were permuted to the requested order.
        reinitialized: Head parameters left at their fresh initialisation (other outputs).
        interpolated: Position embeddings resized to another roi.
    """

    source: str
    adapted: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"loaded {self.source}"]
        for name in ("adapted", "reordered", "reinitialized", "interpolated"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name}: {', '.join(keys)}")
        return "; ".join(parts)


def read_checkpoint(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or from a pickle opened with ``torch.load(weights_only=True)``.

    Raises:
        WeightsError: Unreadable file, or a pickle that needs more than tensors (it is never executed).
    """
    if fmt == "safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: the pickle needs objects beyond tensors and plain containers; refusing to unpickle it "
            f"(torch.load weights_only=True said: {str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from None
    for wrapper in ("state_dict", "model", "network"):  # training checkpoints nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


COMPUTED_BUFFERS = ("relative_position_index",)  # buffers networks compute themselves: rebuilt, never stored


def is_computed(key: str) -> bool:
    """Whether a state-dict key is a buffer the network rebuilds itself (Swin's relative_position_index)."""
    return key.endswith(COMPUTED_BUFFERS)


def fill_computed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with the model's own values for its computed buffers."""
    own = {k: v for k, v in model.state_dict().items() if is_computed(k)}
    return {**{k: v for k, v in state.items() if not is_computed(k)}, **own}


def _convert(state: dict[str, torch.Tensor], source: WeightSource, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    if source.format == "self-attention-cv":
        from medseg_zoo.convert.self_attention_cv import convert_unetr

        return convert_unetr(state, num_heads=cfg.model_args["num_heads"])
    if source.format == "monai":
        from medseg_zoo.convert.monai import convert_unetr

        return convert_unetr(state)
    # safetensors in the zoo's layout, and MONAI bundles of classes the zoo registers, as they are
    return {k: v for k, v in state.items() if not is_computed(k)}


def _adapt_stem(weight: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Every new input channel gets the sum of the old channels' weights divided by the new count, so a volume
    whose channels are all equal meets the first layer as the pretrained model met its own channels all set to
    that volume. Convolutions hold channels on dimension 1; linear patch embeddings flatten patches as
    ``(p1 p2 p3 c)``, channels last."""
    if weight.ndim == 2:
        per_channel = rearrange(weight, "o (p c) -> o c p", c=old)
        return rearrange(_adapt_stem(per_channel, old, new), "o c p -> o (p c)")
    return (weight.sum(dim=1, keepdim=True) / new).expand(-1, new, *weight.shape[2:]).contiguous()


def _reorder_stem(weight: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The input channels of a stem weight permuted: new channel ``i`` reads old channel ``order[i]``."""
    if weight.ndim == 2:  # linear patch embedding, patches flattened as (p1 p2 p3 c)
        per_channel = rearrange(weight, "o (p c) -> o c p", c=len(order))
        return rearrange(per_channel[:, order], "o c p -> o (p c)").contiguous()
    return weight[:, order].contiguous()


def _interpolate_pos(pos: torch.Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...]) -> torch.Tensor:
    grid = rearrange(pos, "1 (d h w) e -> 1 e d h w", d=old_grid[0], h=old_grid[1], w=old_grid[2])
    grid = F.interpolate(grid, size=new_grid, mode="trilinear", align_corners=False)
    return rearrange(grid, "1 e d h w -> 1 (d h w) e")


def load_pretrained(
    model: nn.Module,
    cfg: ModelConfig,
    contract: TaskContract,
    *,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> LoadReport:
    """Load the first published weights of ``cfg`` into ``model`` (built for ``contract``), strictly.

    Adaptation (reported): stem weights when the input channel count differs from the weights', head weights
    re-initialised when the outputs differ, position embeddings interpolated when the roi differs. Any other
    missing, unexpected or mis-shaped key is an error.
    """
    failures = []
    for source in (w for w in cfg.weights if w.published):  # mirrors in order; the first that verifies wins
        try:
            path, sha256 = fetch(source, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
            break
        except WeightsError as exc:
            failures.append(str(exc))
    else:
        raise WeightsError(f"{cfg.name}: no weight source could be used:\n  " + "\n  ".join(failures))
    converted = cache_root(cache_dir) / "converted" / f"{cfg.name}-{sha256[:16]}.safetensors"
    if converted.exists():
        state = load_file(converted)
    else:
        try:
            state = _convert(read_checkpoint(path, source.format), source, cfg)
        except WeightsError:
            evict(path)  # a file that cannot be read must not stay cached
            raise
        if source.format != "safetensors":  # later loads never unpickle
            atomic_write(converted, lambda tmp: save_file({k: v.contiguous() for k, v in state.items()}, tmp))
    record_hash(source, sha256, cache_dir)

    base = cfg.contract
    report = LoadReport(f"{source.location} (sha256 {sha256[:12]})")
    target = model.state_dict()
    order = channel_order(base.in_channels, contract.in_channels)
    if len(contract.in_channels) != len(base.in_channels):
        for key in cfg.stem:
            if key in state:
                state[key] = _adapt_stem(state[key], len(base.in_channels), len(contract.in_channels))
                report.adapted.append(key)
    elif order is not None and order != list(range(len(order))):  # the same channels named in another order
        for key in cfg.stem:
            if key in state:
                state[key] = _reorder_stem(state[key], order)
                report.reordered.append(key)
    if contract.out_channels != base.out_channels:
        for key in [k for k in state if k.startswith(cfg.head)]:
            state[key] = target[key]
            report.reinitialized.append(key)
    for key in [k for k in state if k.endswith("pos_embed")]:
        if key in target and state[key].shape != target[key].shape:
            embed = model.get_submodule(key.rpartition(".")[0])  # a PatchEmbed3d
            old_grid = tuple(s // embed.patch_size for s in base.roi_size)
            state[key] = _interpolate_pos(state[key], old_grid, embed.grid_size)
            report.interpolated.append(key)
    try:
        model.load_state_dict(fill_computed(state, model), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: the weights do not fit {cfg.name} ({exc})") from None
    logger.info("%s: %s", cfg.name, report)
    return report
