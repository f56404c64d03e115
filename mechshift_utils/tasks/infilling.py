"""Semantic infilling (globally constrained: the blank is fixed by a word on each side of it).

"in the forest , the [MASK] howled all night ." -> wolf. The place before the blank narrows the
animal to four (its habitat's row of the table), the sound after it picks one (its column). Two
formats of the same content:

* ``infilling`` (restated): "in the forest , the _ howled all night . it was a [MASK] ." The blank
  is restated at the end, so the sound precedes the answer slot: an ARM can answer left to right,
  and at the read position both models have the same information.
* ``infilling_in_place``: the answer slot is the blank itself; the decisive sound comes after it.
  At the read position the ARM knows only the place (at best one chance in four); only a model that
  reads the later word can answer.

Corruption: the sound changes to one of another column, so another animal of the same habitat is
right. The table has structure, so that held-out pairs can be computed: 8 places in 4 habitats, 8
sounds in 4 kinds, 16 animals, one per (habitat, kind); each animal has 4 (place, sound) pairs, and
one of them is held out. A held-out pair never occurs in training, but its animal does, with the
same place and another sound of its kind and with the same sound and the other place of its habitat.
"""
from __future__ import annotations

import random

from ..core.seeding import stable_seed
from .base import GLOBALLY_CONSTRAINED, HELDOUT, TRAIN, Task, TaskExample, frame

HABITATS = (("forest", "woods"), ("farm", "barn"), ("house", "garden"), ("jungle", "river"))
KINDS = (("howled", "yelped"), ("growled", "snarled"), ("sang", "chirped"), ("squeaked", "squealed"))
ANIMALS = (("wolf", "bear", "thrush", "chipmunk"),
           ("collie", "bull", "rooster", "piglet"),
           ("puppy", "cat", "canary", "hamster"),
           ("jackal", "tiger", "parrot", "monkey"))
PLACES = tuple(p for row in HABITATS for p in row)
SOUNDS = tuple(s for col in KINDS for s in col)
TIMES = (("all", "night"), ("at", "dawn"), ("after", "dark"), ("again",))
BLANK = "_"
LENGTH = 1 + 5 + 16  # [BOS], filler room, the restated core at its longest


_HABITAT = {p: i for i, row in enumerate(HABITATS) for p in row}
_KIND = {s: i for i, col in enumerate(KINDS) for s in col}


def habitat(place: str) -> int:
    return _HABITAT[place]


def kind(sound: str) -> int:
    return _KIND[sound]


def animal(place: str, sound: str) -> str:
    return ANIMALS[habitat(place)][kind(sound)]


def _heldout_pairs() -> frozenset[tuple[str, str]]:
    """One of the four (place, sound) pairs of every animal, chosen by a fixed hash."""
    out = set()
    for h, places in enumerate(HABITATS):
        for k, sounds in enumerate(KINDS):
            pairs = [(p, s) for p in places for s in sounds]
            out.add(pairs[stable_seed("split", "infilling", ANIMALS[h][k]) % len(pairs)])
    return frozenset(out)


HELDOUT_PAIRS = _heldout_pairs()


def pair_split(place: str, sound: str) -> str:
    return HELDOUT if (place, sound) in HELDOUT_PAIRS else TRAIN


# the (place, sound) pairs of each split, in table order, and the sounds of every other kind than a
# sound's: drawn from for every example
_PAIRS = {split: tuple((p, s) for p in PLACES for s in SOUNDS if pair_split(p, s) == split) for split in (TRAIN, HELDOUT)}
_OTHER_KINDS = {s: tuple(o for o in SOUNDS if kind(o) != kind(s)) for s in SOUNDS}


class SemanticInfilling(Task):
    name = "infilling"
    regime = GLOBALLY_CONSTRAINED
    description = "name the animal in the blank from the place before it and the sound after it"
    decisive = "the sound (after the blank, before the restated slot)"
    after_slot = "nothing (filler)"
    stream = "infilling"
    length = LENGTH
    in_place = False

    def sample(self, rng: random.Random, split: str = TRAIN, layout: random.Random | None = None) -> TaskExample:
        layout = layout or rng
        place, sound = rng.choice(_PAIRS[split])
        counter_sound = rng.choice(_OTHER_KINDS[sound])
        time = TIMES[rng.randrange(len(TIMES))]
        answer, counter = animal(place, sound), animal(place, counter_sound)

        def core(s: str) -> list[str]:
            if self.in_place:
                return ["in", "the", place, ",", "the", answer, s, *time, "."]
            return ["in", "the", place, ",", "the", BLANK, s, *time, ".", "it", "was", "a", answer, "."]

        full, offset = frame(layout, core(sound), self.length)
        slot = offset + (5 if self.in_place else len(core(sound)) - 2)
        sound_at = offset + 6
        corrupted = list(full)
        corrupted[sound_at] = counter_sound
        return TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, [slot]),
            corrupted=self.masked(corrupted, [slot]),
            answer_positions=[slot],
            correct=[answer],
            counterfactual=[counter],
            valid=[(answer,)],
            corrupted_valid=[(counter,)],
            meta={"place": place, "sound": sound, "corrupted_sound": counter_sound, "sound_position": sound_at,
                  "entity": [place, sound], "split": split, "core_start": offset},
        )

    def vocabulary(self) -> set[str]:
        words = set(PLACES) | set(SOUNDS) | {a for row in ANIMALS for a in row} | {w for t in TIMES for w in t}
        return words | {"in", "the", ",", BLANK, ".", "it", "was", "a"}

    def candidates(self, example: TaskExample) -> int:
        return sum(len(row) for row in ANIMALS)  # any animal of the table


class InPlaceInfilling(SemanticInfilling):
    name = "infilling_in_place"
    description = "name the animal in the blank itself; the sound that decides it comes after the slot"
    length = 1 + 5 + 11  # [BOS], filler room, the in-place core at its longest
    decisive = "the sound, right after the slot"
    after_slot = "the sound and the time"
    in_place = True
    pool_roles = ("mdm",)  # an ARM cannot solve it: its pool is the examples the MDM solves
    arm_answers = False
