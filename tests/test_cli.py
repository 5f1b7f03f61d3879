"""`disco data info|show|export` on a real built dataset, the console script itself, and what a new
user meets first: --version, examples in every --help, "did you mean", `disco config show`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from arc_data import __version__
from cluster.main import build_parser, main
from trainer.config import RunSpec, load_spec


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


def _subcommands(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def test_version_and_every_subcommand_describes_itself_with_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"disco {__version__}"
    commands = dict(_subcommands(build_parser()))
    assert {("train",), ("sweep",), ("pull",), ("runs",), ("config",), ("data", "build"), ("submit",)} <= commands.keys()
    for path, sub in commands.items():
        text = sub.format_help()
        examples = text.split("examples:\n", 1)[-1].splitlines()
        assert sub.description and "examples:" in text, path
        assert examples and all(line.strip().startswith("disco " + path[0]) for line in examples if line.strip()), path


def test_misspellings_get_a_suggestion_in_one_line(capsys):
    assert main(["config", "show", "dis_cpu_tiy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean dis_cpu_tiny?" in err
    assert main(["config", "show", "dis_cpu_tiny", "--set", "optim.lrr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.lrr" in err and "did you mean optim.lr?" in err
    assert main(["config", "show", "dis_cpu_tiny", "--set", "model.hiden_size=64"]) == 2
    assert "did you mean model.hidden_size?" in capsys.readouterr().err


def test_config_show_prints_the_resolved_validated_config(capsys):
    assert main(["config", "show", "dis_cpu_tiny", "--set", "optim.lr=3e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 3e-4 and "tracking" in shown and "runtime" in shown  # defaults filled in
    assert RunSpec.model_validate(shown) == load_spec("dis_cpu_tiny", ["optim.lr=3e-4"])
    assert main(["config", "show", "dis_cpu_tiny", "--set", "optim.lr=-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_predict_png_captions_every_step(tmp_path):
    from arc_data.show import save_png
    from trainer.cli import _step_rows
    from trainer.inference import TaskPrediction

    g = np.ones((2, 3), np.uint8)
    trm = TaskPrediction(0, g, [g, g, g], g, halts=[0.1, 0.7, 0.9])
    (row,) = _step_rows(trm, "trm")
    assert [c for c, _ in row[1]] == ["input", "step 1/3\nhalt 0.10", "step 2/3\nhalt 0.70 <- halts",
                                      "step 3/3\nhalt 0.90", "target"]
    dis = TaskPrediction(0, g, [g, g], None, frames=[g, g])
    steps, frames = _step_rows(dis, "dis")
    assert [c for c, _ in steps[1]] == ["input", "step 1/2", "step 2/2"]  # no target: none drawn
    assert [c for c, _ in frames[1]] == ["input", "frame 1/2", "frame 2/2"]
    save_png([row], tmp_path / "captioned.png")
    save_png([("plain", [g, g, g, g, g])], tmp_path / "plain.png")
    from PIL import Image

    captioned, plain = Image.open(tmp_path / "captioned.png"), Image.open(tmp_path / "plain.png")
    assert captioned.height > plain.height and captioned.width > plain.width  # room for two-line captions
