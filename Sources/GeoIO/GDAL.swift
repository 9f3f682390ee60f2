import CGDAL

/// Process-wide GDAL facilities: version, driver registration and configuration options.
///
/// Every entry point of this module registers the drivers on first use, so calling
/// ``registerDrivers()`` yourself is only needed before using GDAL directly through `CGDAL`.
public enum GDAL {
    /// The GDAL release linked at run time, e.g. `"3.6.2"`.
    public static var version: String {
        registerDrivers()
        return String(cString: GDALVersionInfo("RELEASE_NAME"))
    }

    /// The GDAL release linked at run time as a single number, e.g. `3060200` for 3.6.2.
    public static var versionNumber: Int {
        registerDrivers()
        return Int(String(cString: GDALVersionInfo("VERSION_NUM"))) ?? 0
    }

    /// Registers all GDAL/OGR drivers and silences GDAL's default stderr error printer.
    ///
    /// Thread-safe and idempotent: the work runs once, guarded by Swift's lazy global initialisation.
    public static func registerDrivers() {
        _ = driverRegistration
    }

    /// Sets a GDAL configuration option (`CPLSetConfigOption`) for the whole process.
    ///
    /// - Parameters:
    ///   - key: the option name, e.g. `"GDAL_CACHEMAX"` or `"GDAL_HTTP_TIMEOUT"`.
    ///   - value: the new value, or `nil` to unset the option.
    public static func setConfigOption(_ key: String, _ value: String?) {
        registerDrivers()
        CPLSetConfigOption(key, value)
    }

    /// The current value of a GDAL configuration option (`CPLGetConfigOption`), or `nil` if unset.
    public static func configOption(_ key: String) -> String? {
        registerDrivers()
        guard let value = CPLGetConfigOption(key, nil) else { return nil }
        return String(cString: value)
    }

    /// Copies a file between any two GDAL paths (`CPLCopyFile`), e.g. from `/vsimem/…` into
    /// `/vsizip/archive.zip/name` (zip archives accept files written sequentially).
    public static func copyFile(from source: String, to destination: String) throws {
        try withQuietGDAL {
            guard CPLCopyFile(destination, source) == 0 else {
                throw GeoIOError.gdal("cannot copy \(source) to \(destination)")
            }
        }
    }

    /// Deletes a file on any GDAL file system (`VSIUnlink`), e.g. a `/vsimem/…` file.
    public static func deleteFile(_ path: String) throws {
        try withQuietGDAL {
            guard VSIUnlink(path) == 0 else { throw GeoIOError.gdal("cannot delete", path: path) }
        }
    }

    /// Whether a driver with this short name (e.g. `"GTiff"`, `"GPKG"`) is available.
    public static func hasDriver(_ name: String) -> Bool {
        registerDrivers()
        return GDALGetDriverByName(name) != nil
    }
}

/// Lazily initialised exactly once (Swift globals use `swift_once`), hence thread-safe.
private let driverRegistration: Void = {
    GDALAllRegister()
    // Errors raised outside ``withQuietGDAL`` (for example while a dataset is closed in a
    // `deinit`, or on GDAL worker threads) must not reach stderr either.
    _ = CPLSetErrorHandler(CPLQuietErrorHandler)
}()

/// How a raster or vector dataset is opened.
public enum DatasetAccess: Sendable {
    case readOnly
    case update
}

// MARK: - Error plumbing

/// Runs `body` with drivers registered, GDAL's error state cleared and a quiet error handler
/// pushed on this thread's handler stack, so that failures can be read back with
/// ``GeoIOError/gdal(_:path:)`` and nothing is printed.
///
/// GDAL's handler stack and last-error slot are thread-local; `body` is synchronous, so the
/// push, the calls and the pop all happen on the same thread.
@inline(__always)
func withQuietGDAL<T>(_ body: () throws -> T) rethrows -> T {
    GDAL.registerDrivers()
    CPLPushErrorHandler(CPLQuietErrorHandler)
    defer { CPLPopErrorHandler() }
    CPLErrorReset()
    return try body()
}

extension GeoIOError {
    /// The last GDAL error of this thread, on one line, or `nil` if GDAL recorded none.
    static var lastGDALMessage: String? {
        guard CPLGetLastErrorType() != CE_None, let raw = CPLGetLastErrorMsg() else { return nil }
        let text = String(cString: raw)
            .split(whereSeparator: \.isNewline)
            .map(trimmed)
            .joined(separator: " ")
        return text.isEmpty ? nil : text
    }

    /// An error for a failed GDAL call: `"<path>: <action>: <GDAL's message>"`.
    ///
    /// The path is left out when GDAL's message already names the file. Resets GDAL's error state.
    ///
    /// `action` is evaluated after GDAL's message has been read, so it may itself call GDAL
    /// (e.g. describe a ``SpatialReference``) without losing the message.
    static func gdal(_ action: @autoclosure () -> String, path: String? = nil) -> GeoIOError {
        let message = lastGDALMessage
        CPLErrorReset()
        let action = action()
        var parts: [String] = []
        if let path, !(message?.contains(fileName(path)) ?? false) {
            parts.append(path)
        }
        parts.append(action)
        parts.append(message ?? "GDAL gave no reason")
        return GeoIOError(parts.joined(separator: ": "))
    }
}

/// The last path component of a GDAL path (also for `/vsizip/a.zip/b.tif`).
func fileName(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return path }
    let name = path[path.index(after: slash)...]
    return name.isEmpty ? path : String(name)
}

/// `text` without leading and trailing whitespace.
private func trimmed(_ text: Substring) -> Substring {
    var text = text
    while let first = text.first, first.isWhitespace { text.removeFirst() }
    while let last = text.last, last.isWhitespace { text.removeLast() }
    return text
}

/// Ignores a C result whose type differs between GDAL versions (`void` in 3.6, `CPLErr` in later
/// releases for `GDALClose`/`GDALFlushCache`), without a warning in either case.
@inline(__always)
func discardResult<T>(_ value: T) {}

/// Converts a C string returned by GDAL that the caller must free with `CPLFree`/`VSIFree`.
func takeCPLString(_ pointer: UnsafeMutablePointer<CChar>?) -> String? {
    guard let pointer else { return nil }
    defer { VSIFree(pointer) }
    return String(cString: pointer)
}

// MARK: - CSL string lists

/// Owns a GDAL `char**` string list (CSL), e.g. creation options, and frees it in `deinit`.
final class StringList {
    private(set) var pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?

    init(_ strings: [String] = []) {
        for string in strings { pointer = CSLAddString(pointer, string) }
    }

    /// Takes ownership of a list returned by GDAL.
    init(taking pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
        self.pointer = pointer
    }

    deinit { CSLDestroy(pointer) }

    var strings: [String] {
        guard let pointer else { return [] }
        var result: [String] = []
        var index = 0
        while let item = pointer[index] {
            result.append(String(cString: item))
            index += 1
        }
        return result
    }

    /// Calls `body` with the list as GDAL's `CSLConstList`, keeping it alive meanwhile.
    func withCSL<T>(_ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) throws -> T) rethrows -> T {
        try withExtendedLifetime(self) { try body(pointer) }
    }

    /// Calls `body` with the list as `const char* const*` (GDAL's `CSLConstList`).
    func withConstCSL<T>(_ body: (UnsafePointer<UnsafePointer<CChar>?>?) throws -> T) rethrows -> T {
        try withExtendedLifetime(self) {
            let constList = pointer.map {
                UnsafeRawPointer($0).assumingMemoryBound(to: UnsafePointer<CChar>?.self)
            }
            return try body(constList)
        }
    }
}
