"""A classification head on a pretrained encoder: the zoo's encoders as backbones, as timm users use theirs.

    python examples/encoder_classifier.py                      # OpenMind's ResEnc-L encoder (downloaded once)
    python examples/encoder_classifier.py --checkpoint RUN/best  # the encoder of a model you trained

``create_model(..., features_only=True, out_indices=(-1,))`` returns the encoder alone (decoder and head dropped)
with its weights; ``feature_info`` gives the channels and stride of each map. Here the deepest map is pooled and a
linear layer learns, with the encoder frozen, whether a synthetic case's tumour is large or small (its volume
against the median), from 12 synthetic cases; 4 others are held out.
"""

import argparse
from pathlib import Path

import torch
from torch import nn

from medseg_zoo import create_model, from_pretrained
from medseg_zoo.data.synthetic import make_case
from medseg_zoo.features import FeatureExtractor


class Classifier(nn.Module):
    """Encoder maps -> global average pool of the deepest -> linear logits. Shapes: (B, C, D, H, W) -> (B, k)."""

    def __init__(self, encoder: FeatureExtractor, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_info.channels()[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deepest = self.encoder(x)[-1]
        return self.head(deepest.mean(dim=(2, 3, 4)))


def _encoder(args: argparse.Namespace) -> FeatureExtractor:
    if args.checkpoint:
        return FeatureExtractor(from_pretrained(args.checkpoint), out_indices=(-1,))
    small = {"features": (8, 16, 32), "strides": (1, 2, 2), "blocks": (1, 1, 1)} if args.small else {}
    return create_model("resenc_l_openmind", pretrained=not args.small, features_only=True, out_indices=(-1,), **small)


def _cases(size: int, count: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, volumes = [], []
    for seed in range(count):
        image, label, _ = make_case((size, size, size), seed=seed)
        x = torch.from_numpy(image[..., :channels].astype("float32")).permute(3, 0, 1, 2)
        images.append((x - x.mean()) / x.std())  # z-scored, as the encoder's contract asks
        volumes.append(float((label > 0).sum()))
    median = torch.tensor(volumes).median()
    return torch.stack(images), (torch.tensor(volumes) > median).long()


def main(args: argparse.Namespace) -> None:
    encoder = _encoder(args)
    print(getattr(encoder, "load_report", "no pretrained weights (--small)"))
    print("feature maps:", [(f["num_chs"], f["reduction"]) for f in encoder.feature_info])
    channels = len(encoder.pretrained_cfg.contract.in_channels)
    x, y = _cases(args.size, 16, channels)
    model = Classifier(encoder, 2)
    encoder.requires_grad_(False)  # a linear probe: only the head learns
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-2)
    train, test = slice(0, 12), slice(12, 16)
    for _ in range(args.steps):
        loss = nn.functional.cross_entropy(model(x[train]), y[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    print(f"after {args.steps} steps: training loss {loss.item():.3f}, held-out accuracy {accuracy:.2f}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.save(model.head.state_dict(), args.workdir / "head.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a zoo model folder (RUN/best, save_pretrained) instead of OpenMind's")
    parser.add_argument("--small", action="store_true", help="a small encoder without weights, to try the wiring")
    parser.add_argument("--size", type=int, default=64, help="voxels per axis of the synthetic cases")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=Path("classifier-example"), help="head.pt goes here")
    main(parser.parse_args())
