"""The embedded pair's word-level tokenizer, and encoding of task examples into tensors.

One word is one token. The tokenizer is a Hugging Face fast tokenizer with
[PAD], [UNK], [BOS] and [MASK], saved next to the models so that
``AutoTokenizer.from_pretrained`` loads it with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .tasks import BOS, MASK, PAD, UNK, TaskExample, task_vocabulary


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


def encode_words(tokenizer, words: list[str]) -> list[int]:
    """Token ids of a word sequence, one token per word ([BOS]/[MASK] map to the tokenizer's own)."""
    if is_word_level(tokenizer):  # fast path: a word is its own token
        vocab = tokenizer.get_vocab()
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


@dataclass
class EncodedTask:
    """Examples of one task as tensors; every sequence has the same length."""

    task: str
    regime: str
    full_ids: torch.Tensor  # [N, L] clean sequence with the answers written in
    clean_ids: torch.Tensor  # [N, L] answer slots (and hidden output) masked
    corrupted_ids: torch.Tensor  # [N, L]
    answer_positions: torch.Tensor  # [N, S]
    correct_ids: torch.Tensor  # [N, S]
    counterfactual_ids: torch.Tensor  # [N, S]
    valid_ids: list[set[tuple[int, ...]]]  # per example: every right answer
    examples: list[TaskExample]
    corrupted_valid_ids: list[set[tuple[int, ...]]] | None = None  # right answers of the corrupted sequence

    def __len__(self) -> int:
        return self.clean_ids.shape[0]

    def subset(self, index) -> "EncodedTask":
        index = torch.as_tensor(index, dtype=torch.long)
        pick = index.tolist()
        return EncodedTask(self.task, self.regime, self.full_ids[index], self.clean_ids[index],
                           self.corrupted_ids[index], self.answer_positions[index], self.correct_ids[index],
                           self.counterfactual_ids[index], [self.valid_ids[i] for i in pick],
                           [self.examples[i] for i in pick],
                           None if self.corrupted_valid_ids is None else [self.corrupted_valid_ids[i] for i in pick])


def encode_examples(examples: list[TaskExample], tokenizer) -> EncodedTask:
    if not examples:
        raise ValueError("examples: expected at least one example")
    lengths = {len(e.full) for e in examples}
    if len(lengths) != 1:
        raise ValueError(f"examples: one task's sequences must share a length, got lengths {sorted(lengths)}")

    def enc(words):
        return encode_words(tokenizer, words)

    def tensor(rows):
        return torch.tensor(rows, dtype=torch.long)

    return EncodedTask(
        task=examples[0].task,
        regime=examples[0].regime,
        full_ids=tensor([enc(e.full) for e in examples]),
        clean_ids=tensor([enc(e.clean) for e in examples]),
        corrupted_ids=tensor([enc(e.corrupted) for e in examples]),
        answer_positions=tensor([e.answer_positions for e in examples]),
        correct_ids=tensor([enc(e.correct) for e in examples]),
        counterfactual_ids=tensor([enc(e.counterfactual) for e in examples]),
        valid_ids=[{tuple(enc(list(v))) for v in e.valid} for e in examples],
        examples=list(examples),
        corrupted_valid_ids=[{tuple(enc(list(v))) for v in e.corrupted_valid} for e in examples],
    )
