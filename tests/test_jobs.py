"""Ray Jobs for real: a head started with `ray start --head --block` on loopback, with token
authentication on (Ray 2.60's default), driven through the `disco submit` / `disco jobs` CLI in
subprocesses exactly as a user would. The head is ended by signalling the process group this module
started, never with `ray stop` (which kills every Ray process on the machine). (~1.5 min; slow.)"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from ports import free_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent



def _client_env(**extra: str) -> dict[str, str]:
    # The session's embedded Ray sets RAY_AUTH_MODE=disabled in this process; a user's shell has none.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "RAY_API"))}
    return env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"} | extra


def _disco(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "disco"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _ours(temp: str) -> list[int]:
    """PIDs of processes that belong to the head in `temp`: by command line or working directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if temp in cmd or cwd.startswith(temp):
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def head():
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's unix sockets live under it
    token = secrets.token_hex(16)
    gcs, dash, client, agent = free_port(), free_port(), free_port(), free_port()
    env = _client_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs), "--dashboard-port", str(dash),
         "--dashboard-host", "127.0.0.1", "--ray-client-server-port", str(client), "--temp-dir", temp,
         # The session's embedded Ray already holds the agent's default port (52365): without its
         # own port this head's job agent never comes up ("No available agent to submit job").
         "--dashboard-agent-listen-port", str(agent),
         "--num-cpus", "2", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    user = _client_env(RAY_AUTH_TOKEN=token, RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dash}")
    try:
        deadline = time.monotonic() + 90
        while _disco("jobs", "list", env=user).returncode != 0:
            assert proc.poll() is None, (Path(temp) / "head.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the head's Jobs API did not come up in 90 s"
            time.sleep(1)
        yield {"env": user, "address": f"http://127.0.0.1:{dash}", "temp": temp}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # `ray start --block` leaves some children behind on SIGTERM, and job drivers run in their
        # own sessions: end everything that is ours (by temp dir), and nothing else.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in [proc.pid, *_ours(temp)]:
                try:
                    os.killpg(pid, sig) if pid == proc.pid else os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(2)
        proc.wait(timeout=10)
        log.close()
        assert not _ours(temp), "processes of the test head survived"


@pytest.fixture(scope="module")
def job_config(tmp_path_factory, small_dataset, tiny_spec) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "tiny.yaml"
    spec = tiny_spec(str(small_dataset.root), budget=4, eval_interval=2)
    raw = spec.model_dump(mode="json") | {"tracking": {"wandb": "off"}}
    path.write_text(yaml.safe_dump(raw))
    return path


def _submit(head, job_config, storage: Path, name: str, *extra: str) -> str:
    r = _disco("submit", "--", "train", "--config", str(job_config), "--storage", str(storage), "--name", name,
               *extra, env=head["env"])
    assert r.returncode == 0, r.stderr
    assert "follow it with: disco jobs logs" in r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_training_job_runs_to_success_and_its_checkpoint_loads(head, job_config, tmp_path):
    job = _submit(head, job_config, tmp_path, "job-train")
    follow = _disco("jobs", "logs", job, "--follow", env=head["env"], timeout=300)
    assert follow.returncode == 0, follow.stdout[-3000:] + follow.stderr
    assert "run job-train: DIS, 4 batches" in follow.stdout and "best checkpoint:" in follow.stdout
    assert _disco("jobs", "status", job, env=head["env"]).stdout.startswith(f"{job}: SUCCEEDED")
    assert "run job-train: DIS" in _disco("jobs", "logs", job, env=head["env"]).stdout
    listed = _disco("jobs", "list", env=head["env"]).stdout
    assert job in listed and "SUCCEEDED" in listed
    again = _disco("submit", "--id", job, "--", "train", "--config", str(job_config), "--storage", str(tmp_path),
                   env=head["env"])
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "job submission to" in again.stderr

    run = json.loads((tmp_path / "job-train" / "run.json").read_text())
    assert run["status"] == "finished" and run["metrics"]["batch"] == 4
    ev = _disco("eval", "--checkpoint", "job-train", "--storage", str(tmp_path), env=head["env"], timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert "pass@2" in ev.stdout


def test_a_running_job_stops_and_follow_reports_it(head, job_config, tmp_path):
    job = _submit(head, job_config, tmp_path, "job-long", "--set", "train.budget=100000")
    record = tmp_path / "job-long" / "run.json"
    deadline = time.monotonic() + 120
    while not record.exists():  # the driver has started the run
        assert time.monotonic() < deadline, "the job never started its run"
        time.sleep(1)
    assert ": RUNNING" in _disco("jobs", "status", job, env=head["env"]).stdout
    stop = _disco("jobs", "stop", job, env=head["env"])
    assert stop.returncode == 0 and "stop requested" in stop.stdout
    follow = _disco("jobs", "logs", job, "--follow", env=head["env"], timeout=120)
    assert follow.returncode == 2
    assert follow.stderr.strip().splitlines()[-1].startswith(f"disco: error: {job}: STOPPED")
    # Ray signals the driver, which records the run as interrupted rather than leaving it "running".
    deadline = time.monotonic() + 30
    while json.loads(record.read_text())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(1)
    assert json.loads(record.read_text())["status"] == "interrupted"


def test_missing_token_and_bad_requests_fail_in_one_line(head, tmp_path):
    no_token = _client_env(RAY_AUTH_TOKEN_PATH=str(tmp_path / "none"))
    r = _disco("jobs", "list", "--address", head["address"], env=no_token)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no token was found" in r.stderr
    r = _disco("jobs", "status", "no-such-job", env=head["env"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    r = _disco("submit", "--", "rm", "-rf", "/", env=head["env"])
    assert r.returncode == 2 and "COMMAND must be one of" in r.stderr
    r = _disco("submit", "--env", "DISCO_TEST_UNSET_VARIABLE", "--", "train", "--storage", "/mnt/runs", env=head["env"])
    assert r.returncode == 2 and "not set in this environment" in r.stderr


def test_unreachable_jobs_address_fails_fast_in_one_line():
    t0 = time.monotonic()
    r = _disco("jobs", "list", "--address", "http://127.0.0.1:9", env=_client_env())
    assert r.returncode == 2 and time.monotonic() - t0 < 30
    assert r.stderr.count("\n") == 1 and "cannot reach the Ray Jobs API at http://127.0.0.1:9" in r.stderr


def test_an_address_flag_beats_the_environment(head):
    """RAY_API_SERVER_ADDRESS (which the docs tell users to export) must not redirect --address."""
    elsewhere = _client_env(RAY_AUTH_TOKEN=head["env"]["RAY_AUTH_TOKEN"], RAY_API_SERVER_ADDRESS="http://127.0.0.1:9")
    r = _disco("jobs", "list", "--address", head["address"], env=elsewhere)
    assert r.returncode == 0, r.stderr
    r = _disco("jobs", "list", "--address", "http://127.0.0.1:9", env=head["env"])
    assert r.returncode == 2 and "http://127.0.0.1:9" in r.stderr and head["address"] not in r.stderr


def test_a_job_without_durable_storage_is_refused(head, job_config):
    for storage in ([], ["--storage", "runs"]):
        r = _disco("submit", "--", "train", "--config", str(job_config), *storage, env=head["env"])
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "temporary working directory" in r.stderr


def test_runs_beside_another_ray_instance_finish_without_tracebacks(head, job_config, tmp_path):
    """The head above is a second Ray instance on this machine: an embedded disco run and a sweep must
    still find their own cluster (no "multiple active Ray instances"), and the sweep must not hang on
    placement groups its stopped trials leaked."""
    env = _client_env(RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    storage = str(tmp_path / "runs")
    r = _disco("train", "--config", str(job_config), "--storage", storage, "--name", "beside", "--no-progress",
               env=env, timeout=300)
    assert r.returncode == 0 and "run beside: DIS" in r.stdout, r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr and "multiple active Ray instances" not in r.stdout + r.stderr
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"base": str(job_config), "metric": "val_accuracy", "trials": 3, "concurrency": 1,
                                     "set": {"runtime.workers": 1},
                                     "params": {"optim.lr": {"choice": [1.0e-6, 3.0e-3]}}}))
    r = _disco("sweep", "--space", str(space), "--name", "s", "--storage", storage, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr and "multiple active Ray instances" not in r.stdout + r.stderr
    assert r.stdout.count("trial-") >= 3  # the leaderboard lists every trial


def test_data_a_job_could_not_find_is_refused_before_submitting(head, job_config, tmp_path):
    """The job's working directory is an upload without data/ and runs/: relative data paths are
    refused in one line (nothing is submitted); recipes and absolute paths pass this check."""
    storage = ["--storage", str(tmp_path)]
    for argv in (["train", "--config", "dis_cpu_tiny", "--set", "data.path=data/arc1-tiny"],
                 ["sweep", "--space", "cpu_tiny", "--name", "x", "--set", "data.path=data/arc1-tiny"],
                 ["compare", "--preset", "cpu_tiny", "--set", "data.path=data/arc1-tiny"],
                 ["train", "--config", "dis_cpu_tiny", "--set", "data.recipe.sources=[my_tasks]"]):
        r = _disco("submit", "--", *argv, *storage, env=head["env"])
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "relative path" in r.stderr and "recipe" in r.stderr
    assert not any(tmp_path.iterdir())
    listed = _disco("jobs", "list", env=head["env"]).stdout
    assert "data.path=data/arc1-tiny" not in listed


def test_stock_presets_submit_unchanged_and_succeed(head, tmp_path):
    """Exactly as a new user would: the shipped presets (data by recipe, built inside the job into
    the run storage's data cache), shortened only in budget."""
    short = ["--set", "train.budget=4", "--set", "train.eval_interval=4", "--set", "tracking.wandb=off"]
    train = _disco("submit", "--", "train", "--config", "dis_cpu_tiny", "--storage", str(tmp_path), "--name", "stock",
                   *short, env=head["env"])
    assert train.returncode == 0, train.stderr
    job = train.stdout.strip().splitlines()[-1]
    follow = _disco("jobs", "logs", job, "--follow", env=head["env"], timeout=400)
    assert follow.returncode == 0, follow.stdout[-3000:] + follow.stderr
    assert "data: recipe arc1 x2 canvas 10 tasks 8" in follow.stdout and "run stock: DIS, 4 batches" in follow.stdout
    compare = _disco("submit", "--", "compare", "--preset", "cpu_tiny", "--seeds", "1", "--budget", "samples=64",
                     "--storage", str(tmp_path), "--set", "tracking.wandb=off", env=head["env"])
    assert compare.returncode == 0, compare.stderr
    job = compare.stdout.strip().splitlines()[-1]
    follow = _disco("jobs", "logs", job, "--follow", env=head["env"], timeout=600)
    assert follow.returncode == 0, follow.stdout[-3000:] + follow.stderr
    assert _disco("jobs", "status", job, env=head["env"]).stdout.startswith(f"{job}: SUCCEEDED")
    assert "DIS vs TRM-ACT" in _disco("jobs", "logs", job, env=head["env"]).stdout
    # One cached dataset served all three runs; the runs are visible afterwards.
    assert len(list((tmp_path / ".datasets").iterdir())) == 1
    runs = _disco("runs", "list", "--storage", str(tmp_path), env=head["env"]).stdout
    assert "stock" in runs and runs.count(" finished ") == 3
    best = _disco("best", "stock", "--storage", str(tmp_path), env=head["env"])
    assert best.returncode == 0 and f"best checkpoint: {tmp_path}/stock/checkpoint_000000004" in best.stdout
