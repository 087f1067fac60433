"""Converters from third-party checkpoint layouts to the zoo's native layouts, one module per source."""

from medseg_zoo.convert._common import ConversionError

__all__ = ["ConversionError"]
