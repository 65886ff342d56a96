"""Erasing over HTTP says what becomes of the photo archive and, as `gallery identities erase` does by
default, keeps the erased photos out of the next ingest of that archive (`keep_out=false`: it does not,
and says the next ingest reads them in again)."""

from __future__ import annotations

import pytest

from tests.test_serve import Server, shared_gallery

pytest.importorskip("fastapi", reason="the server tests need the [server] extra")


def test_an_erasure_over_http_keeps_the_erased_photos_out_unless_told_not_to(tmp_path_factory) -> None:
    from gallery.ingest import ingest
    from gallery.store import Gallery

    gallery = shared_gallery(tmp_path_factory, "keep-out")
    archive = tmp_path_factory.getbasetemp() / "serve-gallery" / "archive"  # what the gallery was ingested from
    with Gallery.open(gallery) as g:
        key = g.create_key("admin", ["admin"])[1]
    server = Server(gallery, log=gallery.parent / "serve.log")
    try:
        with server.client(key) as c:
            kept = c.post("/v1/identities/Ben_Affleck/erase").json()
            assert kept["status"] == "done" and kept["photos"] == 3 and kept["kept_out"] == 3
            assert "keep the 3 erased photos out" in kept["archive"] and "gallery photos admit" in kept["archive"]
            back = c.post("/v1/identities/Celine_Dion/erase", params={"keep_out": "false"}).json()
            assert back["status"] == "done" and back["kept_out"] == 0
            assert "reads them in again" in back["archive"] and "gallery photos keep-out" in back["archive"]
    finally:
        server.close()
    summary = ingest(archive, gallery, workers=0)
    assert summary.kept_out == 3 and summary.photos == 3  # Ben Affleck's stay out, Celine Dion's come back
    with Gallery.open(gallery) as g:
        names = {name for _, name, n in g.identity_rows() if n}
    assert "Ben_Affleck" not in names and "Celine_Dion" in names
