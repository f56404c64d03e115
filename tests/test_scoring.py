"""The scoring convention: logits for slot i are read at i-1, identically for ARM and MDM."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.models import Decoding, ModelPair
from mechshift_utils.evaluation.scoring import (common_correct, decode, is_correct, logit_difference, score_task,
                                                slot_logits)
from mechshift_utils.tasks.pools import load_pool, save_pool
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.tasks.encoding import encode_examples


class PositionEcho(torch.nn.Module):
    """Position j predicts token (j + 10) with confidence growing with j; records its inputs."""

    def __init__(self, vocab=64):
        super().__init__()
        self.vocab = vocab
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, input_ids, attention_mask=None):
        self.seen.append(input_ids.clone())
        b, length = input_ids.shape
        logits = torch.zeros(b, length, self.vocab)
        for j in range(length):
            logits[:, j, j + 10] = 1.0 + j
        return SimpleNamespace(logits=logits)


def test_logits_are_read_one_position_before_the_slot():
    model = PositionEcho()
    ids = torch.zeros(2, 8, dtype=torch.long)
    slots = torch.tensor([[3, 5], [7, 1]])
    got = slot_logits(model, ids, slots).argmax(-1)
    assert got.tolist() == [[12, 14], [16, 10]]  # position slot-1 predicts slot-1+10
    assert slot_logits(model, ids, slots, shift=False).argmax(-1).tolist() == [[13, 15], [17, 11]]


def test_slot_logits_match_the_model_on_a_real_gpt2(micro_arm):
    x = torch.randint(4, 100, (3, 12))
    slots = torch.tensor([[11], [5], [1]])
    with torch.no_grad():
        full = micro_arm(input_ids=x).logits
    got = slot_logits(micro_arm, x, slots)
    for i, s in enumerate(slots[:, 0].tolist()):
        assert torch.allclose(got[i, 0], full[i, s - 1])


def test_slot_zero_is_rejected():
    with pytest.raises(ParameterError, match="answer_positions"):
        slot_logits(PositionEcho(), torch.zeros(1, 5, dtype=torch.long), torch.tensor([[0]]))


def test_left_to_right_fills_each_slot_before_reading_the_next():
    model = PositionEcho()
    ids = torch.full((1, 8), 3, dtype=torch.long)
    pred = decode(model, ids, torch.tensor([[4, 5, 6]]), Decoding("left_to_right"))
    assert pred.tolist() == [[13, 14, 15]]
    # before the second read, slot 4 already holds the first prediction
    assert model.seen[1][0, 4].item() == 13 and model.seen[1][0, 5].item() == 3


def test_confidence_order_unmasks_the_most_confident_slot_first():
    model = PositionEcho()
    ids = torch.full((1, 8), 3, dtype=torch.long)
    pred = decode(model, ids, torch.tensor([[2, 6, 4]]), Decoding("confidence"))
    assert pred.tolist() == [[11, 15, 13]]
    # later positions are more confident: slot 6 is written first, then 4, then 2
    assert model.seen[1][0, 6].item() == 15 and model.seen[1][0, 4].item() == 3
    assert model.seen[2][0, 4].item() == 13 and model.seen[2][0, 2].item() == 3
    # two steps for three slots: two slots in the first step
    model.seen.clear()
    decode(model, ids, torch.tensor([[2, 6, 4]]), Decoding("confidence", steps=2))
    assert len(model.seen) == 2 and model.seen[1][0, 6].item() == 15 and model.seen[1][0, 4].item() == 13


def test_unknown_decoding_order():
    with pytest.raises(ParameterError, match="decoding.order"):
        decode(PositionEcho(), torch.zeros(1, 4, dtype=torch.long), torch.tensor([[2]]), Decoding("random"))


def test_same_sequence_for_both_models_and_pool(tmp_path, tokenizer, micro_arm):
    """score_task feeds ARM and MDM the identical clean ids; the pool keeps what both solve."""

    data = encode_examples(tasks.generate("ioi", 16, 0), tokenizer)
    arm, mdm = PositionEcho(len(tokenizer)), PositionEcho(len(tokenizer))
    pair = ModelPair("echo", arm, mdm, tokenizer, tokenizer.mask_token_id, torch.device("cpu"))
    scores = score_task(pair, data)
    assert torch.equal(arm.seen[0], mdm.seen[0]) and torch.equal(arm.seen[0], data.clean_ids)
    assert set(scores.model) == {"arm", "mdm"} and len(scores) == 32

    fake = pd.DataFrame({"example": [0, 1, 2, 0, 1, 2], "model": ["arm"] * 3 + ["mdm"] * 3,
                         "correct": [True, True, False, True, False, False]})
    assert common_correct(fake) == [0]
    path = save_pool(data, [0, 3], tmp_path / "pool.jsonl")
    records = load_pool(path)
    assert [r["example"] for r in records] == [0, 3]
    assert records[1]["clean_ids"] == data.clean_ids[3].tolist()
    assert records[1]["correct_ids"] == data.correct_ids[3].tolist()
    assert tokenizer.convert_ids_to_tokens(records[0]["clean_ids"]) == records[0]["clean"]


def test_is_correct_accepts_any_valid_answer():
    pred = torch.tensor([[5, 1], [5, 2]])
    assert is_correct(pred, [{(5, 1), (6, 1)}, {(5, 1)}]).tolist() == [True, False]


def test_logit_difference_at_the_first_slot(micro_arm):
    x = torch.randint(4, 100, (2, 10))
    slots = torch.tensor([[6, 7], [9, 8]])
    correct, counter = torch.tensor([[11, 0], [12, 0]]), torch.tensor([[20, 0], [21, 0]])
    with torch.no_grad():
        full = micro_arm(input_ids=x).logits
    want = torch.stack([full[0, 5, 11] - full[0, 5, 20], full[1, 8, 12] - full[1, 8, 21]])
    assert torch.allclose(logit_difference(micro_arm, x, slots, correct, counter), want, atol=1e-6)


def test_predictions_past_the_tokenizer_are_written_by_id(tokenizer):
    from mechshift_utils.evaluation.scoring import token_text

    n = len(tokenizer)
    assert token_text(tokenizer, [tokenizer.convert_tokens_to_ids("[MASK]"), n + 3]) == f"[MASK] <{n + 3}>"


@pytest.mark.parametrize("order", ["left_to_right", "confidence"])
def test_scores_read_the_clean_logit_difference_from_the_decoding_pass(micro_arm, tokenizer, order):
    """score_models takes the clean logit difference from the decoding's first pass: equal to
    logit_difference's own pass, on one-slot and three-slot tasks, with batches that split the data."""
    from mechshift_utils.evaluation.scoring import score_models

    for task in ("ioi", "countdown"):
        data = encode_examples(tasks.generate(task, 10, 0), tokenizer)
        scores = score_models({"m": micro_arm}, {"m": Decoding(order)}, data, batch_size=4)
        want = logit_difference(micro_arm, data.clean_ids, data.answer_positions, data.correct_ids,
                                data.counterfactual_ids)
        assert torch.allclose(torch.tensor(scores.logit_diff.to_numpy(), dtype=torch.float32), want, atol=1e-5)
        pred = decode(micro_arm, data.clean_ids, data.answer_positions, Decoding(order), batch_size=4)
        assert scores.correct.tolist() == is_correct(pred, data.valid_ids).tolist()
