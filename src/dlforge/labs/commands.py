"""`dlforge lab`: list the labs and run one. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Runnable, measured experiments on the maths behind the models.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.command("list")
def list_() -> None:
    """List the labs with a one-line description each."""
    from dlforge.labs import describe

    labs = describe()
    if not out.is_terminal:  # piped: plain tab-separated lines
        print("\n".join(f"{name}\t{text}" for name, text in labs.items()))
        return
    table = Table()
    table.add_column("lab", no_wrap=True)
    table.add_column("what it measures")
    for name, text in labs.items():
        table.add_row(name, text)
    out.print(table)


@app.command()
def run(name: Annotated[str, typer.Argument(help="the lab's name (see `dlforge lab list`)", show_default=False)],
        out_dir: Annotated[Path | None, typer.Option("--out", help="output folder", show_default="labs/<name>")] = None,
        quick: Annotated[bool, typer.Option(help="a shorter run of the lab's main claims")] = False,
        seed: Annotated[int, typer.Option(help="seed of data and initial weights")] = 0,
        option: Annotated[list[str] | None, typer.Option(
            "--option", "-o", help="a lab's own option as key=value (value read as YAML), e.g. -o run=runs/x; "
                                   "repeatable")] = None) -> None:
    """Run a lab: figures, results.json and summary.md in its output folder."""
    import yaml

    from dlforge.errors import DlforgeError
    from dlforge.labs import run_lab

    folder = out_dir or Path("labs") / name
    try:
        options = {}
        for item in option or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise DlforgeError(f"--option {item!r}: expected key=value, e.g. -o sentence='a fine film'")
            options[key] = yaml.safe_load(value)
        results = run_lab(name, folder, quick=quick, seed=seed, **options)
    except DlforgeError as e:  # the main CLI's one red line and exit code 2
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    table = Table(title=f"lab {name}{' (quick)' if quick else ''}: {results['time_s']:.0f} s", show_header=False)
    for key, value in results.get("headline", {}).items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)
    for file in results.get("files", []):
        out.print(f"wrote {folder / file}", highlight=False)
