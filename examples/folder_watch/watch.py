"""Watch a folder and classify every new image with an edgetl bundle: an IoT-style loop.

Depends only on ``edgetl.runtime`` (numpy, Pillow, and the bundle's engine: onnxruntime, openvino or
ai-edge-litert); no PyTorch. Polls the folder (no extra dependency), so it runs the same on a board, a
phone shell or a server.

    python examples/folder_watch/watch.py bundles/pets-onnx incoming/            # runs until Ctrl-C
    python examples/folder_watch/watch.py bundles/pets-onnx incoming/ --once     # what is there now, then exit
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgetl.errors import EdgetlError
from edgetl.runtime import Bundle
from edgetl.runtime.preprocess import IMAGE_EXTENSIONS

SETTLE_S = 0.2  # a file is taken once it has not changed for this long


def new_images(folder: Path, seen: set[Path]) -> list[Path]:
    """Images in ``folder`` not handled yet, oldest first; files still being written are left for later."""
    found = []
    for path in _images(folder):
        if path in seen:
            continue
        if time.time() - path.stat().st_mtime < SETTLE_S:  # give a writer time to finish the file
            continue
        found.append(path)
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _images(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def classify(bundle: Bundle, path: Path) -> str:
    """One line: file, label, score, latency (or the reason it could not be read)."""
    start = time.perf_counter()
    try:
        best = bundle.predict(path)[0]
    except EdgetlError as exc:
        return f"{path.name}\tskipped: {exc.message}"
    ms = 1000 * (time.perf_counter() - start)
    return f"{path.name}\t{best.label}\t{best.score:.3f}\t{ms:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="an image bundle from `edgetl export`")
    parser.add_argument("folder", type=Path, help="the folder to watch")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between scans")
    parser.add_argument("--threads", type=int, default=None, help="engine threads")
    parser.add_argument("--once", action="store_true", help="classify what is there now, then exit")
    args = parser.parse_args()
    try:
        bundle = Bundle.load(args.bundle, threads=args.threads)
    except EdgetlError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    if bundle.spec.is_text or not args.folder.is_dir():
        print("error: need an image bundle and an existing folder", file=sys.stderr)
        return 2
    print(f"watching {args.folder} with {bundle.path.name} ({bundle.manifest['format']}, "
          f"{len(bundle.spec.labels)} labels)", flush=True)
    seen: set[Path] = set()
    try:
        while True:
            for path in new_images(args.folder, seen):
                seen.add(path)
                print(classify(bundle, path), flush=True)
            if args.once:
                if any(time.time() - p.stat().st_mtime < SETTLE_S for p in _images(args.folder) if p not in seen):
                    time.sleep(SETTLE_S)  # --once: files written just now are waited for, not dropped
                    continue
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
