"""Whole-volume prediction in the input's own geometry: preprocessing from the model's contract, sliding-window
inference with optional flip test-time augmentation and model ensembles, and the inverse resampling."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from torch import nn

from medseg_zoo._contract import config_of
from medseg_zoo._device import amp_dtype, resolve_device
from medseg_zoo.errors import InvalidArgumentError
from medseg_zoo.exported import Backend, ExportedModel
from medseg_zoo.inference import outputs
from medseg_zoo.inference.io import (
    OUTPUT_SUFFIXES,
    Inputs,
    Output,
    OutputType,
    Volume,
    case_name,
    check_grid,
    input_paths,
    load_volume,
    output_in_folder,
    warn_without_signal,
)
from medseg_zoo.inference.sliding import sliding_window_stream
from medseg_zoo.transforms.labels import get_scheme, regions_to_labels
from medseg_zoo.transforms.presets import preprocessing_transforms
from medseg_zoo.transforms.resample import resample_parallel

__all__ = ["Predictor", "predict"]

CHANNEL_CHUNK = 2  # probability channels resampled to the input grid at a time: bounds memory for many classes
PROBABILITY_BUDGET = 1 << 30  # bytes of model-grid probabilities; above, labels are decided on the model grid


class Predictor:
    """Predicts volumes with one model or an ensemble, keeping the models loaded across calls.

    Args:
        models: A model from `medseg_zoo.create_model` / `medseg_zoo.from_pretrained`, or several
            with the same contract (their probabilities are averaged); or the path of a file written by
            `medseg_zoo.export.export_model` (``.onnx``, ``.pt2``), or several.
        backend: What runs the network: ``"torch"`` (zoo models and ``.pt2`` files) or ``"onnxruntime"`` (``.onnx``
            files); by default the one the model or file needs. Every other step of the pipeline is the same.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        overlap: Sliding-window overlap, in [0, 1).
        blend: ``"gaussian"`` or ``"constant"`` blending of overlapping windows.
        sw_batch_size: Windows per forward pass (MONAI's default of 1 was fastest per window on the CPU:
            0.33 s against 0.38 s with 2 for ``unetr_brats`` in bf16, the same in fp32).
        tta: Average over the 8 flips of the three spatial axes (8x the time).
        amp: Mixed precision: ``None`` picks bf16 on CUDA and on CPUs with native bf16, else off; ``True``
            or ``False`` force it; ``"bf16"`` / ``"fp16"`` pick the type. bf16 can flip labels where a
            probability lies within ~0.01 of the decision (measured in ``docs/benchmarks.md``); pass ``False``
            for fp32 results. Exported files run in float32 (``None`` means off for them).
        aggregation_device: Where the whole volume is worked on: preprocessed, its window outputs blended,
            resampled back to the input grid and decided (default: ``device``, so a case crosses to the GPU once
            and comes back as labels; ``"cpu"`` saves GPU memory on large volumes). The blending buffer is one
            roi thick whatever the volume's depth.
        progress: Show a progress bar over windows.
        compile: Run the networks through ``torch.compile`` (the same outputs within float rounding; the first
            window of each size pays the compilation). Exported files are run as they are.
    """

    def __init__(
        self,
        models: nn.Module | str | os.PathLike | Sequence[nn.Module | str | os.PathLike],
        *,
        backend: Backend | None = None,
        device: str | torch.device = "auto",
        overlap: float = 0.5,
        blend: Literal["gaussian", "constant"] = "gaussian",
        sw_batch_size: int = 1,
        tta: bool = False,
        amp: bool | str | None = None,
        aggregation_device: str | torch.device | None = None,
        progress: bool = False,
        compile: bool = False,
    ) -> None:
        self.models = _load(models, backend)
        self.contract = config_of(self.models[0]).contract
        for other in self.models[1:]:
            c = config_of(other).contract
            if c != self.contract:
                raise ValueError(
                    f"ensemble members must share a contract (channels, outputs, roi, spacing, orientation, "
                    f"normalisation, labels); got {self.contract} and {c}"
                )
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0 <= overlap < 1:
            raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
        if blend not in ("gaussian", "constant"):
            raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size!r}")
        self.device = resolve_device(device)
        self.aggregation_device = resolve_device(aggregation_device) if aggregation_device else self.device
        self.overlap, self.blend, self.sw_batch_size, self.tta, self.progress = (
            overlap,
            blend,
            sw_batch_size,
            tta,
            progress,
        )
        exported = [m for m in self.models if isinstance(m, ExportedModel)]
        if exported and amp not in (None, False, "auto", "off"):
            raise InvalidArgumentError(
                f"amp={amp!r}: {exported[0].path} runs in the float32 it was exported in; leave amp unset"
            )
        self.amp_dtype = None if exported else amp_dtype(self.device, amp, cpu_auto=True)
        for model in self.models:
            model.to(self.device).eval()
        self._networks = [torch.compile(m) if compile and not isinstance(m, ExportedModel) else m for m in self.models]
        self.preprocess = Compose(preprocessing_transforms(self.contract, with_label=False, load=False))

    # --- steps --------------------------------------------------------------------------------------------------

    def _activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Float32 probabilities in a fresh tensor, which is the float32 copy itself for half-precision logits."""
        logits = logits.float() if logits.dtype != torch.float32 else logits.clone()
        return logits.sigmoid_() if self.contract.activation == "sigmoid" else torch.softmax(logits, dim=1)

    def _window(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        flips = [()] + ([d for r in (1, 2, 3) for d in itertools.combinations((2, 3, 4), r)] if self.tta else [])

        def run(x: torch.Tensor) -> torch.Tensor:
            total = None
            for dims in flips:
                xi = x.flip(dims) if dims else x
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    logits = model(xi)
                probs = self._activation(logits)
                probs = probs.flip(dims) if dims else probs
                total = probs if total is None else total.add_(probs)
            return total.div_(len(flips)) if len(flips) > 1 else total

        return run

    def _stream(self, x: torch.Tensor, store: Callable[[torch.Tensor, slice], None]) -> None:
        """Probabilities of ``x`` (1, C, ...) averaged over flips and models, handed to ``store`` band by band."""
        windows = [self._window(network) for network in self._networks]

        def run(patches: torch.Tensor) -> torch.Tensor:
            total = windows[0](patches)
            for w in windows[1:]:
                total.add_(w(patches))
            return total.div_(len(windows)) if len(windows) > 1 else total

        sliding_window_stream(
            x,
            self.contract.roi_size,
            len(self.contract.out_channels),
            run,
            store,
            overlap=self.overlap,
            blend=self.blend,
            batch_size=self.sw_batch_size,
            device=self.device,
            aggregation_device=self.aggregation_device,
            progress=self.progress,
        )

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(C, X, Y, Z)`` float32 on the model grid of a preprocessed ``(1, C_in, X, Y, Z)`` tensor
        (sliding windows, flips and ensemble members averaged), on the aggregation device."""
        shape = (len(self.contract.out_channels), *x.shape[2:])
        probs = torch.empty(shape, dtype=torch.float32, device=self.aggregation_device)
        self._stream(x, lambda p, s: probs[..., s].copy_(p))
        return probs

    def _invert(self, pre: MetaTensor, data: torch.Tensor, volume: Volume, nearest: bool) -> torch.Tensor:
        """Model-grid ``(C, ...)`` data back on the input grid (the inverse of reorientation and resampling), on
        ``data``'s device.

        Reorienting and resampling to a spacing keep the axes parallel, so this is MONAI's ``Invertd`` (same
        values, a test checks) computed axis by axis.
        """
        return resample_parallel(data, pre.affine, volume.affine, volume.data.shape[1:], nearest=nearest)

    @torch.inference_mode()
    def predict_volume(self, volume: Volume, output: Output = "labels") -> np.ndarray:
        """The prediction on the input grid: labels ``(X, Y, Z)`` uint8 in the contract's label scheme,
        region/class masks ``(X, Y, Z, C)`` uint8, or probabilities ``(X, Y, Z, C)`` float32.

        Probabilities are kept on the model grid and resampled to the input grid a few channels at a
        time, where they are thresholded (sigmoid) or compared (softmax). When they would exceed
        ``PROBABILITY_BUDGET`` bytes (large volumes with many classes) and labels or regions are asked for, the
        decision is taken on the model grid instead and the uint8 result is brought back nearest-neighbour.
        """
        if output not in ("labels", "probabilities", "regions"):
            raise ValueError(f"output must be 'labels', 'probabilities' or 'regions', got {output!r}")
        check_grid(volume, self.contract.spacing)
        warn_without_signal(volume, self.contract.in_channels)
        # From here to the decision the case stays on the aggregation device (the GPU by default there).
        work = self.aggregation_device
        image = MetaTensor(torch.from_numpy(volume.data).to(work), affine=torch.as_tensor(volume.affine))
        pre = self.preprocess({"image": image})["image"]
        x = pre.as_tensor()[None]
        n = len(self.contract.out_channels)
        grid = tuple(x.shape[2:])
        sigmoid = self.contract.activation == "sigmoid"
        spatial = volume.data.shape[1:]

        if output != "probabilities" and n * math.prod(grid) * 4 > PROBABILITY_BUDGET:
            decided = torch.empty((n if sigmoid else 1, *grid), dtype=torch.uint8, device=work)

            def decide(p: torch.Tensor, s: slice) -> None:
                decided[..., s] = (p > 0.5) if sigmoid else p.argmax(0, keepdim=True)

            self._stream(x, decide)
            back = self._invert(pre, decided, volume, nearest=True).cpu().numpy()
            return self._finish(back if sigmoid else back[0], output, n)

        probs = self.probabilities(x)
        chunks = [slice(i, min(i + CHANNEL_CHUNK, n)) for i in range(0, n, CHANNEL_CHUNK)]
        if output == "probabilities":
            out = np.empty((*spatial, n), dtype=np.float32)
            for c in chunks:
                out[..., c] = self._invert(pre, probs[c], volume, nearest=False).movedim(0, -1).cpu().numpy()
            return out
        if sigmoid:
            masks = torch.empty((n, *spatial), dtype=torch.uint8, device=work)
            for c in chunks:
                torch.gt(self._invert(pre, probs[c], volume, nearest=False), 0.5, out=masks[c])
            return self._finish(masks.cpu().numpy(), output, n)
        # softmax: running argmax over channel chunks, never holding every class on the input grid
        best = torch.full(spatial, -1.0, dtype=torch.float32, device=work)
        index = torch.zeros(spatial, dtype=torch.uint8, device=work)
        for c in chunks:
            for offset, channel in enumerate(self._invert(pre, probs[c], volume, nearest=False)):
                better = channel > best
                best = torch.where(better, channel, best)
                index.masked_fill_(better, c.start + offset)
        return self._finish(index.cpu().numpy(), output, n)

    def _finish(self, decided: np.ndarray, output: Output, n: int) -> np.ndarray:
        """Masks ``(C, X, Y, Z)`` (sigmoid) or class indices ``(X, Y, Z)`` (softmax) -> the requested output."""
        scheme = get_scheme(self.contract.label_scheme) if self.contract.label_scheme else None
        if self.contract.activation == "sigmoid":
            if output == "regions":
                return np.moveaxis(decided, 0, -1)
            if scheme is None:
                raise ValueError("the model's contract names no label scheme: ask for output='regions'")
            return regions_to_labels(decided, scheme)
        if output == "regions":
            return np.eye(n, dtype=np.uint8)[decided]
        if scheme is not None:
            return np.array(sorted(scheme.labels), dtype=np.uint8)[decided]
        return decided

    def __call__(
        self,
        inputs: Inputs,
        output: str | os.PathLike | None = None,
        *,
        kind: Output = "labels",
        channels: Sequence[str] | None = None,
        series_uid: str | None = None,
        output_type: OutputType = "nifti",
        statistics: bool = False,
        preview: str | os.PathLike | None = None,
    ) -> nib.Nifti1Image:
        """Predict one case; write it to ``output`` (atomically) if given.

        Args:
            inputs: See `medseg_zoo.inference.io.load_volume`: NIfTI files, DICOM series folders, a discovered
                `medseg_zoo.data.Case`, arrays.
            output: The file to write: NIfTI (``.nii.gz``/``.nii``), or a DICOM Segmentation (``.dcm``) with
                ``output_type="dicom-seg"``; or an existing folder, which receives ``<case name>.nii.gz`` (``.dcm``)
                as ``medseg-zoo predict -o FOLDER`` names it. Refused before any work if it is an input, of another
                suffix, or not writable.
            kind: ``"labels"``, ``"regions"`` or ``"probabilities"``.
            channels: A 4-D file's channel names in the file's order (required for a model of several channels;
                they are put in the model's order by name).
            series_uid: The series to read from a DICOM folder holding several.
            output_type: ``"nifti"``, or ``"dicom-seg"`` (DICOM input and labels only): one segment per structure of
                the label scheme, referencing the source series.
            statistics: Also write per-structure volume (ml), voxel count and per-channel intensity statistics as
                JSON beside ``output`` (``seg.nii.gz`` -> ``seg_statistics.json``); labels only.
            preview: A PNG to write (or an existing folder for ``<case name>.png``): three planes through the
                predicted structures over the image's first channel, to check a result without a viewer; labels
                only.

        Returns:
            The prediction as a NIfTI image on the input's grid, with the input's affine and header.

        Raises:
            InputError: A bad input (the message names the file and what was expected), or a DICOM Segmentation
                asked for an input that is not a DICOM series.
            OutputError: An output that is an input, a folder, of the wrong suffix, or not writable.
        """
        reads = input_paths(inputs)
        if output is not None:
            output = output_in_folder(output, inputs, OUTPUT_SUFFIXES.get(output_type, (".nii.gz",))[0])
        if preview is not None:
            preview = output_in_folder(preview, inputs, ".png")
        request = {"kind": kind, "output_type": output_type, "statistics": statistics, "preview": preview}
        self.check_request(output, reads, **request)
        volume = load_volume(inputs, self.contract.in_channels, channels, series_uid)
        self.check_volume(volume, output_type)
        data = self.predict_volume(volume, kind)
        if output is not None:
            self.save(data, volume, output, output_type=output_type, statistics=statistics)
        if preview is not None:
            self.save_preview(data, volume, preview, case_name(inputs) or volume.source)
        header = volume.header.copy() if volume.header is not None else None
        img = nib.Nifti1Image(data, volume.affine, header=header)
        img.set_data_dtype(data.dtype)
        img.header.set_slope_inter(np.nan, np.nan)
        return img

    def check_request(
        self,
        output: str | os.PathLike | None,
        reads: Sequence[Path] = (),
        *,
        kind: Output = "labels",
        output_type: OutputType = "nifti",
        statistics: bool = False,
        preview: str | os.PathLike | None = None,
    ) -> None:
        """Refuse, before any work, a request that cannot be written (`medseg_zoo.inference.outputs.check_request`).

        Raises:
            ValueError: A request that cannot be met.
            OutputError: An output that must not be written.
        """
        request = {"kind": kind, "output_type": output_type, "statistics": statistics, "preview": preview}
        outputs.check_request(self.contract, output, reads, **request)

    @staticmethod
    def check_volume(volume: Volume, output_type: OutputType) -> None:
        """Refuse, before any inference, a DICOM Segmentation it cannot write (`medseg_zoo.inference.outputs`).

        Raises:
            InputError: Naming the input (the file and the attribute).
        """
        outputs.check_volume(volume, output_type)

    def save(
        self,
        data: np.ndarray,
        volume: Volume,
        output: str | os.PathLike,
        *,
        output_type: OutputType = "nifti",
        statistics: bool = False,
    ) -> None:
        """Write a prediction of `predict_volume`, atomically (`medseg_zoo.inference.outputs.save`)."""
        name = config_of(self.models[0]).name
        outputs.save(self.contract, name, data, volume, output, output_type=output_type, statistics=statistics)

    def save_preview(self, data: np.ndarray, volume: Volume, path: str | os.PathLike, title: str) -> Path:
        """Write a PNG of labels ``data`` over the volume's first channel (`medseg_zoo.inference.preview`)."""
        return outputs.save_preview(self.contract, data, volume, path, title)


def _load(
    models: nn.Module | str | os.PathLike | Sequence[nn.Module | str | os.PathLike], backend: Backend | None
) -> list[nn.Module]:
    """The models, exported files loaded, each checked to run on ``backend``."""
    from medseg_zoo.exported import load_exported

    given = list(models) if isinstance(models, Sequence) and not isinstance(models, str) else [models]
    if not given:
        raise ValueError("Predictor needs at least one model")
    if backend not in (None, "torch", "onnxruntime"):
        raise InvalidArgumentError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
    loaded = [load_exported(m, backend=backend) if isinstance(m, str | os.PathLike) else m for m in given]
    for model in loaded:
        config_of(model)
        runs_on = model.backend if isinstance(model, ExportedModel) else "torch"
        if backend is not None and runs_on != backend:
            raise InvalidArgumentError(
                f"backend={backend!r}, but {config_of(model).name} runs on {runs_on!r}; for ONNX Runtime, export "
                "the model first (medseg_zoo.export.export_model or `medseg-zoo export`) and pass "
                "the .onnx file"
            )
    return loaded


def predict(
    model: nn.Module | str | os.PathLike | Sequence[nn.Module | str | os.PathLike],
    inputs: Inputs,
    output: str | os.PathLike | None = None,
    *,
    kind: Output = "labels",
    channels: Sequence[str] | None = None,
    series_uid: str | None = None,
    output_type: OutputType = "nifti",
    statistics: bool = False,
    preview: str | os.PathLike | None = None,
    **options: Any,
) -> nib.Nifti1Image:
    """Predict one case with a model (or an ensemble) and return / write it on the input's grid.

    Args:
        model: One model or several with the same contract, or exported files (``.onnx``, ``.pt2``).
        inputs: ``{channel name: path}`` (recommended: the names map the files to the model's channels, T1gd to T1c
            and so on; a path may be a DICOM series folder); a 4-D NIfTI path with ``channels``; a DICOM series
            folder for a one-channel model; a `medseg_zoo.data.Case` from `medseg_zoo.data.discover` (channels
            known); or ``(array (C, X, Y, Z), affine)`` in the model's order.
        output: NIfTI path to write (atomically), or ``.dcm`` with ``output_type="dicom-seg"``; or an existing
            folder, which receives ``<case name>.nii.gz`` (or ``.dcm``).
        kind: ``"labels"`` (uint8, the contract's label scheme), ``"regions"`` or ``"probabilities"``.
        channels: A 4-D file's channel names in the file's order, e.g. ``["FLAIR", "T1w", "T1gd", "T2w"]`` for MSD
            Task01 (required when the model reads several channels).
        series_uid: The series to read from a DICOM folder holding several.
        output_type: ``"nifti"`` or ``"dicom-seg"`` (see `Predictor.__call__`).
        statistics: Write per-structure statistics as JSON beside the output (see `Predictor.__call__`).
        preview: A PNG of three planes through the predicted structures over the image (see `Predictor.__call__`).
        **options: `Predictor` options (``backend``, ``device``, ``overlap``, ``tta``, ``amp``, ...).
    """
    return Predictor(model, **options)(
        inputs,
        output,
        kind=kind,
        channels=channels,
        series_uid=series_uid,
        output_type=output_type,
        statistics=statistics,
        preview=preview,
    )
