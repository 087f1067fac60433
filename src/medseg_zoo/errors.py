"""Typed exceptions. Each subclasses the builtin a caller would catch without knowing medseg-zoo."""

from __future__ import annotations

__all__ = ["InvalidOverrideError", "MedsegZooError", "PretrainedUnavailableError", "UnknownModelError"]


class MedsegZooError(Exception):
    """Base class of every error raised on purpose by medseg-zoo."""


class UnknownModelError(MedsegZooError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidOverrideError(MedsegZooError, TypeError):
    """A keyword argument that the model's constructor does not accept, or a missing required one."""


class PretrainedUnavailableError(MedsegZooError, RuntimeError):
    """`pretrained=True` for a configuration that has no published weights."""
