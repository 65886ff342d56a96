"""Tending a gallery: `gallery identities ...`, `gallery faces ...`, `gallery labels ...`.

Thin layers over gallery.store.Gallery's edit methods; each prints a one-line result (or JSON).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from gallery.cli.common import (
    GalleryOpt,
    GalleryTyper,
    JsonOpt,
    OptionalGalleryOpt,
    err,
    fail,
    hint,
    listing_gallery,
    out,
    plural,
    safe,
    warn,
)

identities_app = GalleryTyper(help="List, show, rename, merge and delete the people of a gallery.")
faces_app = GalleryTyper(help="Relabel, delete, ignore or cut out single faces (ids as `identities show` lists); "
                         "their quality.",
                         no_args_is_help=True)
labels_app = GalleryTyper(help="Bulk labels from and to CSV (path or face id, identity).", no_args_is_help=True)
photos_app = GalleryTyper(help="Remove or erase single photos (paths as ingested); keep photos out of future "
                                "ingests, or admit them again.", no_args_is_help=True)

MAX_ID = 2**63 - 1  # the largest id SQLite can hold
FaceIds = Annotated[list[int], typer.Argument(help="Face ids (see `gallery identities show NAME`).", min=1,
                                              max=MAX_ID)]
WaitOpt = Annotated[float, typer.Option(
    "--wait", help="Seconds to wait for an index build holding the index, or for readers holding the database, "
                   "before leaving the erasure pending (exit 3).", min=0)]
MAX_CROP_SIDE = 4096  # pixels: a crop is for a person to look at


def _done(as_json: bool, data: dict, message: str) -> None:
    if as_json:
        print(json.dumps(data))
    else:
        for line in message.split("\n"):  # each line made safe on its own (safe() escapes line breaks)
            out.print(safe(line), highlight=False)


@identities_app.callback(invoke_without_command=True)
def identities_list(
    ctx: typer.Context,
    gallery: OptionalGalleryOpt = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (0 = all).", min=0)] = 0,
    show_all: Annotated[bool, typer.Option("--all", help="Also list the names left with no live face.",
                                           metavar="")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List identities with their face counts, most faces first (or run a subcommand). Names whose
    faces were all deleted (a removed photo, a sync, a repair) are counted apart; --all lists them."""
    if ctx.invoked_subcommand is not None:
        return
    gallery = listing_gallery(gallery)
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        rows = g.identities()
    live = [(name, n) for name, n in rows if n]
    empty = [name for name, n in rows if not n]
    if as_json:  # every name with its live count (0 for the names left without faces), as before
        print(json.dumps([{"identity": name, "faces": n} for name, n in (rows[:limit] if limit else rows)]))
        return
    shown = live[:limit] if limit else live
    table = Table("identity", "faces", title=plural(len(live), "identity", "identities"))
    for name, n in shown:
        table.add_row(safe(name), str(n))
    out.print(table)
    if len(shown) < len(live):
        hint(f"showing {len(shown):,} of {len(live):,} identities (--limit 0 for all)")
    if empty and show_all:
        out.print(f"{plural(len(empty), 'name')} with no live face left (deleted faces, or photos removed by sync "
                  "or repair):", highlight=False)
        table = Table("identity")
        for name in empty:
            table.add_row(safe(name))
        out.print(table)
    elif empty:
        hint(f"{plural(len(empty), 'more name')} with no live face left (deleted faces, or photos removed by "
             "sync or repair): --all lists them")


@identities_app.command("show")
def identities_show(
    name: Annotated[str, typer.Argument(help="Identity name.")], gallery: GalleryOpt, as_json: JsonOpt = False
) -> None:
    """The faces of one person: face id, photo, box, detection score, quality."""
    from dataclasses import asdict

    from gallery.app.answers import IdentityFaces
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        faces = g.identity_faces(name)
        shown = IdentityFaces.model_validate({"identity": name, "identity_id": g.identity_id(name),
                                              "faces": [asdict(f) for f in faces]})
    if as_json:  # the object GET /v1/identities/{name} answers
        print(shown.model_dump_json())
        return
    low = sum(1 for f in faces if f.quality and not f.quality["ok"])
    table = Table("face", Column("photo", overflow="fold"), "box", "score", "main", Column("quality", overflow="fold"),
                  title=f"{safe(name)}: {plural(len(faces), 'face')}" + (f" ({low} below the quality gate: not in the "
                                                               "template)" if low else ""))
    for f in faces:
        table.add_row(str(f.face_id), safe(f.photo), str(f.box), f"{f.det_score:.3f}", "yes" if f.is_main else "",
                      _quality_text(f.quality))
    out.print(table)


def _quality_text(q: dict | None) -> str:
    if q is None:
        return "not measured"
    if q["ok"]:
        return "ok" + ("" if q.get("sharpness") is not None else " (sharpness not measured)")
    return f"[yellow]{safe(q['issue'])}[/]"


@faces_app.command("quality")
def faces_quality(
    gallery: GalleryOpt,
    from_photos: Annotated[bool, typer.Option(
        "--from-photos", help="Read the photos again to measure sharpness (galleries from before quality).",
        metavar="")] = False,
    again: Annotated[bool, typer.Option(
        "--again", help="Measure every face again (with --from-photos, its sharpness too).", metavar="")] = False,
    limit: Annotated[int, typer.Option(help="List at most this many faces below the gate (0 = all).", min=0)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Measure faces never measured, judge every face by the quality gate, and list those below it.
    Faces below the gate stay in the gallery but never enrol into their identity's template, are left
    out of calibration and clustering, and as queries are answered "too poor to identify"."""
    from gallery.ingest.quality import measure_gallery
    from gallery.store import Gallery

    with Gallery.open(gallery) as g, g.writer_lock():
        report = measure_gallery(g, from_photos=from_photos, again=again)
        low = g.face_details(low_quality_only=True)
    if as_json:
        from dataclasses import asdict

        print(json.dumps({**report.as_dict(), "faces_below_gate": [asdict(f) for f in low[:limit or None]]}))
        return
    out.print(f"{report.faces} faces: {report.below_gate} below the quality gate ({report.changed} changed verdict), "
              f"{report.measured} measured now" + (f", sharpness from {report.sharpness_measured} photos"
                                                   if from_photos else ""))
    if report.without_sharpness:
        out.print(f"{report.without_sharpness} faces have no sharpness measure (ingested before it existed"
                  + (f"; {report.photos_missing} photos could not be read" if report.photos_missing else "")
                  + f"): gallery faces quality --from-photos --gallery {safe(str(gallery))}")
    table = Table("face", "identity", Column("photo", overflow="fold"), Column("why", overflow="fold"),
                  title=f"faces below the quality gate ({len(low)})")
    for f in low[:limit or None]:
        table.add_row(str(f.face_id), safe(f.identity or ""), safe(f.photo), safe(f.quality["issue"] if f.quality
                                                                                   else ""))
    out.print(table)


@identities_app.command("rename")
def identities_rename(
    old: Annotated[str, typer.Argument(help="Current name.")],
    new: Annotated[str, typer.Argument(help="New name.")],
    gallery: GalleryOpt,
    as_json: JsonOpt = False,
) -> None:
    """Rename a person (to make two names one person, use `merge`)."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        n = g.rename_identity(old, new)
    _done(as_json, {"renamed": old, "to": new, "faces": n}, f"renamed '{old}' to '{new}' ({plural(n, 'face')})")


@identities_app.command("merge")
def identities_merge(
    names: Annotated[list[str], typer.Argument(help="Identities that are one person.")],
    into: Annotated[str, typer.Option("--into", help="The merged identity's name (new or one of NAMES).")],
    gallery: GalleryOpt,
    as_json: JsonOpt = False,
) -> None:
    """Make several identities one person."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        n = g.merge_identities(names, into)
    _done(as_json, {"merged": names, "into": into, "faces": n},
          f"merged {', '.join(names)} into '{into}' ({plural(n, 'face')})")


@identities_app.command("delete")
def identities_delete(
    name: Annotated[str, typer.Argument(help="Identity name.")], gallery: GalleryOpt, as_json: JsonOpt = False
) -> None:
    """Remove a name: its faces stay in the gallery, unlabeled (to remove a person for good: `erase`)."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        n = g.delete_identity(name)
    _done(as_json, {"deleted": name, "faces_unlabeled": n},
          f"deleted '{name}'; its {plural(n, 'face')} {'is' if n == 1 else 'are'} now unlabeled")


@faces_app.command("relabel")
def faces_relabel(
    face_ids: FaceIds,
    gallery: GalleryOpt,
    name: Annotated[str | None, typer.Option("--name", "-n", help="The identity these faces show.")] = None,
    unlabeled: Annotated[bool, typer.Option("--unlabeled", help="Remove their label.", metavar="")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Give faces an identity (created if new), or remove their label with --unlabeled."""
    from gallery.store import Gallery

    if (name is None) == (not unlabeled):
        fail("Give exactly one of --name NAME or --unlabeled.")
    with Gallery.open(gallery) as g:
        n = g.relabel_faces(face_ids, None if unlabeled else name)
    _done(as_json, {"relabeled": n, "identity": name},
          f"{plural(n, 'face')} now {'unlabeled' if unlabeled else repr(name)}")


@faces_app.command("delete")
def faces_delete(face_ids: FaceIds, gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """Hide faces from every answer (their data stays on disk; to remove it from every file: `erase`)."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        n = g.delete_faces(face_ids)
    _done(as_json, {"deleted": n}, f"deleted {plural(n, 'face')}")


@faces_app.command("ignore")
def faces_ignore(face_ids: FaceIds, gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """Not a face, or not a person of interest: kept out of search and remembered as such."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        n = g.delete_faces(face_ids, ignore=True)
    _done(as_json, {"ignored": n}, f"ignored {plural(n, 'face')}")


@faces_app.command("crop")
def faces_crop(
    face_id: Annotated[int, typer.Argument(help="Face id.", min=1, max=MAX_ID)],
    gallery: GalleryOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the crop (.jpg, .png).")],
    margin: Annotated[float, typer.Option(help="Margin around the box, as a share of its size.", min=0, max=2)] = 0.4,
    size: Annotated[int, typer.Option(help=f"Side of the square crop in pixels (0 = native, at most "
                                           f"{MAX_CROP_SIDE}).", min=0, max=MAX_CROP_SIDE)] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Write the face cut from its original photo, with a margin, to judge a label by eye."""
    from gallery.errors import NotInGallery
    from gallery.faces.crop import crop_face
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        record = g.face_records([face_id]).get(face_id)
    if record is None:
        raise NotInGallery(f"No live face with id {face_id} in this gallery.")
    image = crop_face(record.photo, record.box, margin, size or None, max_side=MAX_CROP_SIDE,
                      t_ms=record.t_ms)
    try:
        image.save(output)
    except ValueError:  # Pillow: no writer for that extension
        fail(f"Cannot write a crop as '{output.suffix or output.name}': give -o a .jpg, .png or .webp path.")
    _done(as_json, {"face_id": face_id, "photo": record.photo, "output": str(output), "size": list(image.size)},
          f"wrote {output} (face {face_id} of {record.photo})")


@labels_app.command("export")
def labels_export(
    gallery: GalleryOpt,
    output: Annotated[Path | None, typer.Argument(help="CSV file to write (not with --xmp).")] = None,
    xmp: Annotated[bool, typer.Option(
        "--xmp", help="Write the names as MWG face regions into .xmp sidecars next to the photos (digiKam, "
                      "Lightroom); photo files are never changed.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="With --xmp: list what would change, write nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write `face_id,path,identity` for every live face (identity empty when unlabeled), or with --xmp the
    named faces into each photo's XMP sidecar (merged: its other fields and regions are kept)."""
    if xmp:
        _export_xmp(gallery, dry_run, as_json)
        return
    if output is None:
        fail("Give the CSV file to write, or --xmp to write XMP sidecars next to the photos.")
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        faces = g.face_details()
    with open(output, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")  # the csv module's default is CRLF
        writer.writerow(["face_id", "path", "identity"])
        writer.writerows([f.face_id, f.photo, f.identity or ""] for f in faces)
    _done(as_json, {"faces": len(faces), "output": str(output)}, f"wrote {plural(len(faces), 'face')} to {output}")


def _export_xmp(gallery: Path, dry_run: bool, as_json: bool) -> None:
    from gallery.ingest.xmp_export import export_xmp

    summary = export_xmp(gallery, dry_run=dry_run)
    if as_json:
        print(json.dumps(summary.as_dict()))
        return
    would = "would " if dry_run else ""
    for change in summary.changes:
        if change.action == "unchanged":
            continue
        parts = [f"+{name}" for name in change.added] + [f"~{r}" for r in change.replaced]
        out.print(f"{would}{change.action} {safe(change.sidecar)}: {safe(', '.join(parts))}"
                  + (f" (kept {change.kept} other regions)" if change.kept else ""), highlight=False)
    for problem in summary.problems:
        warn(safe(problem))
    c = summary.counts()
    out.print(f"{plural(summary.photos, 'photo')} with named faces: {would}create {c['create']}, {would}update "
              f"{c['update']}, {c['unchanged']} unchanged, {len(summary.problems)} left alone", highlight=False)


@labels_app.command("import")
def labels_import(
    source: Annotated[Path, typer.Argument(help="CSV with rows `face_id or path, identity` (header optional).")],
    gallery: GalleryOpt,
    as_json: JsonOpt = False,
) -> None:
    """Relabel in bulk: each row names a face id (or a photo path: its main face) and an identity (empty:
    unlabeled). All rows apply, or none."""
    from gallery.ingest.labels import read_label_rows
    from gallery.store import Gallery

    rows = read_label_rows(source)
    with Gallery.open(gallery) as g:
        counts = g.apply_labels(rows, source=str(source))
    _done(as_json, counts, f"{plural(counts['relabeled'], 'face')} relabeled, {counts['unlabeled']:,} made unlabeled, "
                           f"{counts['unchanged']:,} unchanged")


KeepOutOpt = Annotated[bool, typer.Option(
    "--keep-out/--no-keep-out",
    help="Keep the erased photos out of future ingests and syncs of the archive (only a keyed fingerprint of "
         "each is kept: not the photo, its path or the name).")]


def _erase(gallery: Path, as_json: bool, command: str, wait: float, keep_out: bool, **selection: object) -> None:
    from gallery.app.erasure import ErasureReport
    from gallery.app.people import erase

    report = erase(gallery, command, wait, keep_out=keep_out, **selection)
    message = ErasureReport(**report.model_dump(exclude={"archive"})).message(gallery)
    if as_json:  # the object the API's erase answers
        print(report.model_dump_json())
    elif report.status == "pending":
        err.print(f"[bold yellow]{safe(message)}[/]", highlight=False, soft_wrap=True)
    else:
        out.print(safe(message), highlight=False, soft_wrap=True)
    if not as_json and report.photos:
        # Erasure never touches the photo archive: say what the next ingest or sync of it would do.
        if keep_out:
            hint(f"Your photo archive is not touched: the erased {plural(report.photos, 'photo')} may still be there, "
                 "and ingest and sync now keep them out (by a keyed fingerprint of their content). "
                 "`gallery photos admit PATH...` lets a photo in again.")
        else:
            hint(f"Your photo archive is not touched: if it still holds the erased {plural(report.photos, 'photo')}, "
                 "the next `gallery sync` or `ingest` of it reads them in again. Delete them there, or keep them out "
                 "with `gallery photos keep-out PATH...`.")
    if report.status == "pending":
        raise typer.Exit(3)


@identities_app.command("erase")
def identities_erase(
    name: Annotated[str, typer.Argument(help="Identity name.")], gallery: GalleryOpt, keep_out: KeepOutOpt = True,
    as_json: JsonOpt = False, wait: WaitOpt = 30.0,
) -> None:
    """Erase a person for good: their name, faces and labeled photos, from SQLite, shards, index and
    every other file of the gallery (exit 3 while the erasure is pending; the same command finishes it)."""
    _erase(gallery, as_json, "identities erase", wait, keep_out, identity=name)


@faces_app.command("erase")
def faces_erase(face_ids: FaceIds, gallery: GalleryOpt, keep_out: KeepOutOpt = True, as_json: JsonOpt = False,
                wait: WaitOpt = 30.0) -> None:
    """Erase faces from every file of the gallery (a photo left without faces goes too)."""
    _erase(gallery, as_json, "faces erase", wait, keep_out, face_ids=list(face_ids))


@photos_app.command("erase")
def photos_erase(
    paths: Annotated[list[Path], typer.Argument(help="Photo paths, as ingested.")],
    gallery: GalleryOpt,
    keep_out: KeepOutOpt = True,
    as_json: JsonOpt = False,
    wait: WaitOpt = 30.0,
) -> None:
    """Erase photos and every face in them from every file of the gallery."""
    _erase(gallery, as_json, "photos erase", wait, keep_out, paths=[str(p.resolve()) for p in paths])


PhotoPaths = Annotated[list[Path], typer.Argument(help="Photo files or folders of photos (in the archive).")]


def _keep_out(gallery: Path, paths: list[Path], as_json: bool, admit: bool) -> None:
    """`photos keep-out` and `photos admit`: one read of the files, then the result (or JSON)."""
    from gallery.ingest.keep_out import admit_photos, keep_out_photos

    result = (admit_photos if admit else keep_out_photos)(gallery, paths)
    for path, why in result.unreadable.items():
        warn(f"{path}: not read ({why})")
    if as_json:
        print(json.dumps(result.as_dict()))
    elif admit:
        out.print(f"{plural(result.photos, 'photo')} read: {result.changed:,} let in again (the next ingest or sync "
                  f"reads them), {result.photos - result.changed:,} were not kept out", highlight=False)
    else:
        out.print(f"{plural(result.photos, 'photo')} read: {result.changed:,} newly kept out of future ingests and "
                  f"syncs, {result.photos - result.changed:,} already", highlight=False)
        held = len(result.in_gallery)
        if held:
            hint(f"{plural(held, 'photo')} of these {'is' if held == 1 else 'are'} in the gallery already and "
                 "stay until erased: gallery photos erase PATH...")


@photos_app.command("keep-out")
def photos_keep_out(paths: PhotoPaths, gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """Keep photos out of future ingests and syncs (e.g. an erased person's photos still in the archive):
    only a keyed fingerprint of each photo's content is recorded."""
    _keep_out(gallery, paths, as_json, admit=False)


@photos_app.command("admit")
def photos_admit(paths: PhotoPaths, gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """Let kept-out photos in again: the next ingest or sync of their folder reads them."""
    _keep_out(gallery, paths, as_json, admit=True)


@photos_app.command("remove")
def photos_remove(
    paths: Annotated[list[Path], typer.Argument(help="Photo paths, as ingested.")],
    gallery: GalleryOpt,
    as_json: JsonOpt = False,
) -> None:
    """Take photos out of every answer (their faces are deleted; to remove their data too: `erase`)."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        n = g.delete_photos([str(p.resolve()) for p in paths])
    _done(as_json, {"faces_deleted": n}, f"removed {plural(len(paths), 'photo')} ({plural(n, 'face')})")


def register(app: GalleryTyper) -> None:
    app.add_typer(identities_app, name="identities")
    app.add_typer(faces_app, name="faces")
    app.add_typer(labels_app, name="labels")
    app.add_typer(photos_app, name="photos")

    @app.command()
    def check(
        gallery: GalleryOpt,
        deep: Annotated[bool, typer.Option("--deep", help="integrity_check and every embedding read.", metavar="")]
        = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Check the database, every shard (presence, size, checksum, rows, ids), runs and the index.
        Exit 0 when all is well, 1 with what to run next when not."""
        from gallery.app.answers import CheckAnswer
        from gallery.app.maintenance import check as run_check

        findings = run_check(gallery, deep=deep)
        bad = [f for f in findings if not f.ok]
        if as_json:
            print(CheckAnswer.model_validate({"ok": not bad, "findings": [f.as_dict() for f in findings]})
                  .model_dump_json())
        else:
            table = Table("area", "", "detail", "to mend it", title=f"Check of {safe(str(gallery))}")
            for f in findings:
                table.add_row(f.area, "[green]ok[/]" if f.ok else "[red]problem[/]", safe(f.detail), safe(f.fix or ""))
            out.print(table)
        if bad:
            raise typer.Exit(1)

    @app.command()
    def repair(gallery: GalleryOpt, as_json: JsonOpt = False, wait: WaitOpt = 30.0) -> None:
        """Mend what `check` finds: rebuild lost or damaged shards from the index's copies of their vectors,
        else from their photos (every face keeps its id, label and curation; only what nothing restores is
        dropped, each face named with the reason), finish pending erasures, remove crash leftovers, close
        stale runs, rebuild a damaged index with its own settings. Exit 3 when an erasure is still pending."""
        from gallery.app.maintenance import repair as run_repair
        from gallery.ingest.reembed import reembed_faces

        result = run_repair(gallery, lock_wait_s=wait, reembed=reembed_faces)
        if "database" in result:  # cannot be opened: nothing else can be mended
            _done(as_json, result, f"{result['database']}\n{result['fix']}")
            raise typer.Exit(1)
        summary = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items() if k != "dropped")
        lines = [f"dropped face {d['face_id']} of {d['photo']}: {d['why']}" for d in result.get("dropped", [])]
        _done(as_json, result, "\n".join([summary, *lines]))
        if result.get("pending"):
            raise typer.Exit(3)

    @app.command()
    def backup(
        dest: Annotated[Path, typer.Argument(help="A new or empty folder for the copy.")],
        gallery: GalleryOpt,
        as_json: JsonOpt = False,
        wait: WaitOpt = 60.0,
    ) -> None:
        """Copy the whole gallery (database, shards, index, templates, enrolled photos) consistently, while
        searches and ingests go on. The copy is a gallery itself: it can be searched where it lies (also on
        a read-only mount), and `gallery restore` makes a writable gallery of it."""
        from indexer.backup import backup as run_backup

        result = run_backup(gallery, dest, lock_wait_s=wait)
        _done(as_json, result, f"backed up {result['shards']} shards, {result['bytes']['total'] / 1e6:,.1f} MB in "
                               f"{result['seconds']:.1f} s ({result['mb_per_s']:,.1f} MB/s) to {dest}")

    @app.command()
    def restore(
        backup: Annotated[Path, typer.Argument(help="A folder `gallery backup` wrote.")],
        target: Annotated[Path, typer.Argument(help="A new or empty folder for the restored gallery.")],
        as_json: JsonOpt = False,
    ) -> None:
        """Make a writable gallery of a backup, checking every shard and the index on the way."""
        from indexer.backup import restore as run_restore

        result = run_restore(backup, target)
        _done(as_json, result, f"restored {result['faces']:,} faces ({result['bytes'] / 1e6:,.1f} MB) to {target}")

    @app.command()
    def compact(gallery: GalleryOpt, as_json: JsonOpt = False, wait: WaitOpt = 30.0) -> None:
        """Reclaim the space of deleted faces: rewrite mostly-deleted shards, shed deleted ids from the index."""
        from gallery.app.maintenance import compact as run_compact

        result = run_compact(gallery, lock_wait_s=wait)
        _done(as_json, result, f"{result['shards_rewritten']} shards rewritten, {result['faces_erased']} deleted "
                               f"faces erased, index {result['index']}" + (
                                   f"; erasure pending: {result['pending']}" if result.get("pending") else ""))
        if result.get("pending"):
            raise typer.Exit(3)
