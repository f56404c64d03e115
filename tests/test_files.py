"""Artifacts on disk: atomic writes with checksums, and what happens to each kind when it is damaged (a
pool line, a truncated model.safetensors, a truncated scores.pt, a truncated resume state)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechshift_utils.core import files
from mechshift_utils.core.files import (ArtifactError, file_problem, folder_problem, jsonl_records, staged_folder,
                                        verify_file, write_bytes, write_text, write_with)

REPO_ROOT = Path(__file__).resolve().parents[1]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


# --- the mechanism --------------------------------------------------------------------------------

def test_a_written_file_carries_its_sha256_in_sha256sum_format(tmp_path):
    path = write_text(tmp_path / "sub" / "a.json", '{"x": 1}\n')
    assert path.read_text() == '{"x": 1}\n'
    digest = hashlib.sha256(b'{"x": 1}\n').hexdigest()
    assert (tmp_path / "sub" / "a.json.sha256").read_text() == f"{digest}  a.json\n"
    assert file_problem(path) is None and verify_file(path, "fix") == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json", "a.json.sha256"], "no staging file left"


def test_damage_is_named(tmp_path):
    path = write_bytes(tmp_path / "blob.bin", bytes(range(256)) * 64)
    truncate(path)
    assert "does not match its checksum in blob.bin.sha256" in file_problem(path)
    with pytest.raises(ArtifactError) as err:
        verify_file(path, "Run X again.")
    assert str(err.value) == f"{path}: {file_problem(path)}. Run X again."
    write_bytes(path, b"fresh")
    files.checksum_path(path).unlink()
    assert file_problem(path).startswith("has no checksum file blob.bin.sha256")
    assert file_problem(tmp_path / "nothing") == "is missing"


def test_a_failing_writer_leaves_the_old_file_and_no_staging_file(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")

    def broken(staging):
        Path(staging).write_text("half")
        raise KeyboardInterrupt  # interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        write_with(path, broken)
    assert path.read_text() == "old" and file_problem(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.txt.sha256"]


def test_staged_folder_appears_whole_with_a_manifest(tmp_path):
    target = tmp_path / "ckpt"
    with staged_folder(target) as staging:
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").write_bytes(b"\0" * 1000)
        assert not target.exists()
    assert folder_problem(target) is None
    manifest = (target / files.MANIFEST).read_text().splitlines()
    assert [line.split("  ")[1] for line in manifest] == ["config.json", "model.safetensors"]
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "config.json").write_text('{"new": 1}')
        raise RuntimeError("save_pretrained failed")
    assert (target / "config.json").read_text() == "{}", "a failed save changes nothing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    truncate(target / "model.safetensors")
    assert folder_problem(target).startswith("model.safetensors does not match its checksum in SHA256SUMS")
    (target / files.MANIFEST).unlink()
    assert folder_problem(target).startswith("has no SHA256SUMS manifest")


def test_a_bad_jsonl_line_is_named_with_its_file_and_line(tmp_path):
    path = write_text(tmp_path / "pool.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    assert jsonl_records(path, "fix") == [{"a": 1}, {"a": 2}, {"a": 3}]
    path.write_text('{"a": 1}\n{"a" 2}\n{"a": 3}\n')  # an edit that breaks line 2
    with pytest.raises(ArtifactError) as err:
        jsonl_records(path, "Rerun notebook 01.")
    assert str(err.value) == (f"{path}: does not match its checksum in pool.jsonl.sha256 (truncated or changed since "
                              "written); line 2 is not valid JSON: Expecting ':' delimiter (column 6). "
                              "Rerun notebook 01.")


WRITER = """
import sys
sys.path.insert(0, {root!r})
from mechshift_utils.core.files import write_bytes
content = bytes([{k}]) * 300_000
for _ in range({rounds}):
    write_bytes({path!r}, content)
"""


def test_two_writers_of_one_file_never_corrupt_it(tmp_path):
    """Two processes write the same artifact over and over, each its own content, while this one reads:
    every read sees one writer's whole file with that writer's checksum, and no staging file is left."""
    path = tmp_path / "shared.bin"
    write_bytes(path, b"start")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(REPO_ROOT), k=k, rounds=150,
                                                                    path=str(path))]) for k in (1, 2)]
    checks = 0
    while any(w.poll() is None for w in writers) or checks == 0:
        assert file_problem(path) is None, "a reader saw a file and a checksum of different writes"
        data = path.read_bytes()
        assert data == b"start" or data in (bytes([1]) * 300_000, bytes([2]) * 300_000)
        checks += 1
    assert [w.returncode for w in writers] == [0, 0]
    assert file_problem(path) is None and path.read_bytes() in (bytes([1]) * 300_000, bytes([2]) * 300_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.bin", "shared.bin.sha256"]
    assert checks > 1, checks


def test_staging_names_are_unique_per_process_and_call(tmp_path):
    names = {files._staging_name(tmp_path / "x", ".tmp").name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(f".x.{os.getpid()}-") for n in names)


# --- each kind of artifact -------------------------------------------------------------------------

def test_a_corrupted_pool_line_stops_notebooks_02_to_05_naming_file_line_and_fix(tmp_path, tokenizer):
    from mechshift_utils import tasks
    from mechshift_utils.attribution.tracing import pool_data
    from mechshift_utils.tasks.pools import save_pool

    data = tasks.encode_examples(tasks.generate("ioi", 4, 0), tokenizer)
    path = save_pool(data, [0, 1, 2], tmp_path / "pools" / "ioi.jsonl")
    assert len(pool_data(tmp_path, "ioi", tokenizer)) == 3
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][:19] + "\n" + lines[2])  # line 2 cut short
    with pytest.raises(ArtifactError) as err:
        pool_data(tmp_path, "ioi", tokenizer)
    message = str(err.value)
    assert message.startswith(f"{path}: does not match its checksum in ioi.jsonl.sha256")
    assert "line 2 is not valid JSON" in message and "./run_all.sh --only 01" in message


def test_a_truncated_resume_state_starts_the_run_over(tmp_path, capsys):
    from mechshift_utils.models.training import RESUME_FILE, _resume_state

    resume = write_with(tmp_path / RESUME_FILE, lambda p: torch.save({"step": 3}, p))
    assert _resume_state(resume, "cpu") == {"step": 3}
    truncate(resume)
    assert _resume_state(resume, "cpu") is None
    assert f"{resume}: does not match its checksum" in capsys.readouterr().out
    assert not resume.exists() and not files.checksum_path(resume).exists()


@pytest.fixture()
def micro_pair(micro_arm, tokenizer):
    from mechshift_utils.models import ModelPair

    return ModelPair("test", micro_arm, micro_arm, tokenizer, tokenizer.mask_token_id, torch.device("cpu"))


def test_a_truncated_scores_pt_is_recomputed(micro_pair, tokenizer, tmp_path, capsys):
    from mechshift_utils import tasks
    from mechshift_utils.attribution.tracing import attribution_dir, traced

    data = tasks.encode_examples(tasks.generate("ioi", 3, 0), tokenizer)
    first = traced(micro_pair, tmp_path, "arm", "ioi", data, ig_steps=2, batch_size=4)
    folder = attribution_dir(tmp_path, "arm", "ioi", "eap-ig", "patching", 2)
    cache = folder / "scores.pt"
    assert folder_problem(folder) is not None  # not a staged folder: one checksum per file instead
    assert all(file_problem(folder / n) is None for n in ("scores.pt", "nodes.csv", "edges.csv", "examples.jsonl"))
    truncate(cache)
    again = traced(micro_pair, tmp_path, "arm", "ioi", data, ig_steps=2, batch_size=4)
    printed = capsys.readouterr().out
    assert f"{cache}: does not match its checksum" in printed and "recomputing it" in printed
    assert torch.allclose(again.edge_scores, first.edge_scores) and file_problem(cache) is None
    # a damaged table beside a good scores.pt is written again from it
    truncate(folder / "edges.csv")
    traced(micro_pair, tmp_path, "arm", "ioi", data, ig_steps=2, batch_size=4)
    assert "edges.csv does not match its checksum" in capsys.readouterr().out
    assert file_problem(folder / "edges.csv") is None
