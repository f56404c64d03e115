"""What every task example carries, and the interface each task implements.

A task produces examples at the word level. Every example holds

* ``full``: the clean sequence with its answer written in (what the models are trained on),
* ``clean`` and ``corrupted``: the scored sequences, equal in length, with the
  answer slots (and any other hidden output) holding the mask token,
* ``answer_positions``: the indices of the answer slots (position 0 is BOS, so
  every slot has a predecessor: logits for slot ``i`` are read at ``i - 1``),
* ``correct`` / ``counterfactual``: one answer per slot; the counterfactual is
  right for the corrupted sequence and wrong for the clean one. They differ at
  the first slot, where the logit-difference metric is read,
* ``valid`` / ``corrupted_valid``: every answer (a tuple over slots) that counts
  as right for the clean / corrupted sequence; accuracy uses ``valid``,
* ``regime``: "prefix-dominant" or "globally-constrained",
* ``meta``: what the example is about, among it ``entity`` (the unit of the train / held-out
  split) and ``split``.

Every sequence of a task has the same number of words: a core (the task's sentence) framed by
neutral filler, at a random offset (see :func:`frame`).
"""
from __future__ import annotations

import functools
import random
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from ..core.seeding import stable_seed
from ..core.validation import ParameterError

BOS = "[BOS]"
MASK = "[MASK]"
PAD = "[PAD]"
UNK = "[UNK]"
SPECIAL_TOKENS = (PAD, UNK, BOS, MASK)

PREFIX_DOMINANT = "prefix-dominant"
GLOBALLY_CONSTRAINED = "globally-constrained"


@dataclass
class TaskExample:
    task: str
    regime: str
    full: list[str]
    clean: list[str]
    corrupted: list[str]
    answer_positions: list[int]
    correct: list[str]
    counterfactual: list[str]
    valid: list[tuple[str, ...]]
    corrupted_valid: list[tuple[str, ...]]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TaskExample":
        d = dict(d)
        d["valid"] = [tuple(v) for v in d["valid"]]
        d["corrupted_valid"] = [tuple(v) for v in d["corrupted_valid"]]
        return cls(**d)

    def check(self) -> None:
        """Structural invariants; raises AssertionError naming what is broken."""
        n = len(self.full)
        assert len(self.clean) == n and len(self.corrupted) == n, f"{self.task}: lengths differ"
        assert self.full[0] == BOS, f"{self.task}: sequence must start with {BOS}"
        assert len(self.answer_positions) == len(self.correct) == len(self.counterfactual)
        for pos, word in zip(self.answer_positions, self.correct):
            assert 1 <= pos < n, f"{self.task}: answer slot {pos} out of range"
            assert self.clean[pos] == MASK and self.corrupted[pos] == MASK
            assert self.full[pos] == word
        assert [i for i, w in enumerate(self.clean) if w == MASK] == [
            i for i, w in enumerate(self.corrupted) if w == MASK
        ], f"{self.task}: mask layouts differ"


SPLITS = ("train", "heldout")
HELDOUT = "heldout"
TRAIN = "train"

# Filler: short neutral chunks, none of them a task's entity, that pad every sequence of a task to one
# length while the task's core moves: the core starts after 0..k filler tokens and the rest follows it,
# so no task can be solved from absolute positions.
FILLER_CHUNKS = (("then",), ("later", "."), ("rain", "fell", "."), ("time", "passed", "."),
                 ("nobody", "spoke", "."), ("bells", "rang", "twice", "."), ("the", "wind", "blew", "."))


# the chunks that fit in r words, for every r (a chunk list per draw costs more than the draw)
_FITS = tuple(tuple(c for c in FILLER_CHUNKS if len(c) <= r) for r in range(max(map(len, FILLER_CHUNKS)) + 1))


def filler(rng: random.Random, length: int) -> list[str]:
    """``length`` filler words: chunks drawn uniformly among those that still fit."""
    out: list[str] = []
    longest = len(_FITS) - 1
    while len(out) < length:
        out.extend(rng.choice(_FITS[min(length - len(out), longest)]))
    return out


def frame(rng: random.Random, core: list[str], total: int) -> tuple[list[str], int]:
    """``[BOS] + filler + core + filler`` of exactly ``total`` words, the core at a random offset.
    Returns the words and the index of the core's first word."""
    room = total - 1 - len(core)
    if room < 0:
        raise ValueError(f"core of {len(core)} words does not fit a sequence of {total}")
    before = rng.randint(0, room)
    words = [BOS, *filler(rng, before), *core, *filler(rng, room - before)]
    return words, 1 + before


@functools.lru_cache(maxsize=1 << 16)  # the training batches ask for the same entities again and again
def in_split(key: tuple, family: str, heldout_percent: int) -> str:
    """The split of an entity (a tuple: a name pair, a number triple, ...): a fixed hash of it, the same
    for every training seed, so that every seed is trained and evaluated on the same entities."""
    return HELDOUT if stable_seed("split", family, key) % 100 < heldout_percent else TRAIN


class Task:
    """A seeded generator of examples. Subclasses set name/regime and implement ``sample``.

    Every task has a train and a held-out split of its *entities* (``entity``: IOI's name pair,
    Greater-Than's century and start year, Countdown's number triple, Infilling's place and sound):
    the training stream draws only train entities, evaluation only held-out ones, so no evaluation
    sequence occurs in training. ``stream``: tasks that share it (Countdown and its late-copy
    corruption, the two Infilling formats) generate the same content for the same seed and index.
    ``pool_roles``: the models that must answer an example for it to enter the task's pool.
    """

    name: ClassVar[str]
    regime: ClassVar[str]
    description: ClassVar[str]
    stream: ClassVar[str] = ""
    length: ClassVar[int]  # words per sequence, [BOS] included
    pool_roles: ClassVar[tuple[str, ...]] = ("arm", "mdm")  # the models that must solve a pool example
    decisive: ClassVar[str] = ""  # what decides the answer (and what the corruption changes)
    after_slot: ClassVar[str] = ""  # what follows the answer slot: only a bidirectional model reads it
    arm_answers: ClassVar[bool] = True  # whether the words before the slot decide the answer

    def sample(self, rng: random.Random, split: str = TRAIN, layout: random.Random | None = None) -> TaskExample:
        """One example of ``split``. ``rng`` draws the content, ``layout`` (default ``rng``) the template
        and the filler."""
        raise NotImplementedError  # pragma: no cover - interface

    def vocabulary(self) -> set[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def candidates(self, example: TaskExample) -> int:  # pragma: no cover - interface
        """How many answers a guesser that knows the format picks from (for the chance level)."""
        raise NotImplementedError

    def chance(self, example: TaskExample) -> float:
        """Accuracy of a uniform guess among the format's candidates."""
        return len(example.valid) / self.candidates(example)

    def entity(self, example: TaskExample) -> tuple:
        """The unit of the train / held-out split that this example is about."""
        return tuple(example.meta["entity"])

    def generate(self, n: int, seed: int, split: str = HELDOUT) -> list[TaskExample]:
        if split not in SPLITS:
            raise ParameterError(f"split: expected one of {list(SPLITS)}, got {split!r}")
        stream = self.stream or self.name
        rng = random.Random(stable_seed("task", stream, split, seed))
        return [self.sample(rng, split, random.Random(stable_seed("layout", stream, split, seed, i)))
                for i in range(n)]

    @staticmethod
    def masked(words: list[str], positions) -> list[str]:
        out = list(words)
        for p in positions:
            out[p] = MASK
        return out

    def vocabulary_with_filler(self) -> set[str]:
        return self.vocabulary() | {w for chunk in FILLER_CHUNKS for w in chunk}
