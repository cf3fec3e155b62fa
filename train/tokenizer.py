"""Training the subword tokenizer whose ``tokenizer.json`` later drives serving."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from runtime.preprocessing import clean_text

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
MAX_WORD_CHARS = 50  # longer "words" (URLs, runs of punctuation) become [UNK]


def build_normalizer() -> normalizers.Normalizer:
    """The review cleaning: HTML line breaks and tags become spaces, NFKC, lower case."""
    return normalizers.Sequence([
        normalizers.Replace(Regex(r"<\s*br\s*/?\s*>"), " "),
        normalizers.Replace(Regex(r"<[^<>]{0,40}>"), " "),
        normalizers.NFKC(),
        normalizers.Lowercase(),
    ])


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a WordPiece tokenizer on ``texts`` (the train split only). [PAD] gets id 0.

    The trainer sees each text as every later reader of ``tokenizer.json`` does: through
    :func:`runtime.preprocessing.clean_text` first, then the normalizer.
    """
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, max_input_chars_per_word=MAX_WORD_CHARS))
    tokenizer.normalizer = build_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    tokenizer.train_from_iterator((clean_text(text) for text in texts), trainer=trainer)
    return canonical_ids(tokenizer)


def canonical_ids(tokenizer: Tokenizer) -> Tokenizer:
    """Renumber the vocabulary deterministically: specials first, then tokens sorted.

    The trainer picks the same tokens run after run, but numbers them in hash-map order,
    which differs between runs; WordPiece segmentation depends only on the token set.
    """
    vocab = tokenizer.get_vocab()
    specials = [PAD_TOKEN, UNK_TOKEN]
    ordered = specials + sorted(token for token in vocab if token not in specials)
    tokenizer.model = models.WordPiece({token: i for i, token in enumerate(ordered)}, unk_token=UNK_TOKEN,
                                       max_input_chars_per_word=MAX_WORD_CHARS)
    return tokenizer
