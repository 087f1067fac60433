"""Plan from the data, as nnU-Net v2 does: target spacing, intensity normalisation, patch and batch size read off a
data set's fingerprint by fixed rules, for a zoo architecture; and, for a pretrained model, what in the data
differs from its contract.

nnU-Net v2's rules (``ExperimentPlanner``, ``nnunetv2/configuration.py``, the normalisation schemes), as applied:

- Target spacing: the median per axis; when the coarsest axis is anisotropic in spacing (more than
  ``ANISO_THRESHOLD`` = 3 times the largest other) *and* in voxels (its median size times 3 below the smallest
  other), it takes the 10th percentile of that axis's spacings, and never less than the largest other spacing.
- Normalisation: a channel named CT is clipped to the data set's foreground 0.5 / 99.5 percentiles, then z-scored
  with the foreground mean and standard deviation (``clip_zscore``); any other channel is z-scored per case, inside
  the non-zero region when cropping to it leaves less than 3/4 of the voxels (median over the cases;
  ``zscore_nonzero_channelwise``), over the whole volume otherwise (``zscore_channelwise``).
- Patch: the aspect ratio of the target spacing scaled to the volume of 256^3, clipped to the median shape at the
  target spacing, made divisible by the network's downsampling; while a training step of batch 2 does not fit the
  memory budget, the axis largest against the median shape shrinks by one downsampling step.
- Batch: as many patches as fit the budget, at most 5 % of the data set's voxels per batch, at least 2.

Where the zoo differs: the network is the zoo architecture asked for (nnU-Net designs its own), so its
downsampling is fixed and its memory is estimated from that network itself (the float32 outputs of every layer of
a training step, which autograd keeps, and the weights with their gradients and two optimiser moments), not from
nnU-Net's reference constant.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg_zoo._contract import TaskContract, channel_order, config_of, is_generic
from medseg_zoo.data.discovery import DataSet, discover
from medseg_zoo.data.fingerprint import Fingerprint, fingerprint, is_ct

__all__ = ["ANISO_THRESHOLD", "PLAN_FORMAT", "Plan", "compare_with_contract", "is_plan_file", "plan"]

PLAN_FORMAT = "medseg-zoo-plan"

ANISO_THRESHOLD = 3  # nnU-Net v2's nnunetv2.configuration.ANISO_THRESHOLD
MASK_RELATIVE_SIZE = 0.75  # z-score inside the non-zero region below this median fraction kept by cropping
INITIAL_PATCH_VOXELS = 256**3
DATASET_COVERED = 0.05  # at most this fraction of the data set's voxels in one batch
MIN_BATCH = 2
MEMORY_USE = 0.85  # of the budget: the rest for the framework, workspaces and fragmentation


@dataclass(frozen=True)
class Plan:
    """What to train with, and why.

    Attributes:
        model: The registry name planned for.
        spacing: Target spacing in mm, per axis of the contract's orientation (as a contract's ``spacing``).
        roi_size: Patch size in voxels.
        batch_size: Patches per step.
        normalization: The contract normalisation of every channel.
        use_nonzero_mask: Whether the z-score is computed inside the non-zero region.
        orientation: The axes the plan is in (the contract's).
        memory_gib: The memory budget of one training step.
        step_memory_gib: The estimated memory of one training step at ``roi_size`` and ``batch_size``.
        divisible_by: The network's downsampling per axis (the patch is a multiple of it).
        median_shape: The median shape after cropping, at the target spacing.
        rules: What each decision read from the fingerprint, in words.
        fingerprint: The figures read (spacings, shapes, intensities).
    """

    model: str
    spacing: tuple[float, float, float]
    roi_size: tuple[int, int, int]
    batch_size: int
    normalization: str
    use_nonzero_mask: bool
    orientation: str | None
    memory_gib: float
    step_memory_gib: float
    divisible_by: tuple[int, int, int]
    median_shape: tuple[int, int, int]
    rules: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, **asdict(self)}

    def contract(self, contract: TaskContract) -> TaskContract:
        """``contract`` with the plan's spacing, roi and normalisation."""
        return replace(contract, spacing=self.spacing, roi_size=self.roi_size, normalization=self.normalization)

    def apply(self, model: nn.Module) -> nn.Module:
        """``model`` with the plan in its contract (saved with it, so `medseg_zoo.predict` prepares inputs as
        training did) and as ``model.plan`` (a run's ``config.json`` records it)."""
        cfg = config_of(model)
        model.pretrained_cfg = cfg.replace(contract=self.contract(cfg.contract))
        model.plan = self.to_dict()
        return model

    def summary(self) -> list[str]:
        """The plan in a few lines."""

        def axes(v) -> str:
            return " x ".join(f"{x:.3g}" for x in v)

        return [
            f"plan for {self.model}: spacing {axes(self.spacing)} mm, roi {axes(self.roi_size)}, batch "
            f"{self.batch_size}, {self.normalization}",
            *(f"  {name}: {why}" for name, why in self.rules.items()),
        ]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON (atomically)."""
        from medseg_zoo._atomic import atomic_write

        text = json.dumps(self.to_dict(), indent=2)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def is_plan_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a plan medseg-zoo wrote."""
    try:
        return json.loads(Path(path).read_text()).get("format") == PLAN_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[np.ndarray, str]:
    """nnU-Net's full-resolution target spacing of cases with ``spacings`` and ``shapes`` (N, 3), and why."""
    target = np.percentile(spacings, 50, axis=0)
    size = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    aniso_spacing = target[worst] > ANISO_THRESHOLD * max(target[others])
    aniso_voxels = size[worst] * ANISO_THRESHOLD < min(size[others])
    if not (aniso_spacing and aniso_voxels):
        return target, "the median spacing per axis"
    lowres = float(np.percentile(spacings[:, worst], 10))
    if lowres < max(target[others]):
        lowres = max(max(target[others]), lowres) + 1e-5
    target[worst] = lowres
    return target, (
        f"the median per axis; axis {worst} is anisotropic (spacing > {ANISO_THRESHOLD}x and voxels < 1/"
        f"{ANISO_THRESHOLD} of the others): its 10th percentile, {lowres:.4g} mm"
    )


def normalization(found: Fingerprint) -> tuple[str, bool, str]:
    """The contract normalisation of the data's channels, whether it uses the non-zero mask, and why.

    Raises:
        ValueError: For CT beside other channels (a contract has one normalisation for all of them).
    """
    ct = [is_ct(c) for c in found.channels]
    if any(ct) and not all(ct):
        raise ValueError(
            f"{found.root}: channels {', '.join(found.channels)} mix CT with other modalities; a contract normalises "
            "every channel alike: give --normalization for all of them"
        )
    if all(ct):
        if len(found.channels) > 1:
            raise ValueError(f"{found.root}: several CT channels; give --normalization")
        s = found.intensities[0]
        value = f"clip_zscore:{s.percentile_00_5:.6g}:{s.percentile_99_5:.6g}:{s.mean:.6g}:{max(s.std, 1e-8):.6g}"
        return value, False, "CT: clipped to the foreground's 0.5-99.5 percentiles, z-scored with its mean and std"
    kept = found.median_relative_size_after_crop
    if kept < MASK_RELATIVE_SIZE:
        why = f"z-score per case inside the non-zero region (cropping keeps {kept:.0%} < 75 % of the voxels)"
        return "zscore_nonzero_channelwise", True, why
    return "zscore_channelwise", False, f"z-score per case (cropping keeps {kept:.0%} >= 75 % of the voxels)"


def _build(name: str, channels: int, outputs: int, roi: tuple[int, int, int], args: dict) -> nn.Module:
    from medseg_zoo._factory import meta_model

    return meta_model(name, in_channels=channels, out_channels=outputs, roi_size=roi, **args)


def step_memory(model: nn.Module, roi: tuple[int, int, int]) -> tuple[int, int]:
    """Bytes of a float32 training step: per patch of ``roi``, every layer's output (what autograd keeps for the
    backward pass); once, the parameters with their gradients and two optimiser moments."""
    outputs = 0

    def count(module: nn.Module, inputs: Any, out: Any) -> None:
        nonlocal outputs
        for t in out if isinstance(out, list | tuple) else (out,):
            if isinstance(t, torch.Tensor):
                outputs += t.numel() * 4

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    channels = len(config_of(model).contract.in_channels)
    try:
        with torch.no_grad():
            model(torch.empty(1, channels, *roi, device="meta"))
    except RuntimeError:  # a network that cannot run on meta runs on fake tensors: shapes only, no memory
        from torch._subclasses.fake_tensor import FakeTensorMode

        outputs = 0
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
            model.to_empty(device="cpu")
            model(torch.empty(1, channels, *roi))
    finally:
        for h in handles:
            h.remove()
    return outputs, 4 * 4 * sum(p.numel() for p in model.parameters())


def plan(
    data: str | os.PathLike | DataSet,
    model: str = "unet",
    *,
    memory_gib: float = 8.0,
    model_args: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Plan:
    """Plan spacing, normalisation, patch and batch for training the architecture ``model`` on ``data``.

    Args:
        data: A data set folder or `DataSet`.
        model: A registry name whose network is built for the plan (a generic architecture such as ``"unet"``,
            ``"resenc_unet"``, ``"segresnet"``; a task model's network with the data's channels).
        memory_gib: Memory one training step may take (a GPU's, or the RAM for the CPU).
        model_args: Constructor arguments of the network (its widths).
        cache_dir: Cache root for the fingerprint.
        progress: A progress bar while the fingerprint is read.

    Raises:
        DataCheckError: The data set has errors (the whole report).
        ValueError: Data the rules cannot plan for (CT beside other channels), or a budget too small for the
            smallest patch.
    """
    from medseg_zoo._registry import get_config
    from medseg_zoo.data.checks import check_dataset

    dataset = data if isinstance(data, DataSet) else discover(data)
    check_dataset(dataset).raise_for_errors()  # every file readable, labels valid: the fingerprint reads them all
    cfg = get_config(model)
    args = dict(model_args or {})
    orientation = cfg.contract.orientation if cfg.contract is not None else "RAS"
    found = fingerprint(dataset, orientation=orientation, cache_dir=cache_dir, progress=progress)
    spacing, spacing_why = target_spacing(found.spacings, found.shapes_after_crop)
    norm, mask, norm_why = normalization(found)
    resampled = [np.round(np.array(c.shape_after_crop) * np.array(c.spacing) / spacing) for c in found.cases]
    median = np.median(np.array(resampled), axis=0)
    outputs = len(dataset.scheme.channels)
    channels = len(dataset.channels)
    probe = _build(model, channels, outputs, (32, 32, 32), args)
    divisible = np.array(probe.feature_info[-1]["reduction"]) if hasattr(probe, "feature_info") else np.ones(3, int)
    aspect = 1 / spacing
    patch = np.round(aspect * (INITIAL_PATCH_VOXELS / np.prod(aspect)) ** (1 / 3))
    patch = np.minimum(patch, median)
    smallest = 2 * divisible  # the deepest map at least 2 voxels per axis: instance norms need more than one
    patch = np.maximum(smallest, np.ceil(patch / divisible) * divisible).astype(int)
    budget = memory_gib * 1024**3 * MEMORY_USE

    def footprint(p: np.ndarray) -> tuple[int, int]:
        roi = tuple(int(x) for x in p)
        return step_memory(_build(model, channels, outputs, roi, args), roi)

    shrunk = 0
    per_patch, weights = footprint(patch)
    while MIN_BATCH * per_patch + weights > budget:
        ratio = np.where(patch > smallest, patch / median, -np.inf)
        axis = int(np.argmax(ratio))
        if not np.isfinite(ratio[axis]):
            raise ValueError(
                f"{model}: even a patch of {tuple(int(x) for x in patch)} voxels does not fit a training step in "
                f"{memory_gib:g} GiB; give a larger --memory or a smaller network"
            )
        patch[axis] -= divisible[axis]
        shrunk += 1
        per_patch, weights = footprint(patch)
    fit = int((budget - weights) // per_patch)
    voxels = float(np.prod(median)) * len(found.cases)
    covered = round(voxels * DATASET_COVERED / float(np.prod(patch)))
    batch = max(min(fit, covered), MIN_BATCH)
    roi = tuple(int(x) for x in patch)
    patch_why = (
        f"the spacing's aspect ratio at 256^3 voxels, clipped to the median shape {tuple(int(m) for m in median)}, "
        f"a multiple of the network's downsampling {tuple(int(d) for d in divisible)}"
        + (f", shrunk {shrunk} steps to fit {memory_gib:g} GiB" if shrunk else "")
    )
    batch_why = f"{fit} fit the budget, 5 % of the data set's voxels allow {covered}, at least {MIN_BATCH}"
    return Plan(
        model=model,
        spacing=tuple(round(float(s), 6) for s in spacing),
        roi_size=roi,
        batch_size=batch,
        normalization=norm,
        use_nonzero_mask=mask,
        orientation=orientation,
        memory_gib=memory_gib,
        step_memory_gib=round((batch * per_patch + weights) / 1024**3, 3),
        divisible_by=tuple(int(d) for d in divisible),
        median_shape=tuple(int(m) for m in median),
        rules={"spacing": spacing_why, "normalization": norm_why, "roi_size": patch_why, "batch_size": batch_why},
        fingerprint=found.to_dict(),
    )


def compare_with_contract(found: Fingerprint, contract: TaskContract, channels: tuple[str, ...]) -> list[str]:
    """What in the data differs from a pretrained model's contract, one line per finding naming the cases:
    spacing far from the contract's (and the factor of voxels it implies), channel names or modality that
    differ."""
    lines = []
    if contract.spacing is not None:
        target = np.array(contract.spacing)
        far = []
        for c in found.cases:
            factor = float(np.prod(np.array(c.spacing) / target))
            if factor > 2 or factor < 0.5:
                far.append((c.name, c.spacing, factor))
        if far:
            shown = ", ".join(f"{n} ({' x '.join(f'{s:.3g}' for s in sp)} mm: {f:.2g}x)" for n, sp, f in far[:4])
            lines.append(
                f"warning: {len(far)} of {len(found.cases)} cases lie far from the model's spacing "
                f"{' x '.join(f'{s:.3g}' for s in contract.spacing)} mm (resampling changes their voxel count by "
                f"the factor given): {shown}{' ...' if len(far) > 4 else ''}"
            )
    if not is_generic(contract.in_channels) and channel_order(tuple(channels), contract.in_channels) is None:
        lines.append(
            f"warning: the data's channels ({', '.join(channels)}) are not the model's "
            f"({', '.join(contract.in_channels)}): the stem is adapted, but the pretrained weights saw other inputs"
        )
    model_ct = any(is_ct(c) for c in contract.in_channels) or contract.normalization.startswith("clip_")
    data_ct = any(is_ct(c) for c in channels)
    if not is_generic(contract.in_channels) and model_ct != data_ct:
        lines.append(
            f"warning: the data is {'CT' if data_ct else 'not CT'} (channels {', '.join(channels)}) and the model "
            f"was trained on {'CT' if model_ct else 'other modalities'}: its normalisation {contract.normalization} "
            "may not suit the data"
        )
    return lines
