"""Position-resolved attribution: the groups, their sum, and the causal zero."""
import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.attribution.engine import attribute
from mechshift_utils.attribution.regions import REGIONS, position_regions, region_shares
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.models import set_bidirectional
from mechshift_utils.tasks.encoding import encode_examples


@pytest.fixture(scope="module")
def countdown(tokenizer):
    return encode_examples(tasks.generate("countdown", 6, 1), tokenizer)


def test_position_groups_by_hand(countdown):
    regions = position_regions(countdown, shift=True)
    for row, slots in zip(regions, countdown.answer_positions):
        first, last = int(slots[0]), int(slots.max())
        assert (row[:first - 1] == REGIONS.index("prefix")).all()
        assert row[first - 1] == REGIONS.index("read")
        assert (row[first:last + 1] == REGIONS.index("slot")).all()
        assert (row[last + 1:] == REGIONS.index("suffix")).all()
    unshifted = position_regions(countdown, shift=False)
    first = countdown.answer_positions[:, 0]
    assert (unshifted[torch.arange(len(first)), first] == REGIONS.index("read")).all()
    assert (regions == REGIONS.index("suffix")).any(), "countdown's target copy lies after the slot"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_groups_add_up_and_causal_models_see_no_later_position(arch, method, micro_models, countdown):
    for bidirectional in (False, True):
        model = set_bidirectional(micro_models[arch], bidirectional)
        res = attribute(model, countdown, method=method, ig_steps=4, progress=False, by_region=True)
        plain = attribute(model, countdown, method=method, ig_steps=4, progress=False)
        assert res.region_edge_scores.shape == (len(REGIONS), *res.edge_scores.shape)
        assert torch.allclose(res.region_edge_scores.sum(0), res.edge_scores, atol=1e-6, rtol=1e-4)
        assert torch.allclose(res.edge_scores, plain.edge_scores, atol=1e-6, rtol=1e-4)
        shares = region_shares(res)
        assert sum(shares.values()) == pytest.approx(1.0)
        later = res.region_edge_scores[[REGIONS.index("slot"), REGIONS.index("suffix")]]
        if bidirectional:
            assert shares["suffix"] > 0
        else:
            assert (later == 0).all(), "a causal model's read position cannot see the slot or the suffix"
            assert shares["suffix"] == 0.0
    set_bidirectional(micro_models[arch], False)


def test_region_errors(micro_models, countdown):
    plain = attribute(micro_models["gpt2"], countdown, method="eap", progress=False)
    with pytest.raises(ParameterError, match="by_region=True"):
        region_shares(plain)
    with pytest.raises(ParameterError, match="by_region"):
        attribute(micro_models["gpt2"], countdown, method="exact", by_region=True, progress=False)
