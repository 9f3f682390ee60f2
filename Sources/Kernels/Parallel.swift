import CKernels
import Dispatch
import Foundation
import Synchronization

/// Work splitting over the machine's cores.
///
/// Only one level of parallelism runs at a time: kernels that split work here call OpenBLAS
/// with one thread inside the split (see `GEMM.singleThreaded`). On two cores the second half of
/// a split goes to a helper thread that spins between jobs (`SpinHelper`; off with
/// `GEOSAM2_NO_SPIN=1`): a click runs about forty short splits, and waking a sleeping worker for
/// each cost about 0.6 ms of its 10.
public enum Parallel {
    /// The number of workers used for splitting.
    public static let workerCount: Int = CPUAllowance.current.cores

    /// Calls `body` on disjoint, contiguous sub-ranges of `0..<count`, concurrently when the work
    /// is large enough to be worth it.
    public static func forEachChunk(_ count: Int, minimumChunk: Int, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(availableWorkers, max(1, count / max(minimumChunk, 1)))
        if chunks <= 1 || inSerialRegion {
            body(0..<count)
            return
        }
        let size = (count + chunks - 1) / chunks
        if chunks == 2, SpinHelper.enabled, SpinHelper.shared.run(body, count: count, size: size) { return }
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

extension Parallel {
    /// Runs `worker` on up to `workerCount` workers that share `0..<count` in pieces of `piece`
    /// (the last one shorter): each worker claims the next piece from `pieces` when it has
    /// finished one, so the work goes by the workers' speed instead of in equal shares. On the
    /// shared two-core machines this project runs on, one core often ran a few per cent slower
    /// than the other, and with halves the faster one waited at the end of every split: about a
    /// tenth of the calling thread's time in an encode went to that wait.
    ///
    /// Each worker is called once (so it can set up its buffers once) and loops on
    /// `pieces.next()`. Only for work whose result does not depend on which worker computes a
    /// piece or on where the range is cut, as for ``forEachChunk(_:minimumChunk:_:)``.
    public static func share(_ count: Int, piece: Int, _ worker: (_ pieces: PieceQueue) -> Void) {
        guard count > 0 else { return }
        let queue = PieceQueue(count: count, piece: piece)
        // One call per chunk: with fewer workers (a limit, a serial region) a chunk spans several.
        forEachChunk(min(queue.pieceCount, workerCount), minimumChunk: 1) { _ in worker(queue) }
    }

    /// Calls `body` on the pieces of `0..<count` (`piece` long, the last one shorter), shared by
    /// the workers as in ``share(_:piece:_:)``.
    public static func forEachPiece(_ count: Int, piece: Int, _ body: (Range<Int>) -> Void) {
        share(count, piece: piece) { pieces in
            while let range = pieces.next() { body(range) }
        }
    }
}

/// The pieces of a range handed out in order, each to the first worker that asks
/// (``Parallel/share(_:piece:_:)``).
public final class PieceQueue: Sendable {
    /// The range's length and the length of every piece but the last.
    public let count: Int, piece: Int
    private let claimed = Atomic<Int>(0)

    init(count: Int, piece: Int) {
        (self.count, self.piece) = (count, min(max(1, piece), max(1, count)))
    }

    var pieceCount: Int { (count + piece - 1) / piece }

    /// The next unclaimed piece, or nil when every piece has been handed out.
    public func next() -> Range<Int>? {
        // Relaxed: the pieces' data is published by the split's own synchronisation.
        let lower = claimed.wrappingAdd(piece, ordering: .relaxed).oldValue
        guard lower < count else { return nil }
        return lower..<min(count, lower + piece)
    }
}

extension Parallel {
    /// Runs `body` with every split inside it done on the calling thread, for callers that spread
    /// independent work over the cores themselves (one prompt per worker, say): the kernels then
    /// run exactly the arithmetic they run split, without the synchronisation.
    public static func serially<Result>(_ body: () throws -> Result) rethrows -> Result {
        try $inSerialRegion.withValue(true) { try body() }
    }

    /// Runs `body(i)` for every i in `0..<count`, each call on one worker with its splits serial
    /// (``serially(_:)``): independent items spread over the cores.
    public static func forEachItem(_ count: Int, _ body: (Int) -> Void) {
        forEachChunk(count, minimumChunk: 1) { range in
            serially {
                for i in range { body(i) }
            }
        }
    }

    /// Runs `body` with its splits spread over at most `workers` cores, for callers that run several
    /// such bodies at once on shares of the machine (tiles in flight, each on a few cores).
    public static func withWorkers<Result>(_ workers: Int, _ body: () throws -> Result) rethrows -> Result {
        try $workerLimit.withValue(max(1, workers)) { try body() }
    }

    /// Set inside ``serially(_:)`` (per thread: workers of an outer split start without it).
    @TaskLocal static var inSerialRegion = false
    /// Set inside ``withWorkers(_:_:)``.
    @TaskLocal static var workerLimit = Int.max
    /// The workers a split can use here: the machine's, within ``withWorkers(_:_:)``'s limit.
    static var availableWorkers: Int { min(workerCount, workerLimit) }
}

#if canImport(Glibc)
import Glibc
#endif

/// One helper thread for two-way splits that spins briefly between jobs, so that the many short
/// parallel regions of a decode do not each pay a thread wake-up (several microseconds with
/// `concurrentPerform`). After about 50 µs without work it sleeps. Used by one caller at a time;
/// others (concurrent requests, nested splits) fall back to `concurrentPerform`.
final class SpinHelper: @unchecked Sendable {
    // @unchecked: `job` is written by the owner before `state` is released to 1 and read by the
    // helper after acquiring it; `busy` gives the pool to one owner at a time.
    static let enabled: Bool = ProcessInfo.processInfo.environment["GEOSAM2_NO_SPIN"] == nil && Parallel.workerCount == 2
    static let shared = SpinHelper()

    private let busy = Atomic<Bool>(false)
    private let state = Atomic<Int>(0)  // 0 idle, 1 job posted, 2 job done
    private let sleeping = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    private var job: ((Range<Int>) -> Void)? = nil
    private var range: Range<Int> = 0..<0

    private init() {
        let thread = Thread { [unowned self] in self.loop() }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Runs `body` on `0..<size` here and `size..<count` on the helper; false if the pool is taken.
    func run(_ body: (Range<Int>) -> Void, count: Int, size: Int) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        withoutActuallyEscaping(body) { body in
            job = body
            range = size..<count
            // Sequentially consistent with the helper's `sleeping` then `state` check: one of the two
            // sees the other's store, so the helper cannot sleep through a posted job.
            state.store(1, ordering: .sequentiallyConsistent)
            if sleeping.load(ordering: .sequentiallyConsistent) { wake.signal() }
            body(0..<size)
            while state.load(ordering: .acquiring) != 2 { gs_cpu_relax() }
            job = nil
            state.store(0, ordering: .relaxed)
        }
        busy.store(false, ordering: .releasing)
        return true
    }

    private func loop() {
        while true {
            var spins = 0
            while state.load(ordering: .acquiring) != 1 {
                spins += 1
                if spins < 20_000 {
                    gs_cpu_relax()
                } else {
                    sleeping.store(true, ordering: .sequentiallyConsistent)
                    if state.load(ordering: .sequentiallyConsistent) != 1 { wake.wait() }
                    sleeping.store(false, ordering: .relaxed)
                    spins = 0
                }
            }
            job?(range)
            state.store(2, ordering: .releasing)
        }
    }
}
