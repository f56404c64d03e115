"""Pool files: the examples a pair is traced on, as JSON lines.

Each line holds an example's words (or text pieces) and token ids, its answer slots and the
correct and counterfactual ids: enough to recompute any score without this package.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import TaskExample
from .encoding import EncodedTask


def save_pool(data: EncodedTask, indices: list[int], path: str | Path) -> Path:
    """Write the common-correct pool as JSON lines: words (or text pieces) and token ids, enough to
    recompute any score. ``answer_positions`` stays the example's own (word or piece) positions;
    ``answer_token_positions`` are the slots in the token ids (the same for the embedded pair)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in indices:
            record = data.examples[i].to_dict()
            record.update(example=i, clean_ids=data.clean_ids[i].tolist(),
                          corrupted_ids=data.corrupted_ids[i].tolist(),
                          answer_token_positions=data.answer_positions[i].tolist(),
                          correct_ids=data.correct_ids[i].tolist(),
                          counterfactual_ids=data.counterfactual_ids[i].tolist())
            f.write(json.dumps(record) + "\n")
    return path


def load_pool(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f]


def pool_examples(records: list[dict]) -> list[TaskExample]:
    """The task examples of pool records (the token ids beside them are re-derived when encoding)."""
    keep = set(TaskExample.__dataclass_fields__)
    return [TaskExample.from_dict({k: v for k, v in r.items() if k in keep}) for r in records]
