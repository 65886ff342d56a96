"""`gallery serve`: the gallery over HTTP (FastAPI on uvicorn) and a small web page.

The service is a thin layer over the same Python API the CLI uses (search.Searcher, the store's edit
methods, gallery.ingest, indexer.erasure, search.cluster) and answers with the same JSON objects as
the CLI's `--json`. FastAPI is imported only here and in the serve command: `gallery --help` stays
light.

    config.py   what one server process is told (gallery, limits, roots), passed to every worker
    service.py  the loaded Searcher of a worker, reloaded when the index changes; API errors
    auth.py     API keys (X-Api-Key) and nested scopes
    limits.py   request body limit (413) and per-request timeout (504), as ASGI middleware
    uploads.py  uploaded photos: size-checked, decoded by the ingest's own decoder (same reasons)
    jobs.py     background jobs (ingest, clustering) with progress readable from any worker
    writes.py   ingest (then index and calibration), enrolment, erasure (with the enrolled copies)
    routes/     one module per resource
    app.py      the application factory
"""
