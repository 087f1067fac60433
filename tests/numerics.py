"""Comparing float32 kernels portably: against a float64 reference, with tolerances derived from the arithmetic.

torch picks its CPU kernels by the CPU's capability (AVX2, AVX-512, ...), and each sums in its own order, so a
fixed tolerance that holds on one CPU kind can fail on another. These bounds hold on any of them.
"""

import torch

UNIT = 2.0**-24  # float32's unit roundoff


def assert_within_rounding(actual: torch.Tensor, exact: torch.Tensor, magnitude: torch.Tensor, terms: int) -> None:
    """``|actual - exact| <= 2 n u * magnitude`` elementwise: the worst case of any float32 summation order over
    ``n = terms`` products (with or without FMA), where ``magnitude`` is the float64 sum of the products' absolute
    values (the same reduction over ``|a|`` and ``|b|``)."""
    bound = 2 * terms * UNIT * magnitude.double() + 1e-30
    excess = ((actual.double() - exact.double()).abs() - bound).max().item()
    assert excess <= 0, f"error exceeds the float32 rounding bound by {excess:.3g}"


def assert_as_accurate(ours: torch.Tensor, theirs: torch.Tensor, exact: torch.Tensor, factor: float = 8.0) -> None:
    """Ours is no further from the float64 result than ``factor`` times the reference implementation's own
    float32 error (floored at a few units in the last place of the result): for whole networks and fused blocks,
    whose error bound is no simple formula, the reference's error on the same CPU is the measure."""
    exact = exact.double()
    error = (ours.double() - exact).abs().max().item()
    reference = (theirs.double() - exact).abs().max().item()
    floor = 4 * UNIT * exact.abs().max().item()
    assert error <= factor * max(reference, floor), (
        f"error {error:.3g} against float64, the reference implementation's {reference:.3g} (allowed {factor}x, "
        f"at least {factor * floor:.3g})"
    )


def assert_same_function(ours: torch.nn.Module, theirs: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """Two networks compute the same function: ours in float32 is as accurate as theirs against theirs in float64
    (`assert_as_accurate`). Returns the float32 outputs' max abs difference, for reports."""
    import copy

    with torch.no_grad():
        out, ref = ours(*inputs), theirs(*inputs)
        exact = copy.deepcopy(theirs).double()(*(x.double() for x in inputs))
    assert_as_accurate(out, ref, exact)
    return (out.double() - ref.double()).abs().max().item()
