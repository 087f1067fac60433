"""Dice and HD95 per output channel, on MONAI's metric functions, with one written policy for empty masks.

Empty-mask policy (MONAI leaves these cases as NaN or a warning; averaging NaN silently drops a case):

| ground truth | prediction | Dice | HD95 |
|---|---|---|---|
| empty | empty | 1 | 0 mm |
| empty | not empty | 0 | the volume's diagonal in mm |
| not empty | empty | 0 | the volume's diagonal in mm |

So every case gives a finite number for every channel, and a missed or hallucinated structure scores as the worst
possible result rather than vanishing from the mean.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from medseg_zoo.errors import MissingExtraError

__all__ = [
    "BRATS_HD95_PENALTY",
    "BRATS_POLICY",
    "EMPTY_POLICY",
    "brats_evaluator",
    "brats_metrics",
    "dice",
    "hd95",
    "volume_diagonal",
]

EMPTY_POLICY = (
    "both empty: Dice 1, HD95 0 mm; one of ground truth and prediction empty: Dice 0, HD95 the volume diagonal (mm)"
)

Mask = np.ndarray | torch.Tensor


def _channels(pred: Mask, target: Mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as ``(1, C, ...)`` float tensors of 0/1, checked to have the same shape."""
    p, t = (torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m) for m in (pred, target))
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from ground truth shape {tuple(t.shape)}")
    if p.ndim < 2:
        raise ValueError(f"expected channels first (C, X, Y[, Z]), got shape {tuple(p.shape)}")
    return (p > 0).float()[None], (t > 0).float()[None]


def dice(pred: Mask, target: Mask) -> torch.Tensor:
    """Dice of binary masks ``(C, ...)`` per channel, ``(C,)``; empty masks follow `EMPTY_POLICY`."""
    p, t = _channels(pred, target)
    return compute_dice(p, t, include_background=True, ignore_empty=False)[0].cpu()


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length in mm of the diagonal of a grid of ``shape`` voxels of ``spacing`` mm (1 mm by default)."""
    spacing = spacing or (1.0,) * len(shape)
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


def hd95(pred: Mask, target: Mask, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """95th-percentile symmetric Hausdorff distance in mm per channel, ``(C,)``.

    Args:
        pred: Binary masks ``(C, X, Y, Z)``.
        target: Ground truth of the same shape.
        spacing: Voxel size in mm per spatial axis (1 mm by default).

    Empty masks follow `EMPTY_POLICY`.
    """
    p, t = _channels(pred, target)
    spatial = tuple(p.shape[2:])
    spacing = tuple(float(s) for s in spacing) if spacing is not None else None
    if spacing is not None and len(spacing) != len(spatial):
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for {len(spatial)} spatial axes")
    present_p = p.flatten(2).any(-1)[0]
    present_t = t.flatten(2).any(-1)[0]
    both = present_p & present_t
    out = torch.where(present_p | present_t, volume_diagonal(spatial, spacing), 0.0).float()
    if both.any():
        with warnings.catch_warnings():  # MONAI warns about the empty channels we do not hand it
            warnings.simplefilter("ignore")
            distances = compute_hausdorff_distance(
                p[:, both], t[:, both], include_background=True, percentile=95, spacing=spacing
            )[0]
        out[both] = distances.float().cpu()
    return out


# --- BraTS lesion-wise metrics (panoptica) ----------------------------------------------------------------------

BRATS_HD95_PENALTY = 373.0  # mm: the diagonal of BraTS's 240 x 240 x 155 1 mm cube, which brats-evaluation puts for inf
BRATS_POLICY = (
    "BraTS (panoptica, brats-evaluation's configuration): lesions are connected components matched to ground-truth "
    "lesions by maximum bipartite matching on Dice (> 1e-6); lesion-wise Dice, NSD and HD95 are panoptica's means over "
    "matched lesions with unmatched ones scored 0 (Dice, NSD) or inf (HD95); a region empty in both prediction and "
    "ground truth gives NaN, left out of means over cases; a global HD95 of inf (one side empty) is reported as 373 mm "
    "as brats-evaluation does; NSD tolerance: the smallest voxel size"
)

# brats-evaluation's "gli" configuration with the region groups left open: the challenges' metrics, edge cases,
# instance approximation and matching, so the numbers are the official evaluation's.
_BRATS_CONFIG = """!Panoptica_Evaluator
decision_metric: null
decision_threshold: null
edge_case_handler: !EdgeCaseHandler
  empty_list_std: !EdgeCaseResult NAN
  listmetric_zeroTP_handling:
    !Metric DSC: !MetricZeroTPEdgeCaseHandling {{empty_prediction_result: !EdgeCaseResult ZERO,
      empty_reference_result: !EdgeCaseResult ZERO, no_instances_result: !EdgeCaseResult NAN,
      normal: !EdgeCaseResult ZERO}}
    !Metric NSD: !MetricZeroTPEdgeCaseHandling {{empty_prediction_result: !EdgeCaseResult ZERO,
      empty_reference_result: !EdgeCaseResult ZERO, no_instances_result: !EdgeCaseResult NAN,
      normal: !EdgeCaseResult ZERO}}
    !Metric HD95: !MetricZeroTPEdgeCaseHandling {{empty_prediction_result: !EdgeCaseResult INF,
      empty_reference_result: !EdgeCaseResult INF, no_instances_result: !EdgeCaseResult NAN,
      normal: !EdgeCaseResult INF}}
expected_input: !InputType SEMANTIC
global_metrics: [!Metric DSC, !Metric NSD, !Metric HD95]
instance_approximator: !ConnectedComponentsInstanceApproximator {{cca_backend: null}}
instance_matcher: !MaxBipartiteMatching {{matching_metric: !Metric DSC, matching_threshold: 0.000001}}
instance_metrics: [!Metric DSC, !Metric NSD, !Metric HD95]
log_times: false
save_group_times: false
segmentation_class_groups: !SegmentationClassGroups
  groups:
{groups}
verbose: false
"""


def brats_evaluator(regions: dict[str, Sequence[int]]) -> object:
    """A panoptica evaluator with the BraTS challenges' configuration, one group per region (e.g. ``{"TC": (2, 3),
    "WT": (1, 2, 3), "ET": (3,)}``): several labels are merged into one structure, as brats-evaluation's TC and WT.

    Raises:
        MissingExtraError: Without panoptica (the ``[brats]`` extra), with a one-line message naming it.
    """
    try:
        from panoptica import Panoptica_Evaluator
    except ImportError:
        raise MissingExtraError("BraTS metrics need panoptica: pip install 'medseg-zoo[brats]'") from None
    import tempfile
    from pathlib import Path

    groups = []
    for name, values in regions.items():
        kind = "LabelMergeGroup" if len(values) > 1 else "LabelGroup"
        labels = [int(v) for v in values]
        groups.append(f"    {name}: !{kind}\n      single_instance: false\n      value_labels: {labels}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        path = Path(tmp) / "brats.yaml"
        path.write_text(_BRATS_CONFIG.format(groups="\n".join(groups)))
        # (it prints a note that nested regions share labels: intended, as in the challenges' own configuration)
        return Panoptica_Evaluator.load_from_config(path)


def brats_metrics(
    pred: np.ndarray, target: np.ndarray, evaluator: object, spacing: Sequence[float]
) -> dict[str, dict[str, float]]:
    """Lesion-wise and global Dice, NSD and HD95 (mm) per region of label maps ``(X, Y, Z)``, with lesion counts.

    Args:
        pred: Predicted label values.
        target: Ground-truth label values on the same grid.
        evaluator: From `brats_evaluator`.
        spacing: Voxel size in mm (the label file's zooms, as panoptica reads them from a NIfTI header).

    Returns:
        ``{region: {"lesion_dice", "lesion_nsd", "lesion_hd95", "dice", "nsd", "hd95", "tp", "fp", "fn"}}``, the
        regions named in lower case as panoptica names its groups; see `BRATS_POLICY` for empty regions and infinite
        distances.
    """
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # panoptica prints its citation and warns on empty groups
        results = evaluator.evaluate(
            np.asarray(pred).astype(np.uint8), np.asarray(target).astype(np.uint8), voxelspacing=tuple(spacing)
        )
    out = {}
    for region, result in results.items():
        r = result.to_dict()
        hd95_global = float(r["global_bin_hd95"])
        out[region] = {
            "lesion_dice": float(r["sq_dsc"]),
            "lesion_nsd": float(r["sq_nsd"]),
            "lesion_hd95": float(r["sq_hd95"]),
            "dice": float(r["global_bin_dsc"]),
            "nsd": float(r["global_bin_nsd"]),
            "hd95": BRATS_HD95_PENALTY if math.isinf(hd95_global) else hd95_global,
            "tp": float(r["tp"]),
            "fp": float(r["fp"]),
            "fn": float(r["fn"]),
        }
    return out
