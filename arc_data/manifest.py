"""The dataset manifest: what was built, from what, and its fingerprint (pydantic, JSON)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import DataError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"


class BuildConfig(BaseModel):
    """Everything that determines a dataset's contents (besides the source files themselves)."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(min_length=1, description="arc1 | arc2 | path to ARC JSON; several are combined")
    augmentations: int = Field(1000, ge=0, le=100_000, description="augmented versions per puzzle (besides the original)")
    seed: int = Field(42, ge=0, description="seed of every random choice in the build")
    max_grid: int | None = Field(None, ge=1, le=30, description="keep only tasks whose grids are all <= this side")
    tasks: int | None = Field(None, ge=1, description="keep the first N tasks (by id) of each subset")
    subsets: list[str] | None = Field(None, description="keep only these subsets, e.g. training or arc1/evaluation")
    eval_subsets: list[str] | None = Field(None, description="subsets whose test pairs form the test split "
                                           "(default: every subset whose name does not mention 'train')")
    groups: list[str] | None = Field(None, description="keep only tasks of these groups (concept folders)")
    allow_overlap: bool = Field(False, description="permit test pairs that also appear among training pairs")
    retries_factor: int = Field(5, ge=1, le=100, description="attempts per wanted augmentation before giving up")
    canvas: int = Field(30, ge=1, le=30, description="side of the square token canvas (30 = the reference); "
                        "smaller canvases keep only tasks that fit and make CPU runs cheap")

    @model_validator(mode="after")
    def _grid_fits_canvas(self) -> BuildConfig:
        if self.max_grid is not None and self.max_grid > self.canvas:
            raise ValueError(f"max_grid {self.max_grid} exceeds the canvas side {self.canvas}")
        return self

    @property
    def grid_limit(self) -> int:
        return min(self.max_grid or self.canvas, self.canvas)


class SourceRecord(BaseModel):
    spec: str
    kind: str
    sha256: str
    tasks: int


class Counts(BaseModel):
    tasks: int = Field(description="puzzles (groups)")
    eval_tasks: int = Field(description="puzzles whose test pairs form the test split")
    versions: int = Field(description="augmented versions incl. originals; one puzzle identifier each")
    num_identifiers: int = Field(description="versions + 1 (identifier 0 is the blank padding id)")
    base_train_pairs: int
    base_test_pairs: int
    train_examples: int = Field(description="materialisable training rows (versions x their examples)")
    test_examples: int = Field(description="materialisable test rows")
    short_groups: int = Field(description="puzzles that could not reach the requested augmentations")
    min_group: int
    dropped_leaking_pairs: int = Field(0, description="training pairs removed because a scored test pair equals them")
    unlabelled_test_pairs: int = Field(0, description="test pairs without a solution: predicted, never scored")
    scored_tasks: int | None = Field(None, description="puzzles with at least one test pair that has a solution")


class FileRecord(BaseModel):
    name: str
    bytes: int
    sha256: str


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    fingerprint: str = Field(description="sha256 over every array of the dataset; same inputs+seed => same value")
    build: BuildConfig
    sources: list[SourceRecord]
    counts: Counts
    files: list[FileRecord]
    created_at: str
    disco_version: str

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"dataset schema version {v} is not supported (this disco reads {SCHEMA_VERSION})")
        return v

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        path = Path(root) / MANIFEST_FILE
        if not path.is_file():
            raise DataError(f"{root}: not a disco dataset (no {MANIFEST_FILE}); build one with `disco data build`")
        try:
            return cls.model_validate_json(path.read_text())
        except ValueError as e:
            first = str(e).splitlines()
            raise DataError(f"{path}: invalid manifest: {' '.join(first[:3])}") from None
