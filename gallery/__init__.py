"""Face gallery: ingestion of photo archives into a gallery store (SQLite + Parquet shards)."""

import os

# OpenMP threads that spin while waiting slow faiss and torch down several-fold when both share a
# small CPU (measured on a 2-core x86 VM, no GPU); passive waiting costs nothing measurable otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
