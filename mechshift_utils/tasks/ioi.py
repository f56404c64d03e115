"""Indirect Object Identification (prefix-dominant).

"when mary and john went to the store , john gave a drink to" -> mary.
Corruption (ABC, as the EAP-IG reference's ``corrupted`` column): the repeated
subject in the second clause becomes a third name, so nothing singles out the
indirect object any more; either first-clause name is then a right answer, and
the counterfactual (the subject) becomes one of them.
"""
from __future__ import annotations

import random

from .base import BOS, PREFIX_DOMINANT, Task, TaskExample

NAMES = (
    "mary john alice bob kate tom anna paul lisa mark emma jack sara adam nina carl "
    "julia sam rose dan ella max lucy ben"
).split()

# Equal-length templates: A, B, S, then the slot for the indirect object.
TEMPLATES = (
    "when {A} and {B} went to the store , {S} gave a drink to",
    "after {A} and {B} walked to the park , {S} handed a ball to",
    "while {A} and {B} were at the office , {S} sent a letter to",
    "then {A} and {B} sat in the kitchen , {S} passed a plate to",
)


class IOI(Task):
    name = "ioi"
    regime = PREFIX_DOMINANT
    description = "name the indirect object: the first-clause name not repeated as subject"

    def sample(self, rng: random.Random) -> TaskExample:
        io, s, c = rng.sample(NAMES, 3)
        a, b = (io, s) if rng.random() < 0.5 else (s, io)
        template = rng.choice(TEMPLATES)
        clean_prefix = template.format(A=a, B=b, S=s).split()
        corrupt_prefix = template.format(A=a, B=b, S=c).split()
        full = [BOS, *clean_prefix, io]
        slot = len(full) - 1
        return TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, [slot]),
            corrupted=self.masked([BOS, *corrupt_prefix, io], [slot]),
            answer_positions=[slot],
            correct=[io],
            counterfactual=[s],
            valid=[(io,)],
            corrupted_valid=[(a,), (b,)],
            meta={"template": TEMPLATES.index(template), "order": "ABB" if a == io else "BAB"},
        )

    def vocabulary(self) -> set[str]:
        words = set(NAMES)
        for t in TEMPLATES:
            words.update(w for w in t.split() if not w.startswith("{"))
        return words

    def candidates(self, example: TaskExample) -> int:
        return 2  # the two names of the first clause
