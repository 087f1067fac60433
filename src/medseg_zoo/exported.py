"""Exported files read back: a window network written by `medseg_zoo.export.export_model` (ONNX or a torch.export
program) with the task contract inside it, as a model that `medseg_zoo.Predictor` runs with the same whole-case
pipeline as a zoo model. Reading needs no exporter: ONNX Runtime for ``.onnx``, torch for ``.pt2``."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medseg_zoo._contract import ModelConfig, contract_from_dict
from medseg_zoo.errors import ExportError, MissingExtraError

__all__ = ["EXPORT_FORMATS", "Backend", "ExportedModel", "exported_by_zoo", "load_exported"]

ExportFormat = Literal["onnx", "torch-export"]
Backend = Literal["torch", "onnxruntime"]
EXPORT_FORMATS: dict[str, ExportFormat] = {".onnx": "onnx", ".pt2": "torch-export"}
FORMAT_NAME = "medseg-zoo-export"
FORMAT_VERSION = 1
METADATA_KEY = "medseg_zoo"  # ONNX metadata_props key; in a .pt2, the extra file medseg_zoo.json
INSTALL = "pip install 'medseg-zoo[export]'"


class ExportedModel(nn.Module):
    """An exported window network with the contract it was exported with, runnable by `medseg_zoo.Predictor`.

    Shapes: ``(B, C_in, *roi) -> (B, C_out, *roi)`` float32 logits, on the input's device. Inputs of another channel
    count or roi are refused before anything runs. It has no parameters: it cannot be trained or exported again.

    Attributes:
        pretrained_cfg: The zoo configuration rebuilt from the file (name, contract, licence, paper).
        path: The file.
        backend: ``"onnxruntime"`` (``.onnx``) or ``"torch"`` (``.pt2``).
    """

    def __init__(self, path: Path, backend: Backend, runner: Any, cfg: ModelConfig) -> None:
        super().__init__()
        self.path, self.backend, self.pretrained_cfg = path, backend, cfg
        # Not a submodule: a torch.export program stays on the CPU it was traced for, whatever .to() moves.
        object.__setattr__(self, "_runner", runner)
        self._input = runner.get_inputs()[0].name if backend == "onnxruntime" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.pretrained_cfg.contract
        expected = (len(c.in_channels), *c.roi_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{self.path}: expects windows (B, {len(c.in_channels)}, {', '.join(map(str, c.roi_size))}) "
                f"(channels {', '.join(c.in_channels)}); got {tuple(x.shape)}"
            )
        x = x.detach().float()
        if self.backend == "torch":
            return self._runner(x.cpu()).to(x.device)
        (logits,) = self._runner.run(None, {self._input: x.cpu().contiguous().numpy()})
        return torch.from_numpy(logits).to(x.device)

    def extra_repr(self) -> str:
        return f"{self.path}, backend={self.backend}, name={self.pretrained_cfg.name}"


def _read_metadata(text: str | None, path: Path) -> ModelConfig:
    if not text:
        raise ExportError(
            f"{path}: holds no medseg-zoo metadata (no {METADATA_KEY!r} entry), so its channels, roi and outputs "
            "are unknown; export the model with medseg_zoo.export.export_model or `medseg-zoo export`"
        )
    try:
        info = json.loads(text)
        if info.get("format") != FORMAT_NAME:
            raise ValueError(f"format {info.get('format')!r}, expected {FORMAT_NAME!r}")
        version = info["format_version"]
        if not isinstance(version, int):
            raise ValueError(f"format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ExportError(
                f"{path}: written by a newer medseg-zoo (export format version {version}; this version reads up to "
                f"{FORMAT_VERSION}); upgrade medseg-zoo to read it"
            )
        contract = contract_from_dict(info["contract"])
        name = str(info["name"])
    except ExportError:
        raise
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ExportError(f"{path}: malformed medseg-zoo metadata ({type(exc).__name__}: {exc})") from None
    return ModelConfig(
        name=name,
        builder=ExportedModel,
        contract=contract,
        license=info.get("license", ""),
        paper=info.get("paper", ""),
        notes=info.get("notes", ""),
    )


def load_exported(path: str | os.PathLike, *, backend: Backend | None = None) -> ExportedModel:
    """Load a file written by `export_model` as a model for `medseg_zoo.Predictor` / `medseg_zoo.predict`.

    Args:
        path: A ``.onnx`` or ``.pt2`` file.
        backend: ``"onnxruntime"`` for ``.onnx``, ``"torch"`` for ``.pt2`` (the default for each; the other is
            refused).

    Raises:
        ExportError: A missing file, another suffix, a backend that cannot run the file, a file that is not an
            export, holds no medseg-zoo metadata or comes from a newer export format, or a missing ``[export]``
            extra.
    """
    path = Path(path)
    fmt = next((f for s, f in EXPORT_FORMATS.items() if path.name.endswith(s)), None)
    if fmt is None:
        raise ExportError(f"{path}: expected an exported .onnx or .pt2 file")
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    natural: Backend = "onnxruntime" if fmt == "onnx" else "torch"
    if backend not in (None, natural):
        raise ExportError(f"{path}: a {fmt} file runs on the {natural!r} backend, not {backend!r}")
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise MissingExtraError(f"{path}: running ONNX files needs onnxruntime: {INSTALL}") from None
        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise ExportError(f"{path}: ONNX Runtime cannot load it ({exc})") from None
        cfg = _read_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
        return ExportedModel(path, natural, session, cfg).eval()
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as exc:  # a file that is not a program fails in many ways
        raise ExportError(f"{path}: not a torch.export program ({exc})") from None
    cfg = _read_metadata(extra[f"{METADATA_KEY}.json"], path)
    return ExportedModel(path, natural, program.module(), cfg).eval()


def exported_by_zoo(path: Path) -> bool:
    """Whether a file carries the zoo's export metadata (read without loading the network)."""
    try:
        if path.name.endswith(".onnx"):
            import onnx

            model = onnx.load(path, load_external_data=False)
            return any(prop.key == METADATA_KEY for prop in model.metadata_props)
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"/extra/{METADATA_KEY}.json") for name in archive.namelist())
    except Exception:  # unreadable or not a model: not provably ours
        return False
