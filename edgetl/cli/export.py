"""`edgetl export`: run folder -> verified bundle."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="onnx", show_default=True, help="Artifact format.")
@click.option("--precision", default="fp32", show_default=True, help="Numeric precision.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--verify-limit", type=int, default=None, help="Verify on at most N test images (default: all).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (>= 17).")
def command(run_dir: Path, fmt: str, precision: str, out: Path, overwrite: bool, verify_limit: int | None,
            opset: int) -> None:
    """Export RUN_DIR to a bundle, verify it against PyTorch on the test split, refuse it if it differs."""
    from edgetl.cli.render import print_verification
    from edgetl.export import export

    bundle = export(run_dir, fmt, out, precision=precision, overwrite=overwrite, verify_limit=verify_limit,
                    opset=opset)
    print_verification(bundle)
