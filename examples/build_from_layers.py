"""Build a small model from medseg_zoo.layers, register it with a task contract, train it one step, save it.

    python examples/build_from_layers.py --workdir /tmp/layers-example

A tiny "ViT bottleneck U-Net": a convolutional stem (ResBlock), a patch embedding and two transformer blocks at
1/8 resolution, an upsampling path back to the input size. Registering it makes it a zoo configuration like any
other: create_model, save_pretrained / from_pretrained, Predictor and Trainer all read its contract.
"""

import argparse
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from medseg_zoo import ModelConfig, TaskContract, create_model, from_pretrained, register_model, save_pretrained
from medseg_zoo.layers import PatchEmbed3d, ResBlock, TransformerEncoder, UpConv3d, conv3d


class TinyVitUnet(nn.Module):
    """``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``; D, H, W multiples of 8."""

    def __init__(self, in_channels: int, out_channels: int, img_size=(32, 32, 32), width: int = 16, dim: int = 64):
        super().__init__()
        self.stem = ResBlock(in_channels, width)  # (B, C, D, H, W) -> (B, width, D, H, W)
        self.patch_embed = PatchEmbed3d(width, dim, img_size, patch_size=8)  # -> (B, N, dim), N = DHW / 512
        self.encoder = TransformerEncoder(2, dim, num_heads=4, mlp_dim=2 * dim, out_layers=(2,), final_norm=True)
        self.up = nn.Sequential(UpConv3d(dim, width, scale=8))  # (B, dim, D/8, ...) -> (B, width, D, H, W)
        self.fuse = ResBlock(2 * width, width)
        self.head = conv3d(width, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        (tokens,) = self.encoder(self.patch_embed(skip))
        d, h, w = (s // 8 for s in x.shape[2:])
        grid = rearrange(tokens, "b (d h w) e -> b e d h w", d=d, h=h, w=w)
        return self.head(self.fuse(torch.cat([self.up(grid), skip], dim=1)))


def main(workdir: Path) -> None:
    register_model(
        ModelConfig(
            name="tiny_vit_unet_brats",
            builder=TinyVitUnet,
            roi_arg="img_size",
            contract=TaskContract(
                in_channels=("FLAIR", "T1w", "T1gd", "T2w"),
                out_channels=("TC", "WT", "ET"),
                activation="sigmoid",
                roi_size=(32, 32, 32),
                spacing=(1.5, 1.5, 2.0),
                label_scheme="msd_task01",
            ),
            notes="An example built from medseg_zoo.layers.",
            stem=("stem.conv1.conv.weight", "stem.shortcut.conv.weight"),
            head=("head.",),
            encoder=("patch_embed.", "encoder."),
        ),
        overwrite=True,
    )
    model = create_model("tiny_vit_unet_brats")
    x = torch.randn(2, 4, 32, 32, 32)
    loss = model(x).sigmoid().mean()
    loss.backward()
    print("output", tuple(model(x).shape), "parameters", sum(p.numel() for p in model.parameters()))
    folder = save_pretrained(model, workdir / "tiny_vit_unet")
    again = from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(again(x), model.eval()(x))
    print("saved and reloaded:", folder)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("layers-example"))
    main(parser.parse_args().workdir)
