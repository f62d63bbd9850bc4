"""Reading and writing manifests (CSV as Open-Sora writes it, or Parquet) with pyarrow.

CSV columns are read as text so that every value comes back out exactly as it went in (`25` stays `25`,
never `25.0`); Parquet columns keep their types. Every problem with the input becomes a one-line
`UserError` naming the file, and the line or column where that applies.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from vidcap.durable import atomic_path
from vidcap.errors import UserError

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
DEFAULT_KEY = "path"
DUPLICATES_SHOWN = 5


def manifest_format(path: str | os.PathLike[str]) -> str:
    """'csv' or 'parquet', from the file name; anything else is refused."""
    name = str(path).lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise UserError(
        f"{path}: unsupported file type (use one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})"
    )


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a manifest file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (expected a header line with a '{DEFAULT_KEY}' column)")


def _csv_header(path: Path) -> list[str]:
    """Column names of a CSV file, from pyarrow's own reader so the parse rules are the same."""
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 16),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False),
        )
        names = reader.schema.names
        reader.close()
        return names
    except pa.ArrowInvalid as exc:
        raise UserError(_describe_csv_problem(path, exc)) from None


def _describe_csv_problem(path: Path, exc: Exception) -> str:
    """Find the line a CSV problem is on with Python's csv module (only on the error path)."""
    message = str(exc).splitlines()[0]
    if "Empty CSV file" in message:
        return f"{path}: empty file (expected a header line with a '{DEFAULT_KEY}' column)"
    try:
        with io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            width = None
            for record in reader:
                if width is None:
                    width = len(record)
                    if len(set(record)) != len(record):
                        dup = sorted({c for c in record if record.count(c) > 1})
                        return f"{path}: line 1: duplicate column names {dup}"
                elif len(record) != width:
                    return (f"{path}: line {reader.line_num}: expected {width} fields, got {len(record)} "
                            f"(unquoted comma or quote?)")
    except UnicodeDecodeError:
        return f"{path}: not UTF-8 text ({_first_non_utf8_line(path)})"
    except csv.Error as err:
        return f"{path}: unparseable CSV ({err})"
    if "invalid UTF8" in message:
        return f"{path}: not UTF-8 text"
    return f"{path}: unparseable CSV ({message})"


def _open_binary(path: Path):
    """The file's bytes, decompressed as its name says (.gz, .bz2, .zst), like pyarrow's CSV reader does."""
    return io.BufferedReader(pa.input_stream(str(path), compression="detect"))


def _first_non_utf8_line(path: Path) -> str:
    with _open_binary(path) as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"line {number}, byte 0x{line[err.start]:02x}"
    return "somewhere"


def read_table(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """Read a whole CSV or Parquet file into a table (CSV: every column as text, empty stays empty)."""
    path = Path(path)
    fmt = manifest_format(path)
    _check_readable(path)
    if fmt == "parquet":
        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{path}: unreadable Parquet file ({str(exc).splitlines()[0]})") from None
    names = _csv_header(path)
    _check_unique_columns(path, names)
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                include_columns=columns,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise UserError(_describe_csv_problem(path, exc)) from None


def iter_batches(
    path: str | os.PathLike[str], columns: list[str] | None = None, batch_rows: int = 1 << 16,
    block_bytes: int = 1 << 24,
) -> Iterator[pa.RecordBatch]:
    """Stream a CSV or Parquet file in record batches, so memory stays flat however long the file.

    `block_bytes`: CSV bytes parsed at a time (a reader that keeps little per row wants smaller blocks: the
    reader's read-ahead holds several, and the allocator keeps what they took)."""
    path = Path(path)
    fmt = manifest_format(path)
    _check_readable(path)
    if fmt == "parquet":
        try:
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{path}: unreadable Parquet file ({str(exc).splitlines()[0]})") from None
        return
    names = _csv_header(path)
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block_bytes),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                include_columns=columns,
            ),
        )
        for batch in reader:
            yield batch
    except pa.ArrowInvalid as exc:
        raise UserError(_describe_csv_problem(path, exc)) from None


def _check_unique_columns(path: Path, names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{path}: line 1: duplicate column names {repeated}")


def file_columns(path: str | os.PathLike[str]) -> list[str]:
    """Column names without reading the data."""
    path = Path(path)
    fmt = manifest_format(path)
    _check_readable(path)
    if fmt == "parquet":
        try:
            return pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{path}: unreadable Parquet file ({str(exc).splitlines()[0]})") from None
    return _csv_header(path)


def check_key_column(path: str | os.PathLike[str], names: list[str], key: str) -> None:
    if key not in names:
        hint = "" if key != DEFAULT_KEY else "; name the key column with --key COLUMN"
        raise UserError(f"{path}: no column '{key}' (columns: {', '.join(names) or 'none'}){hint}")


def read_manifest(path: str | os.PathLike[str], key: str = DEFAULT_KEY, dedup: str | None = None) -> pa.Table:
    """Read a manifest and check its key column: present, never empty, unique (or `dedup='first'`)."""
    table = read_table(path)
    check_key_column(path, table.column_names, key)
    if table.num_rows == 0:
        raise UserError(f"{path}: no rows (only a header)")
    keys = table[key]
    if keys.null_count or pc.any(pc.equal(pc.utf8_length(keys.cast(pa.string())), 0)).as_py():
        empty = pc.or_(pc.is_null(keys), pc.equal(pc.utf8_length(keys.cast(pa.string())), 0))
        first = pc.index(empty, True).as_py()
        raise UserError(f"{path}: row {first + 1}: empty '{key}'")
    if pa.types.is_string(keys.type) is False:
        table = table.set_column(table.column_names.index(key), key, keys.cast(pa.string()))
    return _deduplicate(path, table, key, dedup)


def _deduplicate(path: str | os.PathLike[str], table: pa.Table, key: str, dedup: str | None) -> pa.Table:
    ordinals = pa.array(range(table.num_rows), type=pa.int64())
    firsts = (
        pa.table({"k": table[key], "i": ordinals})
        .group_by("k", use_threads=False)
        .aggregate([("i", "min"), ("i", "count")])
    )
    if firsts.num_rows == table.num_rows:
        return table
    if dedup == "first":
        keep = pc.sort_indices(firsts["i_min"])
        return table.take(pc.take(firsts["i_min"], keep))
    repeated = firsts.filter(pc.greater(firsts["i_count"], 1))
    order = pc.sort_indices(repeated["i_min"])
    shown = [
        f"{repeated['k'][i].as_py()!r} x{repeated['i_count'][i].as_py()}"
        for i in order.to_pylist()[:DUPLICATES_SHOWN]
    ]
    more = f" and {repeated.num_rows - DUPLICATES_SHOWN} more" if repeated.num_rows > DUPLICATES_SHOWN else ""
    raise UserError(
        f"{path}: duplicate '{key}' values: {', '.join(shown)}{more} "
        f"({table.num_rows - firsts.num_rows} extra rows; --dedup first keeps the first of each)"
    )


def fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 of the file's bytes: a run remembers exactly which manifest it was cut from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def write_table(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a table as CSV or Parquet (by extension), atomically: a reader never sees half a file."""
    with atomic_path(path) as tmp, TableWriter(tmp, table.schema, like=path) as writer:
        writer.write(table)


LIST_SEPARATOR = ", "


def _is_list(type_: pa.DataType) -> bool:
    return pa.types.is_list(type_) or pa.types.is_large_list(type_)


def lists_as_text(data: pa.Table | pa.RecordBatch) -> pa.Table:
    """List columns (tags) as comma-separated text, the way Open-Sora's CSVs hold them; null stays null."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    for i, f in enumerate(table.schema):
        if _is_list(f.type):
            column = table.column(i).combine_chunks() if table.num_rows else pa.array([], f.type)
            joined = pc.binary_join(pc.cast(column, pa.list_(pa.string())), LIST_SEPARATOR)
            table = table.set_column(i, pa.field(f.name, pa.string()), joined)
    return table


def text_as_lists(table: pa.Table, names: list[str]) -> pa.Table:
    """Comma-separated text columns read back as list<string> (items stripped; "" is an empty list)."""
    for name in names:
        if name not in table.column_names or _is_list(table.schema.field(name).type):
            continue
        i = table.column_names.index(name)
        values = [None if v is None else [item.strip() for item in str(v).split(",") if item.strip()]
                  for v in table.column(i).to_pylist()]
        table = table.set_column(i, pa.field(name, pa.list_(pa.string())), pa.array(values, pa.list_(pa.string())))
    return table


_CSV_OPTIONS = pacsv.WriteOptions(quoting_style="needed")
_CSV_BODY_OPTIONS = pacsv.WriteOptions(quoting_style="needed", include_header=False)


class TableWriter:
    """Streaming writer of CSV or Parquet batches (one schema), used by the reducers. In CSV, list columns
    are written as comma-separated text (`text_as_lists` reads them back)."""

    def __init__(
        self, path: str | os.PathLike[str], schema: pa.Schema, like: str | os.PathLike[str] | None = None
    ) -> None:
        """Write to `path` in the format (and CSV compression) that the name `like` (default: `path`) says."""
        self.path = Path(path)
        name = str(like or path).lower()
        self.fmt = manifest_format(name)
        if self.fmt == "parquet":
            self._writer = pq.ParquetWriter(self.path, schema)
        else:
            self._sink = pa.OSFile(str(self.path), "wb")
            for suffix, codec in ((".gz", "gzip"), (".bz2", "bz2"), (".zst", "zstd")):
                if name.endswith(suffix):
                    self._sink = pa.CompressedOutputStream(self._sink, codec)
            schema = pa.schema([pa.field(f.name, pa.string()) if _is_list(f.type) else f for f in schema])
            self._writer = pacsv.CSVWriter(self._sink, schema, write_options=_CSV_OPTIONS)  # writes the header

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        if self.fmt == "csv" and any(_is_list(f.type) for f in data.schema):
            data = lists_as_text(data)
        if isinstance(data, pa.RecordBatch):
            self._writer.write_batch(data)
        else:
            self._writer.write_table(data)

    def encode(self, data: pa.Table | pa.RecordBatch) -> pa.Buffer | pa.Table | pa.RecordBatch:
        """`data` made ready for `write_encoded`: for CSV its text (the bytes `write` would add), for Parquet
        `data` itself. Safe to call from several threads at once: formatting CSV costs about as much CPU as
        parsing it, so a writer of many rows formats batches in threads and writes them in order."""
        if self.fmt != "csv":
            return data
        if any(_is_list(f.type) for f in data.schema):
            data = lists_as_text(data)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(data, sink, write_options=_CSV_BODY_OPTIONS)
        return sink.getvalue()

    def write_encoded(self, encoded: pa.Buffer | pa.Table | pa.RecordBatch) -> None:
        """Append what `encode` gave (calls in the order the rows go out)."""
        if isinstance(encoded, pa.Buffer):
            self._sink.write(encoded)  # the CSVWriter keeps nothing buffered: its header is already out
        else:
            self.write(encoded)

    def close(self) -> None:
        self._writer.close()
        if self.fmt == "csv":
            self._sink.close()

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
