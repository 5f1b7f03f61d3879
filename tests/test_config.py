"""Run configs: presets validate and match the paper's sizes; bad configs and addresses fail in one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from arc_data.errors import DiscoError
from cluster.main import main
from trainer.config import load_spec, parse_overrides
from trainer.model import TinyRecursiveModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_PARAMS = {"dis_compact": 860_674, "dis_medium": 6_833_154, "trm": 6_829_058,
                "trm_compact": 863_234 - 4_608}  # the reference counts an unused timestep table in TRM compact


@pytest.mark.parametrize("preset", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_preset_validates(preset):
    spec = load_spec(CONFIGS / f"{preset}.yaml")
    assert spec.method == preset.split("_")[0]
    if preset in PAPER_PARAMS:
        cfg = spec.model.model_copy(update={"seq_len": 900})
        assert sum(p.numel() for p in TinyRecursiveModel(cfg).parameters()) == PAPER_PARAMS[preset]


def test_overrides_parse_yaml_values_into_nested_keys():
    assert parse_overrides(["optim.lr=3e-4", "train.budget=5", "data.eval_versions=null", "a.b.c=[1, 2]"]) == {
        "optim": {"lr": 3e-4}, "train": {"budget": 5}, "data": {"eval_versions": None}, "a": {"b": {"c": [1, 2]}}}
    with pytest.raises(DiscoError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])
    spec = load_spec(CONFIGS / "dis_cpu_tiny.yaml", ["optim.lr=0.01", "objective.schedule=power(2)"])
    assert spec.optim.lr == 0.01 and spec.objective.schedule == "power(2)"
    assert load_spec("dis_cpu_tiny") == load_spec(CONFIGS / "dis_cpu_tiny.yaml")  # a shipped preset by name
    # YAML 1.1 reads an unquoted `off` as False; the tracking mode still means "off".
    assert load_spec(CONFIGS / "dis_cpu_tiny.yaml", ["tracking.wandb=off"]).tracking.wandb == "off"


@pytest.mark.parametrize("override,message", [
    ("optim.lr=-1", "optim.lr"),
    ("model.bogus=1", "model.bogus"),
    ("objective.method=foo", "objective"),
    ("train.select_metric=loss", "select_metric"),
    ("train.global_batch_size=33", "multiple of runtime.workers"),
    ("model.timestep_embedding=false", "timestep_embedding"),
])
def test_invalid_configs_are_rejected(override, message):
    with pytest.raises(ValidationError, match=message):
        load_spec(CONFIGS / "dis_cpu_tiny.yaml", [override])


def test_cli_reports_bad_configs_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["train", "--config", str(bad), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid YAML" in err[0]
    assert main(["train", "--config", str(CONFIGS / "dis_cpu_tiny.yaml"), "--set", "optim.lr=0",
                 "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("disco: error: invalid configuration: optim.lr")
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found (shipped: dis_compact," in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_unreachable_cluster_fails_fast_in_one_line(tmp_path, small_dataset, capsys):
    t0 = time.monotonic()
    rc = main(["train", "--config", str(CONFIGS / "dis_cpu_tiny.yaml"), "--set", f"data.path={small_dataset.root}",
               "--address", "127.0.0.1:9", "--storage", str(tmp_path / "runs"), "--name", "x"])
    assert rc == 2 and time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Ray cluster at 127.0.0.1:9" in err[0]
    assert not (tmp_path / "runs" / "x").exists()  # nothing written for a run that never started
