"""The shipped cluster configs agree with the code: the launcher YAML passes Ray's own schema, every
`disco` command in a RayJob entrypoint parses with the real CLI and validates its preset or search
space, and the worker nodes/pods can hold what the GPU presets ask for."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

from cluster.main import build_parser
from trainer.config import load_spec, parse_assignments
from tuning.space import load_space

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster" / "configs"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
GPU_PRESETS = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if load_spec(p).runtime.gpus_per_worker > 0)


def _docs(name: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text())}


def _disco_commands(entrypoint: str) -> list[list[str]]:
    """The `disco ...` commands of a shell entrypoint (split at ( ) && || ;)."""
    lex = shlex.shlex(entrypoint, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands, current = [], []
    for token in lex:
        if token in {"(", ")", "&&", "||", ";"}:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c[1:] for c in commands if c[:1] == ["disco"]]


def _fits(spec, cpus: float, gpus: float, nodes: int, trials: int = 1) -> None:
    rt = spec.runtime
    assert rt.gpus_per_worker > 0, "cluster configs are for the GPU presets"
    assert rt.cpus_per_worker <= cpus and rt.gpus_per_worker <= gpus, "one worker must fit one node"
    per_node = min(cpus // rt.cpus_per_worker, gpus // rt.gpus_per_worker)
    assert per_node * nodes >= rt.max_workers * trials, "the group cannot scale to the run's workers"


def test_launcher_yaml_passes_rays_schema_and_fits_the_gpu_presets():
    import jsonschema

    # The JSON schema `ray up` validates cluster configs against, as shipped inside the ray wheel.
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    image = config["docker"]["image"]
    assert image == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert f"FROM {image}\n" in (CLUSTER / "Dockerfile").read_text()

    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # drivers only: training never lands on the head
    gpu = config["available_node_types"]["gpu_worker"]
    for preset in GPU_PRESETS:
        _fits(load_spec(preset), gpu["resources"]["CPU"], gpu["resources"]["GPU"], gpu["max_workers"])

    # The code that `ray up` mounts is what setup installs, and runs go to the shared mount.
    mounted = next(k for k, v in config["file_mounts"].items() if v == ".")
    assert any(f"pip install --quiet -e {mounted}" in c for c in config["setup_commands"])
    assert any("DISCO_STORAGE=/mnt/disco/runs" in c for c in config["setup_commands"])
    assert any("target=/mnt/disco" in o for o in config["docker"]["run_options"])
    # No dataset to build or ship: the presets name theirs by recipe, cached in the shared runs directory.
    assert all(load_spec(p).data.recipe is not None for p in GPU_PRESETS)
    assert "data build" not in json.dumps(config)


def test_kuberay_cluster_and_jobs_agree_with_each_other_and_the_cli():
    manifests = _docs("raycluster.yaml")
    cluster, pvc = manifests["RayCluster"], manifests["PersistentVolumeClaim"]
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token" and spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["containers"]
        assert container["image"].endswith(f"/disco:{VERSION}")
        assert {"name": "DISCO_STORAGE", "value": "/mnt/disco/runs"} in container["env"]
        assert {"name": "shared", "mountPath": "/mnt/disco"} in container["volumeMounts"]
        assert {"name": "shared", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}} in pod["volumes"]
    (group,) = spec["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    cpus, gpus = float(limits["cpu"]), float(limits["nvidia.com/gpu"])
    for preset in GPU_PRESETS:
        _fits(load_spec(preset), cpus, gpus, group["maxReplicas"])

    parser = build_parser()
    for name, command in (("rayjob-train.yaml", "train"), ("rayjob-sweep.yaml", "sweep")):
        job = _docs(name)["RayJob"]["spec"]
        assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        env = job["submitterPodTemplate"]["spec"]["containers"][0]["env"]
        token = next(e for e in env if e["name"] == "RAY_AUTH_TOKEN")["valueFrom"]["secretKeyRef"]
        assert token["name"] == spec["authOptions"]["secretName"]

        (run,) = _disco_commands(job["entrypoint"])
        run = parser.parse_args(run)
        assert run.command == command and run.address == "auto"
        if command == "train":
            run_spec = load_spec(run.config, run.set)
            assert run_spec.data.recipe is not None and len(run_spec.runtime.world_sizes) > 1, "recipe, elastic"
            _fits(run_spec, cpus, gpus, group["maxReplicas"])
        else:
            space, base = load_space(run.space)
            trial = space.trial_spec(base, space.first_values() | {"runtime.workers": run.workers_per_trial},
                                     parse_assignments(run.set))
            assert trial.data.recipe is not None
            _fits(trial, cpus, gpus, group["maxReplicas"], trials=run.concurrency or space.concurrency)


@pytest.mark.parametrize("entrypoint,expected", [
    ("(test -f x || disco data build --out y) && disco train --config dis_compact",
     [["data", "build", "--out", "y"], ["train", "--config", "dis_compact"]]),
    ("disco sweep --space width;echo done", [["sweep", "--space", "width"]]),
])
def test_entrypoint_splitting(entrypoint, expected):
    assert _disco_commands(entrypoint) == expected


def test_submitted_commands_that_train_join_the_jobs_cluster():
    """Inside a job, train, sweep and compare must run on the cluster the job runs on (`--address
    auto`), not on a private Ray they would start inside the job."""
    from cluster.jobs import COMMANDS, entrypoint

    for argv in (["train", "--config", "dis_compact"], ["sweep", "--space", "width", "--name", "w"],
                 ["compare", "--preset", "compact", "--seeds", "1"]):
        entry = entrypoint(argv)
        assert entry.startswith("python -m cluster.main ") and entry.endswith(" --address auto"), entry
        assert build_parser().parse_args(shlex.split(entry)[3:]).address == "auto"
    assert entrypoint(["compare", "--address", "ray://h:10001"]).count("--address") == 1
    assert "--address" not in entrypoint(["data", "build", "--source", "arc1", "--out", "d"])
    assert set(COMMANDS) == {"train", "sweep", "compare", "finetune", "eval", "data"}
