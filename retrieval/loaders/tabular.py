"""CSV/TSV (groups of rows, each row with its column headers), JSON and JSON Lines (one record a block)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from retrieval.errors import LoadError
from retrieval.loaders import Document, Loaded
from retrieval.text import decode

if TYPE_CHECKING:
    from retrieval.config import RetrievalSettings

csv.field_size_limit(10_000_000)


def load(data: bytes, source: str, settings: RetrievalSettings) -> Loaded:
    ext = PurePosixPath(source).suffix.lower()
    text = decode(data)
    if ext in (".csv", ".tsv"):
        return Loaded(
            [csv_document(text, source, settings.csv_rows_per_chunk, "\t" if ext == ".tsv" else None)]
        )
    if ext == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
        return Loaded([json_document(value if isinstance(value, list) else [value], source)])
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LoadError(f"invalid JSON on line {number}: {exc.msg} at column {exc.colno}") from exc
    return Loaded([json_document(records, source)])


def csv_document(text: str, source: str, rows_per_group: int, delimiter: str | None) -> Document:
    """Rows as ``header: value; ...`` lines, ``rows_per_group`` to a section titled with the row range."""
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    rows = _csv_rows(text, delimiter)
    if not rows:
        raise LoadError("no rows in CSV")
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    doc = Document(source, title=PurePosixPath(source).name)
    body = rows[1:] or rows
    for first in range(0, len(body), rows_per_group):
        group = body[first : first + rows_per_group]
        lines = [_row(header, row) for row in group]
        # Row numbers as in a spreadsheet: the header is row 1.
        doc.add("\n".join(lines), title=f"{doc.title} rows {first + 2}-{first + 1 + len(group)}")
    return doc


def _csv_rows(text: str, delimiter: str) -> list[list[str]]:
    """The non-blank rows. An unclosed quote used to swallow every later row into one cell (`3,"widget
    3,3.00` took rows 4-50), indexed as one garbled row: such a file is refused, with the line where the
    runaway row starts. Parsing stays lenient otherwise: a stray quote inside a field (`3" screw`) is text."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows: list[list[str]] = []
    line = 1  # the line the next row starts on
    try:
        for row in reader:
            _check_row(row, line, reader.line_num, rows[0] if rows else row, delimiter)
            line = reader.line_num + 1
            if any(c.strip() for c in row):
                rows.append(row)
    except csv.Error as exc:
        raise LoadError(f"invalid CSV: the row starting on line {line}: {exc}") from exc
    return rows


def _check_row(row: list[str], first: int, last: int, header: list[str], delimiter: str) -> None:
    """A row over several lines is a quoted cell with line breaks (an address, an answer). It is the rows
    after an unclosed quote run together when its column count differs from the header's, or, in a table of
    3 or more columns, when the lines inside one cell are nearly all rows of that table themselves (a later
    stray quote closed the cell)."""
    if last == first:
        return
    if len(row) != len(header):
        why = f"has {len(row)} columns, not {len(header)}"
    elif any(_rows_inside(cell, delimiter, len(header)) for cell in row):
        why = "has a cell whose lines are rows of their own"
    else:
        return
    raise LoadError(
        f"invalid CSV: the row starting on line {first} runs over {last - first + 1} lines and {why} "
        "(a quoted field that is never closed?)"
    )


def _rows_inside(cell: str, delimiter: str, columns: int) -> bool:
    """At least 3 whole lines inside ``cell``, 80% of which split into ``columns`` (3 or more) fields. Two
    columns are too easy to match by chance: an answer's lines with one comma each are not rows."""
    inner = cell.split("\n")[1:-1]  # the first and last lines are fragments cut by the quotes
    rows = sum(line.count(delimiter) == columns - 1 for line in inner)
    return columns >= 3 and len(inner) >= 3 and rows >= 0.8 * len(inner)


def _row(header: list[str], row: list[str]) -> str:
    cells = [f"{header[i] if i < len(header) else f'column {i + 1}'}: {v.strip()}" for i, v in enumerate(row)]
    return "; ".join(c for c in cells if not c.endswith(": "))


def json_document(records: list[Any], source: str) -> Document:
    """Each record flattened to ``a.b: value`` lines; records separated by blank lines."""
    doc = Document(source, title=PurePosixPath(source).name)
    blocks = ["\n".join(_flatten(r, "")) for r in records]
    doc.add("\n\n".join(b for b in blocks if b))
    return doc


def _flatten(value: Any, prefix: str) -> list[str]:
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            joined = ", ".join("" if v is None else str(v) for v in value)
            return [f"{prefix}: {joined}" if prefix else joined]
        return [line for i, v in enumerate(value) for line in _flatten(v, f"{prefix}[{i}]")]
    if value is None or value == "":
        return []
    return [f"{prefix}: {value}" if prefix else str(value)]
