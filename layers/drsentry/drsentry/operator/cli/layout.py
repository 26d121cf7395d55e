"""How a listing fits the terminal without cutting a backup id.

A backup id is what `restore` needs, so no listing ever shortens one: rich, left to itself,
squeezes every column of a wide table into a narrow terminal and cuts ids to `20261…`. A
listing is laid out here instead: the whole table when it fits the width (the terminal's,
COLUMNS, or 80 with neither, as under cron), else without the columns that matter least,
else one block of `name value` lines per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from drsentry.operator.cli.app import stdout

# The narrowest a folding column (an error, failed checks) gets beside the others: two or three
# words a line still read as a sentence, and a word (a host:port/db) is not split unless it is
# longer than FOLD_WORD_MAX.
FOLD_MIN_WIDTH = 16
FOLD_WORD_MAX = 40
# A table's frame: one bar left of every column and one at the right edge; one space of padding
# each side of a cell.
CELL_PADDING = 2


@dataclass(frozen=True)
class Column:
    """`drop`: when the listing is too wide, columns with drop 1 go first, then 2, ...; 0 never.
    `fold`: free text that may fold onto more lines (ids and statuses never do). `heading`: on
    the first line of a record's block."""

    header: str
    drop: int = 0
    fold: bool = False
    heading: bool = False


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """(natural, narrowest) width of each column's cells, as printed (markup removed)."""
    widths = []
    for index, column in enumerate(columns):
        cells = [Text.from_markup(row[index]).plain for row in rows]
        lines = [line for cell in cells for line in cell.splitlines()]
        natural = max([cell_len(column.header), *(cell_len(line) for line in lines)])
        if column.fold:
            longest_word = max((cell_len(word) for line in lines for word in line.split()), default=0)
            widths.append((natural, min(natural, max(FOLD_MIN_WIDTH, min(longest_word, FOLD_WORD_MAX)))))
        else:
            widths.append((natural, natural))
    return widths


def _table_width(cells: Sequence[int]) -> int:
    return sum(width + CELL_PADDING for width in cells) + len(cells) + 1


def _fitted_widths(natural: list[int], narrowest: list[int], room: int) -> list[int] | None:
    """Column widths within `room`: folding columns give up width, widest first, down to their
    narrowest; None when even that is too wide."""
    if _table_width(narrowest) > room:
        return None
    widths = list(natural)
    while _table_width(widths) > room:
        widest = max(
            (index for index, width in enumerate(widths) if width > narrowest[index]),
            key=lambda index: widths[index],
        )
        widths[widest] -= 1
    return widths


def print_listing(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Rows of markup cells as a table that fits the width without cutting a cell."""
    room = stdout.width
    for level in range(max((column.drop for column in columns), default=0) + 1):
        shown = [index for index, column in enumerate(columns) if not column.drop or column.drop > level]
        kept = [columns[index] for index in shown]
        kept_rows = [[row[index] for index in shown] for row in rows]
        natural, narrowest = zip(*_widths(kept, kept_rows), strict=True) if kept else ((), ())
        widths = _fitted_widths(list(natural), list(narrowest), room)
        if widths is not None:
            table = Table(title=title, title_justify="left")
            for column, width in zip(kept, widths, strict=True):
                table.add_column(column.header, width=width, no_wrap=not column.fold, overflow="fold")
            for row in kept_rows:
                table.add_row(*row)
            stdout.print(table)
            return
    _print_blocks(title, columns, rows)


def _print_blocks(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """One record per block: its heading columns on the first line, then the other columns that
    have a value, one per line, folded to the width under their own indent."""
    stdout.print(title, highlight=False)
    heading = [index for index, column in enumerate(columns) if column.heading]
    details = [index for index in range(len(columns)) if index not in heading]
    indent = 2 + max((cell_len(columns[index].header) for index in details), default=0) + 2
    for row in rows:
        stdout.print()
        stdout.print("  ".join(row[index] for index in heading), highlight=False)
        for index in details:
            value = Text.from_markup(row[index])
            if value.plain.strip() in {"", "-"}:
                continue
            lines = value.wrap(stdout, max(stdout.width - indent, FOLD_MIN_WIDTH), overflow="fold")
            for number, line in enumerate(lines):
                label = f"  {columns[index].header}" if number == 0 else ""
                line.rstrip()
                stdout.print(Text(label.ljust(indent)) + line, highlight=False)
