"""Semantic infilling (globally constrained: information on both sides of a blank).

"in the forest , the _ howled all night . it was a" -> wolf.
The blank's filler is fixed jointly by the word before it (the place narrows
the candidates to four) and the word after it (the sound picks one). The
answer slot restates the blank at the end, so the sequence is solvable left to
right by the ARM, while the decisive word lies after the blank. Corruption: the
later word (the sound) changes, so another animal is right.
"""
from __future__ import annotations

import random

from .base import BOS, GLOBALLY_CONSTRAINED, Task, TaskExample

PLACES = ("forest", "farm", "house", "jungle")
SOUNDS = ("howled", "growled", "sang", "squeaked")
# ANIMALS[place][sound]
ANIMALS = {
    "forest": {"howled": "wolf", "growled": "bear", "sang": "thrush", "squeaked": "chipmunk"},
    "farm": {"howled": "collie", "growled": "bull", "sang": "rooster", "squeaked": "piglet"},
    "house": {"howled": "puppy", "growled": "cat", "sang": "canary", "squeaked": "hamster"},
    "jungle": {"howled": "jackal", "growled": "tiger", "sang": "parrot", "squeaked": "monkey"},
}
BLANK = "_"


class SemanticInfilling(Task):
    name = "infilling"
    regime = GLOBALLY_CONSTRAINED
    description = "name the animal in the blank from the place before it and the sound after it"

    def sample(self, rng: random.Random) -> TaskExample:
        place = rng.choice(PLACES)
        sound, counter_sound = rng.sample(SOUNDS, 2)

        def words(s: str) -> list[str]:
            return [BOS, "in", "the", place, ",", "the", BLANK, s, "all", "night", ".", "it", "was", "a",
                    ANIMALS[place][s]]

        full = words(sound)
        slot = len(full) - 1
        answer, counter = ANIMALS[place][sound], ANIMALS[place][counter_sound]
        return TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, [slot]),
            corrupted=self.masked(words(counter_sound), [slot]),
            answer_positions=[slot],
            correct=[answer],
            counterfactual=[counter],
            valid=[(answer,)],
            corrupted_valid=[(counter,)],
            meta={"place": place, "sound": sound, "corrupted_sound": counter_sound},
        )

    def vocabulary(self) -> set[str]:
        words = set(PLACES) | set(SOUNDS) | {a for row in ANIMALS.values() for a in row.values()}
        return words | {"in", "the", ",", BLANK, "all", "night", ".", "it", "was", "a"}

    def candidates(self, example: TaskExample) -> int:
        return sum(len(row) for row in ANIMALS.values())  # any animal of the table
