"""Overture Score's storage API (download specifications, multipart uploads, listing)."""
