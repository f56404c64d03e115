"""Every notebook runs end to end under papermill with smoke=True (tiny sizes)."""

import pytest

from mechshift_utils import tasks
from mechshift_utils.models.embedded import MODEL_NAMES
from mechshift_utils.notebook.runner import NotebookFailed, discover, main, run_all, to_ipynb

EXPECTED_FIGURES = {
    "01_post_training": ["01_training_curves", "01_accuracy", "01_information_flow", "01_accuracy_along_post_training",
                         "01_pools"],
    "02_circuit_tracing": ["02_eapig_vs_exact", "02_eapig_vs_exact_nodes", "02_completeness_vs_ig_steps",
                           "02_faithfulness_curves"],
    "03_structural_comparison": ["03_jaccard_vs_k", "03_depth_profile", "03_depth_summary", "03_circuit_diagrams",
                                 "03_position_shares"],
    "04_targeted_ablations": ["04_ablation_metric_drop"],
    "05_semantic_specialization": ["05_direct_logit_attribution", "05_logit_lens_top_components",
                                   "05_specialization", "05_neuron_ig_vs_exact", "05_neuron_selectivity"],
    "06_shift_along_post_training": ["06_shift_dynamics"],
    "07_claims_scorecard": ["claims_scorecard"],
}


def test_every_notebook_is_known_here():
    assert [p.stem for p in discover()] == sorted(EXPECTED_FIGURES)


def test_notebooks_have_a_parameters_cell(tmp_path):
    import nbformat

    for source in discover():
        nb = nbformat.read(to_ipynb(source, tmp_path / f"{source.stem}.ipynb"), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, source.name
        for name in ("model_pair", "seed", "device", "smoke"):
            assert f"{name} =" in tagged[0].source, f"{source.name} lacks parameter {name}"


@pytest.mark.slow
def test_smoke_run_of_every_notebook(tmp_path):
    figures = tmp_path / "figures"
    params = {"smoke": True, "seeds": 2, "device": "cpu", "artifacts_dir": str(tmp_path / "artifacts"),
              "figures_dir": str(figures)}
    executed = run_all(params, output_dir=tmp_path / "executed")
    assert [p.stem for p in executed] == sorted(EXPECTED_FIGURES)
    for names in EXPECTED_FIGURES.values():
        for name in names:
            for ext in ("png", "pdf", "csv"):
                path = figures / f"{name}.{ext}"
                assert path.is_file() and path.stat().st_size > 0, path
    assert (figures / "claims_scorecard.csv").is_file()
    runs = sorted((tmp_path / "artifacts").glob("embedded/arm-*/mdm-*"))
    assert len(runs) == 2, "one post-training run folder per seed"
    for run in runs:
        assert sorted(p.stem for p in run.glob("pools/*.jsonl")) == sorted(tasks.TASK_NAMES)
        # what a reader needs to recompute a score without the package, per (model, task)
        for model in MODEL_NAMES:
            for task in tasks.TASK_NAMES:
                folder = run / "attribution" / "eap-ig-patching-ig2" / model / task
                for name in ("edges.csv", "nodes.csv", "examples.jsonl"):
                    assert (folder / name).is_file(), folder / name


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_cell(tmp_path, capsys):
    book = tmp_path / "nbs"
    book.mkdir()
    (book / "01_breaks.py").write_text(
        '# %% tags=["parameters"]\nx = 1\n\n# %%\ny = x + 1\n\n# %%\nraise ValueError("boom")\n')
    (book / "02_never.py").write_text("# %%\nopen('ran', 'w')\n")
    with pytest.raises(NotebookFailed, match=r"01_breaks\.py failed in cell \d+ .*ValueError: boom"):
        run_all({"x": 2}, output_dir=tmp_path / "out", notebook_dir=book)
    assert not (book / "ran").exists(), "stops at the first failure"


def test_cli_rejects_an_unknown_notebook(tmp_path, capsys):
    assert main(["--only", "99", "--output-dir", str(tmp_path)]) == 1
    assert "--only: no notebook" in capsys.readouterr().err


def test_saving_a_notebook_in_jupyterlab_leaves_it_unchanged(tmp_path):
    """JupyterLab saves a .py notebook through jupytext's contents manager, with the project's
    jupytext.toml: the file written must be the committed one, byte for byte."""
    import shutil
    from pathlib import Path

    from jupyter_server.services.contents.largefilemanager import LargeFileManager
    from jupytext.sync_contentsmanager import build_sync_jupytext_contents_manager_class

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "notebooks").mkdir()
    manager = build_sync_jupytext_contents_manager_class(LargeFileManager)(root_dir=str(tmp_path))
    for source in discover():
        shutil.copy(source, tmp_path / "notebooks" / source.name)
        path = f"notebooks/{source.name}"
        model = manager.get(path, content=True)
        model["content"].metadata["language_info"] = {"name": "python"}  # what the browser adds
        manager.save(model, path)
        assert (tmp_path / path).read_bytes() == source.read_bytes(), f"saving {source.name} changes it"
