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
def run(name: Annotated[str, typer.Argument(help="the lab's name (see `dlforge lab list`), or `all`: every lab, "
                                                 "then labs/index.html", show_default=False)],
        out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (with all: the folder of the labs' "
                                                                  "folders and index.html)",
                                                     show_default="labs/<name>, or labs")] = None,
        quick: Annotated[bool, typer.Option(help="a shorter run of the lab's main claims")] = False,
        seed: Annotated[int, typer.Option(help="seed of data and initial weights")] = 0,
        option: Annotated[list[str] | None, typer.Option(
            "--option", "-o", help="a lab's own option as key=value (value read as YAML), e.g. -o run=runs/x; "
                                   "repeatable")] = None) -> None:
    """Run a lab: figures, results.json and summary.md in its output folder."""
    import yaml

    from dlforge.errors import DlforgeError
    from dlforge.labs import run_lab

    if name == "all":
        _run_all(out_dir or Path("labs"), quick, seed, option)
        return
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


def _run_all(root: Path, quick: bool, seed: int, option: list[str] | None) -> None:
    """Every lab into root/<name>, then root/index.html over them; a lab that fails is named on the page and in
    the exit code (1), and the others still run."""
    from dlforge.labs import describe, run_lab
    from dlforge.labs.index import write_index

    if option:
        err.print("[bold red]error:[/] -o/--option sets one lab's options; give a lab's name, not all",
                  highlight=False)
        raise typer.Exit(2)
    labs = describe()
    failed: dict[str, str] = {}
    for name in labs:
        out.print(f"lab {name}{' (quick)' if quick else ''} -> {root / name}", highlight=False)
        try:
            results = run_lab(name, root / name, quick=quick, seed=seed)
        except Exception as e:  # one lab's failure must not lose the others' results
            failed[name] = f"{type(e).__name__}: {e}"
            err.print(f"[bold red]lab {name} failed:[/] {failed[name]}", highlight=False, soft_wrap=True)
            continue
        out.print(f"  {results['time_s']:.0f} s", highlight=False)
    index = write_index(root, labs, failed)
    out.print(f"wrote {index}", highlight=False)
    if failed:
        raise typer.Exit(1)
