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
* ``regime``: "prefix-dominant" or "globally-constrained".
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from ..core.seeding import stable_seed

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


class Task:
    """A seeded generator of examples. Subclasses set name/regime and implement ``sample``."""

    name: ClassVar[str]
    regime: ClassVar[str]
    description: ClassVar[str]

    def sample(self, rng: random.Random) -> TaskExample:  # pragma: no cover - interface
        raise NotImplementedError

    def vocabulary(self) -> set[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def candidates(self, example: TaskExample) -> int:  # pragma: no cover - interface
        """How many answers a guesser that knows the format picks from (for the chance level)."""
        raise NotImplementedError

    def chance(self, example: TaskExample) -> float:
        """Accuracy of a uniform guess among the format's candidates."""
        return len(example.valid) / self.candidates(example)

    def generate(self, n: int, seed: int) -> list[TaskExample]:
        rng = random.Random(stable_seed("task", self.name, seed))
        return [self.sample(rng) for _ in range(n)]

    @staticmethod
    def masked(words: list[str], positions) -> list[str]:
        out = list(words)
        for p in positions:
            out[p] = MASK
        return out
