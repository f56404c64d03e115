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
drawn with exactly one right first step. Corruption: the target changes so that a different first
step, with a different first number, is the only right one.
"""
from __future__ import annotations

import itertools
import random

from .base import BOS, GLOBALLY_CONSTRAINED, Task, TaskExample

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
    return by_target


def solve(numbers: tuple[int, int, int], target: int) -> set[tuple[int, str, int]]:
    return solutions(numbers).get(target, set())


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


class Countdown(Task):
    name = "countdown"
    regime = GLOBALLY_CONSTRAINED
    description = "first step of an arithmetic plan that reaches the target"

    def sample(self, rng: random.Random) -> TaskExample:
        while True:
            numbers = tuple(rng.sample(range(1, MAX_NUMBER + 1), 3))
            unique = {t: next(iter(s)) for t, s in solutions(numbers).items() if len(s) == 1}
            if len(unique) < 2:
                continue
            target = rng.choice(sorted(unique))
            step = unique[target]
            others = [t for t in sorted(unique) if unique[t][0] != step[0]]
            if not others:
                continue
            counter_target = rng.choice(others)
            break
        counter_step = unique[counter_target]

        def words(t: int, first) -> list[str]:
            z, p, op2, q = _second_step(numbers, first, t)
            x, op, y = first
            return [BOS, *map(str, numbers), str(t), ":", str(x), op, str(y), "=", str(z), ",",
                    str(p), op2, str(q), "=", str(t)]

        full = words(target, step)
        slots = [6, 7, 8]
        hidden = slots + [10, 12, 13, 14]  # z, and the second step's operands and op
        as_words = lambda s: (str(s[0]), s[1], str(s[2]))  # noqa: E731
        return TaskExample(
            task=self.name,
            regime=self.regime,
            full=full,
            clean=self.masked(full, hidden),
            corrupted=self.masked(words(counter_target, counter_step), hidden),
            answer_positions=slots,
            correct=list(as_words(step)),
            counterfactual=list(as_words(counter_step)),
            valid=[as_words(s) for s in sorted(solve(numbers, target))],
            corrupted_valid=[as_words(s) for s in sorted(solve(numbers, counter_target))],
            meta={"numbers": list(numbers), "target": target, "corrupted_target": counter_target},
        )

    def vocabulary(self) -> set[str]:
        return {str(n) for n in range(0, MAX_VALUE + 1)} | set(OPS) | {":", "=", ","}

    def candidates(self, example: TaskExample) -> int:
        numbers = example.meta["numbers"]
        return sum(len(_steps((numbers[i], numbers[j]))) for i, j in itertools.combinations(range(3), 2))
