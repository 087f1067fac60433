"""Sliding-window inference that streams finished planes out instead of holding the whole output.

Windows are visited layer by layer along the last axis; once every window touching a plane has been added, the
plane is final and handed to a callback. The aggregation buffer is one roi thick, so memory no longer grows with
the depth of the volume. Window positions, Gaussian weights and padding follow
``monai.inferers.sliding_window_inference``, so results match it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map
from tqdm import tqdm

__all__ = ["sliding_window_stream", "window_starts"]

LARGE_BAND = 1 << 30  # bytes; above this the aggregation buffer is float16
EMIT_BYTES = 1 << 26  # bytes of normalised output handed to the callback at a time


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of windows along one axis (MONAI's placement: regular steps, the last one flush)."""
    if roi >= size:
        return [0]
    step = max(int(roi * (1 - overlap)), 1)
    count = next(d for d in range(size) if d * step + roi >= size) + 1
    return sorted({min(d * step, size - roi) for d in range(count)})


def sliding_window_stream(
    x: torch.Tensor,
    roi: Sequence[int],
    out_channels: int,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    emit: Callable[[torch.Tensor, slice], None],
    *,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    aggregation_device: torch.device | str = "cpu",
    progress: bool = False,
) -> None:
    """Run ``predictor`` over windows of ``x`` and emit blended outputs plane band by plane band.

    Args:
        x: ``(1, C, X, Y, Z)`` input on any device (windows are copied to ``device``); padded (constant 0) where
            smaller than the roi.
        roi: Window size.
        out_channels: Channels of the predictor's output.
        predictor: ``(B, C, *roi) -> (B, out_channels, *roi)`` on ``device``.
        emit: Receives ``(out_channels, X, Y, k)`` float32 outputs on ``aggregation_device`` for consecutive
            ranges of the last axis.
        overlap: Window overlap in [0, 1).
        blend: ``"gaussian"`` or ``"constant"`` weighting of overlapping windows.
        batch_size: Windows per predictor call.
        device: Where the predictor runs.
        aggregation_device: Where the one-roi-thick blending buffer and the emitted outputs live.
        progress: Show a progress bar over windows.
    """
    spatial = tuple(x.shape[2:])
    pads = [(max(r - s, 0) // 2, max(r - s, 0) - max(r - s, 0) // 2) for r, s in zip(roi, spatial, strict=True)]
    if any(sum(p) for p in pads):
        x = F.pad(x, [v for p in reversed(pads) for v in p])
    size = tuple(x.shape[2:])
    weight = compute_importance_map(
        tuple(roi), mode=blend, sigma_scale=0.125, device=aggregation_device, dtype=torch.float32
    )
    weight = weight.clamp_(min=max(weight.min().item(), 1e-3))
    nx, ny, nz = size
    rx, ry, rz = roi
    band_bytes = 4 * (out_channels + 1) * nx * ny * rz
    dtype = torch.float32 if band_bytes <= LARGE_BAND else torch.float16
    acc = torch.zeros((out_channels, nx, ny, rz), dtype=dtype, device=aggregation_device)
    norm = torch.zeros((1, nx, ny, rz), dtype=torch.float32, device=aggregation_device)
    xy = [(i, j) for i in window_starts(nx, rx, overlap) for j in window_starts(ny, ry, overlap)]
    (px0, _), (py0, _), (pz0, _) = pads

    crop_x, crop_y = slice(px0, px0 + spatial[0]), slice(py0, py0 + spatial[1])
    plane_bytes = 4 * out_channels * spatial[0] * spatial[1]
    chunk = max(1, EMIT_BYTES // plane_bytes)

    def flush(lo: int, hi: int, band_start: int) -> None:
        """Emit padded planes [lo, hi) of the band starting at ``band_start``, cropped to the input, a few planes
        at a time so the normalised copy stays small."""
        a, b = max(lo, pz0), min(hi, pz0 + spatial[2])
        for start in range(a, b, chunk):
            stop = min(b, start + chunk)
            k = slice(start - band_start, stop - band_start)
            out = acc[:, crop_x, crop_y, k].float() / norm[:, crop_x, crop_y, k]
            emit(out, slice(start - pz0, stop - pz0))

    layers = window_starts(nz, rz, overlap)
    bar = tqdm(total=len(layers) * len(xy), unit="window", disable=None if progress else True)  # None: TTY only
    band = 0
    for z in layers:
        if z > band:  # planes before z are complete: no later window reaches back
            flush(band, z, band)
            shift = z - band
            acc[..., : rz - shift] = acc[..., shift:].clone()
            norm[..., : rz - shift] = norm[..., shift:].clone()
            acc[..., rz - shift :] = 0
            norm[..., rz - shift :] = 0
            band = z
        for n in range(0, len(xy), batch_size):
            batch = xy[n : n + batch_size]
            patches = torch.cat([x[..., i : i + rx, j : j + ry, z : z + rz] for i, j in batch]).to(device)
            probs = predictor(patches).float().to(aggregation_device) * weight
            for (i, j), p in zip(batch, probs, strict=True):
                acc[:, i : i + rx, j : j + ry] += p.to(dtype)
                norm[:, i : i + rx, j : j + ry] += weight
            bar.update(len(batch))
    bar.close()
    flush(band, min(band + rz, nz), band)
