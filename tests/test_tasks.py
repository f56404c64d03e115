import json
from pathlib import Path

import pytest

from mechshift_utils import tasks
from mechshift_utils.tasks import MASK, countdown, real
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.tasks.encoding import encode_examples


@pytest.fixture(scope="module", params=tasks.TASK_NAMES)
def examples(request):
    return tasks.generate(request.param, 200, seed=3)


def test_structure_equal_lengths_and_valid_slots(examples):
    lengths = {len(e.full) for e in examples}
    assert len(lengths) == 1, "one task, one sequence length"
    for e in examples:
        e.check()
        assert len(e.clean) == len(e.corrupted) == len(e.full)
        assert all(1 <= p < len(e.full) for p in e.answer_positions)
        # outside the masked positions, the scored clean sequence is the full one
        assert all(c == f for c, f in zip(e.clean, e.full) if c != MASK)


def test_corruption_changes_the_right_answer(examples):
    for e in examples:
        assert tuple(e.correct) in e.valid
        assert set(e.valid) != set(e.corrupted_valid)
        assert tuple(e.counterfactual) in e.corrupted_valid
        assert tuple(e.counterfactual) not in e.valid
        assert e.correct[0] != e.counterfactual[0], "the metric slot must tell the answers apart"
        assert e.clean != e.corrupted


def test_same_seed_same_examples_other_seed_other_examples(examples):
    name = examples[0].task
    assert [e.to_dict() for e in tasks.generate(name, 200, seed=3)] == [e.to_dict() for e in examples]
    assert [e.to_dict() for e in tasks.generate(name, 200, seed=4)] != [e.to_dict() for e in examples]


def test_encoding_keeps_one_token_per_word(examples, tokenizer):
    data = encode_examples(examples, tokenizer)
    assert data.clean_ids.shape == data.corrupted_ids.shape == data.full_ids.shape
    assert (data.clean_ids[0] == tokenizer.mask_token_id).sum() >= len(examples[0].answer_positions)
    row = data.clean_ids[0].tolist()
    assert tokenizer.convert_ids_to_tokens(row) == examples[0].clean
    assert tokenizer.unk_token_id not in data.full_ids


def test_encoding_many_rows_reads_the_vocabulary_once_and_agrees(examples, tokenizer):
    rows = [e.full for e in examples[:5]]
    assert tasks.encode_rows(tokenizer, rows) == [tasks.encode_words(tokenizer, r) for r in rows]
    with pytest.raises(ValueError, match="not in this tokenizer"):
        tasks.encode_rows(tokenizer, [["no-such-word"]])


def test_regimes():
    assert {t.regime for t in tasks.TASKS.values()} == {tasks.PREFIX_DOMINANT, tasks.GLOBALLY_CONSTRAINED}
    assert tasks.get_task("ioi").regime == tasks.get_task("greater_than").regime == tasks.PREFIX_DOMINANT


def test_ioi_abc_corruption_replaces_only_the_repeated_subject():
    for e in tasks.generate("ioi", 50, seed=0):
        diff = [i for i, (a, b) in enumerate(zip(e.clean, e.corrupted)) if a != b]
        assert len(diff) == 1 and e.clean[diff[0]] == e.counterfactual[0]
        assert e.clean[1:e.answer_positions[0]].count(e.correct[0]) == 1


def test_greater_than_corrupted_start_year_is_01():
    for e in tasks.generate("greater_than", 50, seed=0):
        at = e.meta["start_position"]
        assert e.corrupted[at] == "01" and e.clean[at] == f"{e.meta['start_year']:02d}"
        assert [i for i, (a, b) in enumerate(zip(e.clean, e.corrupted)) if a != b] == [at]
        assert all(int(v[0]) > e.meta["start_year"] for v in e.valid)


def _core(e):
    """A Countdown example's 16 words "a b c T : x op y = z , p op q = T", wherever the filler puts them."""
    start = e.meta["core_start"]
    return e.full[start:start + 16]


def test_countdown_answers_are_checked_by_arithmetic():
    for e in tasks.generate("countdown", 100, seed=0):
        numbers, target = tuple(e.meta["numbers"]), e.meta["target"]
        words = _core(e)
        assert words[:3] == [str(n) for n in numbers] and words[3] == str(target) and words[4] == ":"
        x, op, y = words[5:8]
        assert e.answer_positions == [e.meta["core_start"] + i for i in (5, 6, 7)]
        z = int(words[9])
        assert z == {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op]
        p, op2, q = words[11:14]
        assert int(words[15]) == target == {"+": int(p) + int(q), "-": int(p) - int(q),
                                             "*": int(p) * int(q)}[op2]
        rest = list(numbers)
        rest.remove(int(x))
        rest.remove(int(y))
        assert sorted([int(p), int(q)]) == sorted([z, rest[0]]), "second step uses z and the unused number"
        assert len(e.valid) == 1  # drawn with exactly one right first step
        assert countdown.solve(numbers, target) == {(int(x), op, int(y))}
        first, last = e.meta["target_positions"]
        assert e.corrupted[first] == e.corrupted[last] == str(e.meta["corrupted_target"]) != e.clean[last]


REFERENCE = Path(__file__).resolve().parent / "data"  # see tests/data/README.md


def _countdown_record(e) -> dict:
    """An embedded Countdown example written in Dream's jsonl format."""
    words = _core(e)
    return {"input": ",".join(words[:4]), "output": "".join(words[5:])}


def test_countdown_format_matches_reference():
    """Our problems read as Dream's cd3 lines: 3 numbers then the target, 'a op b=c' steps; every line of
    the reference file and every generated problem parses, each step is right arithmetic, each number
    is used once, and the last step reaches the target."""
    lines = (REFERENCE / "countdown_cd3_format.jsonl").read_text().splitlines()
    assert len(lines) >= 10
    for line in lines:
        numbers, target, steps = real.parse_countdown(json.loads(line))
        assert len(numbers) == 3 and len(steps) == 2 and steps[-1][3] == target
        assert real.check_countdown(numbers, target, steps), line
    for e in tasks.generate("countdown", 300, seed=0):
        record = _countdown_record(e)
        numbers, target, steps = real.parse_countdown(record)
        assert (numbers, target) == (list(e.meta["numbers"]), e.meta["target"]) and len(steps) == 2
        assert real.check_countdown(numbers, target, steps), record
        assert record["output"].endswith("=" + _core(e)[3])


def test_countdown_check_is_not_vacuous():
    """The checker used above rejects wrong arithmetic, a number used twice or not given, and a last
    step that misses the target."""
    numbers, target, steps = real.parse_countdown({"input": "12,7,60,65", "output": "12-7=5,60+5=65"})
    assert real.check_countdown(numbers, target, steps)
    for output in ("12-7=6,60+6=66", "12-7=5,60+5=64", "12-7=5,12+5=17", "12-3=9,60-9=51", "7-12=5,60+5=65"):
        _, _, wrong = real.parse_countdown({"input": "12,7,60,65", "output": output})
        assert not real.check_countdown(numbers, target, wrong), output
    assert not real.check_countdown(numbers, 66, steps)


def test_unknown_task_and_bad_sizes_stop_with_the_parameter_name():
    with pytest.raises(ParameterError, match="task: expected one of"):
        tasks.generate("sudoku", 3, 0)
    with pytest.raises(ParameterError, match="n: expected a positive integer"):
        tasks.generate("ioi", 0, 0)
    with pytest.raises(ParameterError, match="seed: expected a non-negative integer"):
        tasks.generate("ioi", 3, -1)


# What the generators drew when the organism's checkpoints were trained (embedded.CONFIG_VERSION 3):
# every task's examples of both splits and the first training batches of both streams. A change that
# alters a draw changes every trained model; then bump CONFIG_VERSION (so that trained runs are not
# reused) and record the new digest here.
GENERATOR_DIGEST = "515514df40353d66f1fa2f530c88e092e410b55a18e3d9619cea7760db3d2198"


def test_generators_draw_what_the_organism_was_trained_on():
    import hashlib

    from mechshift_utils.models.embedded import CONFIG_VERSION
    from mechshift_utils.models.training import task_mixture_batch

    digest = hashlib.sha256()
    for name in tasks.TASK_NAMES:
        for split in ("train", "heldout"):
            for e in tasks.generate(name, 100, seed=5, split=split):
                digest.update(json.dumps(e.to_dict(), sort_keys=True).encode())
    tokenizer = tasks.build_word_tokenizer()
    for stream in ("arm", "mdm"):
        for step in range(20):
            digest.update(task_mixture_batch(tokenizer, 64, 1, stream, step).numpy().tobytes())
    assert CONFIG_VERSION == 3, "CONFIG_VERSION changed: record the generators' new digest in this test"
    assert digest.hexdigest() == GENERATOR_DIGEST, (
        "the task generators draw other examples than the trained organism saw: bump CONFIG_VERSION in "
        "mechshift_utils/models/embedded.py and record the new digest here")


def test_countdown_solutions_are_fresh_sets_each_call():
    first = countdown.solutions((3, 5, 7))
    target = next(iter(first))
    first[target].add(("x",))
    assert ("x",) not in countdown.solutions((3, 5, 7))[target]
    assert ("x",) not in countdown.solve((3, 5, 7), target), "the cache is never handed out to be changed"
