import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only view of a whole file, memory-mapped so that opening a multi-hundred-megabyte
/// checkpoint costs only page-table entries; bytes are paged in when a tensor is decoded.
///
/// The mapping is immutable for its whole life, which is why sharing it between tasks is safe
/// (`@unchecked Sendable`): nothing ever writes through `base`.
final class MappedFile: @unchecked Sendable {
    /// First byte of the mapping, or `nil` for an empty file (mmap rejects zero lengths).
    let base: UnsafeRawPointer?
    /// File length in bytes.
    let count: Int
    /// The file's last path component, used to prefix every error message.
    let name: String
    /// How to give the memory back: `munmap` for a mapping, `deallocate` for a heap copy.
    private let release: @Sendable (UnsafeMutableRawPointer, Int) -> Void

    /// Maps `url` read-only.
    init(url: URL) throws {
        name = url.lastPathComponent
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else {
            throw TensorIOError("\(url.lastPathComponent): cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw TensorIOError("\(url.lastPathComponent): cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw TensorIOError("\(url.lastPathComponent): not a regular file")
        }
        let size = Int(st.st_size)
        count = size
        if size == 0 {
            base = nil
            release = { _, _ in }
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw TensorIOError("\(url.lastPathComponent): cannot memory-map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
        release = { ptr, n in _ = munmap(ptr, n) }
    }

    /// Wraps a copy of in-memory bytes (used where a caller already holds `Data`).
    init(data: Data, name: String) {
        self.name = name
        count = data.count
        if data.isEmpty {
            base = nil
            release = { _, _ in }
            return
        }
        let p = UnsafeMutableRawPointer.allocate(byteCount: data.count, alignment: 64)
        data.withUnsafeBytes { src in
            if let s = src.baseAddress { p.copyMemory(from: s, byteCount: src.count) }
        }
        base = UnsafeRawPointer(p)
        release = { ptr, _ in ptr.deallocate() }
    }

    deinit {
        if let base { release(UnsafeMutableRawPointer(mutating: base), count) }
    }

    /// Bounds-checked reader over the whole file.
    var reader: ByteReader { ByteReader(base: base, count: count, name: name) }
}

/// A bounds-checked little-endian reader over a raw byte range.
///
/// Every accessor validates `offset` and `offset + width` against `count` (with overflow-safe
/// arithmetic) and throws instead of trapping, because all inputs are untrusted files.
struct ByteReader {
    let base: UnsafeRawPointer?
    let count: Int
    /// File name for error messages.
    let name: String

    /// Throws unless `[offset, offset + length)` lies inside the buffer.
    func check(_ offset: Int, _ length: Int, _ what: @autoclosure () -> String) throws {
        guard offset >= 0, length >= 0 else {
            throw TensorIOError("\(name): corrupt: negative offset or length for \(what())")
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= count else {
            throw TensorIOError("\(name): truncated: \(what()) (bytes \(offset)..<\(overflow ? Int.max : end)) lies beyond the end of the file (\(count) bytes)")
        }
    }

    /// True if `[offset, offset + length)` lies inside the buffer.
    func contains(_ offset: Int, _ length: Int) -> Bool {
        guard offset >= 0, length >= 0 else { return false }
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= count
    }

    /// Reads without a bounds check; callers must have validated the range.
    @inline(__always)
    private func raw<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
        // `base` is non-nil whenever a non-empty range was validated.
        T(littleEndian: base.unsafelyUnwrapped.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    func u8(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt8 {
        try check(offset, 1, what())
        return raw(offset, UInt8.self)
    }

    func u16(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt16 {
        try check(offset, 2, what())
        return raw(offset, UInt16.self)
    }

    func u32(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt32 {
        try check(offset, 4, what())
        return raw(offset, UInt32.self)
    }

    func u64(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt64 {
        try check(offset, 8, what())
        return raw(offset, UInt64.self)
    }

    /// Copies out `length` bytes.
    func bytes(_ offset: Int, _ length: Int, _ what: @autoclosure () -> String) throws -> [UInt8] {
        try check(offset, length, what())
        guard length > 0, let base else { return [] }
        return Array(UnsafeRawBufferPointer(start: base + offset, count: length))
    }

    /// A raw pointer to `length` validated bytes at `offset`.
    func pointer(_ offset: Int, _ length: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawPointer? {
        try check(offset, length, what())
        return base.map { $0 + offset }
    }
}

/// Converts an unsigned on-disk quantity to `Int`, throwing if it cannot be a valid offset or size
/// (values above `Int.max` would otherwise trap in `Int(_:)`).
func checkedInt(_ value: UInt64, _ name: String, _ what: @autoclosure () -> String) throws -> Int {
    guard value <= UInt64(Int.max) else {
        throw TensorIOError("\(name): corrupt: \(what()) is \(value), too large")
    }
    return Int(value)
}

/// The product of `dims`, or `nil` on overflow or a negative dimension.
func checkedProduct(_ dims: [Int]) -> Int? {
    var n = 1
    for d in dims {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = p
    }
    return n
}
