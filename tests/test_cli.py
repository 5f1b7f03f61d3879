"""`disco data info|show|export` on a real built dataset, and the console script itself."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from cluster.main import main


def test_info_verify_and_json(small_dataset, capsys):
    assert main(["data", "info", str(small_dataset.root), "--verify"]) == 0
    out = capsys.readouterr().out
    assert small_dataset.fingerprint in out and "matches" in out
    assert main(["data", "info", str(small_dataset.root), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["counts"]["versions"] == small_dataset.manifest.counts.versions


def test_info_detects_tampering(tmp_path, small_config, capsys):
    from arc_data.build import build_dataset

    out = tmp_path / "d"
    build_dataset(small_config, out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["data", "info", str(out), "--verify"]) == 2
    assert "do not match the manifest fingerprint" in capsys.readouterr().err
    (out / "versions.arrow").write_bytes(b"garbage")
    assert main(["data", "info", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable dataset table" in err[0]
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
    assert "not a disco dataset" in capsys.readouterr().err


def test_show_terminal_and_png(small_dataset, tmp_path, capsys):
    task = small_dataset.task_ids[0]
    assert main(["data", "show", str(small_dataset.root), "--puzzle", task, "--versions", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(task) and "|||t" in out
    png = tmp_path / "p.png"
    assert main(["data", "show", str(small_dataset.root), "--puzzle", task, "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "show", str(small_dataset.root), "--puzzle", "nope"]) == 2
    assert "no task 'nope'" in capsys.readouterr().err


def test_export_parquet(small_dataset, tmp_path, capsys):
    out = tmp_path / "rows.parquet"
    assert main(["data", "export", str(small_dataset.root), "--out", str(out), "--max-versions", "2"]) == 0
    table = pq.read_table(out)
    c = small_dataset.manifest.counts
    assert table.num_rows == 2 * (c.base_train_pairs + c.base_test_pairs)
    row = table.slice(0, 1).to_pylist()[0]
    assert len(row["inputs"]) == 900 and row["split"] == "train" and row["name"] == small_dataset.task_ids[0]
    ident, ex = row["puzzle_identifier"], row["example_index"]
    inputs, _ = small_dataset.render_rows(np.array([ident - 1]), np.array([ex]), np.array([0]))
    assert inputs[0].tolist() == row["inputs"]


def test_console_script_help():
    exe = [sys.executable, "-m", "cluster.main"]
    for args in ([], ["data"], ["data", "build"]):
        r = subprocess.run([*exe, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage: " in r.stdout
    r = subprocess.run([*exe, "data", "info", "/nonexistent"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
