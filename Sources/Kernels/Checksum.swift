import CKernels

/// CRC-32C (Castagnoli): the checksum of feature-store tiles. Hardware `crc32` (SSE4.2) in three
/// interleaved lanes where the CPU has it, else a table loop; both give the standard value
/// (`"123456789"` → `0xE3069283`, as `crc32c` in Python and Go's `crc32.Castagnoli`).
public enum CRC32C {
    /// The CRC of `bytes`, continuing from `crc` (0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return gs_crc32c(crc, base, bytes.count)
    }

    /// The same with the portable table loop only: the plain reference for tests.
    public static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return gs_crc32c_portable(crc, base, bytes.count)
    }

    /// The CRC of A followed by B, from A's and B's CRCs and B's length.
    public static func combine(_ first: UInt32, _ second: UInt32, secondLength: Int) -> UInt32 {
        gs_crc32c_combine(first, second, UInt64(secondLength))
    }
}
