"""Object storage for real: runs, checkpoints and sweeps on s3:// against moto's standalone S3
server started here (the `moto[server]` dev dependency), driven through the `disco` CLI in
subprocesses with credentials only in their environment. A Ray Train worker is killed mid-run
(SIGKILL, found among the run's own processes); the run resumes from its last complete checkpoint
in the bucket, and the secret appears in nothing disco printed or wrote. (~3 min; slow.)"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from ports import free_port

from trainer.runs import CheckpointInfo, to_retain

BIN = Path(sys.executable).parent
BUCKET = "disco-test"



@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    port, secret = free_port(), secrets.token_hex(16)
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_AUTH", "RAY_ADDRESS"))}
    env |= {"AWS_ACCESS_KEY_ID": "disco-test", "AWS_SECRET_ACCESS_KEY": secret, "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1", "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
            "DISCO_DATA_CACHE": str(tmp_path_factory.mktemp("cache")), "PATH": f"{BIN}{os.pathsep}{env['PATH']}"}
    # The test's own view of the bucket (explicit options, nothing put in this process's environment).
    fs = pafs.S3FileSystem(access_key="disco-test", secret_key=secret, endpoint_override=endpoint, scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            fs.create_dir(BUCKET)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.5)
    yield {"env": env, "fs": fs, "secret": secret, "uri": f"s3://{BUCKET}/runs"}
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    log.close()


def _disco(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "disco"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [pid]
    while todo:
        out += (kids := children.get(todo.pop(), []))
        todo += kids
    return out


def _train_workers(pid: int) -> list[int]:
    found = []
    for p in _descendants(pid):
        try:
            if b"RayTrainWorker" in Path(f"/proc/{p}/cmdline").read_bytes():
                found.append(p)
        except OSError:
            pass
    return found


def _bucket_text(fs: pafs.S3FileSystem) -> str:
    """Everything disco wrote to the bucket that is text (records, logs, metadata)."""
    out = []
    for info in fs.get_file_info(pafs.FileSelector(BUCKET, recursive=True)):
        if info.type == pafs.FileType.File and info.path.endswith((".json", ".jsonl", ".txt", ".md", "COMMIT")):
            with fs.open_input_stream(info.path) as f:
                out.append(f.read().decode(errors="replace"))
    return "\n".join(out)


def test_retention_never_deletes_a_checkpoint_still_uploading():
    """Asynchronous uploads run one at a time, oldest first: an incomplete checkpoint newer than the
    newest complete one is in flight; an incomplete one older than that is damaged."""
    cks = [CheckpointInfo("checkpoint_000000002", 2, True, {"m": 0.9}),
           CheckpointInfo("checkpoint_000000004", 4, False),
           CheckpointInfo("checkpoint_000000006", 6, True, {"m": 0.1}),
           CheckpointInfo("checkpoint_000000008", 8, False), CheckpointInfo("checkpoint_000000010", 10, False)]
    assert to_retain(cks, 1, "m") == {"checkpoint_000000002", "checkpoint_000000006", "checkpoint_000000008",
                                      "checkpoint_000000010"}


@pytest.mark.slow
def test_a_run_on_s3_survives_a_killed_worker_and_its_best_checkpoint_comes_back(s3, tmp_path):
    env, fs = s3["env"], s3["fs"]
    args = ["train", "--config", "dis_cpu_tiny", "--storage", s3["uri"], "--name", "s3run", "--no-progress",
            "--set", "train.budget=12", "--set", "train.eval_interval=3", "--set", "train.log_interval=3",
            "--set", "tracking.wandb=off", "--set", "runtime.max_failures=1"]
    driver = subprocess.Popen([str(BIN / "disco"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    commit = f"{BUCKET}/runs/s3run/checkpoint_000000003/COMMIT"
    deadline = time.monotonic() + 300
    while fs.get_file_info(commit).type == pafs.FileType.NotFound:
        assert driver.poll() is None and time.monotonic() < deadline, "no checkpoint reached the bucket"
        time.sleep(0.5)
    workers = _train_workers(driver.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    assert "run s3run: DIS, 12 batches" in out and "async checkpoint upload" in out
    with fs.open_input_stream(f"{BUCKET}/runs/s3run/metrics.jsonl") as f:
        records = [json.loads(line) for line in f.read().decode().splitlines()]
    batches = [r["batch"] for r in records if r["kind"] == "train"]
    assert batches == [3, 6, 9, 12]  # the batches redone after the kill are logged once
    assert [r["batch"] for r in records if r["kind"] == "eval"] == [3, 6, 9, 12]
    assert [r["checkpoint"] for r in records if r["kind"] == "resume"] == ["checkpoint_000000003"]

    best = _disco("best", "s3run", "--storage", s3["uri"], env=env)
    assert best.returncode == 0 and f"best checkpoint: {s3['uri']}/s3run/checkpoint_" in best.stdout
    pulled = _disco("pull", "s3run", "--storage", s3["uri"], "--out", str(tmp_path / "pulled"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    # On a machine without the run's data cache, the checkpoint's recipe is built again (same fingerprint).
    shutil.rmtree(env["DISCO_DATA_CACHE"])
    elsewhere = env | {"DISCO_DATA_CACHE": str(tmp_path / "cache")}
    ev = _disco("eval", "--checkpoint", str(tmp_path / "pulled"), env=elsewhere)
    assert ev.returncode == 0 and "pass@2" in ev.stdout, ev.stderr
    assert len(list((tmp_path / "cache").iterdir())) == 1
    for text in (out, err, best.stdout, best.stderr, pulled.stdout, ev.stdout, ev.stderr, _bucket_text(fs)):
        assert s3["secret"] not in text


@pytest.mark.slow
def test_a_sweep_on_s3_keeps_its_study_in_a_database(s3, tmp_path):
    env = s3["env"]
    study = tmp_path / "study.db"
    r = _disco("sweep", "--space", "cpu_tiny", "--name", "sw", "--trials", "2", "--concurrency", "1",
               "--storage", s3["uri"], "--study-url", f"sqlite:///{study}", "--set", "train.budget=4",
               "--set", "train.eval_interval=2", env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count(" started ") == 2 and "best checkpoint: s3://" in r.stdout
    states = [s for (s,) in sqlite3.connect(study).execute("select state from trials")]
    assert states == ["COMPLETE", "COMPLETE"]
    board = _disco("best", "sw", "--storage", s3["uri"], "--json", env=env)
    rows = json.loads(board.stdout)["rows"]
    assert len(rows) == 2 and all(row["checkpoint"].startswith(f"{s3['uri']}/sw/runs/") for row in rows)
    for text in (r.stdout, r.stderr, board.stdout, _bucket_text(s3["fs"])):
        assert s3["secret"] not in text
