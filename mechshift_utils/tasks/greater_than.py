"""Greater-Than (prefix-dominant).

"the war lasted from the year 17 32 to the year 17" -> any two-digit year > 32.
Years are split into century and two-digit tokens, as GPT-2 splits them.
Corruption (as the EAP-IG reference): the start year becomes "01", so every
year from 02 on is right; the counterfactual is a year in [02, start], right
for the corrupted sequence and wrong for the clean one.
"""
from __future__ import annotations

import random

from .base import BOS, PREFIX_DOMINANT, Task, TaskExample

NOUNS = "war contract plan strike drought journey siege reign project trial".split()
CENTURIES = [str(c) for c in range(11, 20)]
YEARS = [f"{y:02d}" for y in range(100)]


class GreaterThan(Task):
    name = "greater_than"
    regime = PREFIX_DOMINANT
    description = "complete the end year so that it is later than the start year"

    def sample(self, rng: random.Random) -> TaskExample:
        noun = rng.choice(NOUNS)
        century = rng.choice(CENTURIES)
        start = rng.randint(2, 97)
        end = rng.randint(start + 1, 99)
        counter = rng.randint(2, start)

        def words(start_yy: str, end_yy: str) -> list[str]:
            return [BOS, "the", noun, "lasted", "from", "the", "year", century, start_yy,
                    "to", "the", "year", century, end_yy]

        full = words(f"{start:02d}", f"{end:02d}")
        slot = len(full) - 1
        return TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, [slot]),
            corrupted=self.masked(words("01", f"{end:02d}"), [slot]),
            answer_positions=[slot],
            correct=[f"{end:02d}"],
            counterfactual=[f"{counter:02d}"],
            valid=[(f"{y:02d}",) for y in range(start + 1, 100)],
            corrupted_valid=[(f"{y:02d}",) for y in range(2, 100)],
            meta={"start_year": start},
        )

    def vocabulary(self) -> set[str]:
        return set(NOUNS) | set(CENTURIES) | set(YEARS) | {"the", "lasted", "from", "year", "to"}

    def candidates(self, example: TaskExample) -> int:
        return len(YEARS)  # any two-digit year
