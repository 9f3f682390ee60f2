import Foundation
import Synchronization
import XCTest
@testable import Kernels

final class CPUAllowanceTests: XCTestCase {
    func testCPUMaxLines() {
        XCTAssertEqual(CPUAllowance.cores(cpuMax: "200000 100000"), 2)
        XCTAssertEqual(CPUAllowance.cores(cpuMax: "150000 100000"), 2, "a fraction of a core rounds up")
        XCTAssertEqual(CPUAllowance.cores(cpuMax: "50000 100000"), 1)
        XCTAssertNil(CPUAllowance.cores(cpuMax: "max 100000"))
        XCTAssertNil(CPUAllowance.cores(cpuMax: "-1 100000"), "cgroup v1's no-quota")
        XCTAssertNil(CPUAllowance.cores(cpuMax: "garbage"))
    }

    func testEnvironmentOverridesTheMachine() {
        XCTAssertEqual(CPUAllowance.compute(environment: ["GEOSAM2_THREADS": "3"]).cores, 3)
        XCTAssertEqual(CPUAllowance.compute(environment: ["GEOSAM2_THREADS": "3"]).limitedBy, "GEOSAM2_THREADS")
        let machine = CPUAllowance.compute(environment: [:])
        XCTAssertEqual(CPUAllowance.compute(environment: ["GEOSAM2_THREADS": "0"]).cores, machine.cores, "0 is ignored")
        XCTAssertEqual(CPUAllowance.compute(environment: ["GEOSAM2_THREADS": "many"]).cores, machine.cores)
        XCTAssertGreaterThanOrEqual(machine.cores, 1)
        XCTAssertLessThanOrEqual(machine.cores, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// A cgroup tree laid out as on a Kubernetes node (v2, limit on the pod, none on the container)
    /// and as a v1 cpu hierarchy (a Slurm job's step below the job's limit).
    func testQuotaIsTheTightestOverTheCgroupAndItsParents() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cgroup-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        func write(_ path: String, _ text: String) throws {
            let url = URL(fileURLWithPath: root + path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        try write("/cpu.max", "max 100000\n")
        try write("/kubepods/pod1/cpu.max", "300000 100000\n")
        try write("/kubepods/pod1/container/cpu.max", "max 100000\n")
        XCTAssertEqual(CPUAllowance.cgroupQuotaCores(membership: "0::/kubepods/pod1/container\n", root: root), 3)
        XCTAssertNil(CPUAllowance.cgroupQuotaCores(membership: "0::/\n", root: root))

        try write("/cpu,cpuacct/slurm/uid_0/job_7/cpu.cfs_quota_us", "200000\n")
        try write("/cpu,cpuacct/slurm/uid_0/job_7/cpu.cfs_period_us", "100000\n")
        try write("/cpu,cpuacct/slurm/uid_0/job_7/step_0/cpu.cfs_quota_us", "-1\n")
        try write("/cpu,cpuacct/slurm/uid_0/job_7/step_0/cpu.cfs_period_us", "100000\n")
        let v1 = "4:memory:/slurm/uid_0/job_7/step_0\n2:cpu,cpuacct:/slurm/uid_0/job_7/step_0\n0::/\n"
        XCTAssertEqual(CPUAllowance.cgroupQuotaCores(membership: v1, root: root), 2)
    }
}

final class ParallelTests: XCTestCase {
    /// The chunks one `forEachChunk` call runs in.
    func chunks(_ count: Int) -> [Range<Int>] {
        let seen = Mutex<[Range<Int>]>([])
        Parallel.forEachChunk(count, minimumChunk: 1) { range in seen.withLock { $0.append(range) } }
        return seen.withLock { $0 }.sorted { $0.lowerBound < $1.lowerBound }
    }

    func testWorkerLimitBoundsTheSplit() {
        XCTAssertEqual(chunks(100).count, min(Parallel.workerCount, 100))
        XCTAssertEqual(Parallel.withWorkers(1) { chunks(100) }, [0..<100])
        let two = Parallel.withWorkers(2) { chunks(100) }
        XCTAssertEqual(two.count, min(2, Parallel.workerCount))
        XCTAssertEqual(two.flatMap { Array($0) }, Array(0..<100), "the chunks cover the range once, in order")
        XCTAssertEqual(Parallel.withWorkers(0) { chunks(10) }, [0..<10], "at least one worker")
    }

    /// A product gives the same bits on one core or all of them: `GEMM.multiply` splits into
    /// blocks fixed by the shape, because OpenBLAS's result for a row depends on the rows of its
    /// call (before, a store encoded by tiles in flight differed from one encoded a tile at a time
    /// on the portable path).
    func testProductsDoNotDependOnTheWorkerCount() {
        var generator = SystemRandomNumberGenerator()
        for (m, n, k) in [(4096, 288, 96), (16384, 96, 96), (1000, 768, 192), (256, 2304, 768)] {
            let a = Tensor(shape: [m, k], scalars: (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &generator) })
            let w = Tensor(shape: [n, k], scalars: (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &generator) })
            func product(workers: Int) -> [Float] {
                var c = Tensor(shape: [m, n], scalars: [Float](repeating: 0, count: m * n))
                Parallel.withWorkers(workers) { GEMM.multiply(a.matrix, w.matrix.transposed, into: c.mutableMatrix()) }
                return c.toArray()
            }
            let one = product(workers: 1)
            XCTAssertEqual(product(workers: 2), one, "[\(m), \(k)]·[\(k), \(n)] on 2 workers")
            XCTAssertEqual(product(workers: 3), one, "[\(m), \(k)]·[\(k), \(n)] on 3 workers")
            let rows = GEMM.rowBlock(m: m, n: n, k: k)
            XCTAssertLessThanOrEqual((m + rows - 1) / rows, 64, "at most 64 calls")
        }
        XCTAssertEqual(GEMM.rowBlock(m: 4, n: 65536, k: 32), 4, "a few rows stay one call")
        XCTAssertEqual(GEMM.rowBlock(m: 4096, n: 288, k: 96) % 16, 0)
    }

    /// Pieces claimed by workers: every index once, in pieces of the given length (the last one
    /// shorter), each worker called once at most, on any number of workers and serially.
    func testSharedPiecesCoverTheRangeOnce() {
        func pieces(_ count: Int, _ piece: Int) -> (pieces: [Range<Int>], workers: Int) {
            let seen = Mutex<(pieces: [Range<Int>], workers: Int)>(([], 0))
            Parallel.share(count, piece: piece) { queue in
                seen.withLock { $0.workers += 1 }
                while let range = queue.next() { seen.withLock { $0.pieces.append(range) } }
            }
            let result = seen.withLock { $0 }
            return (result.pieces.sorted { $0.lowerBound < $1.lowerBound }, result.workers)
        }
        for workers in [1, 2, 3] {
            let (shared, called) = Parallel.withWorkers(workers) { pieces(1000, 192) }
            XCTAssertEqual(shared, [0..<192, 192..<384, 384..<576, 576..<768, 768..<960, 960..<1000], "\(workers) workers")
            XCTAssertLessThanOrEqual(called, min(workers, Parallel.workerCount))
        }
        if Parallel.workerCount >= 2 {
            XCTAssertEqual(Parallel.withWorkers(2) { pieces(1000, 1) }.workers, 2, "two workers share the pieces")
        }
        XCTAssertEqual(pieces(5, 8).pieces, [0..<5], "one short piece")
        XCTAssertEqual(pieces(5, .max).pieces, [0..<5], "a piece longer than the range")
        XCTAssertEqual(pieces(0, 8).workers, 0, "nothing to share")
        XCTAssertEqual(pieces(7, 0).pieces.count, 7, "pieces of at least one")
        let serial = Parallel.serially { pieces(100, 10) }
        XCTAssertEqual(serial.workers, 1, "a serial region runs one worker")
        XCTAssertEqual(serial.pieces.count, 10)
        var visited = [Int](repeating: 0, count: 4099)
        visited.withUnsafeMutableBufferPointer { counts in
            nonisolated(unsafe) let counts = counts
            Parallel.forEachPiece(counts.count, piece: 37) { range in for i in range { counts[i] += 1 } }
        }
        XCTAssertEqual(Set(visited), [1], "forEachPiece visits every index once")
    }

    /// The packed GEMM split in shared row pieces gives the single-threaded call's bits, pieces of
    /// 192 rows and a short last one.
    func testPackedProductInPiecesMatchesOneCall() throws {
        try XCTSkipUnless(Accelerated.hasPackedKernels, "no packed kernels on this CPU")
        var generator = SystemRandomNumberGenerator()
        let (m, n, k) = (1000, 96, 300)
        let x = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &generator) }
        let w = Tensor(shape: [n, k], scalars: (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &generator) })
        let bias = (0..<n).map { _ in Float.random(in: -1...1, using: &generator) }
        let packed = PackedWeight(w)
        var split = [Float](repeating: 0.5, count: m * n), single = split
        for (gelu, accumulate) in [(false, false), (true, false), (false, true)] {
            split.withUnsafeMutableBufferPointer { y in
                packed.apply(x, rows: m, xStride: k, bias: bias, into: y.baseAddress!, yStride: n, accumulate: accumulate, gelu: gelu)
            }
            single.withUnsafeMutableBufferPointer { y in
                packed.applySingleThreaded(x, rows: m, xStride: k, bias: bias, into: y.baseAddress!, yStride: n,
                                           accumulate: accumulate, gelu: gelu)
            }
            XCTAssertEqual(split, single, "gelu \(gelu), accumulate \(accumulate)")
        }
    }
}
