"""The four tasks as natural text, for real model pairs (GPT-2/DiffuGPT, Llama-2/DiffuLLaMA, Qwen2.5/Dream).

The embedded tasks are lowercase words, one token each. Here the same tasks are
written as the real models read them: capitalised names and sentences (IOI, as
the EAP-IG reference), four-digit years split before the last two digits
(Greater-Than, as the EAP-IG reference), Dream's Countdown lines (cd3, cd4),
natural infilling sentences. An example is still a :class:`TaskExample`, so
the pools, checks and scoring stay the same, with one difference in what its
``full`` list holds: text *pieces* rather than words. Each piece carries its own
leading space (``" Amber"``), so joining the pieces without a separator gives
the exact text; ``meta["style"] == "real"`` marks such examples. Position 0 is
still the ``[BOS]`` marker: the subword encoder (``mechshift_utils.tasks.encoding``)
turns it into the tokenizer's BOS where the tokenizer has one and drops it
where it has none (Qwen), and turns every answer piece into as many masked
positions as the pair's tokenizer gives it.

The generators cannot know the tokenizer, so they only make token counts
likely to agree (common one-word fillers, corrupted numbers of the same
shape, answers that start with a different character); the encoder drops, and
counts, the examples where a given tokenizer still disagrees.
"""
from __future__ import annotations

import random
import re
from typing import ClassVar

from ..core.seeding import stable_seed
from ..core.validation import ParameterError, check_bool, check_non_negative_int, check_positive_int
from .base import BOS, Task, TaskExample
from .countdown import Countdown
from .greater_than import GreaterThan
from .infilling import InPlaceInfilling, SemanticInfilling
from .ioi import IOI

REAL_STYLE = "real"


def is_real(example: TaskExample) -> bool:
    return example.meta.get("style") == REAL_STYLE


def text_pieces(example: TaskExample, words: list[str]) -> list[str]:
    """The text pieces of one of ``example``'s sequences (``full``, ``clean``, ...), without the BOS marker.

    Real-text pieces carry their own spacing; embedded words are joined by one
    space, which is how their word-level text reads.
    """
    body = list(words[1:])
    if is_real(example):
        return body
    return [w if i == 0 else " " + w for i, w in enumerate(body)]


def example_text(example: TaskExample, words: list[str] | None = None) -> str:
    """The text of a sequence (default: the full one, answers written in)."""
    return "".join(text_pieces(example, example.full if words is None else words))


def _split_words(text: str) -> list[str]:
    """Whitespace-delimited words, each with the whitespace before it (so they join back to ``text``)."""
    return re.findall(r"\s*\S+", text)


class RealTask(Task):
    """A real-text task: its own seed stream, and no closed word vocabulary (the pair's tokenizer covers it)."""

    stream: ClassVar[str] = "real-task"

    def generate(self, n: int, seed: int) -> list[TaskExample]:
        rng = random.Random(stable_seed(self.stream, self.name, seed))
        return [self.sample(rng) for _ in range(n)]

    def vocabulary(self) -> set[str]:
        raise NotImplementedError(f"{self.name}: real-text tasks are read by the pair's subword tokenizer; "
                                  "they have no word vocabulary")

    def example(self, prompt: list[str], corrupted_prompt: list[str], correct: list[str],
                counterfactual: list[str], valid, corrupted_valid, meta: dict) -> TaskExample:
        """An example whose answer pieces come right after the prompt (every real task ends with its answer)."""
        full = [BOS, *prompt, *correct]
        slots = list(range(len(prompt) + 1, len(full)))
        return TaskExample(
            task=self.name, regime=self.regime, full=full,
            clean=self.masked(full, slots),
            corrupted=self.masked([BOS, *corrupted_prompt, *counterfactual], slots),
            answer_positions=slots, correct=list(correct), counterfactual=list(counterfactual),
            valid=[tuple(v) for v in valid], corrupted_valid=[tuple(v) for v in corrupted_valid],
            meta={"style": REAL_STYLE, **meta},
        )


# --- IOI ---------------------------------------------------------------------------------------

NAMES = (
    "Mary John Alice Bob Kate Tom Anna Paul Lisa Mark Emma Jack Sarah Adam James David Michael Daniel "
    "Laura Rachel Peter Susan Robert Linda Steven Karen Kevin Emily Brian Amy Jason Ryan Eric Helen "
    "Frank Grace"
).split()
# One sentence shape with one-word fillers: every example has the same pieces, so that token
# lengths under a subword tokenizer differ only where a filler or a name splits differently.
IOI_TEMPLATE = "{opener}, {A} and {B} were {activity} at the {place}. {S} {verb} to give a {object} to"
IOI_FILLERS = {
    "opener": ("Then", "Later", "Today", "Afterwards"),
    "activity": ("working", "eating", "waiting", "talking", "playing"),
    "place": ("house", "store", "school", "office", "park", "station", "garden", "restaurant"),
    "verb": ("decided", "wanted", "offered", "planned"),
    "object": ("drink", "book", "ball", "ring", "gift", "letter", "key", "snack"),
}


class RealIOI(RealTask):
    """IOI as the EAP-IG reference: "Then, Aaron and Amber were working at the house. Aaron decided to
    give a drink to" -> " Amber". ABC corruption: the repeated subject becomes a third name, so either
    first-clause name is right and the subject (the counterfactual) becomes one of them."""

    name, regime, description = IOI.name, IOI.regime, IOI.description  # the same task, as text

    def sample(self, rng: random.Random) -> TaskExample:
        io, s, c = rng.sample(NAMES, 3)
        a, b = (io, s) if rng.random() < 0.5 else (s, io)
        fill = {k: rng.choice(v) for k, v in IOI_FILLERS.items()}
        prompt = _split_words(IOI_TEMPLATE.format(A=a, B=b, S=s, **fill))
        corrupted = _split_words(IOI_TEMPLATE.format(A=a, B=b, S=c, **fill))
        return self.example(prompt, corrupted, [" " + io], [" " + s], [(" " + io,)],
                            [(" " + a,), (" " + b,)],
                            {"names": {"io": io, "s": s, "corrupted_s": c}, "order": "ABB" if a == io else "BAB",
                             "fillers": fill})

    def candidates(self, example: TaskExample) -> int:
        return 2  # the two names of the first clause


# --- Greater-Than ------------------------------------------------------------------------------

GT_NOUNS = ("war contract plan strike drought journey siege reign project trial marriage campaign "
            "expedition study program operation").split()
GT_CENTURIES = tuple(range(11, 18))


class RealGreaterThan(RealTask):
    """Greater-Than as the EAP-IG reference: "The contract lasted from the year 1352 to the year 13" ->
    "53".."99". The answer piece is the two digits after the century (no space: GPT-2 reads " 13" "52").
    Corrupted start year: century + "01". The counterfactual, a year in [02, start], is drawn with a
    tens digit other than the answer's where one exists, so that tokenizers that split numbers into
    digits (Llama, Qwen) still tell the two apart at the first answer token."""

    name, regime, description = GreaterThan.name, GreaterThan.regime, GreaterThan.description

    def sample(self, rng: random.Random) -> TaskExample:
        noun, century = rng.choice(GT_NOUNS), rng.choice(GT_CENTURIES)
        start = rng.randint(2, 97)
        end = rng.randint(start + 1, 99)
        counters = [y for y in range(2, start + 1) if y // 10 != end // 10] or list(range(2, start + 1))
        counter = rng.choice(counters)

        def prompt(start_yy: str) -> list[str]:
            return _split_words(f"The {noun} lasted from the year {century}{start_yy} to the year {century}")

        years = lambda lo: [(f"{y:02d}",) for y in range(lo, 100)]  # noqa: E731
        return self.example(prompt(f"{start:02d}"), prompt("01"), [f"{end:02d}"], [f"{counter:02d}"],
                            years(start + 1), years(2), {"start_year": start, "century": century, "noun": noun})

    def candidates(self, example: TaskExample) -> int:
        return 100  # any two-digit year


# --- Countdown ---------------------------------------------------------------------------------

CD_TARGETS = range(10, 100)  # Dream's targets are two-digit
CD_MAX_INPUT = 99
CD_SEPARATOR = "\n"  # between the input line and the output line
TWO_DIGITS = {str(v) for v in range(10, 100)}


def _steps(a: int, b: int) -> set[tuple[int, str, int, int]]:
    """Every way Dream's format writes one step on a and b: + and * in either order, - and / larger first,
    / only when exact."""
    hi, lo = max(a, b), min(a, b)
    out = {(a, "+", b, a + b), (b, "+", a, a + b), (a, "*", b, a * b), (b, "*", a, a * b), (hi, "-", lo, hi - lo)}
    if lo > 0 and hi % lo == 0:
        out.add((hi, "/", lo, hi // lo))
    return out


def _paths(pool: tuple[int, ...], steps: tuple = ()):
    """(final value, steps) for every order of combining the pool down to one number."""
    if len(pool) == 1:
        yield pool[0], steps
        return
    for i in range(len(pool)):
        for j in range(i + 1, len(pool)):
            rest = pool[:i] + pool[i + 1:j] + pool[j + 1:]
            for step in _steps(pool[i], pool[j]):
                yield from _paths(rest + (step[3],), steps + (step,))


def _line(steps) -> str:
    return ",".join(f"{x}{op}{y}={z}" for x, op, y, z in steps)


def countdown_solutions(numbers: tuple[int, ...]) -> dict[int, list[str]]:
    """Two-digit target -> every output line (sorted) that reaches it using each number once."""
    by_target: dict[int, set[str]] = {}
    for value, steps in _paths(tuple(numbers)):
        if value in CD_TARGETS:
            by_target.setdefault(value, set()).add(_line(steps))
    return {t: sorted(s) for t, s in sorted(by_target.items())}


def countdown_paths(numbers: tuple[int, ...]) -> int:
    """How many output lines the format allows for these numbers, whatever they reach (the chance level)."""
    return len({steps for _, steps in _paths(tuple(numbers))})


def parse_countdown_output(line: str) -> list[tuple[int, str, int, int]]:
    """An output line "a+b=c,..." as [(a, op, b, c), ...]."""
    steps = []
    for eq in line.split(","):
        m = re.fullmatch(r"(\d+)([-+*/])(\d+)=(\d+)", eq)
        if m is None:
            raise ParameterError(f"output: expected equations 'a+b=c' joined by ',', got {line!r}")
        steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    return steps


def parse_countdown(record: dict) -> tuple[list[int], int, list[tuple[int, str, int, int]]]:
    """A Dream Countdown record ``{"input": "n1,...,nk,target", "output": "a+b=c,..."}`` as
    (numbers, target, [(a, op, b, c), ...])."""
    expected = "a dict in Dream's Countdown format ('n1,...,nk,target' and 'a+b=c,...')"
    if not isinstance(record, dict) or not {"input", "output"} <= set(record):
        raise ParameterError(f"record: expected {expected}, got {record!r}")
    try:
        values = [int(v) for v in record["input"].split(",")]
        steps = parse_countdown_output(record["output"])
    except (ValueError, AttributeError):
        raise ParameterError(f"record: expected {expected}, got {record!r}") from None
    if len(values) < 2:
        raise ParameterError(f"record: expected {expected}, got {record!r}")
    return values[:-1], values[-1], steps


def check_countdown(numbers, target: int, steps) -> bool:
    """Whether steps are right arithmetic in Dream's format, use every number once and end on the target."""
    pool = list(numbers)
    for x, op, y, z in steps:
        if (x, op, y, z) not in _steps(x, y):
            return False
        for v in (x, y):
            if v not in pool:
                return False
            pool.remove(v)
        pool.append(z)
    return pool == [target]


def countdown_record(example: TaskExample) -> dict:
    """A real Countdown example back in Dream's jsonl format."""
    return {"input": ",".join(map(str, example.meta["numbers"] + [example.meta["target"]])),
            "output": example.correct[0]}


def _shape(line: str) -> str:
    """Where the digits and the operators are (tokenizers split an operator between digits alone)."""
    return re.sub(r"[-+*/]", "+", re.sub(r"\d", "0", line))


def _first(line: str) -> str:
    return line.split(",")[0]


class RealCountdown(RealTask):
    """Countdown in Dream's cd3 / cd4 format: "15,44,79,50" then, on the next line, "44-15=29,79-29=50".

    The whole output line is one answer piece, masked in the scored sequences (the MDM writes all of
    it at once). Right answers: every output line that reaches the target. Corruption: another target
    with the same number of digits, whose counterfactual line has the same shape as the answer (digits
    and operators where the answer has them, so that digit-splitting tokenizers give both the same
    token count), starts with
    another character (another first token under any tokenizer) and another first equation, and
    whose right lines never start with the answer's first equation (and the other way round): the
    first step depends on the target.

    ``uniform`` (the default): every number of the input, and of the answer and counterfactual lines,
    has two digits. Dream's sets mix one- to four-digit numbers, which gives every problem its own
    token length; a scored set needs one length, so without ``uniform`` most examples of a set are
    dropped at encoding. Right answers of other shapes still count (as far as their token count fits).
    """

    regime = Countdown.regime
    description = "arithmetic steps that reach the target, in Dream's Countdown format"

    def __init__(self, n_numbers: int = 3, uniform: bool = True):
        if n_numbers not in (3, 4):
            raise ParameterError(f"n_numbers: expected 3 (cd3) or 4 (cd4), got {n_numbers!r}")
        self.n_numbers = n_numbers
        self.uniform = check_bool("uniform", uniform)
        self.name = "countdown" if n_numbers == 3 else f"countdown_cd{n_numbers}"

    def _usable(self, line: str) -> bool:
        return not self.uniform or set(re.findall(r"\d+", line)) <= TWO_DIGITS

    def _draw(self, rng: random.Random):
        low = 10 if self.uniform else 1
        numbers = tuple(rng.sample(range(low, CD_MAX_INPUT + 1), self.n_numbers))
        sols = countdown_solutions(numbers)
        usable = {t: [s for s in lines if self._usable(s)] for t, lines in sols.items()}
        targets = [t for t, lines in usable.items() if lines]
        if len(targets) < 2:
            return None
        target = rng.choice(targets)
        line = rng.choice(usable[target])
        firsts = {t: {_first(s) for s in lines} for t, lines in sols.items()}
        options = [(t, s) for t in targets if t != target and _first(line) not in firsts[t] for s in usable[t]
                   if _shape(s) == _shape(line) and s[0] != line[0] and _first(s) not in firsts[target]]
        if not options:
            return None
        return numbers, sols, target, line, rng.choice(options)

    def sample(self, rng: random.Random) -> TaskExample:
        drawn = None
        while drawn is None:
            drawn = self._draw(rng)
        numbers, sols, target, line, (counter_target, counter_line) = drawn

        def prompt(t: int) -> list[str]:
            values = [str(v) for v in (*numbers, t)]
            return [p for v in values for p in (v, ",")][:-1] + [CD_SEPARATOR]

        return self.example(prompt(target), prompt(counter_target), [line], [counter_line],
                            [(s,) for s in sols[target]], [(s,) for s in sols[counter_target]],
                            {"numbers": list(numbers), "target": target, "corrupted_target": counter_target,
                             "variant": f"cd{self.n_numbers}"})

    def candidates(self, example: TaskExample) -> int:
        return countdown_paths(tuple(example.meta["numbers"]))


# --- Semantic infilling ------------------------------------------------------------------------

INFILL_SOUNDS = ("howled", "growled", "sang", "squeaked")
# INFILL_ANIMALS[place][sound]; every animal starts with a consonant, so "It was a" reads right.
INFILL_ANIMALS = {
    "forest": {"howled": "wolf", "growled": "bear", "sang": "robin", "squeaked": "squirrel"},
    "farm": {"howled": "dog", "growled": "bull", "sang": "rooster", "squeaked": "pig"},
    "house": {"howled": "puppy", "growled": "cat", "sang": "canary", "squeaked": "hamster"},
    "jungle": {"howled": "jackal", "growled": "tiger", "sang": "parrot", "squeaked": "monkey"},
}
INFILL_TEMPLATE = "In the {place}, {subject} {sound} {time}. It was a"
INFILL_FILLERS = {
    "subject": ("an animal", "a creature", "the beast"),
    "time": ("all night", "at dawn", "until morning", "after dark"),
}


class RealInfilling(RealTask):
    """Semantic infilling in sentences: "In the forest, an animal howled all night. It was a" -> " wolf".

    As the embedded task: the place before the unnamed animal narrows it to four, the sound after it
    picks one, and the answer restates it at the end (so the ARM can answer left to right while the
    decisive word lies after the unnamed animal). Corruption: the sound changes, so another animal is
    right."""

    name, regime, description = SemanticInfilling.name, SemanticInfilling.regime, SemanticInfilling.description

    def sample(self, rng: random.Random) -> TaskExample:
        place = rng.choice(list(INFILL_ANIMALS))
        sound, counter_sound = rng.sample(INFILL_SOUNDS, 2)
        fill = {k: rng.choice(v) for k, v in INFILL_FILLERS.items()}

        def prompt(s: str) -> list[str]:
            return _split_words(INFILL_TEMPLATE.format(place=place, sound=s, **fill))

        answer, counter = " " + INFILL_ANIMALS[place][sound], " " + INFILL_ANIMALS[place][counter_sound]
        return self.example(prompt(sound), prompt(counter_sound), [answer], [counter], [(answer,)], [(counter,)],
                            {"place": place, "sound": sound, "corrupted_sound": counter_sound, "fillers": fill})

    def candidates(self, example: TaskExample) -> int:
        return sum(len(row) for row in INFILL_ANIMALS.values())


class RealInPlaceInfilling(RealInfilling):
    """The same content with the blank in place: "In the forest, the [MASK] howled all night." ->
    " wolf". The sound that decides the animal comes after the slot: only the MDM can read it (the ARM
    is scored on the restated form, ``infilling``). Corruption: the sound changes."""

    name, description = InPlaceInfilling.name, InPlaceInfilling.description
    pool_roles = InPlaceInfilling.pool_roles

    def sample(self, rng: random.Random) -> TaskExample:
        place = rng.choice(list(INFILL_ANIMALS))
        sound, counter_sound = rng.sample(INFILL_SOUNDS, 2)
        time = rng.choice(INFILL_FILLERS["time"])
        before = _split_words(f"In the {place}, the")
        answer, counter = " " + INFILL_ANIMALS[place][sound], " " + INFILL_ANIMALS[place][counter_sound]
        full = [BOS, *before, answer, *_split_words(f" {sound} {time}.")]
        corrupted = [BOS, *before, counter, *_split_words(f" {counter_sound} {time}.")]
        slot = 1 + len(before)
        return TaskExample(
            task=self.name, regime=self.regime, full=full, clean=self.masked(full, [slot]),
            corrupted=self.masked(corrupted, [slot]), answer_positions=[slot], correct=[answer],
            counterfactual=[counter], valid=[(answer,)], corrupted_valid=[(counter,)],
            meta={"style": REAL_STYLE, "place": place, "sound": sound, "corrupted_sound": counter_sound,
                  "time": time})


REAL_TASKS: dict[str, RealTask] = {t.name: t for t in (RealIOI(), RealGreaterThan(), RealCountdown(3),
                                                        RealCountdown(4), RealInfilling(), RealInPlaceInfilling())}
REAL_TASK_NAMES = tuple(REAL_TASKS)


def get_real_task(name: str) -> RealTask:
    if name not in REAL_TASKS:
        raise ParameterError(f"task: expected one of {list(REAL_TASKS)}, got {name!r}")
    return REAL_TASKS[name]


def generate_real(task: str, n: int, seed: int) -> list[TaskExample]:
    """n seeded real-text examples of one task; the same (task, n, seed) gives the same examples."""
    check_positive_int("n", n)
    check_non_negative_int("seed", seed)
    return get_real_task(task).generate(n, seed)
