"""Convert a MONAI model-zoo bundle into a medseg-zoo checkpoint folder, and check that the outputs agree.

    python examples/convert_monai_bundle.py --bundle brats_mri_segmentation --workdir converted

(`medseg-zoo convert --from monai-bundle BUNDLE --model segresnet_brats --to DIR` does the same.) Without
--bundle, the example writes a bundle folder of the same layout (configs/inference.json, models/model.pt) from a
MONAI SegResNet with random weights, since no bundle can be downloaded here.
"""

import argparse
import json
from pathlib import Path

import torch
from monai.networks.nets import SegResNet

from medseg_zoo import convert_checkpoint, from_pretrained, save_pretrained

NETWORK = {"_target_": "SegResNet", "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "init_filters": 16,
           "in_channels": 4, "out_channels": 3, "dropout_prob": 0.2}  # fmt: skip


def main(bundle: Path, to: Path) -> None:
    model = convert_checkpoint(bundle, "monai-bundle", "segresnet_brats")
    folder = save_pretrained(model, to)
    print("converted", bundle, "->", folder)
    reference = SegResNet(**{k: v for k, v in NETWORK.items() if k != "_target_"})
    reference.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        difference = (from_pretrained(folder)(x) - reference.eval()(x)).abs().max().item()
    print(f"largest difference from MONAI's network: {difference:.2e}")
    assert difference < 1e-5


def _bundle(root: Path) -> Path:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": NETWORK}))
    torch.manual_seed(0)
    net = SegResNet(**{k: v for k, v in NETWORK.items() if k != "_target_"})
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="a MONAI bundle folder (brats_mri_segmentation)")
    parser.add_argument("--workdir", type=Path, default=Path("convert-example"), help="writes segresnet_brats/ here")
    args = parser.parse_args()
    main(args.bundle or _bundle(args.workdir / "bundle"), args.workdir / "segresnet_brats")
