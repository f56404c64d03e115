"""Countdown, three numbers (globally constrained / planning).

Format (Dream's cd3 in words): ``a b c T : x op y = z , p op q = T``. The answer
is the first step ``x op y``: it is right only if the number it leaves, with
the remaining one, still reaches the target, so the first token already needs a
plan toward a constraint (T) that the solution only meets at its end. Steps
write the larger operand first.

The scored sequence masks the whole solution except the format tokens and the
closing "= T": the MDM sees the target again after the slots (a later
constraint), the ARM sees it in the input. Ops are +, - and * (with + and -
alone every target is reachable from several first steps, since a+b+c can start
anywhere); every number stays within 0..99 so each is one token. Problems are
drawn with exactly one right first step. Corruption: the target changes (in both places) so that a
different first step, with a different first number, is the only right one. ``countdown_late``
corrupts only the copy after the solution (:class:`CountdownLate`).

Held out: a fifth of the number triples (as sets); a held-out triple never appears in training, in
any order, so its first step has to be computed.
"""
from __future__ import annotations

import functools
import itertools
import random

from .base import GLOBALLY_CONSTRAINED, TRAIN, Task, TaskExample, frame, in_split

MAX_NUMBER = 12
OPS = ("+", "-", "*")
MAX_VALUE = 99


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def _steps(pair: tuple[int, int]) -> list[tuple[int, str, int]]:
    x, y = max(pair), min(pair)
    return [(x, op, y) for op in OPS if not (op == "-" and x == y)]


def solutions(numbers: tuple[int, int, int]) -> dict[int, set[tuple[int, str, int]]]:
    """Target -> the set of first steps (x, op, y) from which the target is reachable."""
    return {t: set(steps) for t, steps in _solutions(tuple(numbers)).items()}


@functools.lru_cache(maxsize=None)
def _solutions(numbers: tuple[int, int, int]) -> dict[int, frozenset[tuple[int, str, int]]]:
    # kept per ordered triple (at most 12 * 11 * 10): the training batches draw them again and again
    by_target: dict[int, set] = {}
    for i, j in itertools.combinations(range(3), 2):
        w = numbers[3 - i - j]
        for x, op, y in _steps((numbers[i], numbers[j])):
            z = _apply(x, op, y)
            if z > MAX_VALUE:
                continue
            for p, op2, q in _steps((z, w)):
                t = _apply(p, op2, q)
                if 0 < t <= MAX_VALUE:
                    by_target.setdefault(t, set()).add((x, op, y))
    return {t: frozenset(steps) for t, steps in by_target.items()}


def solve(numbers: tuple[int, int, int], target: int) -> set[tuple[int, str, int]]:
    return set(_solutions(tuple(numbers)).get(target, ()))


@functools.lru_cache(maxsize=None)
def _unique_first_steps(numbers: tuple[int, int, int]) -> tuple[tuple[int, tuple[int, str, int]], ...]:
    """(target, its only first step) for every target with exactly one, in increasing target order
    (at most 12 * 11 * 10 ordered triples: kept, as the training batches draw them again and again)."""
    return tuple(sorted((t, next(iter(s))) for t, s in _solutions(numbers).items() if len(s) == 1))


def _second_step(numbers, first, target) -> tuple[int, str, int, int]:
    x, op, y = first
    rest = list(numbers)
    rest.remove(x)
    rest.remove(y)
    z = _apply(x, op, y)
    for p, op2, q in _steps((z, rest[0])):
        if _apply(p, op2, q) == target:
            return z, p, op2, q
    raise AssertionError("no second step")  # solve() guarantees one


HELDOUT_PERCENT = 20
LENGTH = 1 + 5 + 16  # [BOS], filler room, "a b c T : x op y = z , p op q = T"


def triple_split(numbers) -> str:
    return in_split(tuple(sorted(numbers)), "countdown", HELDOUT_PERCENT)


class Countdown(Task):
    name = "countdown"
    regime = GLOBALLY_CONSTRAINED
    description = "first step of an arithmetic plan that reaches the target"
    decisive = "the target (in the input, and its copy closing the solution)"
    after_slot = "the rest of the solution, masked, and the target's copy"
    stream = "countdown"
    length = LENGTH

    def sample(self, rng: random.Random, split: str = TRAIN, layout: random.Random | None = None) -> TaskExample:
        layout = layout or rng
        while True:
            numbers = tuple(rng.sample(range(1, MAX_NUMBER + 1), 3))
            if triple_split(numbers) != split:
                continue
            ordered = _unique_first_steps(numbers)
            if len(ordered) < 2:
                continue
            unique = dict(ordered)
            target = rng.choice(ordered)[0]
            step = unique[target]
            others = [t for t, first in ordered if first[0] != step[0]]
            if not others:
                continue
            counter_target = rng.choice(others)
            break
        counter_step = unique[counter_target]

        def core(t: int, first) -> list[str]:
            z, p, op2, q = _second_step(numbers, first, t)
            x, op, y = first
            return [*map(str, numbers), str(t), ":", str(x), op, str(y), "=", str(z), ",",
                    str(p), op2, str(q), "=", str(t)]

        full, offset = frame(layout, core(target, step), self.length)
        corrupted = list(full)
        corrupted[offset:offset + 16] = core(counter_target, counter_step)
        slots = [offset + 5, offset + 6, offset + 7]
        hidden = slots + [offset + 9, offset + 11, offset + 12, offset + 13]  # z, the second step's operands and op
        targets = [offset + 3, offset + 15]  # the target in the input, and its copy after the solution
        as_words = lambda s: (str(s[0]), s[1], str(s[2]))  # noqa: E731
        example = TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, hidden),
            corrupted=self.masked(corrupted, hidden),
            answer_positions=slots,
            correct=list(as_words(step)),
            counterfactual=list(as_words(counter_step)),
            valid=[as_words(s) for s in sorted(solve(numbers, target))],
            corrupted_valid=[as_words(s) for s in sorted(solve(numbers, counter_target))],
            meta={"numbers": list(numbers), "target": target, "corrupted_target": counter_target,
                  "target_positions": targets, "entity": sorted(numbers), "split": split, "core_start": offset},
        )
        return self.corrupt(example)

    def corrupt(self, example: TaskExample) -> TaskExample:
        """Countdown's corruption is the other target in both places (done in :meth:`sample`)."""
        return example

    def vocabulary(self) -> set[str]:
        return {str(n) for n in range(0, MAX_VALUE + 1)} | set(OPS) | {":", "=", ","}

    def candidates(self, example: TaskExample) -> int:
        numbers = example.meta["numbers"]
        return sum(len(_steps((numbers[i], numbers[j]))) for i, j in itertools.combinations(range(3), 2))


class CountdownLate(Countdown):
    """The same problems, corrupted only after the answer: the target's copy that closes the solution
    (``= T`` at the end) changes to the other target, the input keeps the real one. The ARM cannot see
    the change at the read position; an effect on the MDM is its use of information after the slot."""

    name = "countdown_late"
    description = "Countdown with only the target's copy after the solution corrupted"
    decisive = "the target's copy closing the solution (the input keeps the clean target)"

    def corrupt(self, example: TaskExample) -> TaskExample:
        first, last = example.meta["target_positions"]
        corrupted = list(example.clean)
        corrupted[last] = str(example.meta["corrupted_target"])
        example.task, example.corrupted = self.name, corrupted
        return example


def target_variants(example: TaskExample) -> dict[str, list[str]]:
    """The clean sequence with the other target written in the input only ("early"), after the solution
    only ("late"), or in both ("both"): the three corruptions whose effects notebook 01 compares."""
    first, last = example.meta["target_positions"]
    other = str(example.meta["corrupted_target"])
    out = {}
    for name, where in (("early", [first]), ("late", [last]), ("both", [first, last])):
        words = list(example.clean)
        for p in where:
            words[p] = other
        out[name] = words
    return out
