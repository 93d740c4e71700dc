"""edgetl: from a labelled dataset to a verified, benchmarked edge artifact."""

__version__ = "0.1.0"
