import pytest
import torch
from monai.inferers import sliding_window_inference

from medseg_zoo.inference.sliding import sliding_window_stream, window_starts


@pytest.mark.parametrize(
    ("size", "roi", "overlap", "starts"),
    [
        (100, 40, 0.5, [0, 20, 40, 60]),  # regular steps, the last one flush with the end
        (100, 40, 0.25, [0, 30, 60]),
        (30, 40, 0.5, [0]),  # smaller than the roi: one (padded) window
        (40, 40, 0.5, [0]),
        (41, 40, 0.0, [0, 1]),
    ],
)
def test_window_starts(size, roi, overlap, starts):
    assert window_starts(size, roi, overlap) == starts


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "blend"),
    [
        ((20, 24, 40), (8, 8, 8), 0.5, "gaussian"),
        ((20, 24, 40), (8, 12, 16), 0.25, "constant"),
        ((5, 24, 6), (8, 8, 8), 0.5, "gaussian"),  # smaller than the roi along two axes: padded
        ((16, 16, 33), (16, 16, 16), 0.6, "gaussian"),
    ],
)
def test_stream_equals_monai_sliding_window(shape, roi, overlap, blend):
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.Sigmoid())
    x = torch.randn(1, 2, *shape)
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, 3, net, overlap=overlap, mode=blend)[0]
        out = torch.full_like(ref, float("nan"))

        def emit(p, s):
            assert torch.isnan(out[..., s]).all()  # every plane exactly once
            out[..., s] = p

        sliding_window_stream(x, roi, 3, net, emit, overlap=overlap, blend=blend, batch_size=3)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
