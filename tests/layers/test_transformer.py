import copy
import math

import pytest
import torch
from tests.numerics import assert_as_accurate

from medseg_zoo.layers import Attention, PatchEmbed3d, TransformerBlock, TransformerEncoder


def _textbook(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    q, k, v = attn.qkv(x).view(2, 5, 3, 3, 7).permute(2, 0, 3, 1, 4)  # (qkv, b, h, n, d)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(7), dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 21))


def test_attention_matches_the_textbook_formula():
    attn = Attention(20, num_heads=3, dim_head=7, qkv_bias=True)  # head size independent of the width
    x = torch.randn(2, 5, 20)
    out, ref = attn(x), _textbook(attn, x)
    with torch.no_grad():
        exact = _textbook(copy.deepcopy(attn).double(), x.double())
    assert_as_accurate(out, ref, exact)
    assert attn.qkv.weight.shape == (63, 20) and attn.proj.weight.shape == (20, 21)


def test_attention_needs_a_dividing_width_unless_the_head_width_is_given():
    with pytest.raises(ValueError, match=r"hidden size 512 should be divisible by num_heads 12"):
        Attention(512, num_heads=12)
    assert Attention(512, num_heads=10, dim_head=51).qkv.out_features == 3 * 510  # self-attention-cv's seed


def test_attention_without_biases():
    attn = Attention(16, num_heads=4, proj_bias=False)
    assert attn.qkv.bias is None and attn.proj.bias is None
    assert attn.dim_head == 4


def test_transformer_block_shape_and_keys():
    block = TransformerBlock(16, 4, 32)
    assert block(torch.randn(2, 7, 16)).shape == (2, 7, 16)
    assert {"mlp.fc1.weight", "mlp.fc2.weight", "attn.qkv.weight", "norm1.weight"} <= set(block.state_dict())


def test_encoder_returns_chosen_layers_and_norms_the_last():
    enc = TransformerEncoder(4, 16, 4, 32, out_layers=(1, 3, 4), final_norm=True)
    x = torch.randn(1, 6, 16)
    outs = enc(x)
    assert len(outs) == 3
    h = x
    states = []
    for block in enc.blocks:
        h = block(h)
        states.append(h)
    torch.testing.assert_close(outs[0], states[0])
    torch.testing.assert_close(outs[1], states[2])
    torch.testing.assert_close(outs[2], enc.norm(states[3]))


@pytest.mark.parametrize("out_layers", [(3, 1), (0, 2), (2, 5), ()])
def test_encoder_rejects_bad_layers(out_layers):
    with pytest.raises(ValueError, match=r"out_layers must be increasing block numbers in 1\.\.4"):
        TransformerEncoder(4, 16, 4, 32, out_layers=out_layers)


@pytest.mark.parametrize(
    ("args", "input_shape", "output_shape"),
    [
        ({"img_size": (32, 32, 16)}, (2, 3, 32, 32, 16), (2, 4, 24)),  # conv projection, grid 2x2x1
        ({"img_size": (32, 32, 16), "proj_type": "perceptron"}, (1, 3, 32, 32, 16), (1, 4, 24)),
        ({"img_size": (32, 32, 16)}, (1, 3, 48, 32, 32), (1, 12, 24)),  # other grid: interpolated positions
    ],
)
def test_patch_embed_shapes(args, input_shape, output_shape):
    embed = PatchEmbed3d(3, 24, patch_size=16, **args)
    assert embed(torch.randn(input_shape)).shape == output_shape


def test_patch_embed_conv_projection_equals_strided_conv():
    embed = PatchEmbed3d(3, 24, (32, 32, 16), 16)
    x = torch.randn(1, 3, 32, 32, 16)
    with torch.no_grad():
        ref = embed.proj(x).flatten(2).transpose(1, 2) + embed.pos_embed
        exact = embed.proj.double()(x.double()).flatten(2).transpose(1, 2) + embed.pos_embed.double()
        assert_as_accurate(embed.float()(x), ref, exact)


def test_patch_embed_perceptron_flattens_patches_channel_last():
    embed = PatchEmbed3d(2, 8, (16, 16, 16), 16, proj_type="perceptron")
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        ref = embed.proj(x.permute(0, 2, 3, 4, 1).reshape(1, 1, -1)) + embed.pos_embed
        flat = x.double().permute(0, 2, 3, 4, 1).reshape(1, 1, -1)
        exact = embed.proj.double()(flat) + embed.pos_embed.double()
        assert_as_accurate(embed.float()(x), ref, exact)


def test_position_embedding_interpolation_keeps_its_own_grid():
    embed = PatchEmbed3d(1, 8, (32, 32, 32), 16)
    torch.testing.assert_close(embed.position_embedding((2, 2, 2)), embed.pos_embed)
    assert embed.position_embedding((4, 2, 3)).shape == (1, 24, 8)


def test_patch_embed_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"img_size must be three positive multiples of patch_size=16"):
        PatchEmbed3d(1, 8, (30, 32, 32), 16)
    with pytest.raises(ValueError, match="proj_type must be 'conv' or 'perceptron'"):
        PatchEmbed3d(1, 8, (32, 32, 32), 16, proj_type="linear")
