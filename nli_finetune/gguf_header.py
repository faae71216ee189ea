"""The metadata and tensor table at the start of a GGUF file, without reading a weight.

gguf's own `GGUFReader` builds numpy views for every array element and every tensor: ~8 s for SmolLM2's
49k tokens and 48k merges, which a dry run paid to learn five numbers. This reads the same header in a
fraction of a second; arrays come back as their length unless asked for (`arrays=`).
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian, version 2 or 3).
"""

import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"GGUF"
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


class GGUFHeaderError(ValueError):
    pass


@dataclass
class ArrayLength:
    """A metadata array left unread: its element type and how many elements it holds."""
    item_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass
class GGUFHeader:
    version: int
    metadata: dict = field(default_factory=dict)  # key -> int, float, bool, str, list, or ArrayLength
    tensors: dict = field(default_factory=dict)   # name -> (shape as written: fastest dimension first, ggml type)


class _Cursor:
    def __init__(self, data, path: Path, at: int, arrays: tuple[str, ...] = ()):
        self.data, self.path, self.at, self.arrays = data, path, at, arrays

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise GGUFHeaderError(f"{self.path}: the header ends early (truncated file?)")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def string(self) -> str:
        length = self.take("<Q")
        if self.at + length > len(self.data):
            raise GGUFHeaderError(f"{self.path}: a string runs past the end of the file (truncated file?)")
        text = self.data[self.at:self.at + length].decode("utf-8", errors="replace")
        self.at += length
        return text

    def value(self, kind: int, keep_array: bool):
        if kind in SCALARS:
            return self.take(SCALARS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item_type, length = self.take("<I"), self.take("<Q")
            if keep_array:
                return [self.value(item_type, True) for _ in range(length)]
            self.skip(item_type, length)
            return ArrayLength(item_type, length)
        raise GGUFHeaderError(f"{self.path}: unknown metadata value type {kind} at byte {self.at}")

    def skip(self, kind: int, count: int) -> None:
        if kind in SCALARS:
            self.at += struct.calcsize(SCALARS[kind]) * count
        elif kind == STRING:
            for _ in range(count):
                self.at += 8 + struct.unpack_from("<Q", self.data, self.at)[0]
        else:
            for _ in range(count):
                self.value(kind, False)
        if self.at > len(self.data):
            raise GGUFHeaderError(f"{self.path}: an array runs past the end of the file (truncated file?)")


def read_gguf_header(path, arrays: tuple[str, ...] = ()) -> GGUFHeader:
    """The file's metadata (the arrays named in `arrays` read in full, others as ArrayLength) and its
    tensor table. Raises GGUFHeaderError naming the file for anything that is not a GGUF header."""
    import mmap
    path = Path(path)
    with open(path, "rb") as handle:
        if handle.read(4) != MAGIC:
            raise GGUFHeaderError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:  # pages are read only when touched
            return _parse(_Cursor(data, path, at=4, arrays=arrays))


def _parse(cursor: _Cursor) -> GGUFHeader:
    version = cursor.take("<I")
    if version not in (2, 3):
        raise GGUFHeaderError(f"{cursor.path}: GGUF version {version}; this reader knows versions 2 and 3")
    tensor_count, kv_count = cursor.take("<Q"), cursor.take("<Q")
    header = GGUFHeader(version=version)
    for _ in range(kv_count):
        key = cursor.string()
        header.metadata[key] = cursor.value(cursor.take("<I"), key in cursor.arrays)
    for _ in range(tensor_count):
        name = cursor.string()
        shape = tuple(cursor.take("<Q") for _ in range(cursor.take("<I")))
        header.tensors[name] = (shape, cursor.take("<I"))
        cursor.take("<Q")  # the tensor's offset in the data section
    return header
