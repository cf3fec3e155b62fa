"""Training the subword tokenizer whose ``tokenizer.json`` later drives serving."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"


def build_normalizer() -> normalizers.Normalizer:
    """The review cleaning: HTML line breaks and tags become spaces, NFKC, lower case."""
    return normalizers.Sequence([
        normalizers.Replace(Regex(r"<\s*br\s*/?\s*>"), " "),
        normalizers.Replace(Regex(r"<[^<>]{0,40}>"), " "),
        normalizers.NFKC(),
        normalizers.Lowercase(),
    ])


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a WordPiece tokenizer on ``texts`` (the train split only). [PAD] gets id 0."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, max_input_chars_per_word=50))
    tokenizer.normalizer = build_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer
