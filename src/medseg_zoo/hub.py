"""Saving and loading models as a folder: ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

The folder is self-describing: the registry name and constructor arguments rebuild the network, the task contract
travels with it, and the weights load strictly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medseg_zoo._atomic import atomic_folder, atomic_write
from medseg_zoo._contract import ModelConfig, WeightSource, config_of, contract_from_dict, tuples
from medseg_zoo._registry import get_config
from medseg_zoo.errors import (
    InvalidArgumentError,
    InvalidOverrideError,
    LicenseError,
    MedsegZooError,
    forbids_derivatives,
)

if TYPE_CHECKING:
    from medseg_zoo._schemes import LabelScheme

__all__ = ["CheckpointError", "HubError", "from_pretrained", "model_card", "push_to_hub", "save_pretrained"]

HUB_PREFIX = "hf-hub:"

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "medseg-zoo"  # config.json's "format" in a save_pretrained folder


class CheckpointError(MedsegZooError, ValueError):
    """A checkpoint folder that is incomplete, malformed, or does not fit its architecture."""


class HubError(MedsegZooError, OSError):
    """The Hub cannot be reached or refuses a request (pushing a model)."""


def _use(cfg: ModelConfig, registry: bool) -> list[str]:
    """Lines of Python that load the model the card describes and segment a case with it."""
    c = cfg.contract
    inputs = (
        "{" + ", ".join(f'"{n}": "{n.lower()}.nii.gz"' for n in c.in_channels) + "}"
        if len(c.in_channels) > 1
        else '"case.nii.gz"'
    )
    if not registry:
        return [
            "from medseg_zoo import from_pretrained, predict",
            'model = from_pretrained("this/folder")  # or "hf-hub:org/repo" once pushed',
            f'predict(model, {inputs}, output="seg.nii.gz")',
        ]
    if cfg.members:
        return [
            "from medseg_zoo import create_ensemble, predict",
            f'models = create_ensemble("{cfg.name}", pretrained=True)  # {len(cfg.members)} models, averaged',
            f'predict(models, {inputs}, output="seg.nii.gz")',
        ]
    if cfg.headless:
        return [
            "from medseg_zoo import create_model",
            f'model = create_model("{cfg.name}", pretrained=True, in_channels=["your", "channels"], out_channels=2)',
            "print(model.load_report)  # the pretrained part, and what starts fresh; then fine-tune:",
            f"# medseg-zoo train --model {cfg.name} --pretrained --data YOUR_DATA --output runs/yours"
            + (f" --recipe {cfg.recipe}" if cfg.recipe else ""),
        ]
    if cfg.has_weights:
        return [
            "from medseg_zoo import create_model, predict",
            f'model = create_model("{cfg.name}", pretrained=True)',
            f'predict(model, {inputs}, output="seg.nii.gz")',
        ]
    recipe = next((w.recipe for w in cfg.weights if w.recipe), "")
    return [
        "from medseg_zoo import create_model",
        f'model = create_model("{cfg.name}")  # no published weights yet: train it',
        *([f"# {recipe}"] if recipe else []),
    ]


def model_card(cfg: ModelConfig, parameters: int, *, sources: bool = False) -> str:
    """A markdown model card: architecture, task contract, metrics, use; with ``sources`` also where the
    configuration's weights come from (registry pages; a saved fine-tuned model is not those weights)."""
    c = cfg.contract
    metrics = ", ".join(f"{k}: {v}" for k, v in cfg.metrics.items()) or "none reported"
    weights = ["## Weights", ""] + [
        f"- {w.location} ({w.format}): {w.notes or 'published'}" if w.published else f"- planned: {w.recipe}"
        for w in cfg.weights
    ]
    if cfg.members:
        weights += [f"- ensemble of {', '.join(cfg.members)}"]
    return "\n".join(
        [
            "---",
            "library_name: medseg-zoo",
            f"license: {cfg.license.lower() or 'other'}",
            "tags: [medical-imaging, segmentation, 3d]",
            "---",
            f"# {cfg.name}",
            "",
            f"Architecture: `{cfg.architecture}` ({parameters:,} parameters). {cfg.paper}",
            "",
            "## Task contract",
            "",
            f"- Inputs, in order: {', '.join(c.in_channels)}",
            f"- Outputs: {', '.join(c.out_channels)} ({c.activation})"
            if not (sources and cfg.headless)
            else "- Outputs: your task's (the weights carry no task head: give out_channels)",
            f"- Label scheme: {c.scheme.name if c.scheme else 'none'}",
            f"- Roi: {'x'.join(map(str, c.roi_size))} voxels; spacing "
            + ("x".join(f"{v:g}" for v in c.spacing) + " mm" if c.spacing else "the input's (no resampling)")
            + f"; orientation {c.orientation or 'as stored (no reorientation)'}; axis order {c.axis_order}",
            f"- Intensity normalisation: {c.normalization}",
            "",
            "## Data and metrics",
            "",
            f"Metrics: {metrics}",
            "",
            cfg.notes,
            "",
            *([*weights, ""] if sources and (cfg.weights or cfg.members) else []),
            "## Use",
            "",
            "```python",
            *_use(cfg, sources),
            "```",
            "",
            f"License: {cfg.license or 'not stated'}",
            "",
        ]
    )


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a ``README.md`` model card into ``directory``.

    A new folder is written whole under a temporary name and then renamed, so it appears complete or not at all;
    in an existing folder each file is written to a temporary name and renamed, so an interrupted save never
    leaves a partial file. Other files in the folder are left alone, and the three are replaced only in a folder
    that is already a medseg-zoo checkpoint (its ``config.json`` says so): a user's own ``README.md`` or
    ``config.json`` is never overwritten.

    Returns:
        The folder.

    Raises:
        CheckpointError: If ``directory`` is an existing file, or a folder holding a ``config.json``,
            ``model.safetensors`` or ``README.md`` that is not a medseg-zoo checkpoint's.
    """
    cfg = config_of(model)
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file; save_pretrained writes a folder (config.json, model.safetensors)")
    taken = [n for n in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME) if (out / n).exists() or (out / n).is_symlink()]
    if taken and not _is_zoo_checkpoint(out):
        raise CheckpointError(
            f"{out} holds {', '.join(taken)} and is not a medseg-zoo checkpoint (its config.json does not say "
            "format 'medseg-zoo'): refusing to overwrite them; save into a new or empty folder"
        )
    from medseg_zoo.convert._common import is_computed

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not is_computed(k)}
    info = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "architecture": cfg.architecture,
        "model_args": dict(cfg.model_args),
        "contract": dataclasses.asdict(cfg.contract),
        "license": cfg.license,
        "paper": cfg.paper,
        "metrics": dict(cfg.metrics),
        "notes": cfg.notes,
        "parameters": sum(p.numel() for p in model.parameters()),
    }

    def write(folder: Path) -> None:
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2, default=list)))
        atomic_write(folder / CARD_NAME, lambda tmp: Path(tmp).write_text(model_card(cfg, info["parameters"])))

    if out.is_dir():
        write(out)
        return out
    return atomic_folder(out, write)


def _is_zoo_checkpoint(folder: Path) -> bool:
    config = folder / CONFIG_NAME
    if config.is_symlink() or any((folder / n).is_symlink() for n in (WEIGHTS_NAME, CARD_NAME)):
        return False  # a link is the user's: writing would replace it
    try:
        return json.loads(config.read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _hub_folder(
    spec: str, cache_dir: str | os.PathLike | None, token: str | bool | None, local_files_only: bool
) -> Path:
    """Download a checkpoint folder named ``hf-hub:org/repo[@revision]``; returns its local snapshot folder."""
    from medseg_zoo._download import WeightsError, fetch

    repo_id, _, revision = spec.removeprefix(HUB_PREFIX).partition("@")
    paths = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        source = WeightSource(repo_id=repo_id, filename=filename, revision=revision or "main")
        try:
            path, _ = fetch(source, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        except WeightsError as exc:
            raise CheckpointError(f"{spec}: {exc}") from None
        paths.append(path)
    return paths[0].parent


def from_pretrained(
    directory: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    in_channels: int | Sequence[str] | None = None,
    out_channels: int | Sequence[str] | None = None,
    label_scheme: str | LabelScheme | None = None,
) -> nn.Module:
    """Rebuild a model saved by `save_pretrained` and load its weights strictly.

    Args:
        directory: A local folder, or ``"hf-hub:org/repo"`` / ``"hf-hub:org/repo@revision"`` on the Hub.
        map_location: Device for the weights.
        cache_dir: Cache root for Hub downloads (default: the Hugging Face cache).
        token: Hugging Face token for private repositories.
        local_files_only: Use only the cache (as does ``HF_HUB_OFFLINE=1``).
        in_channels: Other input channels (a count or names): the stem is adapted or reordered, as
            ``create_model(..., pretrained=True)`` does.
        out_channels: Other outputs (a count or names), for a new task: the head is re-initialised.
        label_scheme: The label scheme of the new outputs (it names them when ``out_channels`` is a count).

    With other channels or outputs, ``model.load_report`` says what was loaded, adapted and re-initialised.

    Raises:
        CheckpointError: If a file is missing or malformed, the architecture is not registered, or the weights do
            not match the architecture (missing, unexpected or mis-shaped keys are listed).
    """
    from medseg_zoo._factory import create_model

    spec = str(directory)
    folder = _hub_folder(spec, cache_dir, token, local_files_only) if spec.startswith(HUB_PREFIX) else Path(spec)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: not found; a checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        info = json.loads(config_path.read_text())
        contract = contract_from_dict(info["contract"])
        name, model_args = info["name"], {k: tuples(v) for k, v in info["model_args"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{config_path}: not a medseg-zoo config ({type(exc).__name__}: {exc})") from None
    if not isinstance(name, str):
        raise CheckpointError(f"{config_path}: 'name' must be a registered model name, got {name!r}")
    try:
        base = get_config(name)
    except KeyError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from None
    # The zoo's subclass of a MONAI network reads what the network itself saved (its state-dict keys are MONAI's).
    readable = {base.architecture, *(f"{k.__module__}.{k.__qualname__}" for k in getattr(base.builder, "__mro__", ()))}
    if info.get("architecture", base.architecture) not in readable:
        raise CheckpointError(
            f"{config_path}: saved from {info['architecture']}, but {name!r} is now {base.architecture}"
        )
    from medseg_zoo._pretrained import fill_computed

    roi = {base.roi_arg: contract.roi_size} if base.roi_arg else {}
    build = dict(
        in_channels=contract.in_channels,
        out_channels=contract.out_channels,
        activation=contract.activation,
        label_scheme=contract.label_scheme,
        **model_args,
        **roi,
    )
    try:
        try:
            with torch.device("meta"):  # no throw-away random initialisation; the weights replace everything
                model = create_model(name, **build)
            if any(n not in model.state_dict() for n, _ in model.named_buffers()):
                raise RuntimeError("buffers computed when built (Primus's rotary embedding) need real values")
        except RuntimeError:  # networks that compute values while built (SwinUNETR) cannot be built on meta
            model = create_model(name, **build)
    except InvalidOverrideError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from None
    try:
        state = load_file(weights_path, device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path}: cannot read the weights ({exc})") from None
    try:
        model.load_state_dict(fill_computed(state, model), strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights_path}: weights do not fit {name} ({exc})") from None
    unset = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unset:
        raise CheckpointError(f"{weights_path}: no values for {', '.join(unset)}")
    from medseg_zoo._download import file_digest
    from medseg_zoo._pretrained import LoadReport

    source, digest = spec if spec.startswith(HUB_PREFIX) else str(folder.resolve()), file_digest(weights_path)
    model.load_report = LoadReport(source, digest, loaded=sorted(state))
    model.pretrained_cfg = model.pretrained_cfg.replace(
        contract=contract,
        license=info.get("license", ""),
        paper=info.get("paper", ""),
        metrics=info.get("metrics", {}),
        notes=info.get("notes", ""),
    )
    changes = {
        k: v
        for k, v in (("in_channels", in_channels), ("out_channels", out_channels), ("label_scheme", label_scheme))
        if v is not None
    }
    if changes:
        model = _adapted(model, build, changes, source, digest, config_path)
    return model.eval()


def _adapted(
    saved: nn.Module, build: dict[str, Any], changes: dict[str, Any], source: str, digest: str, where: Path
) -> nn.Module:
    """``saved``'s weights in the same architecture built for other channels or outputs (stem adapted, head
    re-initialised, as published weights are loaded); the rest of its contract (roi, spacing, normalisation) kept."""
    from medseg_zoo._factory import create_model
    from medseg_zoo._pretrained import load_state

    cfg = saved.pretrained_cfg
    dropped = {cfg.roi_arg}
    if {"out_channels", "label_scheme"} & set(changes):  # the new outputs' own names, activation and scheme
        dropped |= {"activation", "label_scheme", "out_channels"}
    build = {k: v for k, v in build.items() if k not in dropped}
    try:
        model = create_model(cfg.name, **{**build, **changes}, roi_size=cfg.contract.roi_size)
    except (InvalidOverrideError, InvalidArgumentError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    built = model.pretrained_cfg.contract
    contract = dataclasses.replace(
        cfg.contract,
        in_channels=built.in_channels,
        out_channels=built.out_channels,
        activation=built.activation,
        label_scheme=built.label_scheme,
    )
    model.pretrained_cfg = model.pretrained_cfg.replace(
        contract=contract, license=cfg.license, paper=cfg.paper, notes=cfg.notes
    )
    model.load_report = load_state(model, cfg, contract, saved.state_dict(), source, sha256=digest)
    return model


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> str:
    """Publish a model as ``config.json`` + ``model.safetensors`` + ``README.md`` to a Hub repository (created if
    needed). Returns the commit URL; load it back with ``from_pretrained("hf-hub:" + repo_id)``.

    Raises:
        LicenseError: The model derives from weights whose licence forbids sharing adaptations (no-derivatives).
        HubError: The Hub cannot be reached or refuses the upload.
    """
    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from medseg_zoo._download import reachable

    cfg = config_of(model)
    if forbids_derivatives(cfg.license):
        raise LicenseError(
            f"refusing to push {cfg.name} to {repo_id}: its weights derive from weights licensed {cfg.license}, "
            "which forbids sharing adapted material"
        )
    endpoint = huggingface_hub.constants.ENDPOINT
    problem = "offline mode is on (HF_HUB_OFFLINE)" if huggingface_hub.constants.HF_HUB_OFFLINE else reachable(endpoint)
    if problem:
        raise HubError(f"cannot push to {repo_id}: {problem}; pushing needs network access to {endpoint}")
    api = HfApi()
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            save_pretrained(model, tmp)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                token=token,
                commit_message=commit_message or f"Upload {config_of(model).name} with medseg-zoo",
            )
    except (HfHubHTTPError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HubError(f"cannot push to {repo_id} on {endpoint}: {first} (a write token: `hf auth login`)") from None
    return str(getattr(info, "commit_url", info))
