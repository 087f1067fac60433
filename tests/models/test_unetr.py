import pytest
import torch

from medseg_zoo.models import UNETR

TINY = {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 4}


@pytest.mark.parametrize(
    ("args", "input_shape", "output_shape"),
    [
        ({"img_size": (32, 32, 16)}, (1, 4, 32, 32, 16), (1, 3, 32, 32, 16)),  # roi as configured
        ({"img_size": (32, 32, 32)}, (2, 4, 32, 32, 32), (2, 3, 32, 32, 32)),  # batch of two
        (
            {"img_size": (32, 32, 16)},
            (1, 4, 48, 32, 32),
            (1, 3, 48, 32, 32),
        ),  # other roi: position embedding resized
        ({"img_size": (16, 16, 16), "proj_type": "perceptron"}, (1, 4, 16, 16, 16), (1, 3, 16, 16, 16)),
        (
            {"img_size": (32, 32, 16), "conv_block": False, "res_block": False},
            (1, 4, 32, 32, 16),
            (1, 3, 32, 32, 16),
        ),
        ({"img_size": (32, 32, 16), "norm_name": "batch"}, (2, 4, 32, 32, 16), (2, 3, 32, 32, 16)),
        (
            {"img_size": (32, 32, 16), "dim_head": 5, "num_layers": 4, "skip_layers": (1, 2, 3, 4)},
            (1, 4, 32, 32, 16),
            (1, 3, 32, 32, 16),
        ),  # head width independent of the embedding, shallower encoder
    ],
)
def test_shapes(args, input_shape, output_shape):
    model = UNETR(4, 3, **{**TINY, **args})
    assert model(torch.randn(input_shape)).shape == output_shape


def test_input_not_multiple_of_patch_suggests_padding():
    model = UNETR(4, 3, img_size=(32, 32, 16), **TINY)
    with pytest.raises(ValueError, match=r"got \(1, 4, 30, 32, 20\); pad the volume to \(32, 32, 32\)"):
        model(torch.randn(1, 4, 30, 32, 20))


def test_skip_layers_must_end_with_the_last_block():
    with pytest.raises(ValueError, match=r"skip_layers must name four blocks ending with the last one \(12\)"):
        UNETR(4, 3, img_size=(32, 32, 16), skip_layers=(3, 6, 9), **TINY)


def test_stem_and_head_read_and_write_the_channels():
    model = UNETR(4, 3, img_size=(32, 32, 16), **TINY)
    assert model.stem.conv1.conv.in_channels == 4
    assert model.patch_embed.proj.in_channels == 4
    assert model.head.out_channels == 3


def test_trains_on_monai_metatensors():
    # MONAI's loaders hand out MetaTensors; batch 2 sends the convolutions to oneDNN and the decoder channels-last.
    from monai.data import MetaTensor

    model = UNETR(4, 3, (32, 32, 16), **TINY)
    x = torch.randn(2, 4, 32, 32, 16)
    model(MetaTensor(x)).square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().mean().backward()
    for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want)
