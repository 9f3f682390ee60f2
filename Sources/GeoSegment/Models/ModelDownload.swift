import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SAM2

extension ModelCatalog {
    /// Environment variable that replaces Meta's download server: checkpoints are fetched from
    /// `$GEOSAM2_MODEL_BASE_URL/<file name>` (a mirror, or a loopback server in tests).
    public static let baseURLVariable = "GEOSAM2_MODEL_BASE_URL"

    /// Where a preset is downloaded from: `baseURL/<file>` (`baseURL` defaults to
    /// `$GEOSAM2_MODEL_BASE_URL`), else Meta's public address.
    public static func downloadURL(for preset: SAM2Preset, baseURL: String? = nil) throws -> URL {
        let base = baseURL ?? ProcessInfo.processInfo.environment[baseURLVariable].flatMap { $0.isEmpty ? nil : $0 }
        let text = base.map { ($0.hasSuffix("/") ? String($0.dropLast()) : $0) + "/" + preset.checkpointFileName } ?? preset.downloadURL
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https" else {
            throw GeoSegmentError("\(text) is not an http(s) address (check \(baseURLVariable))")
        }
        return url
    }

    /// What to tell a user who cannot download a preset.
    public static func offlineAdvice(for preset: SAM2Preset, directory: URL = cacheDirectory) -> String {
        "without internet access, download \(preset.downloadURL) on another machine and pass it with --model /path/to/\(preset.checkpointFileName), or copy it to \(directory.appendingPathComponent(preset.checkpointFileName).path)"
    }

    /// Checks that a downloaded file is the preset's checkpoint: it opens as a SAM2 checkpoint and
    /// its tensor shapes are those of `preset`.
    public static func validateCheckpoint(_ url: URL, preset: SAM2Preset) throws {
        let found: SAM2Preset
        do {
            found = try SAM2Model.inspect(contentsOf: url).preset
        } catch {
            throw GeoSegmentError("the downloaded file is not a valid SAM2 checkpoint (\(error))")
        }
        guard found == preset else {
            throw GeoSegmentError("the downloaded file holds SAM2 \(found.rawValue), not \(preset.rawValue)")
        }
    }

    /// Downloads a preset's checkpoint into `directory` (the model cache by default) and returns
    /// its path.
    ///
    /// The file is written under a temporary name, checked (complete, and `validate` passes —
    /// by default ``validateCheckpoint(_:preset:)``), then renamed into place, so an interrupted
    /// or corrupt download never leaves a checkpoint behind.
    /// - Parameters:
    ///   - baseURL: overrides `$GEOSAM2_MODEL_BASE_URL` and Meta's server.
    ///   - progress: called with the bytes received so far and the total when the server says it.
    public static func download(
        _ preset: SAM2Preset, baseURL: String? = nil, into directory: URL = cacheDirectory,
        validate: (@Sendable (URL) throws -> Void)? = nil,
        progress: @escaping @Sendable (_ received: Int64, _ total: Int64?) -> Void = { _, _ in }
    ) async throws -> URL {
        let source = try downloadURL(for: preset, baseURL: baseURL)
        let fm = FileManager.default
        try rethrowing("cannot create the model cache \(directory.path)") {
            try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        let destination = directory.appendingPathComponent(preset.checkpointFileName)
        let partial = directory.appendingPathComponent(".\(preset.checkpointFileName).\(UUID().uuidString).part")
        guard fm.createFile(atPath: partial.path, contents: nil), let handle = try? FileHandle(forWritingTo: partial) else {
            throw GeoSegmentError("cannot write to the model cache \(directory.path)")
        }
        var keep = false
        defer { if !keep { try? fm.removeItem(at: partial) } }

        let received: Int64
        do {
            received = try await DownloadTask(url: source, handle: handle, progress: progress).run()
            try? handle.close()
        } catch {
            try? handle.close()
            throw GeoSegmentError("cannot download \(preset.checkpointFileName) from \(source.absoluteString): \(error); \(offlineAdvice(for: preset, directory: directory))")
        }
        guard received > 0 else { throw GeoSegmentError("\(source.absoluteString) sent an empty file") }
        do {
            if let validate { try validate(partial) } else { try validateCheckpoint(partial, preset: preset) }
        } catch {
            throw GeoSegmentError("\(source.absoluteString): \(error); \(offlineAdvice(for: preset, directory: directory))")
        }
        guard rename(partial.path, destination.path) == 0 else {
            throw GeoSegmentError("cannot move the download to \(destination.path): \(String(cString: strerror(errno)))")
        }
        keep = true
        return destination
    }
}

/// One HTTP GET streamed into a file, with progress; fails on a non-200 status and on a body
/// shorter than its Content-Length.
private final class DownloadTask: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    // @unchecked: the session calls the delegate on its own serial queue; `lock` guards the rest.
    let url: URL
    let handle: FileHandle
    let progress: @Sendable (Int64, Int64?) -> Void
    private let lock = NSLock()
    private var expected: Int64?
    private var received: Int64 = 0
    private var failure: String?
    private var continuation: CheckedContinuation<Int64, any Error>?

    struct Failure: Error, CustomStringConvertible { let description: String }

    init(url: URL, handle: FileHandle, progress: @escaping @Sendable (Int64, Int64?) -> Void) {
        self.url = url
        self.handle = handle
        self.progress = progress
    }

    func run() async throws -> Int64 {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 60
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let session = URLSession(configuration: configuration, delegate: self, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        return try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            self.continuation = continuation
            lock.unlock()
            session.dataTask(with: url).resume()
        }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else {
            lock.lock()
            failure = "the server answered HTTP \(status)"
            lock.unlock()
            completionHandler(.cancel)
            return
        }
        lock.lock()
        expected = response.expectedContentLength > 0 ? response.expectedContentLength : nil
        lock.unlock()
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        lock.lock()
        guard failure == nil else { lock.unlock(); return }
        do {
            try handle.write(contentsOf: data)
            received += Int64(data.count)
        } catch {
            failure = "cannot write the download: \(error.localizedDescription)"
            dataTask.cancel()
        }
        let (now, total) = (received, expected)
        lock.unlock()
        progress(now, total)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        lock.lock()
        let continuation = self.continuation
        self.continuation = nil
        let result: Result<Int64, any Error>
        if let failure {
            result = .failure(Failure(description: failure))
        } else if let error {
            result = .failure(Failure(description: Self.describe(error)))
        } else if let expected, received != expected {
            result = .failure(Failure(description: "the transfer stopped after \(received) of \(expected) bytes"))
        } else {
            result = .success(received)
        }
        lock.unlock()
        continuation?.resume(with: result)
    }

    /// URLError's own descriptions are vague on Linux ("error -1004").
    static func describe(_ error: any Error) -> String {
        guard let error = error as? URLError else { return error.localizedDescription }
        switch error.code {
        case .cannotConnectToHost: return "cannot connect to the server"
        case .cannotFindHost, .dnsLookupFailed: return "cannot find the server (no DNS)"
        case .notConnectedToInternet: return "not connected to the internet"
        case .timedOut: return "the connection timed out"
        case .networkConnectionLost: return "the connection was lost"
        case .secureConnectionFailed, .serverCertificateUntrusted: return "the TLS connection failed"
        default: return "network error \(error.code.rawValue)"
        }
    }
}
