"""Export for deployment: a zoo model's window network as ONNX (run by ONNX Runtime) or as a torch.export program,
with its task contract inside the file, checked against the eager model when written; and loading such a file back
as a model that `medseg_zoo.Predictor` runs with the same whole-case pipeline.

```python
from medseg_zoo import create_model, predict
from medseg_zoo.export import export_model

report = export_model(create_model("segresnet_brats", pretrained=True), "segresnet_brats.onnx")
print(report)                                   # the numeric check against the eager model
predict("segresnet_brats.onnx", "case.nii.gz", "seg.nii.gz", channels=["FLAIR", "T1w", "T1gd", "T2w"])
```

The exported network takes one fixed roi (the contract's) and any batch size: Swin UNETR's window masks and the
transformers' position embeddings are laid out for one grid, and the Predictor only ever feeds windows of the roi.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg_zoo._atomic import atomic_write
from medseg_zoo._contract import ModelConfig, TaskContract, config_of
from medseg_zoo._guard import check_output_file
from medseg_zoo.errors import ExportError, InvalidArgumentError, MissingExtraError, OutputError
from medseg_zoo.exported import (
    EXPORT_FORMATS,
    FORMAT_NAME,
    FORMAT_VERSION,
    INSTALL,
    METADATA_KEY,
    ExportedModel,
    ExportFormat,
    exported_by_zoo,
    load_exported,
)

__all__ = [
    "EXPORT_FORMATS",
    "ExportCheck",
    "ExportError",
    "ExportReport",
    "ExportedModel",
    "check_export_output",
    "export_model",
    "load_exported",
]

TOLERANCE = 1e-4  # max abs logit difference accepted outright in float32
MAX_BATCH = 1024


@dataclass(frozen=True)
class ExportCheck:
    """The exported network's logits against the eager model's on one input.

    Attributes:
        input: What was fed: ``"random"`` (standard normal) or ``"synthetic case"`` (a preprocessed window of a
            synthetic BraTS-like case).
        max_abs_diff: Largest absolute logit difference, exported against eager float32.
        output: The output channel where it occurs.
        reason: Why a difference above `TOLERANCE` was accepted (both float32 results equally close to a float64
            evaluation of the model), or ``""``.
    """

    input: str
    max_abs_diff: float
    output: str
    reason: str = ""

    def __str__(self) -> str:
        verdict = f"ok ({self.reason})" if self.reason else "ok"
        return (
            f"{self.input}: max |exported - eager| = {self.max_abs_diff:.2e} (at output {self.output}; "
            f"tolerance {TOLERANCE:g}) {verdict}"
        )


@dataclass(frozen=True)
class ExportReport:
    """What `export_model` wrote and how the file compared with the eager model."""

    path: Path
    format: ExportFormat
    roi_size: tuple[int, int, int]
    checks: tuple[ExportCheck, ...]

    def __str__(self) -> str:
        roi = "x".join(map(str, self.roi_size))
        return "\n".join([f"{self.path} ({self.format}, roi {roi}, any batch size)", *(f"  {c}" for c in self.checks)])


# --- roi --------------------------------------------------------------------------------------------------------


def _fits(model: nn.Module, channels: int, roi: Sequence[int]) -> bool:
    """Whether the network maps a ``roi`` window to logits of the same size (shapes only: no arithmetic)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)  # it logs each failing shape as an error; here failing is an answer
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
            out = model(mode.from_tensor(torch.empty(1, channels, *roi)))
    except Exception:  # any failure means this size does not run
        return False
    finally:
        fake_log.setLevel(level)
    return tuple(out.shape[2:]) == tuple(roi)


def _roi_multiple(model: nn.Module, channels: int) -> int | None:
    """The smallest power of two whose multiples the network takes on every axis (checked at 3x and 5x)."""
    return next(
        (m for m in (1, 2, 4, 8, 16, 32, 64) if all(_fits(model, channels, (k * m,) * 3) for k in (3, 5))), None
    )


def check_roi(model: nn.Module, roi: Sequence[int], built: Sequence[int] | None = None) -> tuple[int, int, int]:
    """``roi`` as a tuple if the network takes windows of that size, else an error naming the nearest one it takes.

    Args:
        model: A zoo model.
        roi: The window size asked for.
        built: The roi the network was built for, when it takes no other (Primus's fixed token grid).

    Raises:
        ExportError: With the nearest valid roi.
    """
    cfg = config_of(model)
    roi = tuple(int(s) for s in roi)
    channels = len(cfg.contract.in_channels)
    if _fits(model, channels, roi):
        return roi
    shown = "x".join(map(str, roi))
    m = _roi_multiple(model, channels)
    if m is None:
        sizes = "x".join(map(str, built or cfg.contract.roi_size))
        raise ExportError(
            f"{cfg.name}: roi {shown} does not fit the network, which takes only the roi it was built for ({sizes}); "
            f"create the model with roi_size={shown.replace('x', ',')} (and fine-tune it) to export that size"
        )
    nearest = tuple(max(m, m * round(s / m)) for s in roi)
    raise ExportError(
        f"{cfg.name}: roi {shown} does not fit the network (each side must be a multiple of {m}); the nearest roi it "
        f"takes is {'x'.join(map(str, nearest))}"
    )


# --- export -----------------------------------------------------------------------------------------------------


def _nested_mean(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    for d in sorted(dims, reverse=True):  # equal-sized slices: the mean of means is the mean
        x = x.mean(d, keepdim=True)
    return x


def _nested_norm(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``norm``'s forward with its statistics taken as means over one axis at a time, or ``None`` for other layers.

    ONNX Runtime's float32 reductions over a whole map (~1e6 voxels) err by ~1e-4 relative; through a network's
    two dozen norms that grew to ~1e-2 in the logits of Swin UNETR and SuPreM's U-Net (measured against float64).
    Means over one axis at a time add at most a few hundred values each and keep the export within ~1e-5.
    """
    from medseg_zoo.layers.norms import BatchStatsNorm3d

    if isinstance(norm, BatchStatsNorm3d):
        dims: tuple[int, ...] = (0, 2, 3, 4)
    elif isinstance(norm, nn.InstanceNorm3d) and not norm.track_running_stats:
        dims = (2, 3, 4)
    elif isinstance(norm, nn.GroupNorm):
        dims = ()
    else:
        return None

    def forward(x: torch.Tensor) -> torch.Tensor:
        if isinstance(norm, nn.GroupNorm):
            grouped = x.reshape(x.shape[0], norm.num_groups, -1, *x.shape[2:])
            y = _normalised(grouped, range(2, grouped.ndim), norm.eps).reshape(x.shape)
        else:
            y = _normalised(x, dims, norm.eps)
        if norm.weight is None:
            return y
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return y * norm.weight.reshape(shape) + norm.bias.reshape(shape)

    return forward


def _normalised(x: torch.Tensor, dims: Sequence[int], eps: float) -> torch.Tensor:
    centred = x - _nested_mean(x, dims)
    return centred * torch.rsqrt(_nested_mean(centred * centred, dims) + eps)


@contextlib.contextmanager
def _portable(model: nn.Module, nested_norms: bool = False) -> Iterator[None]:
    """The model's plain code path while tracing: no channels-last maps or oneDNN products, which are CPU speed-ups
    of eager execution (the exported graph is optimised by its own runtime); with ``nested_norms``, norms whose
    statistics ONNX Runtime computes accurately (`_nested_norm`)."""
    linear = importlib.import_module("medseg_zoo.layers.linear")  # the module (the package exports its function)
    layouts = [(m, m.channels_last_on_cpu) for m in model.modules() if hasattr(m, "channels_last_on_cpu")]
    norms = [(m, f) for m in model.modules() if nested_norms and (f := _nested_norm(m)) is not None]
    onednn = linear.ONEDNN_PRODUCTS
    try:
        linear.ONEDNN_PRODUCTS = False
        for m, _ in layouts:
            m.channels_last_on_cpu = False
        for m, forward in norms:
            m.forward = forward
        yield
    finally:
        linear.ONEDNN_PRODUCTS = onednn
        for m, value in layouts:
            m.channels_last_on_cpu = value
        for m, _ in norms:
            del m.forward


def _metadata(cfg: ModelConfig) -> str:
    from medseg_zoo._version import __version__

    return json.dumps(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": cfg.name,
            "architecture": cfg.architecture,
            "contract": dataclasses.asdict(cfg.contract),
            "license": cfg.license,
            "paper": cfg.paper,
            "notes": cfg.notes,
            "exported_by": {"medseg_zoo": __version__, "torch": torch.__version__},
        },
        default=list,
    )


def _synthetic_window(contract: TaskContract, generator: torch.Generator) -> torch.Tensor:
    """A preprocessed-looking window: a synthetic BraTS-like case's channels (cycled to the model's count), each
    z-scored over the head, cropped at the centre to the roi."""
    from medseg_zoo.data.synthetic import make_case

    roi = contract.roi_size
    image, _, _ = make_case(tuple(max(s, 32) for s in roi), seed=int(torch.randint(1 << 30, (1,), generator=generator)))
    channels = [image[..., i % image.shape[-1]].astype(np.float32) for i in range(len(contract.in_channels))]
    out = []
    for c in channels:
        head = c[c != 0]
        out.append((c - head.mean()) / (head.std() + 1e-8) * (c != 0))
    crop = tuple(slice((s - r) // 2, (s - r) // 2 + r) for s, r in zip(out[0].shape, roi, strict=True))
    window = np.stack(out)[(slice(None), *crop)]
    return torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None]


def _compare(eager: nn.Module, exported: nn.Module, x: torch.Tensor, label: str, outputs: Sequence[str]) -> ExportCheck:
    with torch.no_grad():
        try:
            want = eager(x)
        except (RuntimeError, ValueError) as exc:  # checks on values that shapes alone do not reveal
            roi = "x".join(map(str, x.shape[2:]))
            raise ExportError(f"the model itself fails on a {roi} window ({exc}); export a larger roi") from None
        got = exported(x)
    diff = (got - want).abs()
    worst = float(diff.max())
    channel = outputs[int(diff.amax(dim=(0, 2, 3, 4)).argmax())]
    if worst <= TOLERANCE:
        return ExportCheck(label, worst, channel)
    # Above 1e-4, accept float32 rounding only: the export no further from a float64 evaluation than eager is.
    with torch.no_grad():
        reference = copy.deepcopy(eager).double()(x.double())
    eager_error = float((want.double() - reference).abs().max())
    exported_error = float((got.double() - reference).abs().max())
    if exported_error <= 2 * eager_error:
        reason = (
            f"float32 rounding: against float64, the export errs by {exported_error:.2e} and eager by {eager_error:.2e}"
        )
        return ExportCheck(label, worst, channel, reason)
    raise ExportError(
        f"the exported network differs from the eager model on the {label} input: max |difference| {worst:.3g} at "
        f"output {channel} (tolerance {TOLERANCE:g}; against float64 the export errs by {exported_error:.3g}, eager by "
        f"{eager_error:.3g}). Nothing was written"
    )


def check_export_output(
    path: str | os.PathLike,
    format: ExportFormat | None = None,
    *,
    overwrite: bool = False,
    reads: Sequence[str | os.PathLike] = (),
) -> tuple[Path, ExportFormat]:
    """The output path and format of an export, refused before any work when they cannot be written.

    Raises:
        OutputError: Another suffix than the format's, an existing file without ``overwrite`` (or, with it, one
            medseg-zoo did not export), one of ``reads``, a folder, or an unwritable place.
        ExportError: An unknown format.
    """
    if format is not None and format not in EXPORT_FORMATS.values():
        raise ExportError(f"format must be one of {', '.join(EXPORT_FORMATS.values())}, got {format!r}")
    suffixes = [s for s, f in EXPORT_FORMATS.items() if format in (None, f)]
    target = check_output_file(path, suffixes=suffixes, reads=[r for r in reads if r], what="export output")
    if target.exists() and not overwrite:
        raise OutputError(f"export output {target} exists; pass overwrite=True (--overwrite) to replace it")
    if target.exists() and not exported_by_zoo(target):
        raise OutputError(
            f"export output {target} exists and holds no medseg-zoo metadata: --overwrite replaces only a file "
            "medseg-zoo exported; refusing to replace it, choose another output"
        )
    return target, EXPORT_FORMATS[next(s for s in suffixes if target.name.endswith(s))]


def _roi_argument(roi_size: int | Sequence[int]) -> tuple[int, int, int]:
    sizes = (roi_size,) if isinstance(roi_size, int) else tuple(roi_size)
    sizes = sizes * 3 if len(sizes) == 1 else sizes
    if len(sizes) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise InvalidArgumentError(f"roi_size must be one or three positive integers, got {roi_size!r}")
    return sizes


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: ExportFormat | None = None,
    roi_size: int | Sequence[int] | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> ExportReport:
    """Export a zoo model's window network for deployment, with its contract, checked against the eager model.

    The file takes windows of one roi (``(B, C_in, *roi)`` float32, any ``B``) and returns logits
    ``(B, C_out, *roi)``. Before the file appears it is loaded back and run on a random input and on a synthetic case
    window; the largest logit difference from the eager model must be at most `TOLERANCE` or, above it, no larger
    than float32 rounding (the export no further from a float64 evaluation than twice eager's own error).

    Args:
        model: A model from `medseg_zoo.create_model` or `medseg_zoo.from_pretrained` (it is not changed).
        path: The file to write: ``.onnx`` (ONNX, for ONNX Runtime) or ``.pt2`` (a torch.export program).
        format: ``"onnx"`` or ``"torch-export"``; by default from the suffix of ``path``.
        roi_size: Window size the export takes (default: the contract's); the contract in the file records it.
        overwrite: Replace an existing file at ``path`` that medseg-zoo exported (any other file is refused).
        seed: Seed of the check's inputs.

    Returns:
        The path, format, roi and the numeric checks (printable).

    Raises:
        ExportError: An ensemble, a roi the network cannot take (the nearest one it takes is named), a network the
            exporter cannot trace, or an export whose outputs differ from the model's.
        OutputError: A path with another suffix, an existing file without ``overwrite``, or an unwritable place.
    """
    cfg = config_of(model, "a zoo model to export")
    target, fmt = check_export_output(path, format, overwrite=overwrite)
    if isinstance(model, ExportedModel):
        raise ExportError(f"{cfg.name} is already an exported file; export the zoo model it came from")
    network = copy.deepcopy(model).float().cpu().eval()
    built = cfg.contract.roi_size
    if roi_size is not None:
        roi = _roi_argument(roi_size)
        cfg = cfg.replace(contract=dataclasses.replace(cfg.contract, roi_size=roi))
        network.pretrained_cfg = cfg
    generator = torch.Generator().manual_seed(seed)
    with _portable(network, nested_norms=fmt == "onnx"):
        roi = check_roi(network, cfg.contract.roi_size, built if cfg.roi_arg else None)
        channels = len(cfg.contract.in_channels)
        # A batch of 2 as the example: with 1, the tracer would fix the batch size (it specialises sizes 0 and 1).
        example = torch.randn(2, channels, *roi, generator=generator)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on deprecated internals, not the user's concern
                program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
        except Exception as exc:  # the tracer raises many kinds; each means it cannot follow the code
            raise ExportError(f"{cfg.name}: torch.export cannot trace {cfg.architecture}: {exc}") from exc
    inputs = [("random", torch.randn(1, channels, *roi, generator=generator))]
    inputs.append(("synthetic case", _synthetic_window(cfg.contract, generator)))
    checks: list[ExportCheck] = []

    def write(tmp: str) -> None:
        if fmt == "onnx":
            _write_onnx(program, example, cfg, tmp)
        else:
            torch.export.save(program, tmp, extra_files={f"{METADATA_KEY}.json": _metadata(cfg)})
        exported = load_exported(tmp)
        # Against the model as it runs eagerly here (CPU speed-ups included), as the Predictor would run it.
        checks.extend(_compare(network, exported, x, label, cfg.contract.out_channels) for label, x in inputs)

    atomic_write(target, write)
    return ExportReport(target, fmt, roi, tuple(checks))


def _write_onnx(program: torch.export.ExportedProgram, example: torch.Tensor, cfg: ModelConfig, path: str) -> None:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency, missing without the extra)
    except ImportError:
        raise MissingExtraError(f"ONNX export needs onnx and onnxscript: {INSTALL}") from None
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, (example,), dynamo=True, input_names=["image"], output_names=["logits"], verbose=False
        )
    onnx_program.model.metadata_props[METADATA_KEY] = _metadata(cfg)
    onnx_program.save(path)
