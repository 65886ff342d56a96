"""XMP face regions: what the product reads agrees with exiftool, the reference XMP reader, for MWG
regions (digiKam, Lightroom, Picasa) and Microsoft Photo regions, embedded and in sidecars; malformed
or hostile XMP is a recorded warning; `--labels xmp` names the faces the regions cover."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gallery.faces.xmp import (
    XmpError,
    extract_packet,
    match_regions,
    parse_regions,
    read_photo_regions,
)
from tests.conftest import lfw_photo, requires_lfw

EXIFTOOL = shutil.which("exiftool")
requires_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="needs exiftool, the reference XMP reader (apt-get install libimage-exiftool-perl)")


def exiftool(*args: str) -> str:
    return subprocess.run([EXIFTOOL, *args], check=True, capture_output=True, text=True).stdout  # type: ignore[list-item]


def exif_regions(path: Path) -> list[tuple[str, float, float, float, float]]:
    """exiftool's reading of a file's MWG face regions: (name, x1, y1, x2, y2) normalised."""
    data = json.loads(exiftool("-j", "-struct", "-XMP-mwg-rs:RegionInfo", str(path)))[0]
    out = []
    for r in data.get("RegionInfo", {}).get("RegionList", []):
        if r.get("Type", "Face") != "Face" or not r.get("Name"):
            continue
        a = r["Area"]
        out.append((str(r["Name"]), a["X"] - a["W"] / 2, a["Y"] - a["H"] / 2, a["X"] + a["W"] / 2, a["Y"] + a["H"] / 2))
    return out


def mwg_struct(regions: list[tuple[str, float, float, float, float]], width: int, height: int) -> str:
    """exiftool's struct syntax for MWG regions given as (name, centre x, centre y, w, h)."""
    items = ",".join(f"{{Area={{W={w},H={h},X={x},Y={y},Unit=normalized}},Name={n},Type=Face}}"
                     for n, x, y, w, h in regions)
    return f"{{AppliedToDimensions={{W={width},H={height},Unit=pixel}},RegionList=[{items}]}}"


def ours(path: Path, width: int, height: int, orientation: int = 1) -> list[tuple[str, float, float, float, float]]:
    data = path.read_bytes()
    packet = data if path.suffix.lower() == ".xmp" else extract_packet(data)
    assert packet is not None
    return [(r.name, r.x1, r.y1, r.x2, r.y2) for r in parse_regions(packet, width, height, orientation)]


def assert_same(a, b) -> None:  # noqa: ANN001
    assert [r[0] for r in a] == [r[0] for r in b]
    np.testing.assert_allclose([r[1:] for r in a], [r[1:] for r in b], atol=1e-6)


REGIONS = [("Ann Lee", 0.25, 0.5, 0.25, 0.5), ("Bob", 0.75, 0.4, 0.2, 0.4)]


@requires_exiftool
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_embedded_mwg_regions_read_as_exiftool_reads_them(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    Image.new("RGB", (400, 200), (90, 90, 90)).save(path)
    # a pet region and an unnamed one: not faces to name
    extra = ",{Area={W=0.1,H=0.1,X=0.1,Y=0.1,Unit=normalized},Name=Rex,Type=Pet}"
    struct = mwg_struct(REGIONS, 400, 200).replace("}]}", "}" + extra + "]}")
    exiftool("-q", "-overwrite_original", f"-XMP-mwg-rs:RegionInfo={struct}", str(path))
    assert_same(ours(path, 400, 200), exif_regions(path))
    assert [r[0] for r in ours(path, 400, 200)] == ["Ann Lee", "Bob"]


@requires_exiftool
def test_microsoft_regions_read_as_exiftool_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    Image.new("RGB", (400, 200)).save(path)
    exiftool("-q", "-overwrite_original",
             "-XMP-MP:RegionInfoMP={Regions=[{PersonDisplayName=Cy,Rectangle=0.5|, 0.1|, 0.2|, 0.4}]}", str(path))
    data = json.loads(exiftool("-j", "-struct", "-XMP-MP:RegionInfoMP", str(path)))[0]
    x, y, w, h = (float(v) for v in data["RegionInfoMP"]["Regions"][0]["Rectangle"].split(","))
    assert_same(ours(path, 400, 200), [("Cy", x, y, x + w, y + h)])


@requires_exiftool
def test_sidecar_wins_over_embedded_and_both_forms_of_rdf_are_read(tmp_path: Path) -> None:
    photo = tmp_path / "x.jpg"
    Image.new("RGB", (400, 200)).save(photo)
    exiftool("-q", "-overwrite_original", f"-XMP-mwg-rs:RegionInfo={mwg_struct(REGIONS[:1], 400, 200)}", str(photo))
    # digiKam's sidecar style: fields as attributes, struct values in rdf:Description
    sidecar = tmp_path / "x.jpg.xmp"
    sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")
    assert_same(ours(sidecar, 400, 200), exif_regions(sidecar))
    read = read_photo_regions(photo, extract_packet(photo.read_bytes()), 400, 200)
    assert read.source == str(sidecar) and [r.name for r in read.regions] == ["Dana", "Eve"]
    sidecar.unlink()
    read = read_photo_regions(photo, extract_packet(photo.read_bytes()), 400, 200)
    assert read.source == "embedded" and [r.name for r in read.regions] == ["Ann Lee"]


DIGIKAM_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
    xmlns:dc="http://purl.org/dc/elements/1.1/">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions stDim:w="400" stDim:h="200" stDim:unit="pixel"/>
    <mwg-rs:RegionList>
     <rdf:Bag>
      <rdf:li>
       <rdf:Description mwg-rs:Name="Dana" mwg-rs:Type="Face">
        <mwg-rs:Area stArea:x="0.3" stArea:y="0.5" stArea:w="0.2" stArea:h="0.4" stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
      <rdf:li>
       <rdf:Description mwg-rs:Name="Eve" mwg-rs:Type="Face">
        <mwg-rs:Area stArea:x="0.7" stArea:y="0.5" stArea:w="0.2" stArea:h="0.4" stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_regions_written_against_the_stored_frame_are_turned_with_the_photo() -> None:
    # a photo shown 200x400 (orientation 6: stored 400x200, turned 90 degrees clockwise); the region
    # was written against the stored 400x200 frame, top-left quarter of it
    stored = DIGIKAM_SIDECAR.replace('stArea:x="0.3" stArea:y="0.5" stArea:w="0.2" stArea:h="0.4"',
                                     'stArea:x="0.25" stArea:y="0.25" stArea:w="0.5" stArea:h="0.5"')
    regions = parse_regions(stored.encode(), 200, 400, 6)
    assert regions[0].name == "Dana"
    np.testing.assert_allclose([regions[0].x1, regions[0].y1, regions[0].x2, regions[0].y2], [0.5, 0, 1, 0.5])
    # the same region with AppliedToDimensions of the shown frame is already in it
    shown = stored.replace('stDim:w="400" stDim:h="200"', 'stDim:w="200" stDim:h="400"')
    regions = parse_regions(shown.encode(), 200, 400, 6)
    np.testing.assert_allclose([regions[0].x1, regions[0].y1, regions[0].x2, regions[0].y2], [0, 0, 0.5, 0.5])


@pytest.mark.parametrize("packet,why", [
    (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF", "not well-formed"),
    (b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<x:xmpmeta xmlns:x='adobe:ns:meta/'>&lol2;</x:xmpmeta>""", "refused"),
    (b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<x:xmpmeta xmlns:x='adobe:ns:meta/'>&e;</x:xmpmeta>""", "refused"),
    (DIGIKAM_SIDECAR.replace('stArea:x="0.3"', 'stArea:x="left"').encode(), "not a number"),
])
def test_malformed_or_hostile_xmp_is_an_error_with_its_reason(packet: bytes, why: str) -> None:
    with pytest.raises(XmpError, match=why):
        parse_regions(packet, 400, 200)


def test_a_malformed_sidecar_is_a_warning_and_the_embedded_regions_still_serve(tmp_path: Path) -> None:
    photo = tmp_path / "x.jpg"
    photo.write_bytes(b"")
    (tmp_path / "x.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><oops")
    read = read_photo_regions(photo, DIGIKAM_SIDECAR.encode(), 400, 200)
    assert [r.name for r in read.regions] == ["Dana", "Eve"]
    assert read.warning and "x.xmp" in read.warning and "not well-formed" in read.warning


def test_each_region_takes_the_face_it_overlaps_most_once() -> None:
    faces = [(0, 0, 10, 10), (20, 0, 30, 10), (100, 100, 110, 110)]
    regions = [(21, 1, 31, 11), (0, 0, 14, 14), (1, 1, 11, 11), (50, 50, 60, 60)]
    # region 2 overlaps face 0 more than region 1 does: it takes it; region 1 gets nothing
    assert match_regions(regions, faces, 0.3) == [1, None, 0, None]


# --- --labels xmp in an ingest (real faces) --------------------------------------------------------------

def _two_people(tmp_path: Path) -> tuple[Path, list[tuple[float, float, float, float]]]:
    """A 750x250 photo: two LFW faces side by side and a blank third; returns the path and the boxes
    (normalised, as a tagging tool would draw them) of the two faces and of the blank part."""
    canvas = Image.new("RGB", (750, 250), (128, 128, 128))
    canvas.paste(Image.open(lfw_photo("Aaron_Peirsol", 1)), (0, 0))
    canvas.paste(Image.open(lfw_photo("Abdullah_Gul", 1)), (250, 0))
    path = tmp_path / "archive" / "two.jpg"
    path.parent.mkdir(parents=True)
    canvas.save(path, quality=95)
    return path, [(80 / 750, 70 / 250, 170 / 750, 180 / 250), (330 / 750, 70 / 250, 420 / 750, 180 / 250),
                  (580 / 750, 80 / 250, 670 / 750, 170 / 250)]


@requires_lfw
@requires_exiftool
def test_ingest_with_xmp_labels_names_the_faces_the_regions_cover(tmp_path: Path) -> None:
    from gallery.ingest import ingest

    photo, boxes = _two_people(tmp_path)
    names = ["Aaron Peirsol", "Abdullah Gul", "Nobody Seen"]
    regions = [(n, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]) for n, b in zip(names, boxes)]
    exiftool("-q", "-overwrite_original", f"-XMP-mwg-rs:RegionInfo={mwg_struct(regions, 750, 250)}", str(photo))
    summary = ingest(photo.parent, tmp_path / "g", workers=0, labels="xmp")
    assert (summary.xmp_regions, summary.xmp_matched, summary.xmp_from_region) == (3, 2, 1)
    faces = _faces(tmp_path / "g")
    assert [f[0] for f in faces] == names
    assert faces[2][1] == 0.0 and faces[2][2] is not None  # embedded from its own box: flagged
    assert faces[0][1] > 0.9 and faces[0][2] is None and faces[1][2] is None


def _faces(gallery: Path) -> list[tuple[str | None, float, str | None]]:
    """(identity name, detection score, quality issue) of every face, left to right."""
    import sqlite3

    with sqlite3.connect(gallery / "gallery.db") as db:
        return db.execute("SELECT i.name, f.det_score, f.quality_issue FROM faces f LEFT JOIN identities i "
                          "ON i.identity_id = f.identity_id ORDER BY f.x1").fetchall()


@requires_lfw
def test_malformed_xmp_is_recorded_and_the_photo_still_ingested(tmp_path: Path) -> None:
    from gallery.ingest import ingest

    photo, _ = _two_people(tmp_path)
    (photo.parent / "two.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><broken", encoding="utf-8")
    summary = ingest(photo.parent, tmp_path / "g", workers=0, labels="xmp+folder")
    assert summary.faces == 2 and summary.xmp_warnings == 1
    assert "two.xmp" in summary.xmp_warning_examples[0] and "not well-formed" in summary.xmp_warning_examples[0]


# --- XMP out: MWG regions into sidecars ------------------------------------------------------------------

@requires_exiftool
def test_written_sidecar_reads_back_in_exiftool_and_in_the_product(tmp_path: Path) -> None:
    from gallery.faces.xmp import Region, merge_regions

    regions = [Region("Ann Lee", 0.1, 0.2, 0.3, 0.6, "mwg"), Region("Zoë", 0.6, 0.1, 0.8, 0.5, "mwg")]
    change = merge_regions(None, regions, 400, 200, "x.jpg.xmp")
    assert change.action == "create" and change.added == ["Ann Lee", "Zoë"]
    sidecar = tmp_path / "x.jpg.xmp"
    sidecar.write_bytes(change.content)
    expected = [(r.name, r.x1, r.y1, r.x2, r.y2) for r in regions]
    assert_same(exif_regions(sidecar), expected)
    assert_same(ours(sidecar, 400, 200), expected)
    dims = json.loads(exiftool("-j", "-struct", "-XMP-mwg-rs:RegionInfo", str(sidecar)))[0]["RegionInfo"]
    assert dims["AppliedToDimensions"] == {"W": 400, "H": 200, "Unit": "pixel"}


@requires_exiftool
def test_merging_keeps_other_fields_and_regions_and_replaces_the_same_face(tmp_path: Path) -> None:
    from gallery.faces.xmp import Region, merge_regions

    sidecar = tmp_path / "x.jpg.xmp"
    sidecar.write_text(DIGIKAM_SIDECAR, encoding="utf-8")  # Dana at x 0.2-0.4, Eve at 0.6-0.8; a dc:subject
    # the gallery names Eve's face "Eve Adams" and a new face; it knows nothing of Dana
    regions = [Region("Eve Adams", 0.61, 0.31, 0.79, 0.69, "mwg"), Region("Finn", 0.02, 0.1, 0.12, 0.3, "mwg")]
    change = merge_regions(sidecar.read_bytes(), regions, 400, 200, str(sidecar))
    assert change.action == "update" and change.added == ["Finn"] and change.replaced == ["Eve → Eve Adams"]
    assert change.kept == 1
    sidecar.write_bytes(change.content)
    tags = json.loads(exiftool("-j", "-struct", "-XMP:all", str(sidecar)))[0]
    assert tags["Subject"] in ("holiday", ["holiday"])  # the sidecar's other fields are kept
    names = sorted(r[0] for r in exif_regions(sidecar))
    assert names == ["Dana", "Eve Adams", "Finn"]
    assert sorted(r[0] for r in ours(sidecar, 400, 200)) == names
    # the same names again: nothing to change
    again = merge_regions(sidecar.read_bytes(), regions, 400, 200, str(sidecar))
    assert again.action == "unchanged" and again.content is None


@requires_lfw
@requires_exiftool
def test_labels_export_xmp_writes_the_gallery_names_next_to_the_photos(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gallery.cli import app
    from gallery.ingest import ingest

    photo, boxes = _two_people(tmp_path)
    named = tmp_path / "archive" / "Aaron_Peirsol"
    named.mkdir()
    single = named / "one.jpg"
    shutil.copyfile(lfw_photo("Aaron_Peirsol", 2), single)
    photo_bytes = single.read_bytes()
    ingest(tmp_path / "archive", tmp_path / "g", workers=0, labels="folder")
    runner = CliRunner()
    dry = runner.invoke(app, ["labels", "export", "--xmp", "--dry-run", "--gallery", str(tmp_path / "g")])
    assert dry.exit_code == 0, dry.output
    assert "would create" in dry.output and "one.jpg.xmp" in dry.output and "+Aaron_Peirsol" in dry.output
    assert not (named / "one.jpg.xmp").exists()
    done = runner.invoke(app, ["labels", "export", "--xmp", "--gallery", str(tmp_path / "g")])
    assert done.exit_code == 0, done.output
    assert single.read_bytes() == photo_bytes  # the photo file is never rewritten
    regions = exif_regions(named / "one.jpg.xmp")
    assert [r[0] for r in regions] == ["Aaron_Peirsol"]
    x1, y1, x2, y2 = regions[0][1:]
    assert 0.2 < x1 < x2 < 0.8 and 0.2 < y1 < y2 < 0.8  # the face of an LFW photo, centred
    assert not (photo.parent / "two.jpg.xmp").exists()  # no named face there (directly in the source)
    # read back by --labels xmp into a new gallery: the same name on the same face
    summary = ingest(tmp_path / "archive", tmp_path / "g2", workers=0, labels="xmp")
    assert summary.xmp_regions == 1 and summary.xmp_matched == 1
    again = runner.invoke(app, ["labels", "export", "--xmp", "--gallery", str(tmp_path / "g")])
    assert "1 unchanged" in again.output
