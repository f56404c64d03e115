"""Attribution and scoring sharded over processes (torch.distributed, gloo on the CPU): two processes
spawned here give every rank the result of one process, in the examples' order, for every method and
ablation, and the scoring table of one process."""
import os
import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.attribution.distributed import attribute_distributed, shard_bounds
from mechshift_utils.attribution.engine import attribute
from mechshift_utils.attribution.metrics import logit_diff
from mechshift_utils.evaluation.accuracy import evaluate_models
from mechshift_utils.evaluation.distributed import evaluate_models_distributed, score_models_distributed
from mechshift_utils.evaluation.scoring import score_models
from mechshift_utils.models import Decoding
from mechshift_utils.tasks.encoding import encode_examples

WORLD = 2
FIELDS = ("edge_scores", "node_scores", "metric_clean", "metric_ablated", "per_example", "region_edge_scores")


def micro_setup():
    """The micro GPT-2 and 8 IOI examples, the same in every process."""
    from conftest import MICRO_ARM
    from mechshift_utils.models.embedded import new_arm
    from mechshift_utils.tasks import build_word_tokenizer

    tokenizer = build_word_tokenizer()
    return new_arm(tokenizer, MICRO_ARM, seed=0).eval(), encode_examples(tasks.generate("ioi", 8, 0), tokenizer)


def weighted(data):
    """A metric that depends on the example's index in the whole data (each shard must pass it on)."""
    base = logit_diff(data)
    return lambda logits, index: base(logits, index) * (1.0 + index.to(logits.device).float())


def failing(data):
    base = logit_diff(data)

    def metric(logits, index):
        if (index >= len(data) // 2).any():
            raise ValueError("boom on the second half")
        return base(logits, index)

    return metric


def cases(data):
    """name -> (data, attribute's keyword arguments)."""
    common = dict(ig_steps=2, batch_size=3, per_example=True, progress=False)
    return {
        "eap-ig": (data, dict(common, by_region=True)),
        "eap-ig-left-mean": (data, dict(common, ablation="mean", ig_rule="left")),
        "eap-zero-metric": (data, dict(common, method="eap", ablation="zero", metric=weighted(data))),
        "exact": (data, dict(common, method="exact")),
        "one-example": (data.subset([3]), dict(common)),  # rank 1 has no example
    }


def scoring_cases(model, data):
    """name -> (models, decodings, data): two names for the model, decoded two ways."""
    models = {"in_order": model, "by_confidence": model}
    decodings = {"in_order": Decoding("left_to_right"), "by_confidence": Decoding("confidence")}
    countdown = encode_examples(tasks.generate("countdown", 5, 1), build_tokenizer())  # several answer slots
    return {"ioi": (models, decodings, data), "countdown": (models, decodings, countdown),
            "one-example": (models, decodings, data.subset([3]))}


def build_tokenizer():
    from mechshift_utils.tasks import build_word_tokenizer

    return build_word_tokenizer()


def fields(result):
    out = {name: getattr(result, name) for name in FIELDS}
    out.update(ig_steps=result.ig_steps, ig_rule=result.ig_rule, method=result.method, ablation=result.ablation)
    return out


def worker(rank, port, folder):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model, data = micro_setup()
        out = {name: fields(attribute_distributed(model, d, **kw)) for name, (d, kw) in cases(data).items()}
        tok = build_tokenizer()
        out["scoring"] = {name: score_models_distributed(m, dec, d, tok, batch_size=2)
                          for name, (m, dec, d) in scoring_cases(model, data).items()}
        m, dec, _ = scoring_cases(model, data)["ioi"]
        out["evaluation"] = evaluate_models_distributed(m, dec, {k: v[2] for k, v in scoring_cases(model, data).items()
                                                                 if k != "one-example"}, tok)
        mine = data.subset(range(len(data))) if rank == 0 else data.subset(range(len(data) - 1))
        try:  # the ranks hold different data: both stop, with the same message
            attribute_distributed(model, mine, method="eap", progress=False)
        except Exception as err:  # noqa: BLE001 - its type and message are checked by the test
            out["mismatch"] = f"{type(err).__name__}: {err}"
        try:  # the second shard's examples fail: that rank raises, the other stops too instead of waiting
            attribute_distributed(model, data, method="eap", metric=failing(data), progress=False)
        except Exception as err:  # noqa: BLE001
            out["failure"] = f"{type(err).__name__}: {err}"
        torch.save(out, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gathered(tmp_path_factory):
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("ranks")
    ranks = mp.spawn(worker, args=(free_port(), str(folder)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 300
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ranks.processes:  # only the processes spawned here
                process.terminate()
            pytest.fail("the ranks did not finish within 300 s (one left waiting in a collective?)")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_shard_bounds():
    assert shard_bounds(8, 2) == [(0, 4), (4, 8)]
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(1, 2) == [(0, 1), (1, 1)]
    for n in range(12):
        for w in range(1, 5):
            b = shard_bounds(n, w)
            sizes = [stop - start for start, stop in b]
            assert b[0][0] == 0 and b[-1][1] == n and all(b[i][1] == b[i + 1][0] for i in range(w - 1))
            assert max(sizes) - min(sizes) <= 1


def test_without_torch_distributed_it_is_attribute(micro_arm, tokenizer):
    data = encode_examples(tasks.generate("ioi", 4, 0), tokenizer)
    one = attribute(micro_arm, data, ig_steps=2, per_example=True, progress=False)
    same = attribute_distributed(micro_arm, data, ig_steps=2, per_example=True, progress=False)
    for name in FIELDS[:5]:
        assert torch.equal(getattr(one, name), getattr(same, name)), name


@pytest.mark.parametrize("name", ["eap-ig", "eap-ig-left-mean", "eap-zero-metric", "exact", "one-example"])
def test_two_processes_give_one_process_result(gathered, name):
    model, data = micro_setup()
    torch.set_num_threads(1)
    d, kwargs = cases(data)[name]
    want = fields(attribute(model, d, **kwargs))
    for rank, out in enumerate(gathered):
        got = out[name]
        assert (got["method"], got["ablation"], got["ig_steps"], got["ig_rule"]) == \
            (want["method"], want["ablation"], want["ig_steps"], want["ig_rule"])
        for field in FIELDS:
            if want[field] is None:
                assert got[field] is None, (rank, field)
                continue
            assert got[field].shape == want[field].shape and got[field].dtype == want[field].dtype, (rank, field)
            scale = float(want[field].abs().max())
            assert torch.allclose(got[field], want[field], rtol=1e-5, atol=1e-6 * scale), (rank, field)
        assert all(torch.equal(got[f], gathered[0][name][f]) for f in FIELDS if got[f] is not None), \
            "every rank holds the same result"


def test_ranks_with_different_data_all_stop(gathered):
    for out in gathered:
        assert out["mismatch"].startswith("ParameterError: data: every process must hold the same examples")


def test_a_failure_on_one_rank_stops_every_rank(gathered):
    assert "boom on the second half" in gathered[1]["failure"]
    assert gathered[0]["failure"].startswith("RuntimeError: distributed attribution failed on rank(s) 1:")
    assert "boom on the second half" in gathered[0]["failure"]


@pytest.mark.parametrize("name", ["ioi", "countdown", "one-example"])
def test_two_processes_score_as_one_process(gathered, name):
    model, data = micro_setup()
    torch.set_num_threads(1)
    models, decodings, d = scoring_cases(model, data)[name]
    want = score_models(models, decodings, d, build_tokenizer(), batch_size=2)
    for out in gathered:
        got = out["scoring"][name]
        assert list(got.columns) == list(want.columns) and len(got) == len(want)
        exact = ["task", "regime", "model", "example", "prediction", "correct"]
        pd.testing.assert_frame_equal(got[exact], want[exact])
        for col in ("logit_diff", "logit_diff_corrupted"):
            assert np.allclose(got[col], want[col], rtol=1e-5, atol=1e-5), col


def test_two_processes_evaluate_as_one_process(gathered):
    model, data = micro_setup()
    torch.set_num_threads(1)
    cases_ = scoring_cases(model, data)
    models, decodings, _ = cases_["ioi"]
    want_scores, want_table = evaluate_models(models, decodings, {k: v[2] for k, v in cases_.items()
                                                                  if k != "one-example"}, build_tokenizer(),
                                              progress=False)
    for out in gathered:
        got_scores, got_table = out["evaluation"]
        pd.testing.assert_frame_equal(got_scores.drop(columns=["logit_diff", "logit_diff_corrupted"]),
                                      want_scores.drop(columns=["logit_diff", "logit_diff_corrupted"]))
        pd.testing.assert_frame_equal(got_table, want_table)
