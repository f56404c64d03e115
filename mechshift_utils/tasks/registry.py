"""The four embedded tasks by name: two prefix-dominant (IOI, Greater-Than), two globally
constrained (Countdown, Semantic Infilling)."""
from __future__ import annotations

from ..core.validation import ParameterError, check_non_negative_int, check_positive_int
from .base import SPECIAL_TOKENS, Task, TaskExample
from .countdown import Countdown
from .greater_than import GreaterThan
from .infilling import SemanticInfilling
from .ioi import IOI

TASKS: dict[str, Task] = {t.name: t for t in (IOI(), GreaterThan(), Countdown(), SemanticInfilling())}
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ParameterError(f"task: expected one of {list(TASKS)}, got {name!r}")
    return TASKS[name]


def generate(task: str, n: int, seed: int) -> list[TaskExample]:
    """n seeded examples of one task; the same (task, n, seed) gives the same examples."""
    check_positive_int("n", n)
    check_non_negative_int("seed", seed)
    return get_task(task).generate(n, seed)


def task_vocabulary() -> list[str]:
    """Every word any task can emit, specials first, the rest sorted (a stable order)."""
    words: set[str] = set()
    for t in TASKS.values():
        words |= t.vocabulary()
    return list(SPECIAL_TOKENS) + sorted(words - set(SPECIAL_TOKENS))
