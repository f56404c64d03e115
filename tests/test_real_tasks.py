"""Real-text tasks and their encoding under subword tokenizers.

Real tokenizers cannot be downloaded here, so the tests build tiny ones of the
same kinds, trained on the tasks' own text: a GPT-2-like byte-level BPE (``Ġ``
for a space, no BOS, years split as GPT-2 splits them: " 13" "52"), a
Llama-like SentencePiece-style BPE (``▁`` for a space, a BOS, numbers split into
digits) and a Qwen-like byte-level BPE (no BOS, digits split, its own mask token).
"""
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from mechshift_utils import tasks
from mechshift_utils.tasks.pools import load_pool, save_pool
from mechshift_utils.tasks import MASK, TaskExample
from mechshift_utils.tasks import real
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.tasks.encoding import (DROP_FIRST, DROP_LENGTH, DROP_SET, encode_examples, encode_subword)

REFERENCE = Path(__file__).resolve().parent / "data"  # see tests/data/README.md
N = {"ioi": 40, "greater_than": 30, "countdown": 40, "countdown_cd4": 12, "infilling": 40}
ODD_NAME = "Marybobkatetom"  # made of known pieces, but several tokens where names are one


def _corpus() -> list[str]:
    """The tasks' own text, from another seed than the examples tested."""
    return [real.example_text(e) for t in real.REAL_TASK_NAMES for e in real.generate_real(t, 60, 99)]


def _trainer(vocab_size=4000, **kw):
    return trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, **kw)


def gpt2_like(corpus) -> PreTrainedTokenizerFast:
    """Words whole; digits only through added merges that pair them two by two, then attach the space,
    so " 1352" reads "Ġ13" "52" as in GPT-2 (the reason the reference prompts end at the century)."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator([re.sub(r"\d", "", t) for t in corpus],
                             _trainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    state = json.loads(core.to_str())
    vocab, merges = state["model"]["vocab"], state["model"]["merges"]
    pairs = [(f"{v:02d}"[0], f"{v:02d}"[1]) for v in range(100)] + [("Ġ", f"{v:02d}") for v in range(100)]
    for a, b in pairs:
        merges.append([a, b])
        vocab.setdefault(a + b, len(vocab))
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)))


def llama_like(corpus) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
                                                  pre_tokenizers.Digits(individual_digits=True)])
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    core.train_from_iterator(corpus, _trainer(special_tokens=["<unk>", "<s>", "</s>"]))
    bos = ("<s>", core.token_to_id("<s>"))
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])  # adds its BOS
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def qwen_like(corpus) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False)])
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(corpus, _trainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                              special_tokens=["<|endoftext|>", "<|mask|>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", mask_token="<|mask|>")


@pytest.fixture(scope="module")
def toks():
    """name -> (tokenizer, the pair's mask id): beyond the vocabulary (as GPT-2-M's 50257), an ordinary
    token (as Llama's 811), None for the tokenizer's own mask token (as Dream's)."""
    corpus = _corpus()
    gpt2, llama, qwen = gpt2_like(corpus), llama_like(corpus), qwen_like(corpus)
    return {"gpt2": (gpt2, len(gpt2)), "llama": (llama, 7), "qwen": (qwen, None)}


@pytest.fixture(scope="module")
def generated():
    return {t: real.generate_real(t, n, 5) for t, n in N.items()}


def _prompt_tokens(data, i):
    first = int(data.answer_positions[i, 0])
    return data.full_ids[i, :first].tolist()


# --- the examples --------------------------------------------------------------------------------

@pytest.mark.parametrize("task", real.REAL_TASK_NAMES)
def test_real_examples_keep_the_task_invariants_and_are_seeded(task):
    examples = real.generate_real(task, 15, 3)
    assert [e.to_dict() for e in real.generate_real(task, 15, 3)] == [e.to_dict() for e in examples]
    assert [e.to_dict() for e in real.generate_real(task, 15, 4)] != [e.to_dict() for e in examples]
    embedded = "countdown" if task.startswith("countdown") else task
    for e in examples:
        e.check()
        assert e.regime == tasks.get_task(embedded).regime
        assert real.is_real(e) and real.example_text(e) == "".join(e.full[1:])
        assert len(e.clean) == len(e.corrupted) and e.clean != e.corrupted
        assert tuple(e.correct) in e.valid and tuple(e.counterfactual) in e.corrupted_valid
        assert tuple(e.counterfactual) not in e.valid and e.correct[0] != e.counterfactual[0]


def test_ioi_reads_like_the_reference_with_an_abc_corruption():
    shape = re.compile(r"^[A-Z]\w+, ([A-Z]\w+) and ([A-Z]\w+) were \w+ at the \w+\. ([A-Z]\w+) \w+ to give a \w+ to$")
    for e in real.generate_real("ioi", 30, 0):
        a, b, s = shape.match("".join(e.full[1:-1])).groups()
        io = e.correct[0].strip()
        assert {a, b} == {io, s} and e.counterfactual == [" " + s]
        diff = [i for i, (x, y) in enumerate(zip(e.clean, e.corrupted)) if x != y]
        assert len(diff) == 1 and e.clean[diff[0]].strip() == s and e.corrupted[diff[0]].strip() not in {a, b}
        assert e.corrupted_valid == [(" " + a,), (" " + b,)]


def test_greater_than_reads_like_the_reference():
    shape = re.compile(r"^The \w+ lasted from the year (\d\d)(\d\d) to the year (\d\d)$")
    for e in real.generate_real("greater_than", 40, 0):
        century, start, again = shape.match("".join(e.full[1:-1])).groups()
        c_century, c_start, _ = shape.match("".join(e.corrupted[1:-1])).groups()
        assert century == again == c_century and c_start == "01" and int(start) == e.meta["start_year"]
        assert re.fullmatch(r"\d\d", e.correct[0]) and int(e.correct[0]) > int(start) >= int(e.counterfactual[0])
        assert e.valid == [(f"{y:02d}",) for y in range(int(start) + 1, 100)]
    # every line of EAP-IG's set has the same shape: start year 01 when corrupted, label = the start year
    rows = (REFERENCE / "greater_than_gpt2.csv").read_text().splitlines()
    assert rows[0] == "clean,corrupted,label" and len(rows) == 1001
    centuries = set()
    for line in rows[1:]:
        clean, corrupted, label = line.split(",")
        century, start, again = shape.match(clean).groups()
        c_century, c_start, c_again = shape.match(corrupted).groups()
        assert century == again == c_century == c_again and c_start == "01" and int(label) == int(start)
        centuries.add(int(century))
    assert centuries == set(real.GT_CENTURIES)


@pytest.mark.parametrize("task", ["countdown", "countdown_cd4"])
def test_countdown_lines_are_right_arithmetic(task):
    for e in real.generate_real(task, 10, 0):
        numbers, target = e.meta["numbers"], e.meta["target"]
        record = real.countdown_record(e)
        parsed_numbers, parsed_target, steps = real.parse_countdown(record)
        assert (parsed_numbers, parsed_target) == (numbers, target) and len(steps) == len(numbers) - 1
        assert real.check_countdown(numbers, target, steps)
        counter = real.parse_countdown_output(e.counterfactual[0])
        assert real.check_countdown(numbers, e.meta["corrupted_target"], counter)
        assert not real.check_countdown(numbers, target, counter)
        assert "".join(e.corrupted[1:-1]) == record["input"].rsplit(",", 1)[0] + f",{e.meta['corrupted_target']}\n"
        assert all(real.check_countdown(numbers, target, real.parse_countdown_output(v[0])) for v in e.valid)


@pytest.mark.parametrize("name, k", [("countdown_cd3_format.jsonl", 3), ("countdown_cd4_format.jsonl", 4)])
def test_countdown_matches_dreams_format(name, k):
    """Our parser and checker accept every line of Dream's set, our solver finds Dream's solutions,
    and our examples have the same structure."""
    records = [json.loads(line) for line in (REFERENCE / name).read_text().splitlines()]
    assert len(records) >= 10
    for record in records:
        numbers, target, steps = real.parse_countdown(record)
        assert len(numbers) == k and len(steps) == k - 1 and real.check_countdown(numbers, target, steps)
        assert record["output"] in real.countdown_solutions(tuple(numbers))[target]
    task = "countdown" if k == 3 else "countdown_cd4"
    for e in real.generate_real(task, 5, 0):
        record = real.countdown_record(e)
        assert set(record) == set(records[0])
        numbers, target, steps = real.parse_countdown(record)
        assert len(numbers) == k and len(steps) == k - 1 and record["output"].endswith(f"={target}")
        assert real.example_text(e) == record["input"] + "\n" + record["output"]


def test_bad_names_and_sizes_stop_with_the_parameter_name():
    with pytest.raises(ParameterError, match="task: expected one of"):
        real.generate_real("sudoku", 3, 0)
    with pytest.raises(ParameterError, match="n: expected a positive integer"):
        real.generate_real("ioi", 0, 0)
    with pytest.raises(ParameterError, match="n_numbers: expected 3"):
        real.RealCountdown(5)
    with pytest.raises(ParameterError, match="record: expected a dict in Dream's Countdown format"):
        real.parse_countdown({"input": "1,2,3", "output": "1+2"})


# --- encoding under subword tokenizers --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen"])
@pytest.mark.parametrize("task", list(N))
def test_encoding_masks_the_answer_tokens_with_the_pairs_mask_id(toks, generated, kind, task):
    tok, mask_id = toks[kind]
    examples = generated[task]
    data = encode_examples(examples, tok, mask_token_id=mask_id)
    mask = tok.mask_token_id if mask_id is None else mask_id
    assert len(data) + data.n_dropped == len(examples) and len(data) >= len(examples) // 2
    assert data.clean_ids.shape == data.corrupted_ids.shape == data.full_ids.shape
    assert ((data.clean_ids == mask) == (data.corrupted_ids == mask)).all(), "same mask layout"
    bos = tok.bos_token_id if kind == "llama" else None
    for i, e in enumerate(data.examples):
        slots = data.answer_positions[i].tolist()
        assert (data.clean_ids[i] == mask).nonzero().flatten().tolist() == slots
        assert slots == list(range(slots[0], slots[0] + len(slots))) and slots[0] >= 1
        assert data.full_ids[i, slots].tolist() == data.correct_ids[i].tolist()
        assert data.correct_ids[i, 0] != data.counterfactual_ids[i, 0]
        assert tuple(data.correct_ids[i].tolist()) in data.valid_ids[i]
        assert all(len(v) == len(slots) for v in data.valid_ids[i] | data.corrupted_valid_ids[i])
        body = data.full_ids[i].tolist()
        if bos is not None:
            assert body[0] == bos
            body = body[1:]
        else:
            assert tok.bos_token_id is None or body[0] != tok.bos_token_id
        assert tok.decode(body, clean_up_tokenization_spaces=False) == real.example_text(e)
        prompt = "".join(e.full[1:e.answer_positions[0]])
        assert tok(prompt)["input_ids"] == _prompt_tokens(data, i), "the prompt as the model is given it"


def test_numbers_split_into_digits_give_multi_token_answers(toks, generated):
    tok, mask_id = toks["llama"]
    gt = encode_examples(generated["greater_than"], tok, mask_token_id=mask_id)
    assert gt.answer_positions.shape[1] == 2 and gt.dropped == {}
    cd = encode_examples(generated["countdown"], tok, mask_token_id=mask_id)
    assert cd.answer_positions.shape[1] == len(generated["countdown"][0].correct[0])  # one token a character
    gpt2, gpt2_mask = toks["gpt2"]
    assert encode_examples(generated["greater_than"], gpt2, mask_token_id=gpt2_mask).answer_positions.shape[1] == 1


def test_valid_answers_keep_only_the_slots_token_count(toks):
    tok, mask_id = toks["qwen"]
    e = real.generate_real("ioi", 1, 0)[0]
    odd = replace(e, valid=[*e.valid, (" " + ODD_NAME,)])
    data = encode_examples([odd], tok, mask_token_id=mask_id)
    assert data.valid_ids[0] == {tuple(data.correct_ids[0].tolist())}


def _with_subject(e: TaskExample, name: str) -> TaskExample:
    """The IOI example with its corrupted subject (the one piece that differs) replaced."""
    corrupted = [" " + name if x != y else y for x, y in zip(e.clean, e.corrupted)]
    return replace(e, corrupted=corrupted)


def _with_opener(e: TaskExample, opener: str) -> TaskExample:
    """The IOI example with another first piece in every sequence (same pieces, other token count)."""
    full = [e.full[0], opener, *e.full[2:]]
    return replace(e, full=full, clean=[*full[:-1], MASK], corrupted=[e.corrupted[0], opener, *e.corrupted[2:]])


def test_drops_are_counted_by_reason(toks):
    tok, mask_id = toks["llama"]
    base = real.generate_real("ioi", 1, 1)[0]
    examples = [_with_subject(base, ODD_NAME), _with_opener(base, "Then again,"), *[base] * 4]
    data = encode_examples(examples, tok, mask_token_id=mask_id)
    assert data.dropped == {DROP_LENGTH: 1, DROP_SET: 1} and len(data) == 4 and data.n_dropped == 2
    assert data.examples == [base] * 4 and data.subset([0, 1]).dropped == data.dropped
    gt = real.generate_real("greater_than", 3, 2)
    answer = gt[0].correct[0]
    same_tens = replace(gt[0], counterfactual=[answer[0] + ("0" if answer[1] != "0" else "1")])
    assert encode_examples([same_tens, *gt[1:]], tok, mask_token_id=mask_id).dropped == {DROP_FIRST: 1}


def test_a_set_that_drops_everything_stops_naming_task_and_tokenizer(toks):
    tok, mask_id = toks["gpt2"]
    tok.name_or_path = "tiny-gpt2-like"
    examples = [_with_subject(e, ODD_NAME) for e in real.generate_real("ioi", 3, 0)]
    with pytest.raises(ParameterError, match="every ioi example was dropped .*tiny-gpt2-like"):
        encode_examples(examples, tok, mask_token_id=mask_id)


def test_examples_round_trip_through_json(toks, generated):
    tok, mask_id = toks["gpt2"]
    data = encode_examples(generated["countdown"], tok, mask_token_id=mask_id)
    records = [json.loads(json.dumps(data.examples[i].to_dict())) for i in (0, 2, 3)]
    again = encode_examples([TaskExample.from_dict(r) for r in records], tok, mask_token_id=mask_id)
    assert torch.equal(again.clean_ids, data.clean_ids[[0, 2, 3]])
    assert again.valid_ids == [data.valid_ids[i] for i in (0, 2, 3)]


def test_a_saved_pool_re_encodes_to_the_same_tensors(toks, generated, tmp_path):
    """save_pool keeps the example's own answer positions and writes the token slots beside them, so
    a pool read back (as tracing.pool_data does) gives the same token ids and slots."""
    from mechshift_utils.tasks import encode_for

    tok, mask_id = toks["gpt2"]
    data = encode_examples(generated["countdown"], tok, mask_token_id=mask_id)
    path = save_pool(data, [0, 3], tmp_path / "pool.jsonl")
    saved = load_pool(path)
    assert saved[0]["answer_token_positions"] == data.answer_positions[0].tolist()
    keep = set(TaskExample.__dataclass_fields__)
    again = encode_for([TaskExample.from_dict({k: v for k, v in r.items() if k in keep}) for r in saved], tok,
                       mask_id)
    assert torch.equal(again.clean_ids, data.clean_ids[[0, 3]])
    assert torch.equal(again.answer_positions, data.answer_positions[[0, 3]])


def test_bos_and_mask_parameters(toks, generated):
    gpt2, _ = toks["gpt2"]
    examples = generated["infilling"][:4]
    with pytest.raises(ParameterError, match="mask_token_id: this tokenizer has no mask token"):
        encode_examples(examples, gpt2)
    with pytest.raises(ParameterError, match="add_bos: this tokenizer has no BOS"):
        encode_examples(examples, gpt2, mask_token_id=3, add_bos=True)
    llama, mask_id = toks["llama"]
    without = encode_subword(examples, llama, mask_token_id=mask_id, add_bos=False)
    with_bos = encode_subword(examples, llama, mask_token_id=mask_id)
    assert torch.equal(with_bos.full_ids[:, 1:], without.full_ids)
    assert (with_bos.answer_positions == without.answer_positions + 1).all()


def test_embedded_examples_read_as_text_under_a_subword_tokenizer():
    # a tokenizer that has seen the embedded words (the module's tokenizers know the real-text tasks only)
    tok = qwen_like(_corpus() + [real.example_text(e) for e in tasks.generate("infilling", 60, 99)])
    examples = tasks.generate("infilling", 8, 0)
    data = encode_examples(examples, tok)
    for i, e in enumerate(data.examples):
        assert tok.decode(data.full_ids[i].tolist()) == " ".join(e.full[1:])


# --- the word-level path is unchanged --------------------------------------------------------------

@pytest.mark.parametrize("task", tasks.TASK_NAMES)
def test_word_level_encoding_is_the_old_fast_path(tokenizer, task):
    examples = tasks.generate(task, 12, 1)
    vocab = tokenizer.get_vocab()

    def enc(words):
        return [vocab[w] for w in words]

    data = encode_examples(examples, tokenizer)
    assert data.full_ids.tolist() == [enc(e.full) for e in examples]
    assert data.clean_ids.tolist() == [enc(e.clean) for e in examples]
    assert data.corrupted_ids.tolist() == [enc(e.corrupted) for e in examples]
    assert data.answer_positions.tolist() == [e.answer_positions for e in examples]
    assert data.correct_ids.tolist() == [enc(e.correct) for e in examples]
    assert data.counterfactual_ids.tolist() == [enc(e.counterfactual) for e in examples]
    assert data.valid_ids == [{tuple(enc(list(v))) for v in e.valid} for e in examples]
    assert data.corrupted_valid_ids == [{tuple(enc(list(v))) for v in e.corrupted_valid} for e in examples]
    assert data.dropped == {} and data.examples == examples
    assert encode_examples(examples, tokenizer, mask_token_id=tokenizer.mask_token_id).clean_ids.equal(data.clean_ids)
    with pytest.raises(ParameterError, match="mask_token_id: the word-level tokenizer"):
        encode_examples(examples, tokenizer, mask_token_id=tokenizer.mask_token_id + 1)
