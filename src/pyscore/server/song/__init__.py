"""Overture Song's metadata API (studies, schemas, analyses, files, legacy entities)."""
