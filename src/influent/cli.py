"""The `influent` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .data.validate import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Training-data influence: which samples help, which hurt, and what to do about it.")


@app.command()
def demo(out: Optional[Path] = typer.Option(None, help="folder for the scores of each method"),
         noise: float = typer.Option(0.1, help="fraction of training labels to flip"),
         seed: int = typer.Option(0, help="random seed")) -> None:
    """End to end on bundled digits with injected label noise: score, detect, trim, refit."""
    from .demo import run_demo

    run_demo(out=out, noise=noise, seed=seed, echo=typer.echo)


@app.callback()
def _root() -> None:
    """influent command-line interface."""


def main() -> None:
    """Entry point: bad input exits with code 2 and one line, no traceback (unless --debug)."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app(standalone_mode=False)
    except InputError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2)
        if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
            sys.exit(130)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
