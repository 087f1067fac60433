"""Encoders as backbones: every model's forward_features against its own intermediate maps, feature_info against
the maps, and create_model(features_only=True) as the encoder alone."""

import pytest
import torch

import medseg_zoo as mz
from medseg_zoo._registry import get_config
from medseg_zoo.errors import InvalidOverrideError
from medseg_zoo.features import FeatureExtractor
from tests.conftest import build_tiny, single_models

SPATIAL = (64, 64, 32)


def _hooked(model: torch.nn.Module, names: list[str], x: torch.Tensor) -> dict[str, object]:
    """The outputs of the named modules during the full model's own forward pass."""
    seen: dict[str, object] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: seen.setdefault(name, out))
        for name in dict.fromkeys(names)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("name", single_models())
def test_forward_features_are_the_models_own_maps(name):
    torch.manual_seed(0)
    model = build_tiny(name).eval()
    contract = model.pretrained_cfg.contract
    x = torch.randn(1, len(contract.in_channels), *SPATIAL)
    info = model.feature_info
    with torch.no_grad():
        maps = model.forward_features(x)
        seen = _hooked(model, info.module_name(), x)
    assert len(maps) == len(info) >= 2
    taken: dict[str, int] = {}
    for feature, entry in zip(maps, info, strict=True):
        assert feature.shape[1] == entry["num_chs"]
        assert tuple(feature.shape[2:]) == tuple(s // r for s, r in zip(SPATIAL, entry["reduction"], strict=True))
        out = seen[entry["module"]]
        if isinstance(out, list | tuple):  # one module gives several maps (the Swin encoder)
            out = out[taken.setdefault(entry["module"], 0)]
            taken[entry["module"]] += 1
        if out.ndim == 3:  # transformer tokens (B, N, E) laid out on the patch grid
            out = out.transpose(1, 2).reshape(feature.shape)
        torch.testing.assert_close(feature, out, rtol=0, atol=0)


@pytest.mark.parametrize("name", single_models())
def test_features_only_is_the_encoder_alone(name):
    cfg = get_config(name)
    channels = {} if cfg.contract else {"in_channels": 2, "out_channels": 3}
    torch.manual_seed(0)
    full = build_tiny(name).eval()
    torch.manual_seed(0)
    encoder = mz.create_model(name, features_only=True, out_indices=(0, -1), **channels, **cfg.tiny_args).eval()
    assert isinstance(encoder, FeatureExtractor)
    assert encoder.feature_info == [full.feature_info[0], full.feature_info[-1]]
    kept = dict(encoder.model.named_parameters())
    assert 0 < len(kept) < len(dict(full.named_parameters()))  # the decoder and head are gone
    full_state = full.state_dict()
    assert all(torch.equal(p, full_state[k]) for k, p in kept.items())
    x = torch.randn(1, len(full.pretrained_cfg.contract.in_channels), *SPATIAL)
    with torch.no_grad():
        expected = full.forward_features(x)
        got = encoder(x)
    assert len(got) == 2
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], expected[-1], rtol=0, atol=0)


def test_out_indices_are_checked():
    with pytest.raises(ValueError, match=r"out_indices must pick among the 3 feature maps \(0 to 2\), got \[3\]"):
        build_tiny("resenc_unet", features_only=True, out_indices=(3,))
    with pytest.raises(InvalidOverrideError, match="out_indices picks feature maps; give features_only=True"):
        build_tiny("resenc_unet", out_indices=(0,))


def test_features_only_of_a_pretrained_start_keeps_its_weights(tmp_path):
    """A saved model's encoder, as a pretrained checkpoint's: the same weights, only the encoder kept."""
    torch.manual_seed(1)
    model = build_tiny("resenc_l_openmind")
    folder = mz.save_pretrained(model, tmp_path / "start")
    loaded = mz.from_pretrained(folder)
    encoder = FeatureExtractor(loaded)
    assert encoder.load_report.sha256 and encoder.feature_info.channels() == model.feature_info.channels()
    state = model.state_dict()
    assert all(torch.equal(p, state[k]) for k, p in encoder.model.named_parameters())
