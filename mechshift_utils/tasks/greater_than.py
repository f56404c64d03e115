"""Greater-Than (prefix-dominant).

"the war lasted from the year 17 32 to the year 17" -> any two-digit year > 32.
Years are split into century and two-digit tokens, as GPT-2 splits them.
Corruption (as the EAP-IG reference): the start year becomes "01", so every
year from 02 on is right; the counterfactual is a year in [02, start], right
for the corrupted sequence and wrong for the clean one.

Held out: a fifth of the (century, start year) pairs; each start year is trained
with other centuries, the answer only depends on it. Three templates and the
filler move the slot.
"""
from __future__ import annotations

import random

from .base import PREFIX_DOMINANT, TRAIN, Task, TaskExample, frame, in_split

NOUNS = "war contract plan strike drought journey siege reign project trial".split()
CENTURIES = [str(c) for c in range(11, 20)]
YEARS = [f"{y:02d}" for y in range(100)]
# {C} century, {Y} start year; the end year's slot follows the template, then "."
TEMPLATES = (
    "the {N} lasted from the year {C} {Y} to the year {C}",
    "the {N} ran from {C} {Y} until {C}",
    "from {C} {Y} the {N} went on until {C}",
)
HELDOUT_PERCENT = 20
LENGTH = 1 + 5 + max(len(t.split()) for t in TEMPLATES) + 2


# _YEARS_FROM[y]: the answers (one-slot tuples) of the years y..99, written in two digits
_YEARS_FROM = tuple(tuple((f"{y:02d}",) for y in range(start, 100)) for start in range(101))


class GreaterThan(Task):
    name = "greater_than"
    regime = PREFIX_DOMINANT
    description = "complete the end year so that it is later than the start year"
    decisive = "the start year"
    after_slot = "nothing (filler)"
    length = LENGTH

    def sample(self, rng: random.Random, split: str = TRAIN, layout: random.Random | None = None) -> TaskExample:
        layout = layout or rng
        while True:
            century, start = rng.choice(CENTURIES), rng.randint(2, 97)
            if in_split((century, start), "greater_than", HELDOUT_PERCENT) == split:
                break
        noun = rng.choice(NOUNS)
        end = rng.randint(start + 1, 99)
        counter = rng.randint(2, start)
        template = layout.choice(TEMPLATES)

        def core(start_yy: str) -> list[str]:
            return template.format(N=noun, C=century, Y=start_yy).split() + [f"{end:02d}", "."]

        full, offset = frame(layout, core(f"{start:02d}"), self.length)
        slot = offset + len(core("00")) - 2
        start_at = offset + template.split().index("{Y}")
        corrupted = list(full)
        corrupted[start_at] = "01"
        return TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, [slot]),
            corrupted=self.masked(corrupted, [slot]),
            answer_positions=[slot],
            correct=[f"{end:02d}"],
            counterfactual=[f"{counter:02d}"],
            valid=list(_YEARS_FROM[start + 1]),
            corrupted_valid=list(_YEARS_FROM[2]),
            meta={"start_year": start, "start_position": start_at, "template": TEMPLATES.index(template),
                  "entity": [century, start], "split": split, "core_start": offset},
        )

    def vocabulary(self) -> set[str]:
        words = set(NOUNS) | set(CENTURIES) | set(YEARS) | {"."}
        for t in TEMPLATES:
            words.update(w for w in t.split() if not w.startswith("{"))
        return words

    def candidates(self, example: TaskExample) -> int:
        return len(YEARS)  # any two-digit year
