"""The public Python API (`pyscore.Client`, the `score://` file system): thin layers over
score-client's engine, imported only when first used (see pyscore/__init__.py)."""
