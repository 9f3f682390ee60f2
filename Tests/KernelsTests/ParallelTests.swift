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
}
