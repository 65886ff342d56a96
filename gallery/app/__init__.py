"""The application layer: one function per use case, under both the `gallery` CLI and the HTTP server,
so that neither implements a workflow of its own. They parse, call one of these, and render its answer
(gallery.app.answers: the pydantic models `--json` prints and the API answers).

    ingest     ingest_then_refresh, sync_then_refresh: ingest, then erasures, index and calibration
    indexing   index_advice, refresh_index, calibrate_if_due, finish_erasures, after_new_faces,
               build, update (`gallery index build|update`)
    people     enrol, erase
    erasure    the durable erasure protocol (every place, in order; finish pending ones)
    maintenance check, repair, compact
    status     status: `gallery info --json` and GET /v1/status
    verify     verify: photo against photo, or photo against a gallery identity
    clusters   cluster_run and the review of clusters
    answers    the answer models, and the one threshold validation (`Threshold`, `check_threshold`)

Below it: search, indexer, gallery.ingest (and the floor under them); above it: gallery.cli and
gallery.server only. Modules import their heavy dependencies inside the functions that need them.
"""
