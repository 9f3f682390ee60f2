import Foundation
import GeoSegment

/// Progress on stderr: a redrawn bar on a terminal, plain lines otherwise, nothing when quiet.
final class ProgressReporter: @unchecked Sendable {
    // @unchecked: used from the one thread that runs the command.
    let quiet: Bool
    let label: String
    let isTerminal = isatty(STDERR_FILENO) != 0
    private var lastLine = -1.0
    private var drewBar = false

    init(quiet: Bool, label: String) {
        self.quiet = quiet
        self.label = label
    }

    func update(done: Int, total: Int, detail: String, rateCount: Int, elapsed: Double) {
        guard !quiet else { return }
        let rate = elapsed > 0 ? Double(rateCount) / elapsed : 0
        let remaining = total - done
        let eta = rate > 0 ? Double(remaining) / rate : .nan
        let etaText = eta.isFinite ? formatDuration(eta) : "--"
        if isTerminal {
            let width = 30
            let filled = total > 0 ? width * done / total : width
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            let line = "\r\(label) \(bar) \(done)/\(total) tiles  \(String(format: "%.2f", rate)) tiles/s  ETA \(etaText)  (\(detail))"
            FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
            drewBar = true
        } else if done == total || elapsed - lastLine >= 5 || done == 0 {
            lastLine = elapsed
            FileHandle.standardError.write(Data("\(label): \(done)/\(total) tiles, \(String(format: "%.2f", rate)) tiles/s, ETA \(etaText) (\(detail))\n".utf8))
        }
    }

    func finish() {
        if drewBar { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// Machine-readable output (`encode --progress json`, `serve --machine-readable`): one JSON object
/// per line on stdout, written at once.
enum JSONLines {
    /// An encode progress event.
    static func emit(_ p: EncodeProgress) {
        let rate = p.elapsed > 0 ? Double(p.encoded) / p.elapsed : 0
        var event: [String: Any] = ["event": "progress", "done": p.finished, "total": p.total, "encoded": p.encoded,
                                    "skipped": p.skipped, "empty": p.empty, "elapsed_s": (p.elapsed * 1000).rounded() / 1000]
        if let tile = p.lastTile { event["tile"] = tile }
        if rate > 0 { event["eta_s"] = (Double(p.total - p.finished) / rate * 10).rounded() / 10 }
        emit(event)
    }

    static func emit(_ object: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }
}

func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
}

/// Download progress on stderr: a redrawn bar on a terminal, a line every few seconds otherwise.
final class DownloadProgress: @unchecked Sendable {
    // @unchecked: `lock` guards the mutable state; updates come from URLSession's queue.
    let label: String
    let quiet: Bool
    let isTerminal = isatty(STDERR_FILENO) != 0
    private let lock = NSLock()
    private let start = Date()
    private var lastLine = -10.0
    private var drewBar = false

    init(label: String, quiet: Bool) {
        self.label = label
        self.quiet = quiet
    }

    func update(received: Int64, total: Int64?) {
        guard !quiet else { return }
        lock.lock()
        defer { lock.unlock() }
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(received) / elapsed : 0
        let mb = { (bytes: Int64) in String(format: "%.1f", Double(bytes) / 1e6) }
        var text = "\(mb(received))\(total.map { "/\(mb($0))" } ?? "") MB  \(String(format: "%.1f", rate / 1e6)) MB/s"
        if let total, rate > 0 { text += "  ETA \(formatDuration(Double(total - received) / rate))" }
        if isTerminal {
            let width = 30
            let filled = total.map { $0 > 0 ? min(width, Int(Int64(width) * received / $0)) : 0 } ?? 0
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            FileHandle.standardError.write(Data("\r\(label) \(bar) \(text)\u{1B}[K".utf8))
            drewBar = true
        } else if elapsed - lastLine >= 5 || (total != nil && received == total) {
            lastLine = elapsed
            FileHandle.standardError.write(Data("\(label): \(text)\n".utf8))
        }
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if drewBar { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

