"""Face gallery: ingestion of photo archives into a gallery store (SQLite + Parquet shards)."""

import os

# OpenMP threads that spin while waiting slow faiss and torch down several-fold when both share a
# small CPU (measured on 2 cores); passive waiting costs nothing measurable otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
