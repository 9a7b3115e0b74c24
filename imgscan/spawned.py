"""Starting imgscan's own child processes (scan workers, reader processes) from any caller,
a plain script included."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def caller_main_hidden() -> Iterator[None]:
    """While a child process is spawned, hide the caller's main module from multiprocessing.

    A spawned child normally imports the parent's `__main__` script again (as `__mp_main__`),
    which is why multiprocessing asks for an `if __name__ == "__main__":` guard: a plain script
    that calls imgscan would scan again in every worker and kill it. A child runs only
    imgscan's own code (a target importable by name) and is sent nothing defined in the
    caller's script, so it needs no main module: without `__file__` and `__spec__` (read by
    `multiprocessing.spawn.get_preparation_data` while `start()` runs) none is imported."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    missing = object()
    saved_file = main.__dict__.pop("__file__", missing)
    saved_spec = main.__dict__.get("__spec__", missing)
    main.__spec__ = None
    try:
        yield
    finally:
        if saved_file is not missing:
            main.__file__ = saved_file
        if saved_spec is missing:
            del main.__spec__
        else:
            main.__spec__ = saved_spec
