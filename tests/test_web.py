"""The web page of `gallery serve` in headless Chromium (Debian's `chromium`, driven by Playwright):
the API-key prompt, "upload a photo and see the names", and "name a cluster on the People page and
see search answer that name"; plus merge and reject on the People page. Screenshots of both pages
go to $GALLERY_SCREENSHOTS when set (the issue's note)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import LFW_IMAGES, lfw_available, lfw_photo
from tests.test_serve import LABELED, UNLABELED, Server, shared_gallery

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the dev extra)")
pytest.importorskip("fastapi", reason="the browser tests need the [server] extra")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STRANGER = "Amelia_Vega"  # in the gallery only as unlabeled faces: a cluster to name
assert STRANGER in UNLABELED and "Al_Gore" in LABELED
SHOTS = Path(os.environ["GALLERY_SCREENSHOTS"]) if os.environ.get("GALLERY_SCREENSHOTS") else None


def shoot(page: sync_api.Page, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / name), full_page=True)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(browser, tmp_path_factory: pytest.TempPathFactory):
    if not lfw_available():
        pytest.skip(f"needs the LFW A–J photos at {LFW_IMAGES} (../shared/data/lfw-aj beside the repository)")
    from gallery.store import Gallery

    gallery = shared_gallery(tmp_path_factory, "web")
    root = gallery.parent
    with Gallery.open(gallery) as g:
        key = g.create_key("browser", ["admin"])[1]
    server = Server(gallery, log=root / "serve.log")
    yield server, key, browser
    server.close()


def open_page(site, with_key: bool = True) -> sync_api.Page:
    server, key, browser = site
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(server.url + "/")
    if with_key:
        page.wait_for_selector("#key-dialog[open]")  # no key yet: the server answered 401, the page asks
        page.fill("#key-input", key)
        page.click("#key-save")
        sync_api.expect(page.locator("#gallery-status")).to_contain_text("people")
    return page


def search_on_page(page: sync_api.Page, photo: Path) -> None:
    page.click("#tab-search")
    page.set_input_files("#photo-input", str(photo))
    page.wait_for_selector(".box")
    sync_api.expect(page.locator("#message")).to_contain_text("face(s)")


def test_key_prompt_then_upload_a_photo_and_see_the_names(site) -> None:
    page = open_page(site)
    search_on_page(page, lfw_photo("Al_Gore", 6))
    labels = page.locator(".box span").all_inner_texts()
    assert any(label.endswith("Al_Gore") for label in labels), labels
    assert page.locator("#answers li").count() == len(labels)
    page.wait_for_function("[...document.querySelectorAll('.candidate img')].every(i => i.complete && i.naturalWidth)")
    shoot(page, "issue13_search.png")
    # a face of no one in the gallery's names: "unknown" with its nearest candidates
    search_on_page(page, lfw_photo("Angela_Bassett", 1))
    assert "unknown" in page.locator(".box span").first.inner_text()
    assert page.locator(".candidate").count() >= 1
    page.close()


def test_name_a_cluster_on_the_people_page_and_search_answers_that_name(site) -> None:
    page = open_page(site)
    page.click("#tab-people")
    page.click("#group-button")  # clustering runs as a server job; the page follows it
    sync_api.expect(page.locator("#message")).to_contain_text("faces in all", timeout=120_000)
    card = page.locator(".card.cluster").first
    card.wait_for()
    page.wait_for_function("[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth)")
    shoot(page, "issue13_people.png")
    card.locator("input.cluster-name").fill("Mystery Guest")
    card.locator("button.name-cluster").click()
    sync_api.expect(page.locator("#message")).to_contain_text("Mystery Guest")
    sync_api.expect(page.locator(".card.identity", has_text="Mystery Guest")).to_have_count(1)
    search_on_page(page, lfw_photo(STRANGER, 5))
    labels = page.locator(".box span").all_inner_texts()
    assert any(label.endswith("Mystery Guest") for label in labels), labels
    page.close()


def test_merge_two_people_and_reject_a_face_on_the_people_page(site) -> None:
    server, key, _ = site
    page = open_page(site)
    page.click("#tab-people")
    for name in ("Ben_Affleck", "Celine_Dion"):
        page.locator(".card.identity", has_text=name).locator("input[type=checkbox]").check()
    page.fill("#merge-into", "Two Of Them")
    page.click("#merge-button")
    sync_api.expect(page.locator("#message")).to_contain_text("Merged into 'Two Of Them'")
    with server.client(key) as c:
        faces = c.get("/v1/identities/Two Of Them").json()["faces"]
        assert len(faces) == 6
        assert c.get("/v1/identities/Ben_Affleck").status_code == 404
    card = page.locator(".card.identity", has_text="Two Of Them")
    card.locator("button", has_text="Faces").click()
    page.locator("#identity-detail .face button").first.click()
    sync_api.expect(page.locator("#message")).to_contain_text("is no longer 'Two Of Them'")
    with server.client(key) as c:
        assert len(c.get("/v1/identities/Two Of Them").json()["faces"]) == 5
    page.close()


def test_an_empty_gallery_without_keys(browser, tmp_path: Path) -> None:
    """A new, empty gallery without keys served on loopback: the page asks for no key and shows why
    nothing can be searched yet (enrolling into an empty gallery: test_serve)."""
    from gallery.store import Gallery

    Gallery.open_or_create(tmp_path / "g").close()
    server = Server(tmp_path / "g", log=tmp_path / "serve.log")
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        sync_api.expect(page.locator("#gallery-status")).to_contain_text("0 people")
        assert page.locator("#key-dialog[open]").count() == 0
        if lfw_available():
            page.set_input_files("#photo-input", str(lfw_photo("Al_Gore", 6)))
            sync_api.expect(page.locator("#message")).to_contain_text("empty_gallery: ")
        page.close()
    finally:
        server.close()


def test_a_person_whose_name_holds_a_slash_opens_on_the_people_page(site) -> None:
    server, key, _ = site
    with server.client(key) as c:
        assert c.post("/v1/identities/Al_Gore/rename", json={"to": "Gore/Al"}).status_code == 200
    page = open_page(site)
    page.click("#tab-people")
    page.locator(".card.identity", has_text="Gore/Al").locator("button", has_text="Faces").click()
    sync_api.expect(page.locator("#identity-detail h3")).to_contain_text("Gore/Al: 3 faces")
    assert page.locator("#identity-detail .face").count() == 3
    page.close()


def test_a_clusters_doubtful_faces_come_first_and_strict_naming_leaves_them(browser, tmp_path: Path) -> None:
    """A group with one stranger in it (made-up embeddings, no photos: the crops are missing): the page
    lists the stranger first, marked, and the Name button leaves it unnamed and shows it."""
    from search.cluster import cluster_gallery
    from tests.test_cluster_precision import SETTING, gallery_with_an_intruder

    root = tmp_path / "g"
    ids, stranger = gallery_with_an_intruder(root)
    cluster_gallery(root, **SETTING)
    server = Server(root, log=tmp_path / "serve.log")
    try:
        with server.client() as c:
            [cluster] = c.get("/v1/clusters").json()
            api_order = [f["face_id"] for f in c.get(f"/v1/clusters/{cluster['cluster']}").json()["faces"]]
        assert api_order[0] == stranger
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server.url + "/")
        page.click("#tab-people")
        card = page.locator(".card.cluster").first
        card.locator("button", has_text="Faces").click()
        faces = page.locator("#cluster-detail .face")
        sync_api.expect(faces).to_have_count(9)
        assert [int(v) for v in faces.evaluate_all("els => els.map(e => e.dataset.faceId)")] == api_order
        assert faces.first.get_attribute("class") == "face doubtful"
        assert page.locator("#cluster-detail .face.doubtful").count() == 1
        assert "far from the rest" in faces.first.get_attribute("title")
        sync_api.expect(page.locator("#cluster-detail h3")).to_contain_text("1 far from the rest first")
        shoot(page, "issue30_doubtful_first.png")
        card.locator("input.cluster-name").fill("Dana")
        card.locator("button.name-cluster").click()
        sync_api.expect(page.locator("#message")).to_contain_text("Named 8 faces 'Dana'")
        sync_api.expect(page.locator("#message")).to_contain_text("1 face far from the rest of the group left unnamed")
        sync_api.expect(page.locator("#cluster-detail .face.doubtful")).to_have_count(1)
        with server.client() as c:
            assert len(c.get("/v1/identities/Dana").json()["faces"]) == 8
        page.close()
    finally:
        server.close()
