"""Face gallery: ingestion of photo archives into a gallery store (SQLite + Parquet shards).

Importing the package changes nothing in the process: settings are read when first needed
(gallery.settings) and process-wide defaults are applied by the entry points.
"""
