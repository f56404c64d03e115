"""Every notebook end to end on a tiny random pair in each published MDM layout (DiffuGPT-S, DiffuGPT-M
with its added mask token, DiffuLLaMA, Dream), given to the notebooks as a pair file: the path a
user with real weights takes, minus the download. Subword tokenizers trained on the tasks' real text
stand in for GPT-2's, Llama's and Qwen's."""
from __future__ import annotations

import json

import pytest
from test_loaders import gpt2_config, llama_common, randomized, write_diffugpt, write_dream, write_llama_mdm
from test_real_tasks import _corpus, gpt2_like, llama_like
from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from mechshift_utils.notebook.runner import run_all

LAYOUTS = ("diffugpt-s", "diffugpt-m", "llama", "dream")


def write_pair(root, layout: str) -> str:
    """ARM folder (save_pretrained + tokenizer), MDM folder in the layout, and the pair file."""
    corpus = _corpus()
    tok = llama_like(corpus) if layout == "llama" else gpt2_like(corpus)
    n = len(tok)
    arm = {"llama": lambda: LlamaForCausalLM(LlamaConfig(**llama_common(n))),
           # Qwen2.5's embedding has rows past its tokenizer (152064 > 151665), Dream's mask among them
           "dream": lambda: Qwen2ForCausalLM(Qwen2Config(**llama_common(n + 8)))}.get(
        layout, lambda: GPT2LMHeadModel(gpt2_config(n)))()
    randomized(arm, seed=1).save_pretrained(root / "arm")
    tok.save_pretrained(root / "arm")
    spec = {"name": f"tiny-{layout}", "arm": "arm", "mdm": "mdm", "mask_token_id": 10}
    if layout == "diffugpt-s":  # an ordinary token reused as the mask
        write_diffugpt(root / "mdm", rows=n, lm_head=False, seed=2, config_vocab=n)
        spec.update(layout="diffugpt")
    elif layout == "diffugpt-m":  # one token added past the ARM's vocabulary; the ARM reads a stand-in
        write_diffugpt(root / "mdm", rows=n + 1, lm_head=True, seed=2, config_vocab=n)
        spec.update(layout="diffugpt", mask_token_id=n, mask_token="[¨M¨]", arm_mask_token_id=10)
    elif layout == "llama":
        write_llama_mdm(root / "mdm", seed=2, vocab=n)
        spec.update(layout="llama")
    else:  # Dream: two tokens added past the tokenizer, the mask the second
        write_dream(root / "mdm", seed=2, vocab=n + 8, words=n, mask=n + 1)
        spec.update(layout="dream", mask_token_id=n + 1, mask_token="<|mask|>")
    path = root / "pair.json"
    path.write_text(json.dumps(spec))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_notebook_runs_on_a_tiny_pair_of_each_layout(layout, tmp_path):
    from test_notebooks import EXPECTED_FIGURES

    pair_file = write_pair(tmp_path, layout)
    figures = tmp_path / "figures"
    params = {"smoke": True, "device": "cpu", "model_pair": pair_file, "artifacts_dir": str(tmp_path / "artifacts"),
              "figures_dir": str(figures)}
    executed = run_all(params, output_dir=tmp_path / "executed")
    # notebook 06 reads checkpoints along post-training, which only the embedded organism has
    assert [p.stem for p in executed] == [n for n in sorted(EXPECTED_FIGURES) if n != "06_shift_along_post_training"]
    embedded_only = {"01_training_curves", "01_information_flow", "01_accuracy_along_post_training",
                     "02_eapig_vs_exact", "06_shift_dynamics"}
    for names in EXPECTED_FIGURES.values():
        for name in set(names) - embedded_only:
            assert (figures / f"{name}.png").is_file(), name
    run_dir = tmp_path / "artifacts" / "pairs" / f"tiny-{layout}"
    tasks = ["countdown", "greater_than", "infilling", "infilling_in_place", "ioi"]
    assert sorted(p.stem for p in (run_dir / "pools").glob("*.jsonl")) == tasks
    assert len(list(run_dir.rglob("attribution/*/*/*/edges.csv"))) == 2 * len(tasks)
    # a pair without controls: the scorecard gives the MDM's changes, and no verdict
    import pandas as pd

    card = pd.read_csv(figures / "claims_scorecard.csv")
    assert (card.verdict == "not read: no null model (a real pair has no controls)").all()
