"""Many images: discover them, key them by content, scan the ones not scanned yet (locally or
on a Dask cluster) and keep every result in a SQLite store that later runs and
`imgscan results` read.

The layers, one module each: discover.py (paths, globs and list files to image files),
digest.py (an image's content digest, cached by file identity), store.py (the SQLite results
store), runner.py (one child process per image scan, run by a local pool or by Dask tasks),
stored.py (a stored JSON report back to a ScanResult for the renderers), summary.py (the
per-image summary as a table, JSON or CSV). Nothing here prints or exits: cli.py does.
"""

from __future__ import annotations
