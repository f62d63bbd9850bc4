"""Write the gallery folder: the page, its data in chunks, and the thumbnails.

    DIR/index.html, gallery.js, gallery.css   the page (copied from vidcap/gallery/static)
    DIR/data/meta.js        what was shown and how; facet values with totals; per chunk: rows and the
                            count of each facet value in it (so a filter skips chunks without loading them)
    DIR/data/chunk-00000.js `VG_CHUNK(0, [rows...])`: up to `chunk_rows` rows each
    DIR/thumbs/ab/....jpg   the frames the model saw, small
    DIR/gallery.json        summary; also marks the folder as a gallery that a rebuild may replace

The folder is built beside DIR and swapped in at the end, so an interrupted build never leaves a gallery
half-written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence


from vidcap.errors import UserError
from vidcap.gallery.rows import GalleryRows, apply_sample, apply_where, load_rows
from vidcap.gallery.thumbs import Thumbs, default_readers, make_thumbnails

STATIC = Path(__file__).with_name("static")
PAGE_FILES = ("index.html", "gallery.js", "gallery.css")
MARKER = "gallery.json"
MAX_TAG_VALUES = 300  # per tag column: the most frequent values get a filter entry (search finds the rest)


@dataclass
class GalleryResult:
    out: str
    rows: int  # rows on the page
    source_rows: int
    chunks: int
    videos: int  # distinct media paths read
    unreadable: int  # of those, how many gave no frames
    thumbnails: int
    seconds: float
    thumb_seconds: float


def build_gallery(source: str, out: str | os.PathLike[str], *, where: Sequence[str] = (), sample: int | None = None,
                  seed: int = 0, key: str | None = None, run: str | None = None, data_root: str | None = None,
                  overrides: dict[str, Any] | None = None, readers: int | None = None, chunk_rows: int = 500,
                  page_size: int = 48, thumb_height: int = 112, progress: bool = True) -> GalleryResult:
    """Build the gallery of `source` (a run folder or an output file) into the folder `out`."""
    began = time.perf_counter()
    if chunk_rows < 1 or page_size < 1 or thumb_height < 8:
        raise UserError("--chunk-rows and --page-size must be at least 1, --thumb-height at least 8")
    out = Path(out).expanduser().absolute()
    _check_target(out)
    rows = load_rows(source, key=key, run=run, data_root=data_root, overrides=overrides)
    if where:
        apply_where(rows, list(where))
    if sample is not None:
        apply_sample(rows, sample, seed)
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    try:
        media = [rows.paths.resolve(str(v)) if v else "" for v in rows.table[rows.paths.column].to_pylist()]
        started = time.perf_counter()
        thumbs = make_thumbnails([m for m in media if m], rows.plan, tmp, height=thumb_height,
                                 readers=default_readers() if readers is None else readers, progress=progress)
        thumb_seconds = time.perf_counter() - started
        chunks = _write_data(rows, media, thumbs, tmp, chunk_rows=chunk_rows, page_size=page_size,
                             where=list(where), sample=sample, seed=seed)
        for name in PAGE_FILES:
            shutil.copyfile(STATIC / name, tmp / name)
        result = GalleryResult(
            out=str(out), rows=rows.table.num_rows, source_rows=rows.total, chunks=chunks, videos=len(thumbs),
            unreadable=sum(1 for t in thumbs.values() if t.error),
            thumbnails=sum(len(t.files) for t in thumbs.values()), seconds=0.0, thumb_seconds=thumb_seconds)
        result.seconds = time.perf_counter() - began
        (tmp / MARKER).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise UserError(f"{out}: exists and is not a vidcap gallery; choose an empty or new --out folder")


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _display(value: Any) -> str:
    """A cell as the details table shows it."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_display(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


class _Facets:
    """Facet values (status, labels, tags) get small ids; chunks count them by id."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}
        self.totals: Counter[int] = Counter()

    def id(self, facet: str, value: str) -> int:
        return self.ids.setdefault((facet, value), len(self.ids))


def _labels(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v not in (None, "")]
    return [t.strip() for t in str(value).split(",") if t.strip()]


def _write_data(rows: GalleryRows, media: list[str], thumbs: dict[str, Thumbs], out: Path, *, chunk_rows: int,
                page_size: int, where: list[str], sample: int | None, seed: int) -> int:
    table = rows.table
    names = table.column_names
    columns = {name: table[name].to_pylist() for name in names}
    label_cols, tag_cols = rows.label_columns, rows.tag_columns
    caption = "text" if "text" in names else ""
    errors = columns.get("error") or [None] * table.num_rows
    captions = columns.get(caption) or [None] * table.num_rows
    # tag values worth a filter entry: the most frequent of each column
    kept: dict[str, set[str]] = {}
    for col in tag_cols:
        counts = Counter(t for v in columns[col] for t in (v or []))
        kept[col] = {t for t, _ in counts.most_common(MAX_TAG_VALUES)}
    facets = _Facets()
    for status in ("ok", "error", "skipped", "pending"):
        facets.id("status", status)
    chunk_meta = []
    n = table.num_rows
    for number, start in enumerate(range(0, max(n, 1), chunk_rows)):
        if n == 0:
            break
        counts: Counter[int] = Counter()
        chunk = []
        for i in range(start, min(n, start + chunk_rows)):
            status = str(columns["status"][i])
            ids = {facets.id("status", status)}
            labels = [lab for col in label_cols for lab in _labels(columns[col][i])]
            ids.update(facets.id("label", lab) for lab in labels)
            tags = {col: [str(t) for t in (columns[col][i] or [])] for col in tag_cols}
            ids.update(facets.id(f"tag:{col}", t) for col in tag_cols for t in tags[col] if t in kept[col])
            counts.update(ids)
            thumb = thumbs.get(media[i]) if media[i] else Thumbs(error=f"no {rows.paths.column} in this row")
            record = {
                "k": _display(columns[rows.key][i]), "p": _display(columns[rows.paths.column][i]), "s": status,
                "e": _display(errors[i]), "t": _display(captions[i]),
                "l": labels, "g": {c: v for c, v in tags.items() if v},
                "f": thumb.files, "fe": thumb.error, "w": thumb.width, "h": thumb.height, "seen": thumb.seen,
                "c": [_display(columns[name][i]) for name in names],
            }
            chunk.append(record)
        facets.totals.update(counts)
        body = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
        (out / "data" / f"chunk-{number:05d}.js").write_text(f"VG_CHUNK({number},{body});\n", encoding="utf-8")
        chunk_meta.append({"n": len(chunk), "f": {str(k): v for k, v in sorted(counts.items())}})
    values = [{"facet": facet, "value": value, "n": facets.totals.get(i, 0)}
              for (facet, value), i in sorted(facets.ids.items(), key=lambda item: item[1])]
    meta = {
        "title": f"vidcap gallery: {Path(rows.source).name}",
        "source": rows.source, "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "plan": rows.plan.describe(), "key": rows.key, "pathColumn": rows.paths.column,
        "captionColumn": caption, "labelColumns": label_cols, "tagColumns": tag_cols,
        "total": rows.total, "matched": rows.matched, "shown": n, "where": where,
        "sample": sample, "seed": seed if sample is not None else None,
        "columns": names, "pageSize": page_size, "chunkRows": chunk_rows, "values": values, "chunks": chunk_meta,
    }
    body = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    (out / "data" / "meta.js").write_text(f"window.VG_META = {body};\n", encoding="utf-8")
    return len(chunk_meta)


__all__ = ["GalleryResult", "build_gallery"]
