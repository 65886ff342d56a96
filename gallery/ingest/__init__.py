"""Ingestion: scan a photo archive, read what is new, embed its faces, commit exactly once."""

from gallery.ingest.runner import IngestOptions, IngestSummary, ingest

__all__ = ["IngestOptions", "IngestSummary", "ingest"]
