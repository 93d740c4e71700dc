"""Test-wide settings: offline (no hub downloads), no progress bars, a private feature cache."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("EDGETL_OFFLINE", "1")
os.environ.setdefault("EDGETL_PROGRESS", "0")
os.environ.setdefault("EDGETL_CACHE_DIR", tempfile.mkdtemp(prefix="edgetl-test-cache-"))
