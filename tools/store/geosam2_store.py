#!/usr/bin/env python3
"""Read a GeoSAM2 feature store (docs/store-format.md) into NumPy arrays.

Dependency-light: NumPy, and for `q16z` tiles the system's libzstd (through ctypes; the Python
`zstandard` package is used instead where libzstd is not found). Checksums are checked with the
`crc32c` package when it is installed, else with a table loop in NumPy-free Python.

    python3 tools/store/geosam2_store.py STORE [TILE_ID] [--npz OUT.npz]

prints the manifest summary and the tensors of one tile (default: the first done tile);
`--npz` saves the tile's three feature maps (float32, [C, H, W]) and its validity mask.
"""
import argparse
import ctypes
import ctypes.util
import json
import struct
import sys
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
TILE_FORMAT = "geosam2-tile-1"
FEATURE_MAPS = ["image_embed", "high_res_feats_0", "high_res_feats_1"]
CHECKSUM_KEY = b'"content_crc32c":"'


class StoreError(Exception):
    pass


# --- CRC-32C --------------------------------------------------------------------------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = None


def crc32c(data: bytes) -> int:
    try:
        import crc32c as fast  # type: ignore
        return fast.crc32c(data)
    except ImportError:
        pass
    global _TABLE
    if _TABLE is None:
        _TABLE = _crc32c_table()
    table, crc = _TABLE, 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


def check_content(data: bytes, search_limit: int) -> str:
    """'valid', 'missing', or raises StoreError on a mismatch (docs/store-format.md, Checksums)."""
    at = data.find(CHECKSUM_KEY, 0, search_limit)
    if at < 0:
        return "missing"
    start = at + len(CHECKSUM_KEY)
    stored = data[start:start + 8].decode("ascii", "replace")
    computed = "%08x" % crc32c(data[:start] + b"00000000" + data[start + 8:])
    if stored != computed:
        raise StoreError(f"CRC-32C {computed} does not match the {stored} the file was written with")
    return "valid"


# --- zstd -----------------------------------------------------------------------------------

def _libzstd():
    name = ctypes.util.find_library("zstd") or "libzstd.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.ZSTD_findFrameCompressedSize.restype = ctypes.c_size_t
    lib.ZSTD_findFrameCompressedSize.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
    lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    return lib


def zstd_decompress(stream: bytes, expected: int) -> bytes:
    """Decompresses concatenated zstd frames that must hold exactly `expected` bytes."""
    lib = _libzstd()
    if lib is None:
        import zstandard  # type: ignore
        out = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(stream)
    else:
        source = ctypes.create_string_buffer(stream, len(stream))
        base = ctypes.addressof(source)
        parts, offset = [], 0
        while offset < len(stream):
            size = lib.ZSTD_findFrameCompressedSize(base + offset, len(stream) - offset)
            if lib.ZSTD_isError(size):
                raise StoreError("corrupt zstd stream")
            content = lib.ZSTD_getFrameContentSize(base + offset, size)
            if content > expected:
                raise StoreError("zstd frame of unknown size or larger than the map")
            target = ctypes.create_string_buffer(max(int(content), 1))
            written = lib.ZSTD_decompress(target, int(content), base + offset, size)
            if lib.ZSTD_isError(written) or written != content:
                raise StoreError("corrupt zstd frame")
            parts.append(target.raw[:written])
            offset += size
        out = b"".join(parts)
    if len(out) != expected:
        raise StoreError(f"the high bytes hold {len(out)} bytes, the map needs {expected}")
    return out


# --- safetensors ----------------------------------------------------------------------------

DTYPES = {"F32": np.float32, "F16": np.float16, "I16": np.int16, "U8": np.uint8}


def read_safetensors(data: bytes):
    if len(data) < 8:
        raise StoreError("truncated safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise StoreError("truncated safetensors header")
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {})
    start = 8 + length
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                      offset=start + begin).reshape(info["shape"])
    return metadata, tensors, start


def decode_map(name, tensors):
    """A feature map as float32 [C, H, W], whatever the store's dtype (docs/store-format.md)."""
    if f"{name}.scale" not in tensors:
        return tensors[name].astype(np.float32)
    scale = tensors[f"{name}.scale"].astype(np.float32)[:, None, None]
    offset = tensors[f"{name}.offset"].astype(np.float32)[:, None, None]
    if name in tensors:                                   # q16: signed codes
        codes = tensors[name].astype(np.int32)
    else:                                                 # q16z: byte planes
        low = tensors[f"{name}.low"]
        high = np.frombuffer(zstd_decompress(tensors[f"{name}.high"].tobytes(), low.size), dtype=np.uint8).reshape(low.shape)
        codes = (high.astype(np.int32) << 8 | low.astype(np.int32)) - 32768
    # Two float32 roundings, as the Swift reader: the product, then the sum.
    return (codes.astype(np.float32) * scale).astype(np.float32) + offset


class Store:
    def __init__(self, path):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise StoreError(f"{path} is not a feature store (no manifest.json)")
        self.manifest = json.loads(manifest_path.read_text())
        version = self.manifest.get("formatVersion")
        if version != FORMAT_VERSION:
            raise StoreError(f"feature store format {version} is not supported (this reader reads {FORMAT_VERSION})")
        # Level 0 and every pyramid level (their ids start with `lL_`); `level` is absent at level 0.
        self.levels = [{"level": 0, "tiles": self.manifest["tiles"]}] + list(self.manifest.get("levels") or [])
        self.tiles = {t["id"]: t for level in self.levels for t in level["tiles"]}

    def state(self, tile_id):
        tiles = self.path / "tiles"
        if (tiles / f"{tile_id}.safetensors").exists():
            return "done"
        if (tiles / f"{tile_id}.empty").exists():
            return "empty"
        return "pending"

    def load_tile(self, tile_id, verify=True):
        """{'image_embed', 'high_res_feats_0', 'high_res_feats_1': float32 [C, H, W],
        'valid_mask': bool [height, width] or None, 'metadata': dict}"""
        if tile_id not in self.tiles:
            raise StoreError(f"no tile {tile_id} in the manifest")
        data = (self.path / "tiles" / f"{tile_id}.safetensors").read_bytes()
        metadata, tensors, header_end = read_safetensors(data)
        if verify:
            status = check_content(data, header_end)
            if status == "missing" and self.manifest.get("tileChecksum"):
                raise StoreError(f"tile {tile_id} carries no checksum (the store's tiles all have one)")
        if metadata.get("tile") != tile_id:
            raise StoreError(f"the file holds tile {metadata.get('tile')}")
        result = {name: decode_map(name, tensors) for name in FEATURE_MAPS}
        window = self.tiles[tile_id]["window"]
        if "valid_mask" in tensors:
            bits = np.unpackbits(tensors["valid_mask"], axis=1)[:, :window[2]]
            result["valid_mask"] = bits.astype(bool)
        else:
            result["valid_mask"] = None
        result["metadata"] = metadata
        return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("tile", nargs="?")
    parser.add_argument("--npz", help="save the tile's arrays to this .npz")
    parser.add_argument("--no-verify", action="store_true", help="skip the checksum")
    args = parser.parse_args()
    try:
        store = Store(args.store)
        tile_id = args.tile or next((t for t in store.tiles if store.state(t) == "done"), None)
        if tile_id is None:
            raise StoreError("no encoded tile")
        tile = store.load_tile(tile_id, verify=not args.no_verify)
    except (StoreError, OSError, ValueError, KeyError) as error:
        print(f"geosam2_store: {error}", file=sys.stderr)
        sys.exit(1)
    m = store.manifest
    print(f"{args.store}: {len(store.tiles)} tiles on {len(store.levels)} level(s), dtype {m['encoding']['featureDType']}, EPSG {m['source'].get('epsg')}")
    for name in FEATURE_MAPS:
        print(f"  {tile_id} {name}: {tile[name].shape} float32, mean {tile[name].mean():.6g}")
    if args.npz:
        arrays = {name: tile[name] for name in FEATURE_MAPS}
        if tile["valid_mask"] is not None:
            arrays["valid_mask"] = tile["valid_mask"]
        np.savez(args.npz, **arrays)


if __name__ == "__main__":
    main()
