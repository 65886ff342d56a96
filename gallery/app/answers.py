"""The answers of the use cases, as pydantic models: what `gallery ... --json` prints and what the HTTP
API answers (FastAPI's `response_model`), the same objects by construction, documented in /openapi.json.

Each model lists every field its answer holds (`extra="forbid"`): an answer that gains a field without
its model fails validation, so the documented schema cannot drift from what is sent. Fields whose
content is open (a model stamp, a decision rule, quality measures) are plain dicts.

`Threshold` is the one definition of a valid match threshold (a cosine, or the decision statistic on
the same scale): the CLI's `--threshold`, the server's `threshold` fields and the clustering's split
threshold are all checked by it (`check_threshold`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gallery.errors import GalleryError

Threshold = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False,
                                   description="match threshold, a number from -1 to 1 (cosine scale)")]
_THRESHOLD = TypeAdapter(Threshold)


class InvalidThreshold(GalleryError):
    """A threshold that is not a finite number from -1 to 1."""


def check_threshold(value: float | None) -> float | None:
    """`value` when it is a valid threshold (or None), else InvalidThreshold with the reason."""
    if value is None:
        return None
    try:
        return _THRESHOLD.validate_python(value)
    except ValidationError:
        raise InvalidThreshold(f"{value} is not a cosine similarity: give a number from -1 to 1.") from None


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- search and verify -------------------------------------------------------------------------------


class QueryFace(Answer):
    """The query face an answer is about: its place in the photo (photo queries) or its gallery id."""

    index: int | None = None
    box: list[float] | None = None
    det_score: float | None = None
    is_main: bool | None = None
    face_id: int | None = None


class Candidate(Answer):
    identity: str | None
    score: float
    photo: str
    box: list[float]
    face_id: int
    faces_in_neighbours: int
    above_threshold: bool
    template_score: float | None = None
    combined: float | None = None
    statistic: float | None = None
    clip: str | None = None


class SearchResult(Answer):
    """One query face (or embedding) answered: its top-k identities (or faces) and the open-set decision;
    a query photo that could not be answered has `error` and `detail` instead (CLI batches)."""

    query: str | None = None
    face: QueryFace | None = None
    identity: str | None = None
    unknown: bool | None = None
    score: float | None = None
    threshold: float | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    mode: str = "identities"
    threshold_source: str = ""
    statistic: float | None = None
    margin: float | None = None
    runner_up: dict[str, Any] | None = None
    rule: dict[str, float] | None = None
    question: str = "1:K"
    quality: dict[str, Any] | None = None
    too_poor: str | None = None
    warnings: list[str] = Field(default_factory=list)
    error: str | None = None
    detail: str | None = None

    @classmethod
    def of(cls, answer: Any, warnings: list[str], query: str | None = None) -> SearchResult:
        """From a search.identify.FaceAnswer (its query replaced by `query` when given)."""
        data = answer.as_dict()
        if query is not None:
            data["query"] = query
        return cls.model_validate({**data, "warnings": warnings})


class PhotoSize(Answer):
    name: str | None
    width: int
    height: int


class SearchAnswer(Answer):
    results: list[SearchResult]
    photo: PhotoSize | None = None
    warnings: list[str] = Field(default_factory=list)


class SimilarFaces(SearchResult):
    face_id: int


class VerifyAnswer(Answer):
    """1:1: the main face of photo A against the main face of photo B, or against an identity's faces
    (its best-matching one)."""

    photo_a: str
    photo_b: str | None = None
    identity: str | None = None
    score: float
    threshold: float
    threshold_source: str
    same: bool
    model: str
    box_a: list[float]
    box_b: list[float] | None = None
    face_id: int | None = None  # identity mode: the identity's face that matched best
    faces_compared: int | None = None  # identity mode: the identity's live faces
    question: str = "1:1"
    quality_a: dict[str, Any] | None = None
    quality_b: dict[str, Any] | None = None


# --- after a write -------------------------------------------------------------------------------------


class Calibration(Answer):
    """A calibration of the decision rule, its 1:K threshold and the 1:1 threshold (search.calibrate)."""

    threshold: float
    target_fpir: float
    fpir: float
    fnir: float
    rank1: float
    mated_searches: int
    nonmated_searches: int
    identities: int
    labeled_faces: int
    applied: bool
    genuine_scores: dict[str, float]
    impostor_scores: dict[str, float]
    rule: dict[str, float]
    fnir_at: dict[str, float | None]
    weights_tried: dict[str, float]
    one_to_one: dict[str, Any] | None
    low_quality_faces_left_out: int


class IndexRefresh(Answer):
    action: str = Field(description="build, update or none")
    factory: str | None = None
    ntotal: int | None = None


class ErasuresFinished(Answer):
    finished: int
    pending: int
    blocked: dict[str, str] = Field(default_factory=dict, description="place -> why it was not reached yet")


class AfterWrite(Answer):
    """What a write that added faces did to keep the gallery searchable (gallery.app.indexing)."""

    index: IndexRefresh
    erasures: ErasuresFinished | None = None
    calibration: Calibration | None = None
    next: str | None = Field(None, description="what to run next, if anything (e.g. the first index build)")


class ClusterRun(Answer):
    method: str
    threshold: float
    floor: float
    k: int
    cohesion_gap: float | None
    join_gap: float | None
    crowd_k: int | None = None
    crowd_margin: float | None = None
    crowd_margin_large: float | None = None
    faces: int
    excluded: int
    new_faces: int
    clusters: int
    clustered_faces: int
    new_clusters: int
    joined: int
    named_joined: int
    singletons: int
    seconds: float
    rebuild: bool
    incremental: bool


class IngestAnswer(AfterWrite):
    """`gallery ingest --json` and the result of a server ingest job."""

    gallery: str
    model: str
    device: str
    files_seen: int = 0
    skipped: int = 0
    photos: int = 0
    photos_with_faces: int = 0
    faces: int = 0
    labeled_faces: int = 0
    low_quality_faces: int = 0
    duplicates: int = 0
    kept_out: int = 0
    failed: int = 0
    failures: dict[str, int] = Field(default_factory=dict)
    needs_install: dict[str, int] = Field(default_factory=dict)
    xmp_regions: int = 0
    xmp_matched: int = 0
    xmp_from_region: int = 0
    xmp_warnings: int = 0
    xmp_warning_examples: list[str] = Field(default_factory=list)
    videos: int = 0
    video_seconds: float = 0.0
    video_frames: int = 0
    video_tracks: int = 0
    shards_written: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0
    photos_per_s: float = 0.0
    faces_per_s: float = 0.0
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    warning: str | None = None
    outside_roots: int = Field(0, description="files skipped because their real path is outside the roots "
                                              "(server ingest)")
    clusters: ClusterRun | None = None


class SyncAnswer(AfterWrite):
    added: int = 0
    changed: int = 0
    removed: int = 0
    retried: int = 0
    moved: int = 0
    unchanged: int = 0
    faces_removed: int = 0
    relabeled: int = 0
    curation_kept: int = 0
    kept_out: int = 0
    ingest: dict[str, Any] = Field(default_factory=dict)


class EnrolAnswer(AfterWrite):
    identity: str
    photos: int
    faces_labeled: int
    face_ids: list[int]
    no_face: list[str]
    duplicates: int
    saved: int


class ErasureAnswer(Answer):
    command: str
    faces: int
    photos: int
    identities: int
    shards_rewritten: int
    index: str
    seconds: float
    status: str = "done"
    pending: dict[str, str] = Field(default_factory=dict)
    finished_earlier: int = 0
    detail: str | None = None
    enrolled_files_removed: int = 0
    places: dict[str, Any] = Field(default_factory=dict)
    kept_out: int = 0
    archive: str = Field("", description="what becomes of the photo archive, which erasure never touches")


# --- people and faces ----------------------------------------------------------------------------------


class FaceDetail(Answer):
    face_id: int
    identity: str | None
    photo: str
    box: list[float]
    det_score: float
    is_main: bool
    deleted: bool
    ignored: bool
    quality: dict[str, Any] | None = None


class FaceRecord(Answer):
    face_id: int
    identity: str | None
    photo: str
    box: list[float]
    image_id: int
    identity_id: int | None = None
    quality_issue: str | None = None
    clip: str | None = None
    t_ms: int | None = None


class IdentityFaces(Answer):
    identity: str
    identity_id: int | None = None
    faces: list[FaceDetail]


class IdentityRow(Answer):
    identity: str
    identity_id: int
    faces: int
    face_id: int | None


class IdentityPage(Answer):
    total: int
    offset: int
    limit: int
    identities: list[IdentityRow]


class Renamed(Answer):
    renamed: str
    to: str
    faces: int


class Merged(Answer):
    merged: list[str]
    into: str
    faces: int


class NameDeleted(Answer):
    deleted: str
    faces_unlabeled: int


class Relabeled(Answer):
    relabeled: int
    identity: str | None


class FacesDeleted(Answer):
    deleted: int | None = None
    ignored: int | None = None


# --- clusters -------------------------------------------------------------------------------------------


class ClusterSummary(Answer):
    cluster: int
    size: int
    name: str | None
    representative_face: int | None
    representative_photo: str | None
    box: list[float] | None
    suggestion: dict[str, Any] | None = None


class ClusterDetail(ClusterSummary):
    faces: list[dict[str, Any]] = Field(default_factory=list)
    doubtful: int = 0
    sheet: str | None = Field(None, description="the contact sheet written (CLI --sheet)")


class ClusterNamed(Answer):
    cluster: int
    name: str
    faces_labeled: int
    merged: bool
    far_faces: list[dict[str, Any]] = Field(default_factory=list)
    left_unnamed: int = 0


class ClusterSplit(Answer):
    cluster: int
    threshold: float
    floor: float
    into: list[dict[str, int]]
    unclustered: int


class ClusterRejected(Answer):
    cluster: int
    rejected: int


# --- status, maintenance, jobs, bench --------------------------------------------------------------------


class CalibrationState(Answer):
    calibrated_at: float | None
    identities_at_calibration: int | None
    labeled_faces_at_calibration: int | None
    labeled_faces: int
    mated_identities: int
    stale: bool
    can_calibrate: bool
    outdated: bool = False


class IndexState(Answer):
    factory: str | None = None
    ntotal: int | None = None
    built_at: float | None = None
    max_face_id: int | None = None
    unindexed_faces: int | None = None
    advice: str | None = None


class ServerState(Answer):
    auth: str
    max_upload_bytes: int
    request_timeout_s: float
    ingest_roots: list[str]


class Identification(Answer):
    rule: dict[str, float]
    weight: float
    fnir_at: dict[str, float | None] | None = None
    rank1: float | None = None


class GalleryStatus(Answer):
    """`gallery info --json` and GET /v1/status: what the gallery holds, its model, the thresholds in
    force and where they come from, the calibration, the index and its freshness (and, from a server,
    the server's settings)."""

    path: str
    model: str | None
    model_stamp: dict[str, Any] | None
    dim: int | None
    photos: int
    faces: int
    deleted_faces: int
    identities: int
    labeled_faces: int
    failed: int
    failures: dict[str, int]
    duplicates: int
    shards: int
    disk_bytes: int
    low_quality_faces: int = 0
    unmeasured_faces: int = 0
    threshold: float | None
    threshold_source: str
    rule: dict[str, float]
    one_to_one_threshold: float | None
    one_to_one_source: str
    identification: Identification
    calibration: CalibrationState
    index: IndexState
    problems: list[str] = Field(default_factory=list)
    kept_out: int = 0
    jobs_running: int | None = Field(None, description="a server's jobs queued or running")
    server: ServerState | None = None


class Finding(Answer):
    area: str
    ok: bool
    detail: str
    fix: str | None = None


class CheckAnswer(Answer):
    ok: bool
    findings: list[Finding]


class Health(Answer):
    status: str
    time: float


class Job(Answer):
    job: str
    kind: str
    state: str = Field(description="queued, running, done or failed")
    params: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None = Field(description="the job's answer (an IngestAnswer, a ClusterRun, ...)")
    error: dict[str, Any] | None
    detail: str | None = None


class BenchAnswer(Answer):
    """`gallery bench --json`: recall, latency and identification of the gallery's index settings."""

    gallery: str
    index: dict[str, Any]
    queries: dict[str, Any]
    k: int
    threshold: float | None
    threshold_source: str
    target_recall: float
    target_metric: str
    points: list[dict[str, Any]]
    exact: dict[str, Any] | None
    recommended: dict[str, Any] | None
    why: str
    meets_target: bool
    applied: bool
    identification: dict[str, Any] | None
    ground_truth: dict[str, Any]
    notes: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
