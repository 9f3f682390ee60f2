import Dispatch

/// Work splitting over the machine's cores.
///
/// Only one level of parallelism runs at a time: kernels that split work here call OpenBLAS
/// with one thread inside the split (see `GEMM.singleThreaded`).
public enum Parallel {
    /// The number of workers used for splitting.
    public static let workerCount: Int = max(1, ProcessInfoCores.count)

    /// Calls `body` on disjoint, contiguous sub-ranges of `0..<count`, concurrently when the work
    /// is large enough to be worth it.
    public static func forEachChunk(_ count: Int, minimumChunk: Int, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(workerCount, max(1, count / max(minimumChunk, 1)))
        if chunks <= 1 {
            body(0..<count)
            return
        }
        let size = (count + chunks - 1) / chunks
        withoutActuallyEscaping(body) { body in
            // Safe by construction: every call gets a disjoint range, and kernels only write the
            // elements of their own range. The closure does not outlive concurrentPerform.
            nonisolated(unsafe) let chunkBody = body
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                let lower = c * size
                let upper = min(count, lower + size)
                if lower < upper { chunkBody(lower..<upper) }
            }
        }
    }
}

/// Cores available to this process.
enum ProcessInfoCores {
    static var count: Int {
        #if os(Linux)
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return n > 0 ? Int(n) : 1
        #else
        return 1
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#endif
