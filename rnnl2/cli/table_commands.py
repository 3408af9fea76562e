"""The commands that read finished runs: compare, diff and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .app import app
from .console import err
from .options import Columns, TableFormat, TableFormatChoice, check_output_file, column_list
from .render import print_comparison, print_table


@app.command()
def compare(
    paths: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs (quote them).")],
    sort: Annotated[
        Optional[str],
        typer.Option(help="Column or summary.json number to sort by (default: the early-stopping metric)."),
    ] = None,
    by_seed: Annotated[
        Optional[bool],
        typer.Option(
            "--by-seed/--no-by-seed", help="Group runs that differ only in seed (default: when only seeds differ)."
        ),
    ] = None,
    csv_path: Annotated[
        Optional[Path], typer.Option("--csv", help="Also write the table as CSV to this file (- for stdout).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as one JSON object on stdout.")] = False,
    columns: Columns = None,
    output_format: Annotated[
        TableFormat,
        typer.Option(
            "--format",
            help="table (on a terminal: the columns that fit), csv, json or markdown (every column) on stdout.",
        ),
    ] = None,
) -> None:
    """One row per run: the config keys that differ, best and test metrics, vs the naive baseline, gap,
    weight norm, epochs, time. Runs of different tasks get one table each."""
    from ..compare import compare_by_task, tables_to_csv, tables_to_json
    from ..runs import write_text

    if csv_path is not None and str(csv_path) != "-":
        check_output_file(csv_path)
    tables = compare_by_task(paths, sort=sort, by_seed=by_seed, columns=column_list(columns))
    if output_format is not None and output_format is not TableFormatChoice.table:
        if output_format is TableFormatChoice.csv:
            print(tables_to_csv(tables), end="")
        elif output_format is TableFormatChoice.json:
            print(json.dumps(tables_to_json(tables)))
        else:
            print("\n".join(f"### {c.task or 'runs'} runs\n\n{c.to_markdown()}" for c in tables), end="")
        return
    if csv_path is not None:
        if str(csv_path) == "-":
            print(tables_to_csv(tables), end="")
            return
        write_text(csv_path, tables_to_csv(tables))
        err.print(f"wrote {csv_path}", highlight=False)
    if as_json:
        print(json.dumps(tables_to_json(tables)))
    else:
        for comparison in tables:
            print_comparison(comparison, f"{comparison.task or 'runs'} runs")


@app.command()
def diff(
    run_a: Annotated[Path, typer.Argument(help="A run folder.")],
    run_b: Annotated[Path, typer.Argument(help="Another run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the difference as one JSON object on stdout.")] = False,
) -> None:
    """Two runs side by side: the config keys that differ, then every final number with its change."""
    from ..compare import format_setting, short_number
    from ..run_diff import change, diff_runs

    result = diff_runs(run_a, run_b)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    table = Table(title=f"A {run_a} ({result.status[0]})  vs  B {run_b} ({result.status[1]})")
    for name in ("", "A", "B", "B − A"):
        table.add_column(name, justify="left" if not name else "right")
    for key, a, b in result.config or [("(configs are the same)", None, None)]:
        table.add_row(key, "" if a is None else format_setting(a), "" if b is None else format_setting(b), "")
    table.add_section()
    for key, a, b in result.metrics:
        delta = change(a, b)
        shown = lambda v: "—" if v is None else short_number(v)  # noqa: E731
        table.add_row(key, shown(a), shown(b), "" if delta is None else f"{delta:+.4g}")
    print_table(table)


@app.command()
def report(
    paths: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs (quote them).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the PNGs, report.md and report.html.")
    ] = Path("report"),
    sort: Annotated[Optional[str], typer.Option(help="Column to sort the report's table by.")] = None,
    columns: Columns = None,
) -> None:
    """Plot learning curves, the λ curve, weight and gradient norms; write report.md. Last stdout line: report.md."""
    from ..report import write_report

    written = write_report(paths, output, sort=sort, columns=column_list(columns))
    for path in [*written.figures, written.html]:
        err.print(f"wrote {path}", highlight=False)
    print(written.markdown)
