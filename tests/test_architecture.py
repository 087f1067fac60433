"""The house keeps its rules: no import circle, nothing inside the package imports the package face, the ground
(errors, version, label schemes, the contract, layers) imports nothing above it, and no source file is a mansion.
The graph is the one docs/architecture.md draws (docs/_hooks/architecture.py)."""

import importlib.util
from pathlib import Path

import pytest

HOOK = Path(__file__).parents[1] / "docs" / "_hooks" / "architecture.py"
spec = importlib.util.spec_from_file_location("architecture", HOOK)
architecture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(architecture)

GROUND = {
    "medseg_zoo.errors",
    "medseg_zoo._version",
    "medseg_zoo._schemes",
    "medseg_zoo._contract",
    "medseg_zoo._atomic",
}
MAX_LINES = 450


def test_no_import_circle_between_modules():
    architecture.floors(architecture.imports())  # raises naming the circle


def test_no_import_circle_between_rooms():
    graph, _ = architecture.rooms()
    assert max(architecture.floors(graph).values()) > 5  # a house of floors, not a flat list


def test_nothing_inside_imports_the_package_face():
    importers = [m for m, targets in architecture.imports().items() if "medseg_zoo" in targets]
    assert not importers, importers


@pytest.mark.parametrize("ground", sorted(GROUND))
def test_the_ground_imports_only_the_ground(ground):
    assert architecture.imports()[ground] <= GROUND, architecture.imports()[ground]


def test_layers_import_only_layers_and_the_ground():
    for module, targets in architecture.imports().items():
        if module.startswith("medseg_zoo.layers"):
            assert all(t.startswith("medseg_zoo.layers") or t in GROUND for t in targets), (module, targets)


def test_no_source_file_over_the_limit():
    long = {m: n for m, p in architecture.modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_a_circle_is_named():
    with pytest.raises(ValueError, match=r"import circle: a -> b -> a"):
        architecture.floors({"a": {"b"}, "b": {"a"}})
