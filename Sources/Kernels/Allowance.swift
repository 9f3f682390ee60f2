import Foundation
import CKernels

/// The cores this process may use: the fewest of the CPUs online, its affinity mask (Slurm's
/// task binding or cgroup cpuset, `taskset`, a container's cpuset) and its cgroup's CPU quota (a
/// Kubernetes CPU limit, Slurm's `ConstrainCores`), or `GEOSAM2_THREADS` when that is set. A
/// process that spread its work over every CPU of the node while allowed two would run its
/// splits time-sliced, each waiting on the slowest.
public enum CPUAllowance {
    /// The allowance and what set it ("online CPUs", "affinity", "cgroup quota", "GEOSAM2_THREADS").
    public static let current: (cores: Int, limitedBy: String) = compute(environment: ProcessInfo.processInfo.environment)

    static func compute(environment: [String: String]) -> (cores: Int, limitedBy: String) {
        if let text = environment["GEOSAM2_THREADS"], let n = Int(text), n >= 1 { return (n, "GEOSAM2_THREADS") }
        var best = (cores: max(1, onlineCPUs), limitedBy: "online CPUs")
        let affinity = Int(gs_affinity_cpu_count())
        if affinity >= 1, affinity < best.cores { best = (affinity, "affinity") }
        if let quota = cgroupQuotaCores(), quota < best.cores { best = (quota, "cgroup quota") }
        return best
    }

    static var onlineCPUs: Int {
        #if os(Linux)
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return n > 0 ? Int(n) : 1
        #else
        return ProcessInfo.processInfo.activeProcessorCount
        #endif
    }

    /// Cores a cgroup v2 `cpu.max` line grants ("QUOTA PERIOD" in µs, or "max PERIOD" for no
    /// limit): the quota rounded up, so that 1.5 cores of quota run two workers.
    public static func cores(cpuMax line: String) -> Int? {
        let parts = line.split(whereSeparator: \.isWhitespace)
        guard parts.count == 2, let quota = Double(parts[0]), let period = Double(parts[1]), quota > 0, period > 0 else { return nil }
        return max(1, Int((quota / period).rounded(.up)))
    }

    /// The tightest CPU quota over this process's cgroups and their parents (a limit may sit on
    /// the pod above the container, or on a Slurm job above its step): cgroup v2's `cpu.max`, and
    /// cgroup v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota −1: none).
    /// - Parameters:
    ///   - membership: the text of `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` lines).
    ///   - root: where the cgroup file systems are mounted.
    static func cgroupQuotaCores(membership: String? = nil, root: String = "/sys/fs/cgroup") -> Int? {
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let membership = membership ?? read("/proc/self/cgroup") else { return nil }
        var tightest: Int?
        func consider(_ n: Int?) { if let n { tightest = min(tightest ?? n, n) } }
        /// `path` and its parents under `mount`: a limit above the process's own cgroup counts too.
        func walk(mount: String, path: String, _ quota: (String) -> Int?) {
            var path = path
            while true {
                consider(quota(mount + (path == "/" ? "" : path)))
                guard path != "/", !path.isEmpty else { break }
                path = (path as NSString).deletingLastPathComponent
            }
        }
        for line in membership.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let (controllers, path) = (fields[1].split(separator: ","), String(fields[2]))
            if fields[0] == "0", controllers.isEmpty {
                walk(mount: root, path: path) { dir in read(dir + "/cpu.max").flatMap { cores(cpuMax: $0) } }
                walk(mount: root + "/unified", path: path) { dir in read(dir + "/cpu.max").flatMap { cores(cpuMax: $0) } }
            } else if controllers.contains("cpu") {
                // Mounted as cpu, or with cpuacct as cpu,cpuacct (a symlink from cpu on most systems).
                for name in ["cpu", "cpu,cpuacct", controllers.joined(separator: ",")] {
                    walk(mount: root + "/" + name, path: path) { dir in
                        guard let quota = read(dir + "/cpu.cfs_quota_us"), let period = read(dir + "/cpu.cfs_period_us") else { return nil }
                        return cores(cpuMax: "\(quota) \(period)")
                    }
                }
            }
        }
        return tightest
    }
}

/// Memory this process may still take: the kernel's `MemAvailable`, bounded by its cgroup's
/// memory limit less what the cgroup already uses (a Kubernetes memory limit, Slurm's
/// `--mem`), whose excess is an OOM kill rather than swapping.
public enum MemoryAllowance {
    /// Bytes available now, or nil when nothing can be read.
    public static var availableBytes: Int? {
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var available: Int?
        if let info = read("/proc/meminfo"),
           let line = info.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") {
            available = kib * 1024
        }
        // cgroup v2, then v1 (paths as the process sees them: inside a container, its own root).
        for (limitFile, usageFile) in [("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")] {
            guard let limit = read(limitFile).flatMap({ Int($0) }), limit < 1 << 60 else { continue }
            let headroom = max(0, limit - (read(usageFile).flatMap { Int($0) } ?? 0))
            available = min(available ?? headroom, headroom)
        }
        return available
    }
}
