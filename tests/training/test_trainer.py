import csv
import json

import pytest
import torch

import medseg_zoo as mz
from medseg_zoo._pretrained import LoadReport
from medseg_zoo.errors import TrainingError
from medseg_zoo.training import Callback, Trainer
from medseg_zoo.training.learning import parameter_groups
from tests.conftest import tiny_config, tiny_model


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_run_folder(tiny_data, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny_model(), tiny_data, tiny_config(run, epochs=2))
    history = trainer.fit()
    assert [r["epoch"] for r in history] == [1, 2]
    assert trainer.optimizer.defaults["fused"]  # one kernel for all parameters on the CPU and on CUDA
    for name in ("config.json", "trainer_state.pt", "metrics.csv", "curves.png", "train.log"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = _rows(run)
    assert list(rows[0])[:4] == ["epoch", "train_loss", "lr", "samples_per_second"]
    assert {"dice_TC", "dice_WT", "dice_ET", "mean_dice", "seconds"} <= set(rows[0])
    assert all(0 <= float(r["mean_dice"]) <= 1 for r in rows)
    run_config = json.loads((run / "config.json").read_text())
    assert sorted(run_config["split"]["train"] + run_config["split"]["val"]) == [f"BRATS_{i:03d}" for i in range(6)]
    assert run_config["config"]["epochs"] == 2 and run_config["data"]["label_scheme"] == "msd_task01"
    assert "epoch 2/2: loss" in (run / "train.log").read_text()
    for folder in ("best", "last"):
        model = mz.from_pretrained(run / folder)
        cfg = model.pretrained_cfg
        assert cfg.contract.label_scheme == "msd_task01" and cfg.contract.roi_size == (16, 16, 16)
        assert set(cfg.metrics) >= {"mean_dice", "dice_TC", "data"}
    best = max(history, key=lambda r: r["mean_dice"])
    assert mz.from_pretrained(run / "best").pretrained_cfg.metrics["mean_dice"] == round(best["mean_dice"], 4)
    assert f"mean_dice: {round(best['mean_dice'], 4)}" in (run / "best" / "README.md").read_text()


class _Stop(Callback):
    """Interrupts the run after an epoch, as a crash right after the checkpoint would."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == self.after:
            raise KeyboardInterrupt


def test_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path):
    config = {"epochs": 4, "val_every": 2, "optimizer": "adamw", "lr": 3e-3, "foreground_ratio": 0.5}
    whole = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "a", **config)).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "b", **config), callbacks=[_Stop(3)]).fit()
    assert len(_rows(tmp_path / "b")) == 3
    resumed = Trainer(tiny_model(seed=99), tiny_data, tiny_config(tmp_path / "b", **config), resume=True).fit()
    assert len(resumed) == 4
    for a, b in zip(whole, resumed, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
        assert b.get("mean_dice", -1) == pytest.approx(a.get("mean_dice", -1), abs=1e-6)
    for key, value in mz.from_pretrained(tmp_path / "a" / "last").state_dict().items():
        torch.testing.assert_close(
            mz.from_pretrained(tmp_path / "b" / "last").state_dict()[key], value, atol=1e-6, rtol=0
        )


class _Record(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer):
        self.calls.append("start")
        self.states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    def on_epoch_end(self, trainer, row):
        self.calls.append(f"epoch {row['epoch']}")
        self.states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    def on_train_end(self, trainer):
        self.calls.append("end")


def test_frozen_encoder_keeps_its_weights_then_trains(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = mz.create_model(  # reads the data's channel order; BraTS 2018 labels, trained on MSD labels
        "segresnet_brats",
        in_channels=["FLAIR", "T1w", "T1gd", "T2w"],
        roi_size=(16, 16, 16),
        init_filters=8,
        blocks_down=(1, 1),
        blocks_up=(1,),
    )
    record = _Record()
    Trainer(model, tiny_data, tiny_config(tmp_path / "run", freeze_encoder_epochs=1), callbacks=[record]).fit()
    assert record.calls == ["start", "epoch 1", "epoch 2", "end"]
    start, first, second = record.states
    encoder = [k for k in start if k.startswith(("convInit.", "down_layers.")) and start[k].is_floating_point()]
    head = [k for k in start if k.startswith("conv_final.2.")]
    assert encoder and head
    assert all(torch.equal(start[k], first[k]) for k in encoder)  # frozen in epoch 1
    assert any(not torch.equal(start[k], first[k]) for k in head)  # the head trained
    assert any(not torch.equal(first[k], second[k]) for k in encoder)  # unfrozen in epoch 2


def _groups(trainer):
    """The parameter groups the trainer's optimiser gets."""
    pretrained, reinitialized = trainer.origin()
    return parameter_groups(trainer.model, trainer.config, pretrained=pretrained, reinitialized=reinitialized)


def test_layer_decay_and_pretrained_scale_set_group_rates(tiny_data, tmp_path):
    model = mz.create_model(
        "unetr_brats", img_size=(16, 16, 16), feature_size=4, hidden_size=32, mlp_dim=64, num_heads=4, dim_head=8
    )
    model.load_report = LoadReport("test", reinitialized=["head.weight", "head.bias"])
    config = tiny_config(tmp_path / "run", optimizer="adamw", lr=1e-3, layer_decay=0.5, pretrained_lr_scale=0.1)
    trainer = Trainer(model, tiny_data, config)
    rates = {}
    for group in _groups(trainer):
        for p in group["params"]:
            rates[next(n for n, q in model.named_parameters() if q is p)] = group["lr"]
    blocks = 12
    assert rates["patch_embed.proj.weight"] == pytest.approx(1e-3 * 0.1 * 0.5 ** (blocks + 1))
    assert rates["encoder.blocks.0.norm1.weight"] == pytest.approx(1e-3 * 0.1 * 0.5**blocks)
    assert rates["encoder.blocks.11.norm1.weight"] == pytest.approx(1e-3 * 0.1 * 0.5)
    assert rates["decoders.0.up.weight"] == pytest.approx(1e-3 * 0.1)
    assert rates["head.weight"] == pytest.approx(1e-3)  # re-initialised: the full rate


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_the_last_good_epoch(tiny_data, tmp_path):
    class Diverging(Trainer):
        def training_step(self, batch):
            loss = super().training_step(batch)
            return loss * float("nan") if self.epoch == 1 else loss

    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"the loss is nan in epoch 2, batch 1; .*last keeps the last good epoch"):
        Diverging(tiny_model(), tiny_data, tiny_config(run, epochs=3)).fit()
    assert [r["epoch"] for r in _rows(run)] == ["1"]
    assert torch.load(run / "trainer_state.pt", weights_only=True)["epoch"] == 1
    mz.from_pretrained(run / "last")


def test_early_stopping_and_time_budget(tiny_data, tmp_path):
    stalled = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "a", epochs=10, lr=1e-12, early_stopping=2))
    assert len(stalled.fit()) == 3  # the first validation sets the best; two more without a better one stop it
    budget = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "b", epochs=50, val_every=10, max_minutes=1e-4))
    history = budget.fit()
    assert len(history) == 1 and "mean_dice" in history[0]  # stopped after one epoch, which was then validated


def test_evaluate_scores_each_case_on_its_own_grid(tiny_data, tmp_path):
    trainer = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "run", epochs=1))
    trainer.fit()
    result = trainer.evaluate()
    assert [r["case"] for r in result.cases] == [c.name for c in trainer.val_cases]
    assert set(result.mean) >= {"dice_TC", "hd95_ET", "mean_dice", "mean_hd95"}
    assert all(0 <= r["dice_WT"] <= 1 and r["hd95_WT"] >= 0 for r in result.cases)
    path = result.to_csv(tmp_path / "table.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("case,dice_TC,dice_WT,dice_ET,hd95_TC") and lines[-1].startswith("mean,")
    assert "HD95 in mm; empty masks: both empty: Dice 1" in str(result)


def test_a_tiny_model_learns_the_synthetic_tumours(tmp_path):
    """The loop learns: a 3-level UNet of 8-32 channels reaches mean Dice > 0.7 on held-out cases in ~20 s."""
    from medseg_zoo.data import make_dataset

    root = make_dataset(tmp_path / "data", n_cases=8, shape=(48, 48, 40), seed=5)
    model = tiny_model(roi_size=(32, 32, 32), channels=(8, 16, 32))
    config = tiny_config(tmp_path / "run", epochs=60, val_every=30, seed=1)
    history = Trainer(model, root, config).fit()
    assert history[-1]["mean_dice"] > 0.7, history[-1]
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2


def test_a_resumed_fine_tuning_run_keeps_its_learning_rate_groups(tiny_data, tmp_path):
    model = tiny_model()
    head = [n for n, _ in model.named_parameters() if n.startswith("model.2.")]
    model.load_report = LoadReport("test", reinitialized=head)
    config = tiny_config(tmp_path / "run", epochs=2, pretrained_lr_scale=0.1, optimizer="adamw", lr=1e-3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, tiny_data, config, callbacks=[_Stop(1)]).fit()
    resumed = Trainer(mz.from_pretrained(tmp_path / "run" / "last"), tiny_data, config, resume=True)
    assert sorted(g["lr"] for g in _groups(resumed)) == pytest.approx([1e-4, 1e-3])
    assert len(resumed.fit()) == 2


def test_sawtooth_schedule_warms_the_fresh_parts_then_the_whole_network():
    from medseg_zoo.training import TrainConfig
    from medseg_zoo.training.learning import lr_factor

    config = TrainConfig(epochs=10, freeze_encoder_epochs=2, warmup_epochs=2, schedule="poly")
    encoder = lr_factor(config, {"encoder": True}, 1, lambda: 10)
    decoder = lr_factor(config, {"encoder": False}, 1, lambda: 10)
    assert [encoder(s) for s in range(4)] == [0.0, 0.0, 0.5, 1.0]  # frozen, then the whole network warms up
    assert [decoder(s) for s in range(4)] == [0.5, 1.0, 0.5, 1.0]  # the sawtooth
    assert encoder(4) == decoder(4) == 1.0 and 0 < encoder(9) < encoder(5) < 1  # poly from the end of the warm-up
    plain = lr_factor(config.replace(freeze_encoder_epochs=0), {"encoder": True}, 1, lambda: 10)
    assert [plain(s) for s in range(3)] == [0.5, 1.0, 1.0]


def test_a_separate_validation_set_validates_and_every_case_trains(tiny_data, tmp_path):
    from medseg_zoo.data import make_dataset

    val = make_dataset(tmp_path / "val", n_cases=2, shape=(32, 32, 32), seed=8)
    trainer = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "run"), val_data=val)
    assert len(trainer.train_cases) == 6 and [c.images[0].parent.parent for c in trainer.val_cases] == [val, val]
    trainer.fit()
    assert "start: unet_brats from scratch (nothing loaded)" in (tmp_path / "run" / "train.log").read_text()
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["data"]["val_root"] == str(val.resolve()) and len(run["split"]["train"]) == 6
    resumed = Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "run", epochs=3), val_data=val, resume=True)
    assert [c.name for c in resumed.val_cases] == run["split"]["val"]
    with pytest.raises(TrainingError, match=r"validated on .*val: give it again as val_data \(--val-data\)"):
        Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "run", epochs=3), resume=True)
    with pytest.raises(TrainingError, match="is the training set itself"):
        Trainer(tiny_model(), tiny_data, tiny_config(tmp_path / "other"), val_data=tiny_data)
