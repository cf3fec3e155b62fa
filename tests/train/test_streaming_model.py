"""The v2 network: pooling computable as the review is read, padding-independent, exported as a fused LSTM."""

import numpy as np
import onnx
import pytest
import torch

from export.onnx_export import export_onnx
from runtime.scoring import cpu_session, score_onnx
from tests.conftest import fabricated_reviews, write_archive
from train.data import UNLABELLED, UNSUP, DatasetError, read_reviews
from train.loop import adversarial_perturbation
from train.model import ModelConfig, SentimentLSTM, StreamingPooler
from train.reference import score_torch

CONFIG = ModelConfig(vocab_size=50, embedding_dim=6, hidden_size=5, dropout=0.0, pooling="streaming")


def model(seed: int = 0) -> SentimentLSTM:
    torch.manual_seed(seed)
    return SentimentLSTM(CONFIG).eval()


def id_lists(count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, CONFIG.vocab_size, size=int(n)).tolist() for n in rng.integers(1, 60, size=count)]


def test_pooling_step_by_step_equals_the_whole_review():
    net = model()
    ids = torch.tensor([id_lists(1, seed=1)[0]])
    with torch.no_grad():
        outputs, _ = net.lstm(net.embedding(ids))
        pooler = StreamingPooler(net)
        for t in range(ids.shape[1]):
            pooler.step(outputs[:, t])
            # After each step the features are the pooling of the prefix read so far: nothing needs the future.
            prefix = ids[:, : t + 1]
            whole = net.head(pooler.features()).squeeze(1)
            assert torch.allclose(whole, net(prefix, torch.tensor([t + 1])), atol=1e-6)


def test_score_does_not_depend_on_padding_or_batch_mates():
    net = model()
    reviews = id_lists(9, seed=2)
    alone = [float(net(torch.tensor([r]), torch.tensor([len(r)]))) for r in reviews]
    together = score_torch(net, reviews, pad_id=0, batch_size=9)
    assert np.allclose(torch.sigmoid(torch.tensor(alone)).numpy(), together, atol=1e-6)


def test_onnx_export_is_a_fused_lstm_and_matches_pytorch(tmp_path):
    net = model(3)
    export_onnx(net, tmp_path / "model.onnx")  # raises unless the graph has a fused LSTM and no Loop/Scan
    lstm = [n for n in onnx.load(str(tmp_path / "model.onnx")).graph.node if n.op_type == "LSTM"]
    assert len(lstm) == 1
    direction = [a.s for a in lstm[0].attribute if a.name == "direction"]
    assert direction in ([], [b"forward"])  # unidirectional: no backward pass over the future
    reviews = id_lists(200, seed=4)
    onnx_probs = score_onnx(cpu_session(str(tmp_path / "model.onnx"), 1), reviews, pad_id=0, batch_size=17)
    assert np.abs(onnx_probs - score_torch(net, reviews, pad_id=0, batch_size=23)).max() < 1e-5


def test_v1_checkpoints_without_a_pooling_field_rebuild_as_v1():
    config = ModelConfig(vocab_size=50, embedding_dim=6, hidden_size=5)
    assert config.pooling == "max_mean" and SentimentLSTM(config).head.in_features == 2 * 5 + 6
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(vocab_size=50, pooling="bidirectional")


def test_adversarial_perturbation_has_norm_epsilon_per_review_and_spares_padding():
    net = model(5)
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    embedded = net.embedding(ids).detach().requires_grad_()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net.classify(embedded, lengths), torch.ones(2))
    r = adversarial_perturbation(loss, embedded, epsilon=0.7)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.tensor([0.7, 0.7]), atol=1e-5)
    assert torch.equal(r[1, 2:], torch.zeros_like(r[1, 2:]))
    perturbed = torch.nn.functional.binary_cross_entropy_with_logits(net.classify(embedded + r, lengths),
                                                                     torch.ones(2))
    assert perturbed > loss  # a step along the gradient raises the loss


def test_unlabelled_reviews_are_read_as_their_own_split(tmp_path):
    members = fabricated_reviews(per_label=2)
    members["aclImdb/train/unsup/5_0.txt"] = "an unlabelled review"
    members["aclImdb/test/unsup/6_0.txt"] = "not part of the dataset's layout"
    archive = write_archive(tmp_path / "a.tar.gz", members)
    reviews = read_reviews(archive, ("train", UNSUP))
    assert [(r.id, r.label, r.split) for r in reviews[UNSUP]] == [(5, UNLABELLED, UNSUP)]
    assert {r.label for r in reviews["train"]} == {0, 1}
    assert read_reviews(archive, ("train",)).keys() == {"train"}
    with pytest.raises(DatasetError, match="full archive"):
        read_reviews(write_archive(tmp_path / "b.tar.gz", fabricated_reviews(2)), ("train", UNSUP))
