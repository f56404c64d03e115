"""Tasks: the seeded generators (word-level for the embedded pair, natural text for real pairs),
the embedded pair's word tokenizer, examples encoded as tensors, and the pool files.

``generate(name, n, seed)`` and ``get_task(name)`` are the entry points; ``task_examples`` and
``encode_for`` pick the form a pair's tokenizer reads.
"""
from __future__ import annotations

from .base import (BOS, GLOBALLY_CONSTRAINED, HELDOUT, MASK, PAD, PREFIX_DOMINANT, SPECIAL_TOKENS, SPLITS, TRAIN, UNK,
                   Task, TaskExample)
from .encoding import EVAL_STREAM, EncodedTask, encode_examples, encode_for, task_examples, task_names_for
from .registry import CORE_TASKS, TASK_NAMES, TASKS, TRAINING_TASKS, generate, get_task, task_vocabulary
from .tokenizer import build_word_tokenizer, encode_rows, encode_words, is_word_level

__all__ = ["BOS", "MASK", "PAD", "UNK", "SPECIAL_TOKENS", "PREFIX_DOMINANT", "GLOBALLY_CONSTRAINED", "Task",
           "TaskExample", "SPLITS", "TRAIN", "HELDOUT", "TASKS", "TASK_NAMES", "CORE_TASKS", "TRAINING_TASKS", "get_task", "generate", "task_vocabulary", "EncodedTask",
           "encode_examples", "encode_for", "task_examples", "task_names_for", "EVAL_STREAM", "build_word_tokenizer",
           "encode_rows", "encode_words", "is_word_level"]
