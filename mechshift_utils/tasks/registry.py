"""The embedded tasks by name: two prefix-dominant (IOI, Greater-Than), two globally constrained
(Countdown, Semantic Infilling), and two variants whose regime lives in the information flow: Countdown
corrupted only after the answer (``countdown_late``) and Infilling with the blank in place
(``infilling_in_place``)."""
from __future__ import annotations

from ..core.validation import ParameterError, check_non_negative_int, check_positive_int
from .base import SPECIAL_TOKENS, Task, TaskExample
from .base import HELDOUT
from .countdown import Countdown, CountdownLate
from .greater_than import GreaterThan
from .infilling import InPlaceInfilling, SemanticInfilling
from .ioi import IOI

TASKS: dict[str, Task] = {t.name: t for t in (IOI(), GreaterThan(), Countdown(), CountdownLate(), SemanticInfilling(),
                                              InPlaceInfilling())}
TASK_NAMES = tuple(TASKS)
# The four tasks of the paper; the other two are their information-flow variants.
CORE_TASKS = ("ioi", "greater_than", "countdown", "infilling")
# What the models are trained on: every sequence kind once (countdown_late shares countdown's sequences).
TRAINING_TASKS = ("ioi", "greater_than", "countdown", "infilling", "infilling_in_place")


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ParameterError(f"task: expected one of {list(TASKS)}, got {name!r}")
    return TASKS[name]


def generate(task: str, n: int, seed: int, split: str = HELDOUT) -> list[TaskExample]:
    """n seeded examples of one task from its held-out (default) or train split; the same
    (task, n, seed, split) gives the same examples."""
    check_positive_int("n", n)
    check_non_negative_int("seed", seed)
    return get_task(task).generate(n, seed, split)


def task_vocabulary() -> list[str]:
    """Every word any task can emit, specials first, the rest sorted (a stable order)."""
    words: set[str] = set()
    for t in TASKS.values():
        words |= t.vocabulary_with_filler()
    return list(SPECIAL_TOKENS) + sorted(words - set(SPECIAL_TOKENS))


def information_table(names=TASK_NAMES):
    """What each task lets each model see at the read position (the slot's predecessor): the decisive
    evidence, whether the corruption changes it before or after the slot, and what follows the slot
    (read by the MDM only). One row per task."""
    import pandas as pd

    rows = []
    for name in names:
        t = get_task(name)
        e = t.generate(1, 0)[0]
        slot = e.answer_positions[0]
        differs = [i for i, (a, b) in enumerate(zip(e.clean, e.corrupted)) if a != b]
        before = any(i < slot for i in differs)
        after = any(i > slot for i in differs)
        rows.append({"task": name, "regime": t.regime, "decisive evidence": t.decisive,
                     "corruption changes": "before and after the slot" if before and after
                     else "before the slot" if before else "after the slot",
                     "after the slot (MDM only)": t.after_slot,
                     "ARM sees the change": "yes" if before else "no",
                     "ARM can answer": "yes" if t.arm_answers else "no: the decisive word comes after the slot"})
    return pd.DataFrame(rows)
