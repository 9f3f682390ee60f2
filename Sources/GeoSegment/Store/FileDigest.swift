import Crypto
import Foundation

/// SHA-256 digests of files, read in chunks so that a 900 MB checkpoint never sits in memory.
public enum FileDigest {
    public static func sha256(of url: URL) throws -> String {
        guard let handle = try? FileHandle(forReadingFrom: url) else {
            throw GeoSegmentError("cannot read \(url.path)")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk = try rethrowing("cannot read \(url.path)") { try handle.read(upToCount: 8 << 20) ?? Data() }
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hex(hasher.finalize())
    }

    /// A cheap identity of a large file: its size and the SHA-256 of its first and last MiB.
    /// Paths GDAL opens virtually (`/vsi…`) are identified by name only.
    public static func fingerprint(of path: String) throws -> String {
        guard !path.hasPrefix("/vsi") else { return "vsi:\(path)" }
        let url = URL(fileURLWithPath: path)
        guard let handle = try? FileHandle(forReadingFrom: url) else { throw GeoSegmentError("cannot read \(path)") }
        defer { try? handle.close() }
        return try rethrowing("cannot read \(path)") {
            let size = try handle.seekToEnd()
            let span: UInt64 = 1 << 20
            var hasher = SHA256()
            try handle.seek(toOffset: 0)
            hasher.update(data: try handle.read(upToCount: Int(min(span, size))) ?? Data())
            if size > span {
                try handle.seek(toOffset: size - min(span, size - span))
                hasher.update(data: try handle.read(upToCount: Int(span)) ?? Data())
            }
            return "size:\(size),sha256-ends:\(hex(hasher.finalize()))"
        }
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
