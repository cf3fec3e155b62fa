import json

import pytest
import torch

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.loop import Trainer
from train.pipeline import run_training

TINY = TrainConfig(vocab_size=120, embedding_dim=8, hidden_size=8, max_tokens=16, head_tokens=4, batch_size=4,
                   warmup_steps=2, max_epochs=3, patience=5, val_fraction=0.25, threads=1, eval_batch_size=8)


def test_smoke_run_learns_and_writes_its_outputs(smoke_run):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.75  # validation: carved from train, never trained on
    assert metrics["test"]["count"] == 1000 and 0 < metrics["test"]["roc_auc"] <= 1
    assert {"platform", "torch", "cpus_usable"} <= set(metrics["hardware"])
    for name in ("best.pt", "last.pt", "tokenizer.json", "curves.png", "confusion_test.png", "roc_test.png"):
        assert (smoke_run / name).stat().st_size > 0, name
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, len(metrics["history"]) + 1))


def test_resume_after_interruption_matches_uninterrupted_run(tiny_archive, tmp_path, monkeypatch):
    run_training(tiny_archive, tmp_path / "straight", TINY, torch.device("cpu"), resume=False)

    original = Trainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived during epoch 2
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_archive, tmp_path / "resumed", TINY, torch.device("cpu"), resume=False,
                     tokenizer_file=tmp_path / "straight" / "tokenizer.json")
    assert len(load_checkpoint(tmp_path / "resumed" / "last.pt")["history"]) == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    run_training(tiny_archive, tmp_path / "resumed", TINY, torch.device("cpu"), resume=True)

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert len(resumed["history"]) == TINY.max_epochs
    for name, tensor in straight["model_state"].items():
        assert torch.equal(tensor, resumed["model_state"][name]), name
    assert [h["val_loss"] for h in straight["history"]] == [h["val_loss"] for h in resumed["history"]]


def test_resume_with_other_settings_is_refused(tiny_archive, tmp_path):
    run_training(tiny_archive, tmp_path, TINY, torch.device("cpu"), resume=False)
    other = TrainConfig(**{**TINY.__dict__, "hidden_size": 4})
    with pytest.raises(ValueError, match="another configuration"):
        run_training(tiny_archive, tmp_path, other, torch.device("cpu"), resume=True)
