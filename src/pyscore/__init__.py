"""pyscore: a Java-free Overture Score/Song for controlled-access genomics data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyscore")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"
