"""`vidcap gallery`: a static, offline review page of a run's (or an output file's) rows.

    rows.py     which rows: a run merged on the fly or an output file, `--where` filters, `--sample`
    plan.py     how the run's model saw each video (frames per video, resize, backend): the one place
                that reads those settings from a run config
    thumbs.py   the frames the model saw, as JPEG thumbnails, read in parallel by the prefetch processes
    write.py    index.html, the page's script and style, and the rows as JS chunks with per-chunk facets
    static/     the page itself (no external scripts or fonts: clusters are offline)

The folder opens from disk (file://) with no server, so data travels as script files (`data/*.js` that
call a global function) rather than fetch(), which browsers refuse on file:// pages.
"""

from vidcap.gallery.write import GalleryResult, build_gallery

__all__ = ["GalleryResult", "build_gallery"]
