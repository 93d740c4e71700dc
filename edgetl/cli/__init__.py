"""The `edgetl` command: a click group; each command lives in its own module and only parses and prints."""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.console import Console
from rich.logging import RichHandler

from edgetl import __version__
from edgetl.errors import EdgetlError
from edgetl.progress import enabled_by_default

console = Console(stderr=True)


def setup_logging(verbose: bool) -> None:
    """Route the `edgetl` logger through rich; INFO by default, DEBUG with -v."""
    logger = logging.getLogger("edgetl")
    logger.handlers.clear()
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    if not enabled_by_default():  # no tqdm bars from transformers / huggingface_hub in logs either
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class EdgetlGroup(click.Group):
    """Turns typed errors into one line and exit code 2, instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgetlError as exc:
            click.echo(f"error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing half-written was left (an unfinished finetune continues with --resume)",
                       err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("EDGETL_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (set EDGETL_DEBUG=1 for the traceback "
                       "and please report it)", err=True)
            sys.exit(1)


@click.group(cls=EdgetlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgetl")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """edgetl: fine-tune, export, verify and benchmark small models for edge devices."""
    setup_logging(verbose)


def _register() -> None:
    from edgetl.cli import backbones, bench, calibrate, distill, export, finetune, predict, report, run, targets

    for module in (backbones, finetune, distill, calibrate, export, predict, bench, targets, report, run):
        main.add_command(module.command)


_register()
