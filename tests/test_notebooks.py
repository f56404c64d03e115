"""Every notebook runs end to end under papermill with smoke=True (tiny sizes)."""

import pytest

from mechshift_utils import tasks
from mechshift_utils.models.embedded import MODEL_NAMES
from mechshift_utils.notebook.runner import (NotebookFailed, discover, main, notebook_prerequisites, run_all,
                                             threads_per_notebook, to_ipynb)

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
    # two at once, as run_all.sh runs them: a missing "after" line shows up as a notebook without its input
    executed = run_all(params, output_dir=tmp_path / "executed", jobs=2)
    assert [p.stem for p in executed] == sorted(EXPECTED_FIGURES)
    assert all(p.is_file() for p in executed)
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


def _numbers(paths):
    return sorted(p.name[:2] for p in paths)


def test_the_notebooks_prerequisites_and_threads():
    sources = discover()
    pre = {s.name[:2]: _numbers(p) for s, p in notebook_prerequisites(sources).items()}
    assert pre == {"01": [], "02": ["01"], "03": ["01", "02"], "04": ["01", "02"], "05": ["01", "02"],
                   "06": ["01"], "07": ["01", "02", "03", "04", "05"]}
    threads = {s.name[:2]: t for s, t in threads_per_notebook(sources, notebook_prerequisites(sources), 2, 2).items()}
    assert threads == {"01": None, "02": 1, "03": 1, "04": 1, "05": 1, "06": 1, "07": 1}  # 01 always runs alone
    assert set(threads_per_notebook(sources, notebook_prerequisites(sources), 1, 2).values()) == {None}
    # a run of some notebooks keeps the order through the ones left out (03 needs 01 through 02)
    chosen = [s for s in sources if s.name[:2] in ("01", "03", "06")]
    assert {s.name[:2]: _numbers(p) for s, p in notebook_prerequisites(chosen, sources).items()} == {
        "01": [], "03": ["01"], "06": ["01"]}


def test_after_lines_are_checked_and_default_to_every_earlier_notebook(tmp_path):
    (tmp_path / "01_a.py").write_text("# %%\nx = 1\n")
    (tmp_path / "02_b.py").write_text("# %%\n# mechshift: after 01\n")
    (tmp_path / "03_c.py").write_text("# %%\nx = 3\n")  # no line: after 01 and 02
    pre = notebook_prerequisites(discover(tmp_path))
    assert [_numbers(p) for p in pre.values()] == [[], ["01"], ["01", "02"]]
    (tmp_path / "02_b.py").write_text("# %%\n# mechshift: after 03  (a comment)\n")
    with pytest.raises(NotebookFailed, match=r"02_b\.py: its line .* names \['03'\]; expected .*\['01'\]"):
        notebook_prerequisites(discover(tmp_path))


@pytest.mark.slow
def test_independent_notebooks_run_at_the_same_time(tmp_path):
    """02 and 03 each wait for the other's flag: run one after the other, the first would time out.
    04 needs both. Each notebook beside another runs with cores // jobs threads."""
    import os

    book, flags = tmp_path / "nbs", tmp_path / "flags"
    book.mkdir()
    flags.mkdir()
    wait = ("import os, time\nfrom pathlib import Path\nflags = Path({flags!r})\n"
            "(flags / '{me}').write_text(os.environ.get('OMP_NUM_THREADS', 'unset'))\n"
            "deadline = time.time() + 120\nwhile not (flags / '{other}').exists():\n"
            "    assert time.time() < deadline, 'the other notebook never ran beside this one'\n"
            "    time.sleep(0.1)\n")
    (book / "01_first.py").write_text(f"# %%\nfrom pathlib import Path\nPath({str(flags)!r}, 'first').write_text('1')\n")
    (book / "02_left.py").write_text('# %% tags=["parameters"]\n# mechshift: after 01\nx = 0\n\n# %%\n'
                                     + wait.format(flags=str(flags), me="left", other="right"))
    (book / "03_right.py").write_text("# %%\n# mechshift: after 01\n"
                                      + wait.format(flags=str(flags), me="right", other="left"))
    (book / "04_last.py").write_text("# %%\n# mechshift: after 02 03\nfrom pathlib import Path\n"
                                     f"assert all((Path({str(flags)!r}) / n).exists() for n in ('left', 'right'))\n")
    executed = run_all({"x": 5}, output_dir=tmp_path / "out", notebook_dir=book, jobs=2)
    assert [p.name for p in executed] == ["01_first.ipynb", "02_left.ipynb", "03_right.ipynb", "04_last.ipynb"]
    cores = len(os.sched_getaffinity(0))
    assert (flags / "left").read_text() == (flags / "right").read_text() == str(max(1, cores // 2))
    assert "x = 5" in (tmp_path / "out" / "02_left.ipynb").read_text(), "the parameters reach the notebook"


@pytest.mark.slow
def test_a_failing_notebook_run_beside_others_is_named_and_stops_what_needs_it(tmp_path):
    book = tmp_path / "nbs"
    book.mkdir()
    (book / "01_breaks.py").write_text('# %%\nraise ValueError("boom")\n')
    (book / "02_fine.py").write_text(f"# %%\n# mechshift: after\nopen({str(tmp_path / 'fine')!r}, 'w')\n")
    (book / "03_needs.py").write_text(f"# %%\n# mechshift: after 01\nopen({str(tmp_path / 'ran')!r}, 'w')\n")
    with pytest.raises(NotebookFailed, match=r"01_breaks\.py failed in cell \d+ .*ValueError: boom"):
        run_all({}, output_dir=tmp_path / "out", notebook_dir=book, jobs=2)
    assert (tmp_path / "fine").exists(), "a notebook that does not need the failing one still runs"
    assert not (tmp_path / "ran").exists(), "a notebook that needs the failing one does not"
