"""Typed exceptions. Each subclasses the builtin a caller would catch without knowing medseg-zoo."""

from __future__ import annotations

__all__ = [
    "DeviceError",
    "ExportError",
    "InputError",
    "InvalidArgumentError",
    "InvalidOverrideError",
    "LicenseError",
    "MedsegZooError",
    "MissingExtraError",
    "OutputError",
    "PretrainedUnavailableError",
    "TrainingError",
    "UnknownModelError",
    "WeightsError",
]


class MedsegZooError(Exception):
    """Base class of every error raised on purpose by medseg-zoo."""


class UnknownModelError(MedsegZooError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidOverrideError(MedsegZooError, TypeError):
    """A keyword argument that the model's constructor does not accept, or a missing required one."""


class InvalidArgumentError(MedsegZooError, ValueError):
    """A known argument of a model with a value it cannot take (``spatial_dims=2``, a roi of the wrong shape)."""


class OutputError(MedsegZooError, ValueError):
    """An output a command must not write: one of its inputs, inside the data or checkpoint it reads, a user's
    folder, or a path that cannot be written."""


class PretrainedUnavailableError(MedsegZooError, RuntimeError):
    """`pretrained=True` for a configuration that has no published weights."""


class WeightsError(MedsegZooError, OSError):
    """Weights that cannot be fetched, fail their hash check, cannot be read, or do not fit their model."""


class DeviceError(MedsegZooError, ValueError):
    """A device that does not exist on this machine, or a precision it cannot run."""


class TrainingError(MedsegZooError, RuntimeError):
    """Training cannot start or go on: bad data or settings, a run folder in the way, a NaN loss."""


class MissingExtraError(MedsegZooError, ImportError):
    """A feature whose optional dependencies are not installed; the message names the extra to install."""


class InputError(MedsegZooError, ValueError):
    """An input that cannot be predicted: unreadable, wrong channels, non-finite values."""


class ExportError(MedsegZooError, ValueError):
    """A model that cannot be exported as asked, an export that does not reproduce the model, or a file that is
    not a medseg-zoo export this version can read."""


class LicenseError(MedsegZooError, PermissionError):
    """An action the weights' licence does not allow (sharing a model derived from no-derivatives weights)."""


def forbids_derivatives(license: str) -> bool:
    """Whether a licence text names a no-derivatives licence (CC BY-ND, CC BY-NC-ND)."""
    words = license.upper().replace("-", " ").replace("_", " ").split()
    return "ND" in words
