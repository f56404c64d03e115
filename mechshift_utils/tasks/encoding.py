"""Task examples as tensors: :class:`EncodedTask`, the same for both models of a pair.

The embedded pair reads one token per word (:mod:`.tokenizer`). Real pairs read
the same examples through their subword tokenizers (GPT-2 BPE, Llama
SentencePiece, Qwen BPE): :func:`encode_examples` then tokenizes each
example's whole text, as the model reads it, and masks the tokens of the
answer pieces with the pair's mask token id (see :func:`encode_subword`).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate

import torch

from ..core.validation import ParameterError, check_bool, check_non_negative_int
from .base import BOS, MASK, TaskExample
from .base import HELDOUT
from .real import REAL_TASKS, generate_real, text_pieces
from .registry import TASK_NAMES, generate
from .tokenizer import encode_words, is_word_level


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
    # subword encoding only: why examples were left out, reason -> count (empty: none left out)
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.clean_ids.shape[0]

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def subset(self, index) -> "EncodedTask":
        index = torch.as_tensor(index, dtype=torch.long)
        pick = index.tolist()
        return EncodedTask(self.task, self.regime, self.full_ids[index], self.clean_ids[index],
                           self.corrupted_ids[index], self.answer_positions[index], self.correct_ids[index],
                           self.counterfactual_ids[index], [self.valid_ids[i] for i in pick],
                           [self.examples[i] for i in pick],
                           None if self.corrupted_valid_ids is None else [self.corrupted_valid_ids[i] for i in pick],
                           dict(self.dropped))


def encode_examples(examples: list[TaskExample], tokenizer, mask_token_id: int | None = None,
                    add_bos: bool | None = None) -> EncodedTask:
    """Examples as tensors. A word-level tokenizer maps each word to its token (the embedded pair);
    any other tokenizer goes through :func:`encode_subword`, which also takes ``mask_token_id``
    (the MDM's, default the tokenizer's own) and ``add_bos`` (default: as the tokenizer does)."""
    if not examples:
        raise ValueError("examples: expected at least one example")
    if not is_word_level(tokenizer):
        return encode_subword(examples, tokenizer, mask_token_id, add_bos)
    written = tokenizer.convert_tokens_to_ids(MASK)  # the id every [MASK] word becomes
    if mask_token_id is not None and mask_token_id != written:
        raise ParameterError(f"mask_token_id: the word-level tokenizer masks with its own {MASK} "
                             f"({written}); expected None or that id, got {mask_token_id!r}")
    if add_bos is not None:
        raise ParameterError(f"add_bos: the word-level tokenizer writes each example's own {BOS}; "
                             f"expected None, got {add_bos!r}")
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


# --- Subword tokenizers (real pairs) -------------------------------------------------------------
#
# How an example becomes token ids, and why:
# * The whole text is tokenized at once (the answers written in), as the model reads text, and
#   character offsets say which tokens belong to which piece. Tokenizing each word on its own
#   would give other tokens wherever a tokenizer works across words (SentencePiece's "▁" before
#   a number, BPE merges over a digit run).
# * The tokens of an answer piece become masked positions, as many as the piece has tokens; a
#   token that crosses the border of an answer piece cannot be masked alone, and the example is
#   dropped. The prompt (the text before the first answer) must tokenize alone to the same
#   tokens: that is what the ARM is given.
# * Position 0 is the tokenizer's BOS where the tokenizer adds one itself (Llama), otherwise
#   there is none (GPT-2 as transformers runs it, Qwen); ``add_bos`` overrides.
# * Clean and corrupted must have the same length and mask layout, and the counterfactual the
#   slot's token count; right answers with another token count cannot be compared position by
#   position and are left out of ``valid_ids`` (a model that writes them is counted wrong).
# * The metric compares the first answer tokens only: they must differ.
# Every example left out is counted by reason in ``EncodedTask.dropped``.

DROP_STRADDLE = "a token crosses the border of an answer"
DROP_EMPTY = "an answer has no token"
DROP_PROMPT = "the prompt alone tokenizes differently"
DROP_COUNTER = "the counterfactual has another token count than the answer"
DROP_LENGTH = "clean and corrupted token lengths differ"
DROP_LAYOUT = "clean and corrupted mask layouts differ"
DROP_FIRST = "correct and counterfactual share the first answer token"
DROP_NO_PREDECESSOR = "the first answer token has no position before it"
DROP_SET = "token length or answer token count differs from the rest of the set"


class _Drop(Exception):
    """An example a tokenizer cannot score position by position; the message is the reason counted."""


@dataclass
class _Aligned:
    """One text's token ids, and the token indices of each masked piece (in piece order)."""

    ids: list[int]
    masked: list[list[int]]

    def layout(self) -> tuple[int, tuple[int, ...]]:
        return len(self.ids), tuple(len(m) for m in self.masked)

    def context(self) -> list[int]:
        hidden = {i for m in self.masked for i in m}
        return [t for i, t in enumerate(self.ids) if i not in hidden]


def _align(pieces: list[str], masked: list[int], ids: list[int], offsets) -> _Aligned:
    """Assign each token to the piece its characters lie in; a token across a masked piece's border drops."""
    ends = list(accumulate(len(p) for p in pieces))
    last_piece = len(pieces) - 1
    masked_set = set(masked)
    owners = []
    for start, end in offsets:
        first = min(bisect_right(ends, start), last_piece)
        last = min(bisect_right(ends, max(start, end - 1)), last_piece)
        if first != last and (first in masked_set or last in masked_set):
            raise _Drop(DROP_STRADDLE)
        owners.append(first)
    slots = [[i for i, o in enumerate(owners) if o == p] for p in masked]
    if any(not s for s in slots):
        raise _Drop(DROP_EMPTY)
    return _Aligned(list(ids), slots)


def _tokenize(tokenizer, texts: list[str]) -> list[tuple[list[int], list]]:
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return list(zip(enc["input_ids"], enc["offset_mapping"]))


def _fill(example: TaskExample, words: list[str], answer) -> list[str]:
    """Text pieces of ``words`` with the answer slots holding ``answer`` and other masked words the full
    sequence's (a corrupted sequence's hidden words are gone once masked; the clean ones keep the count)."""
    out = [f if w == MASK else w for w, f in zip(words, example.full)]
    for p, a in zip(example.answer_positions, answer):
        out[p] = a
    return text_pieces(example, out)


def _fitting(example: TaskExample, words, answers, ref: _Aligned, answer_idx: list[int], aligned) -> set:
    """Token tuples of the answers that fill the slots exactly as ``ref`` lays them out."""
    keep = set()
    for answer, (ids, offsets) in zip(answers, aligned):
        try:
            got = _align(_fill(example, words, answer), _masked_pieces(example), ids, offsets)
        except _Drop:
            continue
        if got.layout() == ref.layout() and got.context() == ref.context():
            keep.add(tuple(got.ids[i] for i in answer_idx))
    return keep


def _masked_pieces(example: TaskExample) -> list[int]:
    """Piece indices (BOS marker excluded) of every masked word of the clean sequence."""
    return [i - 1 for i, w in enumerate(example.clean) if i > 0 and w == MASK]


@dataclass
class _Row:
    full: list[int]
    clean: list[int]
    corrupted: list[int]
    positions: list[int]
    correct: list[int]
    counterfactual: list[int]
    valid: set
    corrupted_valid: set


def _encode_one(example: TaskExample, tokenizer, mask_id: int, prefix: list[int]) -> _Row:
    """One example as token ids; raises _Drop with the reason it cannot be scored."""
    masked = _masked_pieces(example)
    answer_pieces = [p - 1 for p in example.answer_positions]
    full = _fill(example, example.clean, example.correct)
    counter = _fill(example, example.clean, example.counterfactual)
    corrupted = _fill(example, example.corrupted, example.counterfactual)
    prompt = "".join(full[:masked[0]])
    texts = [full, counter, corrupted]
    valid, corrupted_valid = list(example.valid), list(example.corrupted_valid)
    batch = _tokenize(tokenizer, ["".join(t) for t in texts] + [prompt]
                      + ["".join(_fill(example, example.clean, v)) for v in valid]
                      + ["".join(_fill(example, example.corrupted, v)) for v in corrupted_valid])
    ref, cf, cor = (_align(t, masked, *batch[i]) for i, t in enumerate(texts))
    first_masked = ref.masked[0][0]
    if batch[3][0] != ref.ids[:first_masked]:
        raise _Drop(DROP_PROMPT)
    if cf.layout() != ref.layout() or cf.context() != ref.context():
        raise _Drop(DROP_COUNTER)
    if len(cor.ids) != len(ref.ids):
        raise _Drop(DROP_LENGTH)
    if cor.masked != ref.masked:
        raise _Drop(DROP_LAYOUT)
    answer_idx = [i for p in answer_pieces for i in ref.masked[masked.index(p)]]
    correct = [ref.ids[i] for i in answer_idx]
    counterfactual = [cf.ids[i] for i in answer_idx]
    if correct[0] == counterfactual[0]:
        raise _Drop(DROP_FIRST)
    positions = [len(prefix) + i for i in answer_idx]
    if positions[0] < 1:
        raise _Drop(DROP_NO_PREDECESSOR)
    hidden = {i for m in ref.masked for i in m}

    def masked_ids(ids):
        return prefix + [mask_id if i in hidden else t for i, t in enumerate(ids)]

    rest = batch[4:]
    return _Row(full=prefix + ref.ids, clean=masked_ids(ref.ids), corrupted=masked_ids(cor.ids),
                positions=positions, correct=correct, counterfactual=counterfactual,
                valid=_fitting(example, example.clean, valid, ref, answer_idx, rest[:len(valid)]),
                corrupted_valid=_fitting(example, example.corrupted, corrupted_valid, cor, answer_idx,
                                         rest[len(valid):]))


def _mask_id(tokenizer, mask_token_id) -> int:
    """The MDM's mask token id: the pair's when given (DiffuGPT and DiffuLLaMA use ids that are not the
    tokenizer's mask token), else the tokenizer's own."""
    if mask_token_id is None:
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
        if mask_token_id is None:
            raise ParameterError("mask_token_id: this tokenizer has no mask token; expected the pair's "
                                 "mask token id (e.g. ModelPair.mask_token_id), got None")
    return check_non_negative_int("mask_token_id", mask_token_id)


def _uses_bos(tokenizer, add_bos) -> bool:
    """Whether position 0 holds the BOS: as the tokenizer does it unless ``add_bos`` says otherwise."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos is not None:
        check_bool("add_bos", add_bos)
        if add_bos and bos is None:
            raise ParameterError("add_bos: this tokenizer has no BOS token; expected False or None, got True")
        return add_bos
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _check_example(k: int, example: TaskExample) -> None:
    """Stop on a malformed example rather than count it as dropped: it is a bug, not a tokenizer's limit
    (e.g. a pool record whose answer_positions were overwritten by token positions)."""
    try:
        example.check()
    except (AssertionError, IndexError) as err:
        raise ParameterError(f"examples: example {k} ({example.task}) breaks the TaskExample invariants "
                             f"({err or 'answer slots'}); expected answer_positions that index its words "
                             f"or pieces, not token positions") from None


def tokenizer_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def encode_subword(examples: list[TaskExample], tokenizer, mask_token_id: int | None = None,
                   add_bos: bool | None = None) -> EncodedTask:
    """Examples as tensors under a subword tokenizer (the rules are in the comment above).

    Examples this tokenizer cannot score position by position are dropped and counted by reason in
    ``EncodedTask.dropped``; so are those whose token length or answer token count differs from the
    most common one of the set (tensors need one length). A set that drops everything stops.
    """
    if not examples:
        raise ParameterError("examples: expected at least one example, got none")
    if not getattr(tokenizer, "is_fast", False):
        raise ParameterError(f"tokenizer: expected a fast (Rust) tokenizer, which reports character "
                             f"offsets, got {type(tokenizer).__name__}")
    mask_id = _mask_id(tokenizer, mask_token_id)
    prefix = [tokenizer.bos_token_id] if _uses_bos(tokenizer, add_bos) else []
    rows, dropped = [], Counter()
    for k, e in enumerate(examples):
        _check_example(k, e)
        try:
            rows.append((e, _encode_one(e, tokenizer, mask_id, prefix)))
        except _Drop as why:
            dropped[str(why)] += 1
    signature = Counter((len(r.full), len(r.positions)) for _, r in rows).most_common(1)
    kept = [(e, r) for e, r in rows if (len(r.full), len(r.positions)) == signature[0][0]] if rows else []
    if len(kept) < len(rows):
        dropped[DROP_SET] += len(rows) - len(kept)
    if not kept:
        raise ParameterError(f"examples: every {examples[0].task} example was dropped when encoding with "
                             f"{tokenizer_name(tokenizer)}: {dict(dropped)}")

    def tensor(name):
        return torch.tensor([getattr(r, name) for _, r in kept], dtype=torch.long)

    return EncodedTask(
        task=examples[0].task, regime=examples[0].regime, full_ids=tensor("full"), clean_ids=tensor("clean"),
        corrupted_ids=tensor("corrupted"), answer_positions=tensor("positions"), correct_ids=tensor("correct"),
        counterfactual_ids=tensor("counterfactual"), valid_ids=[r.valid for _, r in kept],
        examples=[e for e, _ in kept], corrupted_valid_ids=[r.corrupted_valid for _, r in kept],
        dropped=dict(dropped))


# --- the form a pair reads ------------------------------------------------------------------------

EVAL_STREAM = 1_000_003  # evaluation examples come from a seed stream apart from training's


def task_examples(task: str, n: int, seed: int, tokenizer, split: str = HELDOUT) -> list[TaskExample]:
    """n seeded examples of a task in the form the tokenizer reads: the embedded word-level tasks for
    the embedded pair's tokenizer (from ``split``), the real-text tasks (mechshift_utils.tasks.real) for
    a subword one (they have no training split: the pair was trained elsewhere)."""
    if is_word_level(tokenizer):
        return generate(task, n, seed, split)
    if split != HELDOUT:
        raise ParameterError(f"split: real-text tasks have only the {HELDOUT!r} split (a real pair was not "
                             f"trained here), got {split!r}")
    return generate_real(task, n, seed)


def task_names_for(tokenizer) -> tuple[str, ...]:
    """The tasks a pair is scored on: every embedded task for the word-level tokenizer; for a subword
    one those of them that exist as text (Dream's Countdown has no copy of the target after the answer,
    so ``countdown_late`` has none)."""
    return TASK_NAMES if is_word_level(tokenizer) else tuple(t for t in TASK_NAMES if t in REAL_TASKS)


def encode_for(examples, tokenizer, mask_token_id: int | None = None) -> EncodedTask:
    """Examples as tensors for a pair: a subword tokenizer masks with the pair's ``mask_token_id`` and
    drops (and counts, in ``EncodedTask.dropped``) examples it cannot score position by position; a
    word-level tokenizer writes its own [MASK], and a pair's ``mask_token_id`` that is not that id stops
    (it is never ignored)."""
    return encode_examples(examples, tokenizer, mask_token_id)
