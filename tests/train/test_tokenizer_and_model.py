import torch
from tokenizers import Tokenizer

from runtime.preprocessing import clean_text, encode_texts, truncate_head_tail
from tests.conftest import NEGATIVE, POSITIVE
from train.data import read_reviews, stratified_subset
from train.model import ModelConfig, SentimentLSTM
from train.tokenizer import train_tokenizer

TEXTS = (POSITIVE + NEGATIVE) * 5


def test_tokenizer_is_deterministic(imdb_data, tmp_path):
    reviews = stratified_subset(read_reviews(imdb_data, ("train",))["train"], 1500, seed=0)
    texts = [r.text for r in reviews]
    first = train_tokenizer(texts, 3000)
    # Encoding is a pure function of tokenizer.json: same ids in-process and after a reload.
    first.save(str(tmp_path / "tokenizer.json"))
    reloaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert [e.ids for e in first.encode_batch(texts[:200])] == [e.ids for e in reloaded.encode_batch(texts[:200])]
    # Retraining: ids are renumbered canonically, so tokens both runs chose keep one id. The
    # trainer breaks ties between equally frequent merges in hash order, so a retrained
    # vocabulary may differ in a few rare tokens; that is why tokenizer.json is shipped, not
    # retrained, and serving reads exactly the file training wrote.
    second = train_tokenizer(texts, 3000)
    shared = first.get_vocab().keys() & second.get_vocab().keys()
    assert len(shared) >= 0.99 * first.get_vocab_size()
    assert all(first.token_to_id(t) == second.token_to_id(t) for t in ("[PAD]", "[UNK]"))


def test_serving_tokenization_matches_the_tokenizers_full_encoding(imdb_data):
    """encode_texts uses encode_batch_fast (no offsets): the ids must be those of encode_batch."""
    reviews = stratified_subset(read_reviews(imdb_data, ("train",))["train"], 600, seed=1)
    texts = [r.text for r in reviews]
    tokenizer = train_tokenizer(texts, 2000)
    tricky = ["<br /><br />", "\u200b", "héllo WÖRLD", "😀 great", "a" * 5000, "  spaced   out  "]
    full = [e.ids for e in tokenizer.encode_batch([clean_text(t) for t in texts + tricky], add_special_tokens=False)]
    served = encode_texts(tokenizer, texts + tricky, max_tokens=10_000, head_tokens=10_000, unk_id=1)
    assert served == [ids or [1] for ids in full]


def test_tokenizer_cleans_markup_and_case():
    tokenizer = train_tokenizer(TEXTS, 200)
    assert tokenizer.encode("Great<br /><br />ACTING").tokens == tokenizer.encode("great acting").tokens
    assert "br" not in tokenizer.encode("a<br />b").tokens


def test_head_tail_truncation_and_empty_text():
    assert truncate_head_tail(list(range(10)), 6, 2) == [0, 1, 6, 7, 8, 9]
    assert truncate_head_tail([1, 2], 6, 2) == [1, 2]
    tokenizer = train_tokenizer(TEXTS, 200)
    assert encode_texts(tokenizer, ["<br />", "great " * 50], 8, 3, unk_id=1) == [
        [1], encode_texts(tokenizer, ["great"], 8, 3, 1)[0] * 8]


def model() -> SentimentLSTM:
    torch.manual_seed(0)
    return SentimentLSTM(ModelConfig(vocab_size=50, embedding_dim=8, hidden_size=16)).eval()


def test_output_shape():
    logits = model()(torch.randint(1, 50, (3, 7)), torch.tensor([7, 2, 5]))
    assert logits.shape == (3,)


def test_score_does_not_depend_on_padding():
    net = model()
    short = torch.randint(1, 50, (1, 12))
    long = torch.randint(1, 50, (1, 120))
    alone = net(short, torch.tensor([12]))
    padded = torch.zeros((2, 120), dtype=torch.int64)
    padded[0, :12], padded[1] = short[0], long[0]
    batched = net(padded, torch.tensor([12, 120]))
    assert torch.allclose(alone, batched[:1], atol=1e-5, rtol=0)
