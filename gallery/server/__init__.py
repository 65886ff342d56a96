"""`gallery serve`: the gallery over HTTP (FastAPI on uvicorn) and a small web page.

The service is a thin layer over the same application layer the CLI uses (gallery.app: one function
per use case; search.Searcher for searches; the store's edit methods) and answers with the same typed
objects as the CLI's `--json` (gallery.app.answers, the routes' response models). FastAPI is imported
only here and in the serve command: `gallery --help` stays light.

    config.py   what one server process is told (gallery, limits, roots), passed to every worker
    service.py  the loaded Searcher of a worker, reloaded when the index changes; API errors
    auth.py     API keys (X-Api-Key) and nested scopes
    limits.py   request body limit (413) and per-request timeout (504), as ASGI middleware
    uploads.py  uploaded photos in temporary files, refused with the ingest's reasons
    jobs.py     background jobs (ingest, clustering) with progress readable from any worker
    writes.py   the server's side of ingest (its roots), enrolment (its folder) and erasure
    routes/     one module per resource
    app.py      the application factory
"""
