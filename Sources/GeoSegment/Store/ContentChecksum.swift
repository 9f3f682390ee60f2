import Foundation
import Kernels

/// The checksum that covers every byte of a store file (tile features and empty-tile markers).
///
/// The file carries its own CRC-32C as the JSON member `"content_crc32c":"xxxxxxxx"` (8 lowercase
/// hex digits; in a safetensors tile it is a `__metadata__` entry of the header). The checksum is
/// that of the whole file with those 8 digits read as ASCII `0`s, so it also covers the length
/// prefix, every header byte and every data byte; the writer fills the digits in last.
/// `docs/store-format.md` specifies it for other readers.
public enum ContentChecksum {
    public static let key = "content_crc32c"
    static let placeholder = "00000000"
    static let marker = Array("\"\(key)\":\"".utf8)

    /// What a file's checksum says.
    public enum Status: Sendable, Equatable {
        case valid
        /// The file carries no checksum (written before stores had them, or the key was damaged).
        case missing
        case mismatch(stored: String, computed: String)
    }

    /// Where the 8 digits start: just after the first `"content_crc32c":"` in `bytes[0..<limit]`.
    static func digitsOffset(in bytes: UnsafeRawBufferPointer, limit: Int) -> Int? {
        let end = min(limit, bytes.count) - marker.count - placeholder.count
        guard end >= 0 else { return nil }
        let first = marker[0]
        var i = 0
        while i <= end {
            if bytes[i] == first {
                var match = true
                for j in 1..<marker.count where bytes[i + j] != marker[j] {
                    match = false
                    break
                }
                if match { return i + marker.count }
            }
            i += 1
        }
        return nil
    }

    /// The CRC-32C of `bytes` with the 8 digits at `offset` taken as ASCII zeros.
    static func computed(_ bytes: UnsafeRawBufferPointer, digitsAt offset: Int) -> UInt32 {
        var crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<offset]))
        crc = Array(placeholder.utf8).withUnsafeBytes { CRC32C.checksum($0, continuing: crc) }
        return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[(offset + placeholder.count)...]), continuing: crc)
    }

    /// Checks a file's bytes; the marker is looked for in the first `searchLimit` bytes (the
    /// safetensors header; the whole file for JSON).
    public static func check(_ bytes: UnsafeRawBufferPointer, searchLimit: Int) -> Status {
        guard let offset = digitsOffset(in: bytes, limit: searchLimit) else { return .missing }
        let stored = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + placeholder.count)]), as: UTF8.self)
        let actual = hex(computed(bytes, digitsAt: offset))
        return stored == actual ? .valid : .mismatch(stored: stored, computed: actual)
    }

    /// Fills in the checksum of `data`, which holds the placeholder `00000000` as the key's value
    /// in its first `searchLimit` bytes.
    static func seal(_ data: inout Data, searchLimit: Int) throws {
        let digits: (Int, String)? = data.withUnsafeBytes { bytes in
            guard let offset = digitsOffset(in: bytes, limit: searchLimit),
                  bytes[offset..<(offset + placeholder.count)].elementsEqual(placeholder.utf8) else { return nil }
            return (offset, hex(computed(bytes, digitsAt: offset)))
        }
        guard let (offset, value) = digits else { throw GeoSegmentError("internal: no checksum placeholder to fill") }
        let start = data.startIndex + offset
        data.replaceSubrange(start..<(start + placeholder.count), with: Array(value.utf8))
    }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}
