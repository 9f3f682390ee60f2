import CKernels

/// How the process's allocator hands memory back, for batch work that encodes tile after tile.
public enum MemoryPolicy {
    /// Keeps freed memory in the heap for the next allocation instead of returning it to the
    /// kernel. glibc serves every block over 32 MiB (the encoder's token tensors: 25–150 MB at
    /// 1024²) with a fresh `mmap` and unmaps it on free, so each tile pays its page faults again —
    /// about 6 % of a bf16 Hiera-T encode on an AMD EPYC Zen 4. With mmap off and trimming off the
    /// heap settles at the first tile's peak and later tiles reuse it. The peak is unchanged;
    /// the memory is not given back until the process exits, so use it for encode-and-exit
    /// commands, not for a long-lived server. A no-op where the C library is not glibc.
    /// - Returns: whether the allocator took the setting.
    @discardableResult
    public static func retainFreedMemory() -> Bool {
        gs_retain_freed_memory() == 1
    }
}
