"""`gallery serve` answers only those it should, over real HTTP on loopback: a keyless server refuses
cross-origin writes and foreign Host names (CSRF, DNS rebinding); `--ingest-root` cannot be escaped
through links or relative paths; people are addressable by id (names with `/`); bad input is a 4xx
with `{"error", "detail"}`, never a 500 with exception text; crops are bounded (FIFOs, huge photos);
enrolment past the request timeout is a job, not a 504 that did the work, and enrolling the same
photos again adds nothing; erasing a person removes every enrolled copy (group photos, identical
copies, uploads without an extension); a killed server's job records and uploads are found by `check`
and removed by `repair`.

The gallery is synthetic (128-d vectors stamped with the dlib-resnet model, no photo needed), so most
of this runs without the LFW photos; enrolment tests use a few LFW photos and skip without them.
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import LFW_IMAGES, lfw_available, lfw_photo
from tests.helpers.galleries import unit_vectors
from tests.helpers.traces import traces
from tests.test_serve import Server, gallery_cli, jpeg_bytes

httpx = pytest.importorskip("httpx", reason="the server tests need the [server] extra (httpx)")

BIG = 2**63  # one past SQLite's largest integer


def synthetic_gallery(root: Path) -> tuple[Path, dict[str, list[int]]]:
    """A keyless gallery of 40 faces stamped with dlib-resnet; photo paths under root/photos."""
    from gallery.faces.models import get_model_spec
    from gallery.store import Gallery, append_embedded_faces
    from indexer import build_index

    names = ["AC/DC"] * 3 + ["Victim"] * 3 + ["Keep"] * 3 + [None] * 31
    (root / "photos").mkdir(parents=True)
    with Gallery.open_or_create(root / "gallery") as g:
        ids = append_embedded_faces(g, get_model_spec("dlib-resnet").stamp(), unit_vectors(40, 128, seed=9),
                                    identities=names, photo_prefix=str(root / "photos"))
        build_index(g)
    by_name: dict[str, list[int]] = {}
    for face_id, name in zip(ids.tolist(), names):
        by_name.setdefault(name or "", []).append(face_id)
    return root / "gallery", by_name


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("keyless")
    gallery, faces = synthetic_gallery(root)
    (root / "roots" / "inside").mkdir(parents=True)
    server = Server(gallery, "--ingest-root", str(root / "roots"), "--allow-host", "gallery.test",
                    log=root / "serve.log")
    yield server, gallery, faces, root
    server.close()
    assert "Traceback" not in (root / "serve.log").read_text(), (root / "serve.log").read_text()


def error_body(response: httpx.Response, status: int | tuple[int, ...]) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["detail"], body
    assert "Traceback" not in response.text and "Error:" not in body["detail"], body
    return body


# --- 10. cross-origin writes and DNS rebinding ---------------------------------------------------------


def test_a_keyless_server_refuses_cross_origin_writes_and_foreign_hosts(keyless) -> None:
    server, gallery, _, _ = keyless
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    body = error_body(httpx.post(server.url + "/v1/identities/Victim/erase", headers=evil, content=b"x"), 403)
    assert "origin" in body["detail"].lower()
    error_body(httpx.post(server.url + "/v1/identities/Victim/erase", headers={"Sec-Fetch-Site": "cross-site"}), 403)
    # DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends its own name as Host
    host = {"Host": f"evil.example:{server.port}"}
    error_body(httpx.get(server.url + "/v1/status", headers=host), 403)
    error_body(httpx.post(server.url + "/v1/identities/Victim/erase", headers={**host, "Origin":
                                                                            f"http://evil.example:{server.port}"}), 403)
    assert httpx.get(server.url + "/v1/identities/Victim").status_code == 200  # nothing was erased
    # the page's own origin, a name the operator allowed, and programs that send no Origin are served
    same = {"Origin": server.url}
    assert httpx.post(server.url + "/v1/identities/merge", headers=same,
                      json={"names": ["Nobody"], "into": "X"}).status_code == 404
    assert httpx.get(server.url + "/v1/status", headers={"Host": f"gallery.test:{server.port}"}).status_code == 200
    assert httpx.get(server.url + "/v1/status", headers={"Host": f"localhost:{server.port}"}).status_code == 200
    assert httpx.get(server.url + "/v1/status").status_code == 200


# --- 11. people addressable by id ----------------------------------------------------------------------


def test_people_with_a_slash_in_their_name_are_addressable_by_id(keyless) -> None:
    server, _, faces, _ = keyless
    c = server.client()
    listed = c.get("/v1/identities", params={"name": "AC/DC"}).json()["identities"]
    assert [p["identity"] for p in listed] == ["AC/DC"]
    identity_id = listed[0]["identity_id"]
    shown = c.get(f"/v1/identities/id/{identity_id}").json()
    assert shown["identity"] == "AC/DC" and len(shown["faces"]) == 3
    assert c.post(f"/v1/identities/id/{identity_id}/rename", json={"to": "AC/DC live"}).json()["faces"] == 3
    assert c.get(f"/v1/identities/id/{identity_id}").json()["identity"] == "AC/DC live"
    page = c.get("/static/app.js").text
    assert "/v1/identities/id/" in page  # the web page opens people by id as well
    report = c.post(f"/v1/identities/id/{identity_id}/erase").json()
    assert report["faces"] == 3 and report["status"] == "done"
    error_body(c.get(f"/v1/identities/id/{identity_id}"), 404)
    error_body(c.get(f"/v1/identities/id/{BIG}"), (404, 422))


# --- 13. bad input is a 4xx with a reason ----------------------------------------------------------------


def test_no_500_and_no_exception_text_for_bad_input(keyless) -> None:
    server, _, faces, root = keyless
    c = server.client()
    vector = [0.0] * 127 + [1.0]
    for embedding in ([[0.1, 0.2]] * 128, [1e30] * 128, [True] * 128, [vector], "abc", [None] * 128):
        error_body(c.post("/v1/search", json={"embedding": embedding}), 422)
    error_body(c.post("/v1/search", json={"embeddings": [[vector]]}), 422)
    deep = b"[" * 100_000 + b"]" * 100_000
    for url in ("/v1/search", "/v1/identities/merge", "/v1/ingest"):
        error_body(c.post(url, content=deep, headers={"content-type": "application/json"}), (400, 422))
    for method, url in (("GET", f"/v1/faces/{BIG}"), ("GET", f"/v1/faces/{BIG}/crop"), ("DELETE", f"/v1/faces/{BIG}"),
                        ("POST", f"/v1/faces/{BIG}/erase"), ("GET", f"/v1/clusters/{BIG}"),
                        ("POST", f"/v1/clusters/{BIG}/name"), ("GET", f"/v1/clusters?min_size={BIG}")):
        error_body(c.request(method, url, json={"name": "x"}), (404, 422))
    error_body(c.post("/v1/clusters/1/reject", json={"face_ids": [BIG]}), (404, 422))
    error_body(c.post("/v1/ingest", json={"path": str(root / "roots" / "in\x00side")}), (400, 422))
    error_body(c.get("/v1/no/such/route"), 404)
    error_body(c.get("/nothing-here"), 404)
    error_body(c.put("/v1/search", json={}), 405)
    error_body(c.post("/v1/search", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}), 400)
    error_body(c.post("/v1/search", content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx",
                      headers={"content-type": "multipart/form-data; boundary=b"}), 400)


# --- 14. crops are bounded ------------------------------------------------------------------------------


def test_crops_refuse_special_files_and_huge_photos(keyless) -> None:
    server, _, faces, root = keyless
    c = httpx.Client(base_url=server.url, timeout=15)
    unlabeled = faces[""]
    fifo = root / "photos" / f"{unlabeled[0]}.jpg"
    os.mkfifo(fifo)
    body = error_body(c.get(f"/v1/faces/{unlabeled[0]}/crop"), 422)
    assert "regular" in body["detail"]
    bomb = root / "photos" / f"{unlabeled[1]}.jpg"
    Image.new("1", (21000, 21000)).save(bomb, "PNG")  # 441 MP, a few kB on disk
    assert error_body(c.get(f"/v1/faces/{unlabeled[1]}/crop?margin=2"), 422)["error"] == "too_large"
    fine = root / "photos" / f"{unlabeled[2]}.jpg"
    Image.new("RGB", (300, 300), (90, 120, 150)).save(fine, "JPEG")
    crop = c.get(f"/v1/faces/{unlabeled[2]}/crop", params={"size": 1024, "margin": 2})
    assert crop.status_code == 200 and Image.open(io.BytesIO(crop.content)).size == (1024, 1024)
    error_body(c.get(f"/v1/faces/{unlabeled[2]}/crop", params={"size": 100_000}), 422)
    c.close()


def test_the_crop_command_caps_its_size(keyless, tmp_path: Path) -> None:
    _, gallery, faces, root = keyless
    face = faces[""][2]
    if not (root / "photos" / f"{face}.jpg").exists():
        Image.new("RGB", (300, 300)).save(root / "photos" / f"{face}.jpg")
    result = gallery_cli("faces", "crop", str(face), "-o", str(tmp_path / "c.jpg"), "--size", "100000",
                         "--gallery", str(gallery), check=False)
    assert result.exit_code == 2 and "4096" in result.stderr, (result.stdout, result.stderr)
    native = gallery_cli("faces", "crop", str(face), "-o", str(tmp_path / "n.png"), "--size", "0", "--margin", "2",
                         "--gallery", str(gallery), check=False)
    assert native.exit_code == 0, native.stdout + native.stderr


# --- 9. ingest roots cannot be escaped ----------------------------------------------------------------


def test_ingest_roots_cannot_be_escaped_through_links_or_relative_paths(keyless) -> None:
    server, gallery, _, root = keyless
    c = server.client()
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg_bytes((10, 200, 10)))
    (outside / "also-secret.jpg").write_bytes(jpeg_bytes((200, 10, 10)))
    inside = root / "roots" / "inside"
    (inside / "own.jpg").write_bytes(jpeg_bytes((10, 10, 200)))
    (inside / "linked-folder").symlink_to(outside, target_is_directory=True)
    (inside / "linked-photo.jpg").symlink_to(outside / "also-secret.jpg")
    error_body(c.post("/v1/ingest", json={"path": "roots/inside"}), 422)
    error_body(c.post("/v1/ingest", json={"path": str(inside / "linked-folder")}), 403)
    job = c.post("/v1/ingest", json={"path": str(inside), "workers": 0, "labels": "none"})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 240
    while (record := c.get(f"/v1/jobs/{job.json()['job']}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert record["state"] == "done", record
    assert record["result"]["files_seen"] == 1 and record["result"]["outside_roots"] == 2, record["result"]
    con = sqlite3.connect(gallery / "gallery.db")
    paths = [r[0] for r in con.execute("SELECT path FROM files")]
    con.close()
    assert any(p.endswith("own.jpg") for p in paths) and not any("secret" in p for p in paths), paths


# --- 12 and 3. enrolment past the timeout; erasure of every enrolled copy --------------------------------


def group_photo(a: Path, b: Path) -> bytes:
    canvas = Image.new("RGB", (500, 250), (0, 0, 0))
    canvas.paste(Image.open(a), (0, 0))
    canvas.paste(Image.open(b), (250, 0))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory):
    """A keyless server with a 1-second request timeout (enrolment always takes longer)."""
    if not lfw_available():
        pytest.skip(f"needs the LFW A–J photos at {LFW_IMAGES} (../shared/data/lfw-aj beside the repository)")
    root = tmp_path_factory.mktemp("slow")
    gallery, _ = synthetic_gallery(root)
    server = Server(gallery, "--request-timeout", "1", log=root / "serve.log")
    yield server, gallery, root
    server.close()


def finished(client: httpx.Client, response: httpx.Response) -> dict:
    """The answer of a request that may have become a job (202): the job's result once it is done."""
    assert response.status_code in (200, 201, 202), response.text
    if response.status_code != 202 or "job" not in response.json():
        return response.json()
    job = response.json()["job"]
    deadline = time.monotonic() + 240
    while (record := client.get(f"/v1/jobs/{job}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert record["state"] == "done", record
    return record["result"]


def enrolled_files(gallery: Path) -> list[Path]:
    return sorted(p for p in (gallery / "enrolled").rglob("*") if p.is_file()) if (gallery / "enrolled").exists() \
        else []


def test_enrolment_past_the_request_timeout_is_a_job_and_enrolling_again_adds_nothing(slow) -> None:
    server, gallery, _ = slow
    c = server.client()
    photos = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in
              (lfw_photo("Angela_Bassett", i) for i in (1, 2, 3, 4))]
    first = c.post("/v1/identities", files=photos, data={"name": "Angela"})
    assert first.status_code != 504, first.text
    result = finished(c, first)
    assert result["faces_labeled"] == 4
    files = enrolled_files(gallery)
    assert len(files) == 4
    again = finished(c, c.post("/v1/identities", files=photos, data={"name": "Angela"}))
    assert again["faces_labeled"] == 4 and sorted(again["face_ids"]) == sorted(result["face_ids"])
    assert enrolled_files(gallery) == files
    assert len(c.get("/v1/identities/Angela").json()["faces"]) == 4


def test_erasing_a_person_removes_every_enrolled_copy(slow) -> None:
    server, gallery, _ = slow
    c = server.client()
    group = group_photo(lfw_photo("Bill_Frist", 1), lfw_photo("Ben_Affleck", 1))
    portrait = lfw_photo("Bill_Frist", 2).read_bytes()
    upload = [("file", ("group.jpg", group, "image/jpeg")), ("file", ("portrait.jpg", portrait, "image/jpeg")),
              ("file", ("copy-of-portrait.jpg", portrait, "image/jpeg")),
              ("file", ("blob", lfw_photo("Bill_Frist", 3).read_bytes(), "application/octet-stream"))]
    result = finished(c, c.post("/v1/identities", files=upload, data={"name": "Bill"}))
    assert result["faces_labeled"] == 3 and result["no_face"] == [], result  # the blob was ingested too
    shown = c.get("/v1/identities/Bill").json()["faces"]
    con = sqlite3.connect(gallery / "gallery.db")
    group_path = next(f["photo"] for f in shown if f["photo"].endswith("group.jpg"))
    others = [r[0] for r in con.execute("SELECT f.face_id FROM faces f JOIN images i ON i.image_id = f.image_id "
                                        "WHERE i.path = ? AND f.identity_id IS NULL", (group_path,))]
    con.close()
    assert others, "the group photo's second face"
    assert c.get(f"/v1/faces/{others[0]}/crop", params={"margin": 2}).status_code == 200
    report = finished(c, c.post("/v1/identities/Bill/erase"))
    assert report["status"] == "done" and report["photos"] >= 3, report
    assert c.get(f"/v1/faces/{others[0]}/crop", params={"margin": 2}).status_code == 404
    assert not any(p.read_bytes() in (group, portrait) for p in enrolled_files(gallery))
    assert traces(gallery, texts=["group.jpg", "portrait.jpg", "copy-of-portrait.jpg"]) == []
    assert gallery_cli("check", "--gallery", str(gallery), check=False).exit_code == 0


def test_a_killed_server_leaves_nothing_that_check_does_not_report_and_repair_remove(slow) -> None:
    server, gallery, _ = slow
    c = server.client()
    job = c.post("/v1/clusters/run", json={})
    assert job.status_code in (202, 501), job.text
    leftovers = [p for p in gallery.rglob("*") if p.is_file() and "serve" in p.relative_to(gallery).parts[:1]]
    server.proc.kill()
    server.proc.wait()
    assert leftovers, "the server keeps its job records in the gallery folder"
    check = gallery_cli("check", "--gallery", str(gallery), "--json", check=False)
    assert check.exit_code == 1 and "server" in check.stdout, check.stdout
    assert gallery_cli("repair", "--gallery", str(gallery), check=False).exit_code == 0
    assert not (gallery / "serve").exists() or not any((gallery / "serve").iterdir())
    assert gallery_cli("check", "--gallery", str(gallery), check=False).exit_code == 0
