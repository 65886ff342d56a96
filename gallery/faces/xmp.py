"""XMP face regions: the names people gave faces in digiKam, Lightroom, Picasa (MWG regions,
`mwg-rs:Regions`) and Windows Photo Gallery (`MP:RegionInfo`), read from a photo's embedded XMP packet
or its `.xmp` sidecar, and written back as MWG regions into sidecars.

Geometry. MWG areas are normalised (0-1) and centre-based (`stArea:x/y` is the centre), Microsoft
rectangles are normalised and top-left based. Both are taken in the frame of the photo as shown (EXIF
orientation applied), which is what the MWG guidelines ask for and what digiKam and Lightroom write;
when the orientation turns the photo by 90 degrees and the region's `AppliedToDimensions` match the
stored (unturned) size instead, the areas are turned with the photo.

Which regions. A sidecar with face regions wins over the embedded packet (digiKam and Lightroom keep
the sidecar current for files they do not rewrite); within one packet MWG regions win over Microsoft
ones (digiKam writes both for the same faces). Only regions of type Face (or of no type) with a name
are used.

Parsing uses defusedxml: a document with entity declarations or external references is refused (no
entity expansion), and any malformed packet is an `XmpError` for the caller to record, never a crash.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET  # noqa: S405 - only for building and serialising; parsing is defusedxml

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
X = "adobe:ns:meta/"
MWG_RS = "http://www.metadataworkinggroup.com/schemas/regions/"
ST_AREA = "http://ns.adobe.com/xmp/sType/Area#"
ST_DIM = "http://ns.adobe.com/xap/1.0/sType/Dimensions#"
MP = "http://ns.microsoft.com/photo/1.2/"
MPRI = "http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
MPREG = "http://ns.microsoft.com/photo/1.2/t/Region#"
PREFIXES = {"x": X, "rdf": RDF, "mwg-rs": MWG_RS, "stArea": ST_AREA, "stDim": ST_DIM, "MP": MP, "MPRI": MPRI,
            "MPReg": MPREG}

MAX_PACKET_BYTES = 4 * 2**20  # an XMP packet larger than this is not read
_PACKET = re.compile(rb"<x:xmpmeta[\s>].*?</x:xmpmeta>", re.DOTALL)
_PACKET_SCAN_BYTES = 64 * 2**20  # where in a file the packet is looked for


class XmpError(Exception):
    """Malformed or refused XMP: the message says which and why."""


@dataclass(frozen=True)
class Region:
    """A named face region, normalised to the photo as shown: x1 y1 x2 y2 in 0-1."""

    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    schema: str  # mwg | mp

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """In pixels of the photo as shown (`width` x `height`)."""
        return self.x1 * width, self.y1 * height, self.x2 * width, self.y2 * height


@dataclass(frozen=True)
class PhotoRegions:
    regions: list[Region]
    source: str | None  # the sidecar's path, "embedded", or None when there are none
    warning: str | None = None  # a malformed sidecar or packet (the other source may still have served)


def extract_packet(data: bytes) -> bytes | None:
    """The first XMP packet (`<x:xmpmeta>...</x:xmpmeta>`) embedded in a file's bytes, whatever the
    container (JPEG APP1, PNG iTXt, TIFF/DNG tag, HEIC item, WebP chunk), or None."""
    start = data.find(b"<x:xmpmeta", 0, _PACKET_SCAN_BYTES)
    if start < 0:
        return None
    match = _PACKET.match(data, start, min(len(data), start + MAX_PACKET_BYTES))
    return match.group(0) if match else data[start : start + MAX_PACKET_BYTES]  # unterminated: parse says so


def sidecar_paths(photo: Path) -> list[Path]:
    """Where a photo's sidecar may be: `IMG_1.xmp` (Lightroom, darktable's import) and `IMG_1.jpg.xmp`
    (digiKam, darktable), either case of the extension."""
    photo = Path(photo)
    names = [photo.with_suffix(".xmp"), photo.with_suffix(".XMP"), photo.with_name(photo.name + ".xmp"),
             photo.with_name(photo.name + ".XMP")]
    return list(dict.fromkeys(names))


def existing_sidecar(photo: Path) -> Path | None:
    for candidate in sidecar_paths(photo):
        if candidate.is_file():
            return candidate
    return None


def parse_xml(packet: bytes) -> ET.Element:
    """The XML tree of an XMP packet or sidecar; XmpError for malformed XML or entity declarations."""
    import defusedxml
    from defusedxml.ElementTree import fromstring

    try:
        return fromstring(packet, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise XmpError(f"refused: {type(exc).__name__} (entity declarations and DTDs are not read)") from None
    except ET.ParseError as exc:
        raise XmpError(f"not well-formed XML ({exc})") from None


def _q(prefix: str, name: str) -> str:
    return f"{{{PREFIXES[prefix]}}}{name}"


def _struct(el: ET.Element) -> ET.Element:
    """The node holding a structure's fields: the element itself (parseType="Resource" or attributes)
    or its rdf:Description child."""
    inner = el.find(_q("rdf", "Description"))
    return inner if inner is not None else el


def _field(node: ET.Element, qname: str) -> str | None:
    """A simple property written as an attribute or as a child element's text."""
    if qname in node.attrib:
        return node.attrib[qname]
    child = node.find(qname)
    if child is None:
        return None
    if child.text and child.text.strip():
        return child.text.strip()
    alt = child.find(f"{_q('rdf', 'Alt')}/{_q('rdf', 'li')}")  # a language alternative
    return alt.text.strip() if alt is not None and alt.text else None


def _float(node: ET.Element, qname: str) -> float | None:
    value = _field(node, qname)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise XmpError(f"{qname.split('}')[-1]} is not a number: {value[:40]!r}") from None


def _items(node: ET.Element, qname: str) -> list[ET.Element]:
    container = node.find(qname)
    if container is None:
        return []
    for kind in ("Bag", "Seq", "Alt"):
        array = container.find(_q("rdf", kind))
        if array is not None:
            return [_struct(li) for li in array.findall(_q("rdf", "li"))]
    return []


def _clip(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float] | None:
    x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(1.0, x2), min(1.0, y2)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _mwg_regions(root: ET.Element) -> tuple[list[Region], tuple[float, float] | None]:
    regions: list[Region] = []
    applied: tuple[float, float] | None = None
    for regions_el in root.iter(_q("mwg-rs", "Regions")):
        node = _struct(regions_el)
        dims = node.find(_q("mwg-rs", "AppliedToDimensions"))
        if dims is not None:
            dims = _struct(dims)
            w, h = _float(dims, _q("stDim", "w")), _float(dims, _q("stDim", "h"))
            if w and h:
                applied = (w, h)
        for item in _items(node, _q("mwg-rs", "RegionList")):
            kind = _field(item, _q("mwg-rs", "Type"))
            name = (_field(item, _q("mwg-rs", "Name")) or "").strip()
            area = item.find(_q("mwg-rs", "Area"))
            if not name or (kind is not None and kind != "Face") or area is None:
                continue
            area = _struct(area)
            x, y = _float(area, _q("stArea", "x")), _float(area, _q("stArea", "y"))
            w, h = _float(area, _q("stArea", "w")), _float(area, _q("stArea", "h"))
            unit = _field(area, _q("stArea", "unit")) or "normalized"
            if None in (x, y, w, h):
                raise XmpError(f"the region of {name!r} has no complete stArea x/y/w/h")
            if unit != "normalized":
                if applied is None:
                    raise XmpError(f"the region of {name!r} is in {unit!r} units without AppliedToDimensions")
                x, w, y, h = x / applied[0], w / applied[0], y / applied[1], h / applied[1]
            box = _clip(x - w / 2, y - h / 2, x + w / 2, y + h / 2)  # type: ignore[operator]
            if box is not None:
                regions.append(Region(name, *box, schema="mwg"))
    return regions, applied


def _mp_regions(root: ET.Element) -> list[Region]:
    regions: list[Region] = []
    for info in root.iter(_q("MP", "RegionInfo")):
        for item in _items(_struct(info), _q("MPRI", "Regions")):
            name = (_field(item, _q("MPReg", "PersonDisplayName")) or "").strip()
            rect = _field(item, _q("MPReg", "Rectangle"))
            if not name or not rect:
                continue
            try:
                x, y, w, h = (float(v) for v in rect.split(","))
            except ValueError:
                raise XmpError(f"the rectangle of {name!r} is not 'x, y, w, h': {rect[:60]!r}") from None
            box = _clip(x, y, x + w, y + h)
            if box is not None:
                regions.append(Region(name, *box, schema="mp"))
    return regions


# EXIF orientation → the normalised point of the shown photo for a point (u, v) of the stored one.
_TURN = {
    1: lambda u, v: (u, v), 2: lambda u, v: (1 - u, v), 3: lambda u, v: (1 - u, 1 - v), 4: lambda u, v: (u, 1 - v),
    5: lambda u, v: (v, u), 6: lambda u, v: (1 - v, u), 7: lambda u, v: (1 - v, 1 - u), 8: lambda u, v: (v, 1 - u),
}


def _turn(region: Region, orientation: int) -> Region:
    (a, b), (c, d) = _TURN[orientation](region.x1, region.y1), _TURN[orientation](region.x2, region.y2)
    return Region(region.name, min(a, c), min(b, d), max(a, c), max(b, d), region.schema)


def parse_regions(packet: bytes, width: int = 0, height: int = 0, orientation: int = 1) -> list[Region]:
    """The named face regions of one XMP packet or sidecar, normalised to the photo as shown
    (`width` x `height`, its EXIF `orientation`; see the module docstring). XmpError when malformed."""
    root = parse_xml(packet)
    mwg, applied = _mwg_regions(root)
    if mwg:
        if orientation in (5, 6, 7, 8) and applied and width and height and width != height:
            shown = width / height
            if abs(applied[0] / applied[1] - 1 / shown) < abs(applied[0] / applied[1] - shown):
                return [_turn(r, orientation) for r in mwg]  # written against the stored frame
        return mwg
    return _mp_regions(root)


def read_photo_regions(path: Path, packet: bytes | None, width: int, height: int,
                       orientation: int = 1) -> PhotoRegions:
    """A photo's named face regions: its sidecar's when that has any, else its embedded packet's.
    A malformed source is a warning; the other source still serves."""
    warnings: list[str] = []
    sidecar = existing_sidecar(Path(path))
    if sidecar is not None:
        try:
            data = sidecar.read_bytes()[: MAX_PACKET_BYTES + 1]
            if len(data) > MAX_PACKET_BYTES:
                raise XmpError(f"over {MAX_PACKET_BYTES:,} bytes")
            regions = parse_regions(data, width, height, orientation)
            if regions:
                return PhotoRegions(regions, str(sidecar))
        except (XmpError, OSError) as exc:
            warnings.append(f"sidecar {os.path.basename(sidecar)}: {exc}")
    if packet is not None:
        try:
            regions = parse_regions(packet, width, height, orientation)
            if regions:
                return PhotoRegions(regions, "embedded", "; ".join(warnings) or None)
        except XmpError as exc:
            warnings.append(f"embedded XMP: {exc}")
    return PhotoRegions([], None, "; ".join(warnings) or None)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_regions(region_boxes: list[tuple[float, float, float, float]],
                  face_boxes: list[tuple[float, float, float, float]], threshold: float) -> list[int | None]:
    """For each region, the detected face it overlaps most (IoU at least `threshold`), each face given
    to one region at most, best overlaps first; None where no face qualifies."""
    pairs = sorted(((iou(r, f), i, j) for i, r in enumerate(region_boxes) for j, f in enumerate(face_boxes)),
                   reverse=True)
    out: list[int | None] = [None] * len(region_boxes)
    taken: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if out[i] is None and j not in taken:
            out[i] = j
            taken.add(j)
    return out


# --- writing: MWG regions into a sidecar ----------------------------------------------------------------

EMPTY_SIDECAR = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                 b'<rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>')
XPACKET_BEGIN = "<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>\n".encode()
XPACKET_END = b"\n<?xpacket end='w'?>\n"
_XMLNS = re.compile(rb"""xmlns:([A-Za-z_][\w.-]*)\s*=\s*["']([^"']+)["']""")


def sidecar_for(photo: Path) -> Path:
    """The sidecar to write: the photo's existing one, else `NAME.EXT.xmp` (digiKam's and darktable's
    naming; `NAME.xmp` would be shared by `IMG_1.CR2` and `IMG_1.JPG`)."""
    return existing_sidecar(photo) or Path(photo).with_name(Path(photo).name + ".xmp")


def _region_element(region: Region) -> ET.Element:
    li = ET.Element(_q("rdf", "li"), {_q("rdf", "parseType"): "Resource"})
    area = ET.SubElement(li, _q("mwg-rs", "Area"), {_q("rdf", "parseType"): "Resource"})
    w, h = region.x2 - region.x1, region.y2 - region.y1
    for key, value in (("x", region.x1 + w / 2), ("y", region.y1 + h / 2), ("w", w), ("h", h)):
        ET.SubElement(area, _q("stArea", key)).text = f"{value:.6f}"
    ET.SubElement(area, _q("stArea", "unit")).text = "normalized"
    ET.SubElement(li, _q("mwg-rs", "Name")).text = region.name
    ET.SubElement(li, _q("mwg-rs", "Type")).text = "Face"
    return li


def _existing_items(root: ET.Element) -> list[tuple[ET.Element, Region | None]]:
    """The sidecar's MWG region items (as elements, to keep them whole) with the face region each holds
    (None: not a named face region, kept as it is)."""
    out: list[tuple[ET.Element, Region | None]] = []
    for regions_el in root.iter(_q("mwg-rs", "Regions")):
        container = _struct(regions_el).find(_q("mwg-rs", "RegionList"))
        if container is None:
            continue
        for array in container:
            for li in array.findall(_q("rdf", "li")):
                try:
                    found, _ = _mwg_regions(_wrap_one(li))
                except XmpError:
                    found = []
                out.append((li, found[0] if found else None))
    return out


def _wrap_one(li: ET.Element) -> ET.Element:
    """A Regions tree holding one item, to read it with the same code as a whole packet."""
    root = ET.Element("root")
    regions = ET.SubElement(root, _q("mwg-rs", "Regions"))
    bag = ET.SubElement(ET.SubElement(regions, _q("mwg-rs", "RegionList")), _q("rdf", "Bag"))
    bag.append(li)
    return root


@dataclass(frozen=True)
class SidecarChange:
    """What writing a photo's named faces does to its sidecar."""

    sidecar: str
    action: str  # create | update | unchanged
    added: list[str]  # names of regions the sidecar did not have
    replaced: list[str]  # "old → new" for face regions of the same face under another name
    kept: int  # regions of the sidecar left as they were (other faces, other region types)
    content: bytes | None = None  # the new sidecar (None when unchanged)


def merge_regions(existing: bytes | None, regions: list[Region], width: int, height: int,
                  sidecar: str = "") -> SidecarChange:
    """A sidecar holding `regions` (normalised, photo as shown) as MWG face regions, merged into
    `existing`: every other field is kept; an existing face region on the same face (IoU at least
    0.5) is replaced, other regions are kept. XmpError when `existing` is malformed (never overwritten)."""
    root = parse_xml(existing if existing is not None else EMPTY_SIDECAR)
    for prefix, uri in _XMLNS.findall(existing or b""):  # keep the file's own prefixes
        try:
            ET.register_namespace(prefix.decode(), uri.decode())
        except ValueError:
            pass
    for prefix, uri in PREFIXES.items():
        ET.register_namespace(prefix, uri)
    items = _existing_items(root)
    kept_items: list[ET.Element] = []
    added: list[str] = []
    replaced: list[str] = []
    unchanged = True
    claimed: set[int] = set()
    for new in regions:
        twin = next((i for i, (_, old) in enumerate(items) if old is not None and i not in claimed
                     and iou((old.x1, old.y1, old.x2, old.y2), (new.x1, new.y1, new.x2, new.y2)) >= 0.5), None)
        if twin is None:
            added.append(new.name)
            unchanged = False
            continue
        claimed.add(twin)
        old = items[twin][1]
        if old is not None and old.name != new.name:
            replaced.append(f"{old.name} → {new.name}")
            unchanged = False
    kept_items = [li for i, (li, _) in enumerate(items) if i not in claimed]
    if unchanged and existing is not None:
        return SidecarChange(sidecar, "unchanged", [], [], len(items))
    rdf = root.find(_q("rdf", "RDF")) if root.tag != _q("rdf", "RDF") else root
    if rdf is None:
        raise XmpError("no rdf:RDF element to hold the regions")
    description = None
    for candidate in rdf.findall(_q("rdf", "Description")):
        for old_regions in candidate.findall(_q("mwg-rs", "Regions")):
            candidate.remove(old_regions)
            description = candidate  # the new regions go where the old ones were
    if description is None:
        description = rdf.find(_q("rdf", "Description"))
    if description is None:
        description = ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    regions_el = ET.SubElement(description, _q("mwg-rs", "Regions"), {_q("rdf", "parseType"): "Resource"})
    dims = ET.SubElement(regions_el, _q("mwg-rs", "AppliedToDimensions"), {_q("rdf", "parseType"): "Resource"})
    ET.SubElement(dims, _q("stDim", "w")).text = str(int(width))
    ET.SubElement(dims, _q("stDim", "h")).text = str(int(height))
    ET.SubElement(dims, _q("stDim", "unit")).text = "pixel"
    bag = ET.SubElement(ET.SubElement(regions_el, _q("mwg-rs", "RegionList")), _q("rdf", "Bag"))
    for li in kept_items:
        bag.append(li)
    for region in regions:
        bag.append(_region_element(region))
    ET.indent(root, space=" ")
    content = XPACKET_BEGIN + ET.tostring(root, encoding="utf-8", xml_declaration=False) + XPACKET_END
    return SidecarChange(sidecar, "create" if existing is None else "update", added, replaced, len(kept_items), content)
