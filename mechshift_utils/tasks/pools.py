"""Pool files: the examples a pair is traced on, as JSON lines.

Each line holds an example's words (or text pieces) and token ids, its answer slots and the
correct and counterfactual ids: enough to recompute any score without this package. A pool is
written atomically with its checksum beside it (``<task>.jsonl.sha256``, see
mechshift_utils.core.files) and checked when read.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core.files import jsonl_records, write_text
from .base import TaskExample

POOL_FIX = ("Pools are written by notebook 01: run it again, with the same -p options as this run "
            "(./run_all.sh --only 01 ...)")
from .encoding import EncodedTask


def save_pool(data: EncodedTask, indices: list[int], path: str | Path) -> Path:
    """Write the common-correct pool as JSON lines: words (or text pieces) and token ids, enough to
    recompute any score. ``answer_positions`` stays the example's own (word or piece) positions;
    ``answer_token_positions`` are the slots in the token ids (the same for the embedded pair)."""
    lines = []
    for i in indices:
        record = data.examples[i].to_dict()
        record.update(example=i, clean_ids=data.clean_ids[i].tolist(),
                      corrupted_ids=data.corrupted_ids[i].tolist(),
                      answer_token_positions=data.answer_positions[i].tolist(),
                      correct_ids=data.correct_ids[i].tolist(),
                      counterfactual_ids=data.counterfactual_ids[i].tolist())
        lines.append(json.dumps(record) + "\n")
    return write_text(path, "".join(lines))


def load_pool(path: str | Path, fix: str = POOL_FIX) -> list[dict]:
    """The records of a pool file. A damaged file (checksum mismatch, a line that is not JSON, no checksum)
    stops with an ArtifactError naming the file, its first bad line and ``fix``."""
    return jsonl_records(path, fix)


def pool_examples(records: list[dict]) -> list[TaskExample]:
    """The task examples of pool records (the token ids beside them are re-derived when encoding)."""
    keep = set(TaskExample.__dataclass_fields__)
    return [TaskExample.from_dict({k: v for k, v in r.items() if k in keep}) for r in records]
