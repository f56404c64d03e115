"""The embedded organism's tasks as a test bed: held-out entities, moving positions, the information-flow
variants, and the training forward pass."""
from __future__ import annotations

import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.evaluation.scoring import logit_difference
from mechshift_utils.models import set_bidirectional
from mechshift_utils.models.fast_forward import gpt2_logits
from mechshift_utils.models.post_training import annealed_attention_bias
from mechshift_utils.models.training import task_mixture_batch
from mechshift_utils.tasks import encode_examples
from mechshift_utils.tasks.countdown import target_variants
from mechshift_utils.tasks.infilling import HELDOUT_PAIRS, animal
from mechshift_utils.tasks.registry import information_table


def test_no_evaluation_sequence_occurs_in_the_training_stream(tokenizer):
    """The training stream (the batches every training run draws) never contains a held-out evaluation
    sequence, and every example it draws is about a training entity."""
    train = set()
    for step in range(150):
        for row in task_mixture_batch(tokenizer, 64, 0, "arm", step).tolist():
            train.add(tuple(t for t in row if t != tokenizer.pad_token_id))
    for name in tasks.TRAINING_TASKS:
        task = tasks.get_task(name)
        held = tasks.generate(name, 300, 0)
        assert all(e.meta["split"] == "heldout" for e in held)
        full = encode_examples(held, tokenizer).full_ids.tolist()
        assert not train & {tuple(r) for r in full}, name
        held_entities = {tuple(map(str, task.entity(e))) for e in held}
        train_examples = tasks.generate(name, 300, 0, split="train")
        assert not held_entities & {tuple(map(str, task.entity(e))) for e in train_examples}, name
    # and the held-out split is not empty of what it should hold: a sizable share of each task's entities
    assert len(HELDOUT_PAIRS) == 16 and len({animal(p, s) for p, s in HELDOUT_PAIRS}) == 16


def test_the_training_stream_draws_only_training_entities(tokenizer):
    import random

    rng = random.Random(0)
    for name in tasks.TRAINING_TASKS:
        task = tasks.get_task(name)
        assert all(task.sample(rng, tasks.TRAIN).meta["split"] == "train" for _ in range(100))


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_positions_move_and_lengths_stay(name):
    examples = tasks.generate(name, 200, 0)
    assert len({len(e.full) for e in examples}) == 1, "one length per task: tensors stay rectangular"
    assert len({e.answer_positions[0] for e in examples}) >= 4, "the answer slot moves"
    assert len({e.meta["core_start"] for e in examples}) >= 4


def test_the_information_flow_variants():
    plain, late = tasks.generate("countdown", 50, 3), tasks.generate("countdown_late", 50, 3)
    for p, q in zip(plain, late):
        assert p.clean == q.clean and p.correct == q.correct
        changed = [i for i, (a, b) in enumerate(zip(q.clean, q.corrupted)) if a != b]
        assert changed == [q.meta["target_positions"][1]] and changed[0] > max(q.answer_positions)
        v = target_variants(p)
        assert v["both"] == p.corrupted and v["late"] == q.corrupted
    restated, in_place = tasks.generate("infilling", 50, 3), tasks.generate("infilling_in_place", 50, 3)
    for r, i in zip(restated, in_place):
        assert r.meta["entity"] == i.meta["entity"] and r.correct == i.correct  # the same content
        sound_at = i.meta["sound_position"]
        assert i.answer_positions == [sound_at - 1], "in place: the slot comes right before the sound"
        assert r.meta["sound_position"] < r.answer_positions[0], "restated: the sound precedes the slot"
    table = information_table().set_index("task")
    assert table.loc["countdown_late", "ARM sees the change"] == "no"
    assert table.loc["infilling_in_place", "ARM sees the change"] == "no"
    assert table.loc["ioi", "ARM sees the change"] == "yes"


def test_a_causal_model_cannot_tell_the_late_corruption(micro_arm, tokenizer):
    data = encode_examples(tasks.generate("countdown_late", 16, 0), tokenizer)
    args = (data.answer_positions, data.correct_ids, data.counterfactual_ids)
    clean = logit_difference(micro_arm, data.clean_ids, *args)
    assert torch.equal(logit_difference(micro_arm, data.corrupted_ids, *args), clean)
    bidirectional = set_bidirectional(micro_arm, True)
    assert not torch.equal(logit_difference(bidirectional, data.corrupted_ids, *args),
                           logit_difference(bidirectional, data.clean_ids, *args))
    set_bidirectional(micro_arm, False)


@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_the_training_forward_is_gpt2s(micro_arm, tokenizer, activation):
    """gpt2_logits reproduces GPT2LMHeadModel: causal, and with the annealed additive mask (padding keys
    masked) that post-training passes; with the organism's exact GELU and with GPT-2's tanh form."""
    import copy

    from transformers import GPT2LMHeadModel

    config = copy.deepcopy(micro_arm.config)
    config.activation_function = activation
    model = GPT2LMHeadModel(config).eval()
    model.load_state_dict(micro_arm.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        batch = task_mixture_batch(tokenizer, 8, 0, "arm", 0)
        real = batch != tokenizer.pad_token_id
        want = model(input_ids=batch, attention_mask=real.long()).logits
        got = gpt2_logits(model, batch)
        assert torch.allclose(got[real], want[real], atol=1e-5)
        set_bidirectional(model, True)
        bias = annealed_attention_bias(batch.shape[1], 0.5, real, torch.Generator().manual_seed(0))
        want = model(input_ids=batch, attention_mask=bias).logits
        assert torch.allclose(gpt2_logits(model, batch, bias), want, atol=1e-5)


def test_the_training_forward_refuses_another_model(micro_arm, tokenizer):
    import copy

    from transformers import GPT2LMHeadModel

    config = copy.deepcopy(micro_arm.config)
    config.activation_function = "relu"
    with pytest.raises(ValueError, match="GELU"):
        gpt2_logits(GPT2LMHeadModel(config), task_mixture_batch(tokenizer, 2, 0, "arm", 0))
