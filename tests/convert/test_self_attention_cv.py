"""Given the same weights, unetr_brats reproduces self-attention-cv 1.2.3's UNETR."""

import copy

import pytest
import torch
from self_attention_cv import UNETR as SourceUNETR
from tests.numerics import assert_as_accurate, assert_same_function

import medseg_zoo as mz
from medseg_zoo.convert import ConversionError
from medseg_zoo.convert.self_attention_cv import convert_unetr

ROI = (32, 32, 16)


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    # The seed's configuration at a tiny roi; weights randomised so every layer matters.
    model = SourceUNETR(
        img_shape=ROI,
        input_dim=4,
        output_dim=3,
        embed_dim=512,
        patch_size=16,
        num_heads=10,
        dim_linear_block=2048,
    )
    return model.eval()


def test_outputs_equal(source):
    model = mz.create_model("unetr_brats", img_size=ROI).eval()
    model.load_state_dict(convert_unetr(source.state_dict(), num_heads=10), strict=True)
    assert_same_function(model, source, torch.randn(2, 4, *ROI))


def test_gradients_equal(source):
    model = mz.create_model("unetr_brats", img_size=ROI)
    model.load_state_dict(convert_unetr(source.state_dict(), num_heads=10), strict=True)
    x = torch.randn(2, 4, *ROI)  # batch 2: oneDNN convolutions, so the decoder runs channels-last
    layouts = []
    model.decoders[-1].conv.conv1.register_forward_hook(
        lambda module, args, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last_3d))
    )
    model(x).square().mean().backward()
    grads = {}
    for dtype in (torch.float32, torch.float64):  # self-attention-cv's own float32 error is the measure
        peer = copy.deepcopy(source).to(dtype)
        peer(x.to(dtype)).square().mean().backward()
        grads[dtype] = convert_unetr({k: p.grad for k, p in peer.named_parameters()}, num_heads=10)
    assert layouts == [True]
    for name, param in model.named_parameters():
        assert_as_accurate(param.grad, grads[torch.float32][name], grads[torch.float64][name])


def test_parameter_count_matches_the_source(source):
    model = mz.create_model("unetr_brats", img_size=ROI)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in source.parameters())


def test_batch_norm_variant_converts_running_stats():
    torch.manual_seed(2)
    src = SourceUNETR(
        img_shape=ROI,
        input_dim=4,
        output_dim=3,
        embed_dim=64,
        num_heads=4,
        dim_linear_block=128,
        norm="batch",
    ).eval()
    for m in src.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model = mz.create_model(
        "unetr_brats", img_size=ROI, hidden_size=64, num_heads=4, dim_head=16, mlp_dim=128, norm_name="batch"
    ).eval()
    model.load_state_dict(convert_unetr(src.state_dict(), num_heads=4), strict=True)
    assert_same_function(model, src, torch.randn(1, 4, *ROI))


def test_unknown_keys_are_refused(source):
    state = dict(source.state_dict())
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"self-attention-cv UNETR: 1 key\(s\) not understood .*extra\.weight"):
        convert_unetr(state, num_heads=10)
