"""``python -m medseg_zoo ...`` (and ``torchrun -m medseg_zoo train ...``) runs the ``medseg-zoo`` command."""

from medseg_zoo.cli import run

run()
