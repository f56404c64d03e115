"""The time report reads what papermill recorded; every number is checked on hand-made notebooks."""
import nbformat
import pytest

from mechshift_utils.core.validation import ParameterError
from mechshift_utils.notebook import timing


def _notebook(path, cells):
    """cells: (start second after 12:00:00, duration, source, the markdown above it or None)"""
    nb = nbformat.v4.new_notebook()
    for start, seconds, source, heading in cells:
        if heading:
            nb.cells.append(nbformat.v4.new_markdown_cell(heading))
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"papermill": {
            "start_time": f"2026-01-01T12:00:{start:02d}.000000+00:00", "duration": seconds}}))
    nbformat.write(nb, path)


@pytest.fixture
def run(tmp_path):
    _notebook(tmp_path / "01_first.ipynb", [(0, 10.0, "import x", "# 01 · A title"),
                                            (10, 20.0, "# train the models\nfit()", None)])
    _notebook(tmp_path / "02_second.ipynb", [(15, 5.0, "a = 1", None),
                                             (20, 25.0, "rows = []\nfor s in seeds: ...", "## EAP-IG\n\nEvery seed.")])
    _notebook(tmp_path / "03_third.ipynb", [(50, 4.0, "plot()", None)])
    return tmp_path


def test_wall_times_overlaps_and_concurrency(run):
    times = timing.notebook_times(run).set_index("notebook")
    assert times.seconds.to_dict() == {"01_first": 30.0, "02_second": 30.0, "03_third": 4.0}
    assert timing.beside(times.reset_index()) == {"01_first": ["02_second"], "02_second": ["01_first"],
                                                  "03_third": []}
    # 01 alone 0-15, both 15-30, 02 alone 30-45, none 45-50, 03 alone 50-54
    conc = timing.concurrency(times.reset_index()).set_index("running").seconds.to_dict()
    assert conc == {0: 5.0, 1: 34.0, 2: 15.0}


def test_report_names_the_slowest_cells_by_the_heading_above_their_comment_or_first_line(run, tmp_path):
    training = tmp_path / "training.csv"
    training.write_text("seed,run,seconds\n0,arm,100\n1,arm,110\n0,mdm,50\n")
    text = timing.report(run, training, top=1)
    assert "first cell to last: 0.9 min" in text
    assert "| 01_first | 30 s | 02 | cell 1, train the models: 20 s |" in text
    assert "| 02_second | 30 s | 01 | cell 1, EAP-IG: 25 s |" in text
    assert "| 03_third | 4 s | alone | cell 0, plot(): 4 s |" in text
    assert "3 runs, 4.3 min of one core" in text and "| arm | 2 | 100-110 |" in text


def test_a_folder_without_executed_notebooks_is_named(tmp_path):
    with pytest.raises(ParameterError, match="expected executed notebooks"):
        timing.report(tmp_path)
    assert timing.main([str(tmp_path)]) == 2
