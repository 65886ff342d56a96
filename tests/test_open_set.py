"""A gallery like the README Quickstart's, from real LFW photos through ingest, index build (with its
automatic calibration of the decision rule) and search: its own query photo is named, strangers are not,
and `gallery verify` answers with the 1:1 threshold while search uses the 1:K one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gallery.cli import app
from tests.conftest import LFW_IMAGES, lfw_photo, requires_lfw

runner = CliRunner()
PEOPLE = 180
PHOTOS_EACH = 3  # the first photos of each person (Colin Powell's first photo is the query, held back)
QUERY = ("Colin_Powell", 1)


def cli_json(*args: str) -> dict | list:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    if args[0] == "search":  # one JSON object per line and query face
        return [json.loads(line) for line in result.stdout.splitlines()]
    return json.loads(result.stdout)  # one JSON document (index build prints it indented)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """180 people with 4+ photos (Colin Powell among them), 3 photos each, ingested and indexed."""
    if not LFW_IMAGES.is_dir():
        pytest.skip(f"needs the LFW A–J photos at {LFW_IMAGES}")
    work = tmp_path_factory.mktemp("quickstart")
    people = sorted(p.name for p in LFW_IMAGES.iterdir() if len(list(p.iterdir())) >= PHOTOS_EACH + 1)
    enrolled = [QUERY[0]] + [p for p in people if p != QUERY[0]][: PEOPLE - 1]
    strangers = [p.name for p in sorted(LFW_IMAGES.iterdir()) if p.name not in set(enrolled)][::60][:30]
    archive = work / "photos"
    for name in enrolled:
        (archive / name).mkdir(parents=True)
        first = 2 if name == QUERY[0] else 1
        for i in range(first, first + PHOTOS_EACH):
            shutil.copyfile(lfw_photo(name, i), archive / name / lfw_photo(name, i).name)
    gallery = work / "g"
    ingested = cli_json("ingest", str(archive), "--gallery", str(gallery), "--workers", "0")
    assert ingested["photos"] == PEOPLE * PHOTOS_EACH
    built = cli_json("index", "build", "--gallery", str(gallery))
    assert built["calibration"] is not None  # 180 identities with 2+ faces: calibrated automatically
    return gallery, enrolled, strangers


@requires_lfw
def test_the_quickstart_query_is_named_and_strangers_are_not(quickstart) -> None:
    gallery, enrolled, strangers = quickstart
    [answer] = cli_json("search", str(lfw_photo(*QUERY)), "--gallery", str(gallery), "--largest-only")
    assert answer["identity"] == QUERY[0], answer
    assert answer["threshold_source"].startswith("calibrated") and answer["question"] == "1:K"
    assert answer["statistic"] >= answer["threshold"] and answer["margin"] >= 0
    assert answer["score"] == answer["candidates"][0]["score"]  # the best face's cosine is still shown
    assert answer["runner_up"]["identity"] != QUERY[0]
    stranger_photos = [str(lfw_photo(name, 1)) for name in strangers]
    named = [a for a in cli_json("search", *stranger_photos, "--gallery", str(gallery), "--largest-only")
             if a["identity"] is not None]
    assert len(named) <= 1, named  # the calibration's target is 1% of strangers
    held_back = [str(lfw_photo(name, PHOTOS_EACH + 1)) for name in enrolled[1:31]]
    answers = cli_json("search", *held_back, "--gallery", str(gallery), "--largest-only")
    right = sum(a["identity"] == Path(a["query"]).parent.name for a in answers)
    wrong = sum(a["identity"] not in (None, Path(a["query"]).parent.name) for a in answers)
    assert right >= 25 and wrong == 0, (right, wrong)


@requires_lfw
def test_the_calibration_on_real_faces_is_stored_and_reported(quickstart) -> None:
    gallery, _, _ = quickstart
    info = cli_json("info", "--gallery", str(gallery))
    assert info["threshold_source"].startswith("calibrated")
    assert info["identification"]["weight"] is not None and set(info["identification"]["fnir_at"]) == {"0.1%", "1%"}
    assert info["one_to_one_source"].startswith("calibrated 1:1")
    assert 0.8 < info["one_to_one_threshold"] < 1  # a cosine between two faces
    text = runner.invoke(app, ["info", "--gallery", str(gallery)]).output
    assert "1:K threshold (search)" in text and "1:1 threshold (verify)" in text


@requires_lfw
def test_verify_uses_the_one_to_one_threshold_and_says_so(quickstart) -> None:
    gallery, _, _ = quickstart
    a, b = str(lfw_photo("Colin_Powell", 1)), str(lfw_photo("Colin_Powell", 5))
    with_gallery = cli_json("verify", a, b, "--gallery", str(gallery))
    info = cli_json("info", "--gallery", str(gallery))
    assert with_gallery["question"] == "1:1" and with_gallery["threshold"] == info["one_to_one_threshold"]
    assert with_gallery["threshold_source"].startswith("calibrated 1:1")
    assert with_gallery["threshold"] != info["threshold"]  # not the 1:K search threshold
    without = cli_json("verify", a, b)
    assert without["threshold_source"].startswith("model default 1:1") and without["threshold"] == 0.91
    assert with_gallery["same"] and without["same"]  # one person, both ways
    text = runner.invoke(app, ["verify", a, b, "--gallery", str(gallery)]).output
    assert "1:1 threshold" in text
