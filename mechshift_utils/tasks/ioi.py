"""Indirect Object Identification (prefix-dominant).

"when mary and john went to the store , john gave a drink to" -> mary.
Corruption (ABC, as the EAP-IG reference's ``corrupted`` column): the repeated
subject in the second clause becomes a third name, so nothing singles out the
indirect object any more; either first-clause name is then a right answer, and
the counterfactual (the subject) becomes one of them.

Held out: a quarter of the unordered name pairs {indirect object, subject}. Every
name is trained, but never with its held-out partners, so a held-out example asks
for the copying rule, not a remembered sentence. Six templates of different
lengths and the filler around them move the answer slot.
"""
from __future__ import annotations

import random

from .base import PREFIX_DOMINANT, TRAIN, Task, TaskExample, frame, in_split

NAMES = (
    "mary john alice bob kate tom anna paul lisa mark emma jack sara adam nina carl "
    "julia sam rose dan ella max lucy ben"
).split()

# A, B (the first clause's names, one of them the subject S), then S, then the indirect object's slot.
TEMPLATES = (
    "when {A} and {B} went to the store , {S} gave a drink to",
    "after {A} and {B} walked to the park , {S} handed a ball to",
    "while {A} and {B} were at the office , {S} sent a letter to",
    "then {A} and {B} sat in the kitchen , {S} passed a plate to",
    "{A} and {B} met at the old market . later {S} brought a gift to",
    "{A} and {B} went home , and {S} gave a book to",
)
HELDOUT_PERCENT = 25
LENGTH = 1 + 5 + max(len(t.split()) for t in TEMPLATES) + 2  # [BOS], filler room, template, slot, "."


def pair_split(a: str, b: str) -> str:
    return in_split(tuple(sorted((a, b))), "ioi", HELDOUT_PERCENT)


class IOI(Task):
    name = "ioi"
    regime = PREFIX_DOMINANT
    description = "name the indirect object: the first-clause name not repeated as subject"
    decisive = "which of the two first-clause names the subject repeats"
    after_slot = "nothing (filler)"
    length = LENGTH

    def sample(self, rng: random.Random, split: str = TRAIN, layout: random.Random | None = None) -> TaskExample:
        layout = layout or rng
        while True:
            io, s = rng.sample(NAMES, 2)
            if pair_split(io, s) == split:
                break
        c = rng.choice([n for n in NAMES if n not in (io, s)])
        a, b = (io, s) if rng.random() < 0.5 else (s, io)
        template = layout.choice(TEMPLATES)
        core = template.format(A=a, B=b, S=s).split() + [io, "."]
        full, start = frame(layout, core, self.length)
        slot = start + len(core) - 2
        corrupted = list(full)
        subject_at = start + template.split().index("{S}")
        corrupted[subject_at] = c
        return TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, [slot]),
            corrupted=self.masked(corrupted, [slot]),
            answer_positions=[slot],
            correct=[io],
            counterfactual=[s],
            valid=[(io,)],
            corrupted_valid=[(a,), (b,)],
            meta={"template": TEMPLATES.index(template), "order": "ABB" if a == io else "BAB",
                  "entity": sorted((io, s)), "split": split, "core_start": start},
        )

    def vocabulary(self) -> set[str]:
        words = set(NAMES) | {"."}
        for t in TEMPLATES:
            words.update(w for w in t.split() if not w.startswith("{"))
        return words

    def candidates(self, example: TaskExample) -> int:
        return 2  # the two names of the first clause
