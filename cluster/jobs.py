"""Ray Jobs: submit disco commands to a cluster and follow them (`disco submit`, `disco jobs`).

The Jobs API is served by the head's dashboard (`http://HEAD:8265`); the client needs
`ray[default]`. Ray 2.60 turns token authentication on by default and disco keeps it on: the
token is read the way Ray reads it (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, or
`~/.ray/auth_token`) and never printed. Environment variables are forwarded only when named with
`--env NAME`; their values are never echoed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from arc_data.errors import DiscoError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PROJECT = Path(__file__).resolve().parents[1]
EXCLUDES = [".venv", "runs", "data", ".git", ".pytest_cache", ".ruff_cache", "wandb", "**/__pycache__"]
# The commands a job may run, and whether each starts Ray work (inside a job it must join the
# cluster the job runs on, `--address auto`, instead of starting a private Ray of its own) and
# writes runs (which must then go to storage that outlives the job's temporary working directory).
COMMANDS = {"train": True, "sweep": True, "compare": True, "finetune": True, "eval": False, "data": False}


def _token_source() -> str | None:
    """Where Ray will read the token from (never the token itself), or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    return str(token_file) if token_file.is_file() else None


def _auth_env() -> None:
    if "RAY_AUTH_MODE" not in os.environ and _token_source():
        os.environ["RAY_AUTH_MODE"] = "token"


def resolve(address: str | None) -> str:
    return address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS


@contextmanager
def _explicit(address: str | None):
    """Ray's client lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override an address it is given;
    an --address on the command line must win, so they are hidden while the client connects."""
    hidden = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if address and k in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


def client(address: str | None):
    given = address
    address = resolve(address)
    url = urlparse(address if "://" in address else f"http://{address}")
    try:
        socket.create_connection((url.hostname, url.port or 8265), timeout=10).close()
    except OSError as e:
        raise DiscoError(f"cannot reach the Ray Jobs API at {address}: {e.strerror or e}") from None
    _auth_env()
    try:
        from ray.job_submission import JobSubmissionClient
    except (ImportError, RuntimeError) as e:
        raise DiscoError(f"the Ray Jobs client needs ray[default]: {e}") from None
    # Ray's packaging and websocket INFO lines (one per ignored file) would bury the job id.
    for name in ("ray", "ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk",
                 "ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with _explicit(given):
            return JobSubmissionClient(url.geturl())
    except Exception as e:  # noqa: BLE001 - auth and connection errors come in several types
        if type(e).__name__ == "AuthenticationError":
            source = _token_source()
            raise DiscoError(
                f"the Ray cluster at {address} refused the token from {source}" if source else
                f"the Ray cluster at {address} uses token authentication and no token was found: set "
                "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the head's ~/.ray/auth_token") from None
        raise DiscoError(f"Ray Jobs API at {address}: {str(e).strip().splitlines()[-1]}") from None


def entrypoint(argv: list[str]) -> str:
    """The job's shell command for `disco ARGV` (run as a module, so no console script is needed)."""
    import shlex

    if not argv or argv[0] not in COMMANDS:
        raise DiscoError(f"disco submit -- COMMAND ...: COMMAND must be one of {', '.join(COMMANDS)}")
    entry = "python -m cluster.main " + " ".join(shlex.quote(a) for a in argv)
    if COMMANDS[argv[0]] and "--address" not in argv:
        entry += " --address auto"
    return entry


def _durable_storage(argv: list[str], env_names: list[str]) -> None:
    """Refuse a job whose runs would land in its temporary working directory (lost when it ends)."""
    if not COMMANDS[argv[0]]:
        return
    given = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--storage"), None)
    given = given or next((a.split("=", 1)[1] for a in argv if a.startswith("--storage=")), None)
    if given is None and "DISCO_STORAGE" in env_names:
        given = os.environ.get("DISCO_STORAGE")
    if given is None or ("://" not in given and not Path(given).expanduser().is_absolute()):
        where = "no --storage" if given is None else f"--storage {given} is relative"
        raise DiscoError(f"disco submit -- {argv[0]}: {where}, so the job would keep its runs in its temporary "
                         "working directory, deleted when the job ends; pass --storage /path/every/node/mounts "
                         "or --storage s3://bucket/prefix (or --env DISCO_STORAGE set to one)")


def _data_of(argv: list[str]) -> list[tuple[str, object]]:
    """(where it is set, the data config or dataset path) of everything the command would read."""
    from cluster.main import build_parser
    from trainer.config import load_spec, parse_assignments
    from tuning.compare import pair_specs
    from tuning.space import read_space

    args = build_parser().parse_args(argv)
    if argv[0] == "train" and not args.resume:
        return [(f"--config {args.config}", load_spec(args.config, args.set).data)]
    if argv[0] == "compare" and args.preset:
        return [(f"--preset {args.preset}", spec.data) for spec in pair_specs(args.preset, 1, None, args.set)]
    if argv[0] == "sweep" and not args.resume:
        space, base = read_space(args.space)
        sets = space.set | parse_assignments(args.set)
        return [(f"--space {args.space}", sets["data.path"] if "data.path" in sets else base.data)]
    return [(f"{argv[0]} --data", args.data)] if getattr(args, "data", None) else []


def _shipped_data(argv: list[str]) -> None:
    """Refuse data a job could not find: the job runs in an uploaded copy of disco that leaves out
    data/ and runs/ (EXCLUDES), so only absolute paths (on storage every node mounts) or recipes work."""
    for where, data in _data_of(argv):
        paths = [data] if isinstance(data, str) else [data.path] if data.path else [
            s for s in data.recipe.sources if s not in ("arc1", "arc2")]
        for path in paths:
            if not Path(path).expanduser().is_absolute():
                raise DiscoError(
                    f"disco submit -- {argv[0]}: {where} reads data from the relative path {path}, which the job "
                    "would not have (its working directory is an upload without data/ and runs/); name the data "
                    "by recipe (data.recipe, as the stock presets do) or give an absolute path every node mounts")


def submit(address: str | None, argv: list[str], env_names: list[str], working_dir: Path = PROJECT,
           submission_id: str | None = None, agent_wait_s: float = 60.0) -> str:
    entry = entrypoint(argv)
    _durable_storage(argv, env_names)
    missing = [n for n in env_names if n not in os.environ]
    if missing:
        raise DiscoError(f"--env {', '.join(missing)}: not set in this environment")
    _shipped_data(argv)
    c = client(address)
    env = {n: os.environ[n] for n in env_names}
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return c.submit_job(entrypoint=entry, submission_id=submission_id,
                                runtime_env={"working_dir": str(working_dir), "excludes": EXCLUDES, "env_vars": env},
                                metadata={"disco": argv[0]}, entrypoint_num_cpus=0)
        except RuntimeError as e:
            why = str(e).strip().splitlines()[-1]
            # A head that has just started (or is busy) answers 500 until its job agent is up.
            if "No available agent" in why and time.monotonic() < deadline:
                time.sleep(2)
                continue
            raise DiscoError(f"job submission to {resolve(address)} failed: {why}") from None
