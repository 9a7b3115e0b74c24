"""An NBD export as a dfvfs storage-media layer, so dfvfs' and libyal's partition, volume and
filesystem back-ends stack on qemu's block layer (nbd.py) as they stack on a plain file.

The path spec `TYPE_INDICATOR` (location: the server's unix socket) is system-level, like
dfvfs' OS type: it has no parent. Importing this module registers the type and its resolver
helper with dfvfs, once per process.
"""

from __future__ import annotations

import os
from typing import Any

from dfvfs.file_io import file_io
from dfvfs.path import factory, location_path_spec
from dfvfs.resolver_helpers import manager, resolver_helper

from imgscan.image.nbd import NbdDevice, device

TYPE_INDICATOR = "IMGSCAN_NBD"


class NbdPathSpec(location_path_spec.LocationPathSpec):
    """The whole disk a qemu-nbd server exports; `location` is its unix socket."""

    _IS_SYSTEM_LEVEL = True
    TYPE_INDICATOR = TYPE_INDICATOR

    def __init__(self, location: str | None = None, **kwargs: Any) -> None:
        if not location:
            raise ValueError("Missing location value.")
        if kwargs.get("parent") is not None:
            raise ValueError("An NBD path specification has no parent.")
        kwargs.pop("parent", None)
        super().__init__(location=location, **kwargs)


class NbdFile(file_io.FileIO):
    """dfvfs file-like object over this process's connection to the server."""

    def __init__(self, resolver_context: Any, path_spec: Any) -> None:
        super().__init__(resolver_context, path_spec)
        self._device: NbdDevice | None = None
        self._offset = 0

    def _Open(self) -> None:
        self._device = device(self._path_spec.location)
        self._offset = 0

    def _Close(self) -> None:
        # The connection is the process's, shared by every file object on the same disk.
        self._device = None

    def _open_device(self) -> NbdDevice:
        if self._device is None:
            raise OSError("Not opened.")
        return self._device

    def read(self, size: int | None = None) -> bytes:
        disk = self._open_device()
        if size is None or size < 0:
            size = disk.size - self._offset
        data = disk.pread(size, self._offset)
        self._offset += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> None:
        disk = self._open_device()
        if whence == os.SEEK_CUR:
            offset += self._offset
        elif whence == os.SEEK_END:
            offset += disk.size
        elif whence != os.SEEK_SET:
            raise OSError("Unsupported whence.")
        if offset < 0:
            raise OSError("Invalid offset value less than zero.")
        self._offset = offset

    def get_offset(self) -> int:
        self._open_device()
        return self._offset

    def get_size(self) -> int:
        return self._open_device().size


class NbdResolverHelper(resolver_helper.ResolverHelper):
    TYPE_INDICATOR = TYPE_INDICATOR

    def NewFileObject(self, resolver_context: Any, path_spec: Any) -> NbdFile:
        return NbdFile(resolver_context, path_spec)


factory.Factory.RegisterPathSpec(NbdPathSpec)
manager.ResolverHelperManager.RegisterHelper(NbdResolverHelper())
