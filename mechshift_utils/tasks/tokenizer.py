"""The embedded pair's word-level tokenizer: one word is one token.

A Hugging Face fast tokenizer with [PAD], [UNK], [BOS] and [MASK], saved next to
the models so that ``AutoTokenizer.from_pretrained`` loads it with them.
"""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .base import BOS, MASK, PAD, UNK
from .registry import task_vocabulary


def build_word_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    words = task_vocabulary() if words is None else words
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   mask_token=MASK)


def is_word_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordLevel"


def encode_words(tokenizer, words: list[str], vocab: dict[str, int] | None = None) -> list[int]:
    """Token ids of a word sequence, one token per word ([BOS]/[MASK] map to the tokenizer's own).
    ``vocab``: the word-level tokenizer's vocabulary when the caller already holds it (reading it is
    the slow part of encoding one short sequence)."""
    if vocab is not None or is_word_level(tokenizer):  # fast path: a word is its own token
        vocab = tokenizer.get_vocab() if vocab is None else vocab
        try:
            return [vocab[w] for w in words]
        except KeyError as err:
            raise ValueError(f"word {err.args[0]!r} is not in this tokenizer's vocabulary") from None
    special = {BOS: tokenizer.bos_token_id, MASK: tokenizer.mask_token_id, PAD: tokenizer.pad_token_id}
    ids = []
    for w in words:
        if w in special:
            ids.append(special[w])
            continue
        piece = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(piece) != 1 or piece[0] == tokenizer.unk_token_id:
            raise ValueError(f"word {w!r} is not a single known token of this tokenizer (got {piece})")
        ids.append(piece[0])
    return ids


def encode_rows(tokenizer, rows: list[list[str]]) -> list[list[int]]:
    """:func:`encode_words` for many sequences, reading a word-level vocabulary once."""
    vocab = tokenizer.get_vocab() if is_word_level(tokenizer) else None
    return [encode_words(tokenizer, words, vocab) for words in rows]
