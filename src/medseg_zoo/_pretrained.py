"""Loading a configuration's published weights into a built model: fetch, read safely, convert, cache, adapt,
load strictly, and report what was adapted."""

from __future__ import annotations

import io
import logging
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import ModelConfig, TaskContract, channel_order
from medseg_zoo._download import WeightsError, cache_root, evict, fetch, record_hash, recorded_hash
from medseg_zoo.convert import ConversionError, convert_state_dict
from medseg_zoo.convert._common import is_computed

__all__ = ["LoadReport", "fill_computed", "load_pretrained", "load_state", "read_checkpoint"]

logger = logging.getLogger("medseg_zoo")


@dataclass
class LoadReport:
    """What happened to the weights on their way into the model.

    Attributes:
        source: Where they came from (a Hub file, a download, a checkpoint folder).
        sha256: The hash of the weights file, when known.
        loaded: Parameters and buffers taken from the file as they are.
        adapted: Stem parameters adapted to another number of input channels.
        reordered: Stem parameters whose input channels were permuted to the requested order.
        reinitialized: Parameters left at their fresh initialisation: a head for other outputs, and everything
            the file does not cover (the decoder of an encoder-only source).
        interpolated: Position embeddings resized to another roi.
        dropped: Keys of the file outside what the source covers (a pretraining decoder): not loaded.
    """

    source: str
    sha256: str = ""
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        """One line: where from, then each kind with its count and first names."""
        origin = f"{self.source} (sha256 {self.sha256[:12]})" if self.sha256 else self.source

        def kind(label: str, keys: list[str], shown: int = 3) -> str:
            names = ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
            return f"{label} {len(keys)} ({names})"

        parts = [f"from {origin}: " + kind("loaded", self.loaded)]
        for label, keys in (
            ("adapted to the input channels", self.adapted),
            ("reordered", self.reordered),
            ("interpolated", self.interpolated),
            ("re-initialised", self.reinitialized),
            ("dropped from the file", self.dropped),
        ):
            if keys:
                parts.append(kind(label, keys))
        return "; ".join(parts)


_WRAPPERS = ("state_dict", "model", "network", "net", "network_weights")  # training checkpoints nest the weights


def _open_member(path: Path, member: str) -> io.BytesIO:
    """The bytes of the checkpoint ``member`` (a name or the end of a path) of the zip archive ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n == member or n.endswith("/" + member)]
            if len(names) != 1:
                raise WeightsError(
                    f"{path}: expected one {member!r} in the archive, found {len(names)} "
                    f"(members: {', '.join(archive.namelist()[:8])})"
                )
            return io.BytesIO(archive.read(names[0]))
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{path}: not a readable zip archive ({exc})") from None


def read_checkpoint(path: Path, fmt: str, member: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or from a pickle opened with ``torch.load(weights_only=True)``
    (inside a zip archive when ``member`` names it).

    Raises:
        WeightsError: Unreadable file, or a pickle that needs more than tensors (it is never executed).
    """
    if fmt == "safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    where = f"{path}" + (f" ({member})" if member else "")
    try:
        obj = torch.load(_open_member(path, member) if member else path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{where}: the pickle needs objects beyond tensors and plain containers; refusing to unpickle it "
            f"(torch.load weights_only=True said: {str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{where}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from None
    for wrapper in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{where}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def fill_computed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with the model's own values for its computed buffers."""
    own = {k: v for k, v in model.state_dict().items() if is_computed(k)}
    return {**{k: v for k, v in state.items() if not is_computed(k)}, **own}


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
    """Load the first published weights of ``cfg`` into ``model`` (built for ``contract``), exactly.

    Every parameter the source covers (`WeightSource.covers`; all of them by default) must come from the file
    with its shape; anything else the file holds is an error unless its converter drops it by name. Adaptation
    (reported): stem weights when the input channel count differs from the weights', head weights re-initialised
    when the outputs differ, position embeddings interpolated when the roi differs; what the source does not cover
    (the decoder of a pretrained encoder) keeps its fresh initialisation.

    Raises:
        WeightsError: The weights cannot be fetched or read, or do not fit (the first missing, unexpected and
            mis-shaped keys are named).
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
    first_use = recorded_hash(source, cache_dir) is None
    converted = cache_root(cache_dir) / "converted" / f"{cfg.name}-{sha256[:16]}.safetensors"
    if converted.exists():
        state = load_file(converted)
    else:
        try:
            state = convert_state_dict(read_checkpoint(path, source.format, source.member), source.format, cfg)
        except WeightsError:
            evict(path)  # a file that cannot be read must not stay cached
            raise
        except ConversionError as exc:
            raise WeightsError(f"{path}: {exc}") from None
        if source.format != "safetensors":  # later loads never unpickle
            atomic_write(converted, lambda tmp: save_file({k: v.contiguous() for k, v in state.items()}, tmp))
    record_hash(source, sha256, cache_dir)
    if first_use and "NC" in cfg.license.upper().replace("-", " ").split():
        warnings.warn(
            f"{cfg.name}: these weights are licensed {cfg.license}: non-commercial use only. {cfg.notes}",
            UserWarning,
            stacklevel=3,
        )

    return load_state(model, cfg, contract, state, source.location, source.covers, sha256=sha256)


def load_state(
    model: nn.Module,
    cfg: ModelConfig,
    contract: TaskContract,
    state: dict[str, torch.Tensor],
    source: str,
    covers: tuple[str, ...] = (),
    *,
    sha256: str = "",
) -> LoadReport:
    """Load a converted state dict of ``cfg``'s weights into ``model`` (built for ``contract``): adapt the stem,
    head and position embedding, check that every covered key fits, keep the rest fresh; see `load_pretrained`.

    Raises:
        WeightsError: If the weights do not fit.
    """
    base = cfg.contract or contract  # a generic architecture's weights are for the model as built
    report = LoadReport(source, sha256)
    target = model.state_dict()
    if covers:  # the file's other parts (a pretraining decoder) are not part of the starting point
        report.dropped = sorted(k for k in state if not k.startswith(covers))
        state = {k: v for k, v in state.items() if k.startswith(covers)}
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
        if key in target and state[key].shape != target[key].shape and state[key].shape[-1] == target[key].shape[-1]:
            owner = model.get_submodule(key.rpartition(".")[0])  # a module with patch_size and grid_size
            old_grid = tuple(s // owner.patch_size for s in base.roi_size)
            state[key] = _interpolate_pos(state[key], old_grid, owner.grid_size)
            report.interpolated.append(key)
    _check_fit(state, target, covers, f"{source}: the weights do not fit {cfg.name}")
    fresh = [k for k in target if k not in state and not is_computed(k)]
    report.reinitialized += fresh
    changed = {*report.adapted, *report.reordered, *report.reinitialized, *report.interpolated}
    report.loaded = [k for k in state if k not in changed]
    model.load_state_dict(fill_computed({**state, **{k: target[k] for k in fresh}}, model), strict=True)
    logger.info("%s: %s", cfg.name, report)
    return report


def _check_fit(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], covers: tuple[str, ...], what: str):
    """Every covered key present with its shape, nothing unknown; else the first of each kind is named."""
    missing = [k for k in target if k not in state and not is_computed(k) and (not covers or k.startswith(covers))]
    unexpected = [k for k in state if k not in target]
    shapes = [k for k in state if k in target and state[k].shape != target[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} of another shape (first: {k}, {tuple(state[k].shape)} in the file, "
            f"{tuple(target[k].shape)} in the model)"
        )
    if problems:
        raise WeightsError(f"{what}: {'; '.join(problems)}")
