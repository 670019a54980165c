"""Result writers: JSONL (appendable), CSV and markdown, each written atomically.

Rows are dicts (result-schema rows in practice). CSV cells hold plain values; nested ones
(`device`, `op_profile`) are JSON text so a CSV row can be turned back into the JSON row.
"""
import csv
import io
import json
import os
from pathlib import Path

from mobilekit.io import write_atomic
from mobilekit.report.tables import format_table

__all__ = ["columns_of", "write_jsonl", "append_jsonl", "read_jsonl", "write_csv", "read_csv",
           "write_markdown_table", "write_atomic"]


def columns_of(rows, columns=None):
    """The given columns, else every key in first-seen order across rows."""
    if columns is not None:
        return list(columns)
    seen = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _json_line(row):
    return json.dumps(row, default=str, allow_nan=False, separators=(",", ":"))


def write_jsonl(path, rows):
    """One JSON object per line, written atomically."""
    return write_atomic(path, "".join(_json_line(r) + "\n" for r in rows))


def append_jsonl(path, row):
    """Append one row and flush it to disk, so a crash or Ctrl-C loses nothing written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(_json_line(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_jsonl(path):
    """Rows of a JSONL file; a torn last line (interrupted write) is skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, separators=(",", ":"))
    return value


def write_csv(path, rows, columns=None):
    """CSV with a header; None becomes an empty cell, nested values JSON text."""
    columns = columns_of(rows, columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return write_atomic(path, buffer.getvalue())


def read_csv(path):
    """(columns, rows) of a CSV file; every value is the text that was written."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        columns = next(reader, [])
        return columns, [dict(zip(columns, r)) for r in reader]


def _md_cell(value):
    return " ".join(str(value).split()).replace("|", "\\|")


def write_markdown_table(path, headers, rows, title=None, notes=()):
    """A markdown document: optional `# title`, the table, then notes as a list."""
    parts = [f"# {title}\n"] if title else []
    cells = [[None if c is None else _md_cell(c) for c in row] for row in rows]
    parts.append(format_table(headers, cells, markdown=True) + "\n")
    if notes:
        parts.append("\n" + "".join(f"- {n}\n" for n in notes))
    return write_atomic(path, "\n".join(parts) if title else "".join(parts))
