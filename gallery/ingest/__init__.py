"""Ingestion: scan a photo archive, read what is new, embed its faces, commit exactly once."""

from gallery.ingest.distributor import ingest
from gallery.ingest.runner import IngestOptions, IngestSummary

__all__ = ["IngestOptions", "IngestSummary", "ingest"]
