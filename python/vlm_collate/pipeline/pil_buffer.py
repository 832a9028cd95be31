"""A PIL RGB image's own pixel buffer as a numpy array, without a copy.

``np.asarray(image)`` copies: Pillow's array interface encodes the image to bytes
(its RGB pixels are stored as 4 bytes, RGBX, and packed to 3 on the way), about
0.3 ms for a 448² image, every call. Pillow (11.2 and later) also exports an image
through the Arrow C data interface (``Image.__arrow_c_array__``): a fixed-size list of
4 bytes per pixel pointing at the image's own memory, when its rows are one block
(images up to Pillow's block size, 16 MiB by default). :func:`rgbx_view` reads that
export (the Arrow C structs are a stable ABI) and returns an ``(H, W, 4)`` read-only
uint8 view of it; the engine reads 3 of every 4 bytes (``write_pixel_values`` and
``write_planes`` take RGBX), so the pixels are the image's own, unchanged.

The view keeps the export's capsules alive (its ``base``), and an exported image's
memory stays allocated while its export is alive (Pillow counts the references), so
the view stays valid even if the image is dropped. Anything unexpected (an older
Pillow, a multi-block image, another layout) returns None and the caller copies as
before.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _Export:
    """Holds the capsules of one export and describes its buffer to numpy."""

    __slots__ = ("__array_interface__", "_capsules")

    def __init__(self, capsules: tuple[Any, Any], address: int, shape: tuple[int, int, int]):
        self._capsules = capsules
        self.__array_interface__ = {
            "data": (address, True),  # read-only
            "shape": shape,
            "typestr": "|u1",
            "version": 3,
        }


def _buffer_address(schema_capsule: Any, array_capsule: Any, pixels: int) -> int | None:
    """The address of the 4-byte pixels of an RGB image's Arrow export, or None when
    the export is not the layout this reads (a fixed-size list of 4 uint8 per pixel,
    ``pixels`` entries, no offsets, no nulls)."""
    schema = ctypes.cast(
        _capsule_pointer(schema_capsule, b"arrow_schema"), ctypes.POINTER(_ArrowSchema)
    ).contents
    array = ctypes.cast(
        _capsule_pointer(array_capsule, b"arrow_array"), ctypes.POINTER(_ArrowArray)
    ).contents
    if schema.format != b"+w:4" or schema.n_children != 1:
        return None
    if schema.children[0].contents.format != b"C" or array.n_children != 1:
        return None
    if (array.length, array.offset, array.null_count) != (pixels, 0, 0):
        return None
    child = array.children[0].contents
    if (child.length, child.offset, child.null_count, child.n_buffers) != (4 * pixels, 0, 0, 2):
        return None
    address = child.buffers[1]
    return int(address) if address else None


def rgbx_view(image: Any) -> np.ndarray | None:
    """An ``(H, W, 4)`` read-only uint8 view of an RGB PIL ``image``'s own buffer (the
    fourth byte of each pixel is padding), or None where Pillow cannot export it
    without a copy (then copy it with ``np.asarray``)."""
    export = getattr(image, "__arrow_c_array__", None)
    if export is None or getattr(image, "mode", None) != "RGB":
        return None
    width, height = image.size
    if width == 0 or height == 0:
        return None
    try:
        capsules = export()
        address = _buffer_address(*capsules, width * height)
    except (ValueError, TypeError, AttributeError, OSError):  # e.g. rows in several blocks
        return None
    if address is None:
        return None
    return np.asarray(_Export(capsules, address, (height, width, 4)))


__all__ = ["rgbx_view"]
