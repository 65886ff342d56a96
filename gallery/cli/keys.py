"""`gallery keys create/list/revoke`: the API keys of `gallery serve`, kept (hashed) in the gallery."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.table import Table

from gallery.cli.common import GalleryOpt, GalleryTyper, JsonOpt, note, out, safe

keys_app = GalleryTyper(help="API keys for `gallery serve` (sent as X-Api-Key; scopes: search, enrol, admin).",
                        no_args_is_help=True)


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"


@keys_app.command("create")
def keys_create(
    gallery: GalleryOpt,
    name: Annotated[str, typer.Option("--name", "-n", help="Who or what uses the key (e.g. photo-app).")],
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", "-s", help="search (default), enrol or admin (admin includes enrol, enrol includes search); "
                              "repeatable.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once: only its hash is stored, it cannot be shown again."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        info, key = g.create_key(name, scope or ["search"])
    if as_json:
        print(json.dumps({**info.as_dict(), "key": key}))
        return
    print(key)
    note(f"key {info.key_id} '{info.name}' ({' '.join(info.scopes)}): send it as the X-Api-Key header. "
         "It is shown only now; store it safely.")


@keys_app.command("list")
def keys_list(gallery: GalleryOpt, as_json: JsonOpt = False) -> None:
    """The keys of a gallery (never the keys themselves): id, name, prefix, scopes, last use, revoked."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        keys = g.list_keys()
    if as_json:
        print(json.dumps([k.as_dict() for k in keys]))
        return
    table = Table("id", "name", "prefix", "scopes", "created", "last used", "revoked", title=f"{len(keys)} keys")
    for k in keys:
        table.add_row(str(k.key_id), safe(k.name), k.prefix + "…", " ".join(k.scopes), _when(k.created_at),
                      _when(k.last_used_at), _when(k.revoked_at))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    which: Annotated[str, typer.Argument(help="Key id, name or prefix (as `gallery keys list` shows).")],
    gallery: GalleryOpt,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: a running server refuses it from its next request on."""
    from gallery.store import Gallery

    with Gallery.open(gallery) as g:
        info = g.revoke_key(which)
    if as_json:
        print(json.dumps(info.as_dict()))
    else:
        out.print(f"revoked key {info.key_id} '{safe(info.name)}' ({info.prefix}…)", highlight=False)


def register(app: GalleryTyper) -> None:
    app.add_typer(keys_app, name="keys")
