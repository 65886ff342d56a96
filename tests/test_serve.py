"""`gallery serve` over real HTTP: the server runs in a subprocess on a free loopback port and the
tests talk to it with httpx. Every endpoint, keys and scopes (401/403), the upload limit (413), bad
input answered 4xx with a reason (never a 500), searches during an ingest job, erase then search.

One small LFW gallery per module (3 labeled people, 4 photos each; ingesting is the slow part).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import LFW_IMAGES, copy_lfw_people, lfw_available, lfw_photo

httpx = pytest.importorskip("httpx", reason="the server tests need the [server] extra (httpx)")
fastapi = pytest.importorskip("fastapi", reason="the server tests need the [server] extra (fastapi)")

REPO = Path(__file__).resolve().parents[1]
LABELED = {"Al_Gore": 3, "Ben_Affleck": 3, "Celine_Dion": 3}
UNLABELED = {"Amelia_Vega": 3, "Ana_Guevara": 2}
LATE = "Bill_Frist"  # ingested by the ingest job test (with enough company to keep the job busy a while)
INCOMING = {LATE: 9, "Bill_Graham": 9}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gallery_cli(*args: str, check: bool = True) -> Any:
    """Run a `gallery` command in this process (as the CLI tests do): result.exit_code, .stdout, .stderr."""
    from typer.testing import CliRunner

    from gallery.cli import app

    result = CliRunner().invoke(app, list(args))
    if check and result.exit_code != 0:
        raise AssertionError(f"gallery {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def build_gallery(root: Path, people: dict[str, int], unlabeled: dict[str, int] | None = None) -> Path:
    """A gallery folder from LFW photos (labeled by folder, plus optional unlabeled people), indexed."""
    from gallery.ingest import ingest
    from indexer import build_index

    gallery = root / "gallery"
    copy_lfw_people(root / "archive", people)
    ingest(root / "archive", gallery, workers=0)
    if unlabeled:
        copy_lfw_people(root / "unlabeled", unlabeled)
        ingest(root / "unlabeled", gallery, workers=0, labels="none")
    build_index(gallery)
    return gallery


def shared_gallery(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy of the test gallery (LABELED people by folder, UNLABELED ones without names), built
    once per test session: ingesting is the slow part, the server and browser tests share it."""
    if not lfw_available():
        pytest.skip(f"needs the LFW A–J photos at {LFW_IMAGES} (../shared/data/lfw-aj beside the repository)")
    built = tmp_path_factory.getbasetemp() / "serve-gallery"
    if not (built / "done").exists():
        shutil.rmtree(built, ignore_errors=True)
        build_gallery(built, LABELED, UNLABELED)
        (built / "done").touch()
    copy = tmp_path_factory.mktemp(name) / "gallery"
    shutil.copytree(built / "gallery", copy)
    return copy


def create_key(gallery: Path, name: str, scope: str) -> str:
    return json.loads(gallery_cli("keys", "create", "--gallery", str(gallery), "--name", name, "--scope", scope,
                                  "--json").stdout)["key"]


class Server:
    """`gallery serve` in a subprocess on a free loopback port; stopped (and waited for) on close."""

    def __init__(self, gallery: Path, *extra: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._clients: list[httpx.Client] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gallery.cli", "serve", "--gallery", str(gallery), "--port", str(self.port),
             "--log-level", "warning", *extra],
            cwd=REPO, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/v1/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"the server did not answer within 120 s:\n{log.read_text()}")
            time.sleep(0.3)

    def client(self, key: str | None = None) -> httpx.Client:
        client = httpx.Client(base_url=self.url, headers={"X-Api-Key": key} if key else {}, timeout=120)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:  # no idle keep-alive connection holds up the server's shutdown
            client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(server, keys by scope, gallery, work folder): 3 labeled people, 2 unlabeled people (clusters)."""
    if not lfw_available():
        pytest.skip(f"needs the LFW A–J photos at {LFW_IMAGES} (../shared/data/lfw-aj beside the repository)")
    from gallery.store import Gallery

    gallery = shared_gallery(tmp_path_factory, "serve")
    root = gallery.parent
    keys = {"admin": create_key(gallery, "test-admin", "admin")}  # one through the CLI, the others directly
    with Gallery.open(gallery) as g:
        keys.update((scope, g.create_key(f"test-{scope}", [scope])[1]) for scope in ("search", "enrol"))
        keys["revoked"] = g.create_key("to-revoke", ["admin"])[1]
    copy_lfw_people(root / "incoming", INCOMING)
    server = Server(gallery, "--max-upload-mb", "1", "--ingest-root", str(root / "incoming"), log=root / "serve.log")
    yield server, keys, gallery, root
    server.close()
    assert "Traceback" not in (root / "serve.log").read_text(), (root / "serve.log").read_text()


def post_photo(client: httpx.Client, path: Path | str, url: str = "/v1/search", **fields: str) -> httpx.Response:
    with open(path, "rb") as fh:
        return client.post(url, files={"file": (Path(path).name, fh.read(), "image/jpeg")}, data=fields)


def assert_reason(response: httpx.Response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    return body


def jpeg_bytes(color: tuple[int, int, int] = (128, 128, 128), size: int = 200) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG")
    return buf.getvalue()


# --- auth -----------------------------------------------------------------------------------------


def test_keys_and_scopes(served) -> None:
    server, keys, gallery, _ = served
    assert server.client().get("/v1/healthz").json()["status"] == "ok"
    assert_reason(server.client().get("/v1/status"), 401, "unauthorized")
    assert_reason(server.client("fg_not-a-key").get("/v1/status"), 401, "unauthorized")
    assert server.client(keys["search"]).get("/v1/status").status_code == 200
    body = assert_reason(server.client(keys["search"]).post("/v1/identities/merge",
                                                            json={"names": ["Al_Gore"], "into": "x"}), 403, "forbidden")
    assert "enrol" in body["detail"]
    assert_reason(server.client(keys["enrol"]).post("/v1/ingest", json={"path": "/tmp"}), 403, "forbidden")
    assert_reason(server.client(keys["enrol"]).post("/v1/faces/1/erase"), 403, "forbidden")
    assert server.client(keys["revoked"]).get("/v1/status").status_code == 200
    gallery_cli("keys", "revoke", "to-revoke", "--gallery", str(gallery))
    assert_reason(server.client(keys["revoked"]).get("/v1/status"), 401, "unauthorized")
    listed = json.loads(gallery_cli("keys", "list", "--gallery", str(gallery), "--json").stdout)
    assert {k["name"]: k["active"] for k in listed}["to-revoke"] is False
    assert all("key" not in k and len(k["prefix"]) < 16 for k in listed)  # never the key itself
    bad = gallery_cli("keys", "create", "--gallery", str(gallery), "--name", "x", "--scope", "root", check=False)
    assert bad.exit_code == 2 and "Unknown scope 'root'" in bad.stderr
    gone = gallery_cli("keys", "revoke", "to-revoke", "--gallery", str(gallery), check=False)
    assert gone.exit_code == 2 and "No active key" in gone.stderr


def test_docs_and_page(served) -> None:
    server, _, _, _ = served
    c = server.client()
    paths = c.get("/openapi.json").json()["paths"]
    for path in ("/v1/search", "/v1/verify", "/v1/identities", "/v1/faces/{face_id}/crop", "/v1/clusters",
                 "/v1/ingest", "/v1/jobs/{job_id}", "/v1/status", "/v1/healthz"):
        assert path in paths
    assert c.get("/docs").status_code == 200
    page = c.get("/")
    assert page.status_code == 200 and "Who is this?" in page.text
    assert c.get("/static/app.js").status_code == 200


# --- search and verify ----------------------------------------------------------------------------


def test_search_photo_answers_like_the_cli(served) -> None:
    server, keys, gallery, _ = served
    probe = lfw_photo("Al_Gore", 6)  # not in the gallery
    response = post_photo(server.client(keys["search"]), probe, k="3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["photo"]["width"] == 250 and body["results"]
    main = next(r for r in body["results"] if r["face"]["is_main"])
    assert main["identity"] == "Al_Gore" and not main["unknown"]
    cli = gallery_cli("search", str(probe), "--gallery", str(gallery), "-k", "3", "--json")
    cli_records = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(cli_records) == len(body["results"])
    for ours, theirs in zip(body["results"], cli_records):
        assert ours["query"] == probe.name
        assert {**ours, "query": None} == {**theirs, "query": None}


def test_search_base64_faces_mode_largest_only_and_embeddings(served) -> None:
    server, keys, gallery, _ = served
    c = server.client(keys["search"])
    data = lfw_photo("Celine_Dion", 6).read_bytes()
    r = c.post("/v1/search", json={"image": base64.b64encode(data).decode(), "largest_only": True, "k": 2})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 1 and results[0]["face"]["is_main"] and results[0]["identity"] == "Celine_Dion"
    assert len(results[0]["candidates"]) == 2
    faces = c.post("/v1/search", json={"image": base64.b64encode(data).decode(), "faces": True, "k": 4}).json()
    assert all(r["mode"] == "faces" and len(r["candidates"]) == 4 for r in faces["results"])

    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        face = g.identity_faces("Ben_Affleck")[0]
        vector = g.read_embeddings([face.face_id])[0]
    r = c.post("/v1/search", json={"embedding": vector.tolist(), "faces": True, "k": 1})
    assert r.status_code == 200, r.text
    answer = r.json()["results"][0]
    assert answer["candidates"][0]["face_id"] == face.face_id and answer["candidates"][0]["score"] > 0.999
    two = c.post("/v1/search", json={"embeddings": [vector.tolist(), (-vector).tolist()]}).json()["results"]
    assert two[0]["identity"] == "Ben_Affleck" and two[1]["unknown"]


def test_verify(served) -> None:
    server, keys, _, _ = served
    c = server.client(keys["search"])

    def files(a: Path, b: Path | None = None) -> dict:
        out = {"file_a": (a.name, a.read_bytes(), "image/jpeg")}
        if b is not None:
            out["file_b"] = (b.name, b.read_bytes(), "image/jpeg")
        return out

    same = c.post("/v1/verify", files=files(lfw_photo("Al_Gore", 6), lfw_photo("Al_Gore", 7))).json()
    assert same["same"] is True and same["photo_a"] == "Al_Gore_0006.jpg" and same["score"] >= same["threshold"]
    other = c.post("/v1/verify", files=files(lfw_photo("Al_Gore", 6), lfw_photo("Celine_Dion", 6))).json()
    assert other["same"] is False
    known = c.post("/v1/verify", files=files(lfw_photo("Ben_Affleck", 6)), data={"identity": "Ben_Affleck"}).json()
    assert known["same"] is True and known["identity"] == "Ben_Affleck" and known["faces_compared"] == 3
    assert_reason(c.post("/v1/verify", files=files(lfw_photo("Ben_Affleck", 6)), data={"identity": "Nobody"}),
                  404, "not_found")
    assert_reason(c.post("/v1/verify", files=files(lfw_photo("Ben_Affleck", 6))), 422, "bad_request")


def test_verify_against_an_identity_and_status_answer_like_the_cli(served) -> None:
    """One use case each (gallery.app.verify, gallery.app.status): the API's answer is the CLI's --json."""
    server, keys, gallery, _ = served
    c = server.client(keys["search"])
    probe = lfw_photo("Ben_Affleck", 6)
    api = c.post("/v1/verify", files={"file_a": (probe.name, probe.read_bytes(), "image/jpeg")},
                 data={"identity": "Ben_Affleck"}).json()
    cli = json.loads(gallery_cli("verify", str(probe), "--identity", "Ben_Affleck", "--gallery", str(gallery),
                                 "--json").stdout)
    assert api["photo_a"] == probe.name and cli["photo_a"] == str(probe)
    assert {**api, "photo_a": None} == {**cli, "photo_a": None}
    assert cli["same"] is True and cli["faces_compared"] == 3 and cli["question"] == "1:1"
    alone = gallery_cli("verify", str(probe), "--identity", "Ben_Affleck", check=False)
    assert alone.exit_code == 2 and "--gallery" in alone.stderr
    status = c.get("/v1/status").json()
    info = json.loads(gallery_cli("info", "--gallery", str(gallery), "--json").stdout)
    assert status["server"]["auth"] == "api keys" and info["server"] is None and info["jobs_running"] is None
    same = ("server", "jobs_running", "disk_bytes")
    assert {k: v for k, v in status.items() if k not in same} == {k: v for k, v in info.items() if k not in same}


# --- limits and bad input -------------------------------------------------------------------------


def test_bad_uploads_are_refused_with_the_ingest_reasons(served, tmp_path: Path) -> None:
    server, keys, _, _ = served
    c = server.client(keys["search"])

    def upload(data: bytes, name: str = "x.jpg") -> httpx.Response:
        return c.post("/v1/search", files={"file": (name, data, "application/octet-stream")})

    photo = lfw_photo("Al_Gore", 6).read_bytes()
    assert_reason(upload(b"this is not a photo", "notes.txt"), 422, "not_an_image")
    assert_reason(upload(b""), 422, "empty_file")
    assert_reason(upload(photo[: len(photo) // 3]), 422, "truncated")
    bomb = io.BytesIO()
    Image.new("1", (20000, 15000)).save(bomb, "PNG")  # 300 MP of 1-bit pixels: a few kB on disk
    body = assert_reason(upload(bomb.getvalue(), "bomb.png"), 422, "too_large")
    assert "bomb.png" in body["detail"]
    assert_reason(upload(jpeg_bytes()), 422, "no_face")
    # over the 1 MiB limit this server was started with: refused before it is read...
    big = jpeg_bytes(size=16) + os.urandom(1_200_000)
    body = assert_reason(upload(big), 413, "too_large")
    assert "upload limit" in body["detail"]

    # ...and also when the client sends no length (chunked)
    def chunks():
        for _ in range(20):
            yield b"\0" * 100_000

    assert_reason(c.post("/v1/search", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_bad_requests_get_a_reason_never_a_500(served) -> None:
    server, keys, _, _ = served
    c = server.client(keys["admin"])
    photo = lfw_photo("Al_Gore", 6)
    assert_reason(post_photo(c, photo, k="0"), 422, "bad_request")
    assert_reason(post_photo(c, photo, k="many"), 422, "bad_request")
    assert_reason(post_photo(c, photo, threshold="2"), 422, "bad_request")
    assert_reason(c.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert_reason(c.post("/v1/search", json=[1, 2]), 400, "bad_json")
    assert_reason(c.post("/v1/search", json={"image": "%%%"}), 400, "bad_base64")
    assert_reason(c.post("/v1/search", json={"embedding": [1.0, 2.0]}), 422, "bad_embedding")
    assert_reason(c.post("/v1/search", json={"embedding": [0.0] * 128}), 422, "bad_embedding")
    assert_reason(c.post("/v1/search", json={"k": 3}), 422, "bad_request")
    assert_reason(c.post("/v1/search", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_reason(c.get("/v1/identities/Nobody"), 404, "not_found")
    assert_reason(c.get("/v1/faces/999999"), 404, "not_found")
    assert_reason(c.get("/v1/faces/999999/crop"), 404, "not_found")
    assert_reason(c.get("/v1/faces/abc"), 422, "bad_request")
    assert_reason(c.get("/v1/identities?limit=0"), 422, "bad_request")
    assert_reason(c.post("/v1/identities/Al_Gore/rename", json={"to": "Ben_Affleck"}), 409, "conflict")
    assert_reason(c.post("/v1/identities/merge", json={"names": ["Nobody"], "into": "X"}), 404, "not_found")
    assert_reason(c.get("/v1/jobs/nope"), 404, "not_found")
    assert_reason(c.post("/v1/ingest", json={"path": "/etc"}), 403, "outside_roots")
    assert_reason(c.post("/v1/ingest", json={"path": "/tmp", "labels": "bogus"}), 403)
    assert_reason(c.post("/v1/identities", data={"name": "X"}), 415, "unsupported_media_type")
    assert_reason(c.post("/v1/identities", files=[("other", ("a", b"", "text/plain"))], data={"name": "X"}), 400,
                  "bad_request")
    assert_reason(c.post("/v1/identities", files={"file": ("a.txt", b"text", "text/plain")}, data={"name": "X"}),
                  422, "not_an_image")


# --- people ---------------------------------------------------------------------------------------


def test_identities_faces_and_crops(served) -> None:
    server, keys, _, _ = served
    read, edit = server.client(keys["search"]), server.client(keys["enrol"])
    page = read.get("/v1/identities", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["identities"]) == 2
    rest = read.get("/v1/identities", params={"limit": 2, "offset": 2}).json()["identities"]
    names = {p["identity"] for p in page["identities"] + rest}
    assert names == set(LABELED)
    shown = read.get("/v1/identities/Celine_Dion").json()
    assert shown["identity"] == "Celine_Dion" and len(shown["faces"]) == 3
    face_id = shown["faces"][0]["face_id"]
    face = read.get(f"/v1/faces/{face_id}").json()
    assert face["identity"] == "Celine_Dion" and face["photo"].endswith(".jpg") and len(face["box"]) == 4
    crop = read.get(f"/v1/faces/{face_id}/crop", params={"size": 64})
    assert crop.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(crop.content)).size == (64, 64)

    assert edit.post("/v1/identities/Celine_Dion/rename", json={"to": "Céline Dion"}).json()["faces"] == 3
    assert read.get("/v1/identities/Céline Dion").status_code == 200
    assert edit.post(f"/v1/faces/{face_id}/relabel", json={"name": None}).json() == {"relabeled": 1,
                                                                                     "identity": None}
    assert read.get(f"/v1/faces/{face_id}").json()["identity"] is None
    assert edit.post(f"/v1/faces/{face_id}/relabel", json={"name": "Céline Dion"}).json()["relabeled"] == 1
    assert edit.delete(f"/v1/faces/{face_id}").json() == {"deleted": 1}
    assert_reason(read.get(f"/v1/faces/{face_id}"), 404)
    merged = edit.post("/v1/identities/merge", json={"names": ["Céline Dion", "Ben_Affleck"],
                                                     "into": "Two People"}).json()
    assert merged["faces"] == 5  # one of the 6 was deleted above
    assert edit.delete("/v1/identities/Two People").json() == {"deleted": "Two People", "faces_unlabeled": 6}
    assert read.get("/v1/identities").json()["total"] == 1


def test_enrol_then_search_names_the_new_person(served) -> None:
    server, keys, _, _ = served
    c = server.client(keys["enrol"])
    photos = [("file", (p.name, p.read_bytes(), "image/jpeg"))
              for p in (lfw_photo("Angela_Bassett", 1), lfw_photo("Angela_Bassett", 2))]
    r = c.post("/v1/identities", files=photos, data={"name": "Angela B."})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["identity"] == "Angela B." and body["faces_labeled"] == 2 and body["no_face"] == []
    found = post_photo(c, lfw_photo("Angela_Bassett", 3)).json()["results"]
    assert next(x for x in found if x["face"]["is_main"])["identity"] == "Angela B."


def test_searches_are_answered_during_an_ingest_job(served) -> None:
    server, keys, _, root = served
    admin, reader = server.client(keys["admin"]), server.client(keys["search"])
    can_cluster = admin.get("/v1/clusters").status_code != 501
    job = admin.post("/v1/ingest", json={"path": str(root / "incoming"), "workers": 0, "cluster": can_cluster})
    assert job.status_code == 202, job.text
    job_id = job.json()["job"]
    probe = lfw_photo("Al_Gore", 6).read_bytes()
    from gallery.store import Gallery

    with Gallery.open(root / "gallery") as g:
        vector = g.read_embeddings([g.identity_faces("Al_Gore")[0].face_id])[0].tolist()
    during = {"photo": 0, "embedding": 0}
    statuses = []
    deadline = time.monotonic() + 240
    while True:
        for kind in during:
            before = admin.get(f"/v1/jobs/{job_id}").json()["state"]
            if kind == "photo":
                r = reader.post("/v1/search", files={"file": ("probe.jpg", probe, "image/jpeg")})
            else:
                r = reader.post("/v1/search", json={"embedding": vector})
            statuses.append(r.status_code)
            after = admin.get(f"/v1/jobs/{job_id}").json()["state"]
            during[kind] += before == "running" and after == "running"
        if after in ("done", "failed"):
            break
        assert time.monotonic() < deadline, "the ingest job did not finish"
    record = admin.get(f"/v1/jobs/{job_id}").json()
    assert record["state"] == "done", record
    result = record["result"]
    assert result["photos"] == sum(INCOMING.values()) and result["labeled_faces"] == result["photos_with_faces"]
    assert result["index"]["action"] in ("none", "update") and ("clusters" in result) == can_cluster
    assert set(statuses) == {200} and min(during.values()) >= 1, (statuses, during)
    assert any(j["job"] == job_id for j in admin.get("/v1/jobs").json())
    # the new person is found by the very next search
    found = post_photo(reader, lfw_photo(LATE, 5)).json()["results"]
    assert next(x for x in found if x["face"]["is_main"])["identity"] == LATE


def test_status(served) -> None:
    server, keys, _, _ = served
    s = server.client(keys["search"]).get("/v1/status").json()
    assert s["model"] == "dlib-resnet" and s["faces"] > 0 and s["threshold"] > 0
    assert "conservative" in s["threshold_source"] or "calibrated" in s["threshold_source"]
    assert s["index"]["factory"] and s["index"]["unindexed_faces"] >= 0
    assert s["server"]["max_upload_bytes"] == 2**20 and s["server"]["auth"] == "api keys"


def test_clusters(served) -> None:
    server, keys, _, _ = served
    admin = server.client(keys["admin"])
    job = admin.post("/v1/clusters/run", json={})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 120
    while (record := admin.get(f"/v1/jobs/{job.json()['job']}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert record["state"] == "done", record
    clusters = admin.get("/v1/clusters").json()
    assert clusters, record
    first = clusters[0]
    assert {"cluster", "size", "representative_face", "box"} <= set(first)
    shown = admin.get(f"/v1/clusters/{first['cluster']}").json()
    assert len(shown["faces"]) == first["size"]
    rejected = admin.post(f"/v1/clusters/{first['cluster']}/reject", json={"face_ids": [shown["faces"][0]["face_id"]]})
    assert rejected.json()["rejected"] == 1, rejected.text
    split = admin.post(f"/v1/clusters/{first['cluster']}/split", json={"threshold": 0.99})
    assert split.status_code == 200 and "into" in split.json(), split.text
    assert_reason(admin.get("/v1/clusters/987654"), 404, "not_found")
    clusters = admin.get("/v1/clusters", params={"min_size": 1}).json()
    target = clusters[0]
    named = admin.post(f"/v1/clusters/{target['cluster']}/name", json={"name": "Group Person"}).json()
    assert named["name"] == "Group Person" and named["faces_labeled"] >= 1
    assert admin.get("/v1/identities/Group Person").json()["faces"]


# --- erasure (last: it removes people) ------------------------------------------------------------


def test_erase_then_search(served) -> None:
    server, keys, gallery, _ = served
    admin = server.client(keys["admin"])
    before = post_photo(admin, lfw_photo("Al_Gore", 6)).json()["results"]
    assert any(r["identity"] == "Al_Gore" for r in before)
    faces = admin.get("/v1/identities/Al_Gore").json()["faces"]
    report = admin.post("/v1/identities/Al_Gore/erase").json()
    assert report["faces"] >= len(faces) and report["identities"] == 1  # with the other faces of their photos
    after = post_photo(admin, lfw_photo("Al_Gore", 6)).json()["results"]
    assert all(r["identity"] != "Al_Gore" for r in after)
    assert all(c["identity"] != "Al_Gore" and c["face_id"] not in {f["face_id"] for f in faces}
               for r in after for c in r["candidates"])
    assert_reason(admin.get("/v1/identities/Al_Gore"), 404)
    assert_reason(admin.get(f"/v1/faces/{faces[0]['face_id']}/crop"), 404)
    # an enrolled person's photo copies go with them
    enrolled = admin.get("/v1/identities/Angela B.").json()["faces"]
    assert all(Path(f["photo"]).exists() for f in enrolled)
    report = admin.post("/v1/identities/Angela B./erase").json()
    assert report["enrolled_files_removed"] == 2
    assert not any(Path(f["photo"]).exists() for f in enrolled)
    one = admin.get(f"/v1/identities/{LATE}").json()["faces"][0]["face_id"]
    assert admin.post(f"/v1/faces/{one}/erase").json()["faces"] == 1
    assert_reason(admin.get(f"/v1/faces/{one}"), 404)


def test_public_bind_without_keys_is_refused(tmp_path: Path) -> None:
    from gallery.store import Gallery

    Gallery.open_or_create(tmp_path / "g").close()
    result = gallery_cli("serve", "--gallery", str(tmp_path / "g"), "--host", "0.0.0.0", check=False)
    assert result.exit_code == 2
    assert "without API keys" in result.stderr and "--insecure" in result.stderr
    shutil.rmtree(tmp_path / "g")


def test_serve_imports_no_server_libraries_for_help() -> None:
    code = ("import sys\nfrom gallery.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


def test_a_concurrent_search_sees_a_consistent_gallery(served) -> None:
    """Four clients at once: every answer is a 200 (the searcher is shared under one lock)."""
    server, keys, _, _ = served
    data = lfw_photo("Ben_Affleck", 6).read_bytes()
    codes: list[int] = []

    def one() -> None:
        with server.client(keys["search"]) as c:
            codes.append(c.post("/v1/search", files={"file": ("b.jpg", data, "image/jpeg")}).status_code)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 4


def test_limits_answer_504_past_the_request_timeout_and_413_past_the_body_limit() -> None:
    """The limits middleware on a small app of its own (a slow endpoint; no model needed)."""
    import asyncio

    from fastapi.testclient import TestClient

    from gallery.server.limits import Limits

    app = fastapi.FastAPI()

    @app.post("/slow")
    async def slow(request: fastapi.Request) -> dict:
        await request.body()
        await asyncio.sleep(5)
        return {"late": True}

    app.add_middleware(Limits, max_body_bytes=1000, timeout_s=0.3)
    with TestClient(app) as client:
        late = client.post("/slow", content=b"x")
        assert late.status_code == 504 and late.json()["error"] == "timeout"
        assert "--request-timeout" in late.json()["detail"]
        big = client.post("/slow", content=b"x" * 1001)
        assert big.status_code == 413 and big.json()["error"] == "too_large"


def test_enrolling_into_an_empty_gallery_makes_it_searchable(tmp_path: Path) -> None:
    """The service's own path, in this process: an empty gallery answers `empty_gallery`; the first
    enrolment builds the index, and the next search finds the person."""
    if not lfw_available():
        pytest.skip(f"needs the LFW A–J photos at {LFW_IMAGES}")
    from gallery.server.config import ServeConfig
    from gallery.server.service import ApiError, SearchService
    from gallery.server.writes import enrol
    from gallery.store import Gallery

    root = tmp_path / "g"
    Gallery.open_or_create(root).close()
    config = ServeConfig(gallery=str(root), jobs_dir=str(tmp_path / "jobs"), enrol_dir=str(root / "enrolled"),
                         device="cpu")
    service = SearchService(root, "cpu")
    with pytest.raises(ApiError) as empty:
        with service.searcher():
            pass
    assert empty.value.status == 409 and empty.value.error == "empty_gallery"
    with Gallery.open(root) as g:
        result = enrol(config, g, "Al Gore", [(p.name, p.read_bytes()) for p in (lfw_photo("Al_Gore", 1),
                                                                                 lfw_photo("Al_Gore", 2))])
    assert result["faces_labeled"] == 2 and result["index"]["action"] == "build"
    try:
        with service.searcher() as s:
            _, answers = s.search(lfw_photo("Al_Gore", 6), largest_only=True)
        assert answers[0].identity == "Al Gore"
    finally:
        service.close()


def test_openapi_documents_every_answer(tmp_path: Path) -> None:
    """/openapi.json gives a schema for the success answer of every route (the typed answers of
    gallery.app.answers), and the search and verify uploads are documented forms with a JSON alternative."""
    from gallery.server.app import create_app
    from gallery.server.config import ServeConfig
    from gallery.store import Gallery

    Gallery.open_or_create(tmp_path / "g").close()
    config = ServeConfig(gallery=str(tmp_path / "g"), jobs_dir=str(tmp_path / "jobs"),
                         enrol_dir=str(tmp_path / "enrolled"), device="cpu")
    spec = create_app(config).openapi()
    missing = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            success = next(code for code in ("200", "201", "202") if code in operation["responses"])
            contents = operation["responses"][success].get("content") or {}
            schemas = [body.get("schema") or {} for body in contents.values()]
            # a named model (or a list of them), or an image: never a bare "object"
            if not any("$ref" in sc or "$ref" in sc.get("items", {}) or sc.get("format") == "binary"
                       for sc in schemas):
                missing.append(f"{method.upper()} {path} ({success})")
    assert not missing, "answers without a schema: " + ", ".join(missing)
    search = spec["paths"]["/v1/search"]["post"]
    assert search["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SearchAnswer"}
    bodies = search["requestBody"]["content"]
    assert "multipart/form-data" in bodies and "application/json" in bodies
    form = spec["components"]["schemas"][bodies["multipart/form-data"]["schema"]["$ref"].split("/")[-1]]
    assert {"file", "k", "threshold", "largest_only", "faces"} <= set(form["properties"])
    verify = spec["paths"]["/v1/verify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file_a", "file_b", "identity", "threshold"} <= set(
        spec["components"]["schemas"][verify["$ref"].split("/")[-1]]["properties"])
