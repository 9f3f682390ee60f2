import CGDAL
import Foundation

extension GDAL {
    /// Reads a whole file through GDAL's virtual file systems (`VSIFOpenL`): `/vsimem/…`,
    /// `/vsizip/…`, or a plain path.
    public static func readFile(_ path: String) throws -> Data {
        try withQuietGDAL {
            guard let file = VSIFOpenL(path, "rb") else { throw GeoIOError.gdal("cannot open", path: path) }
            defer { _ = VSIFCloseL(file) }
            var data = Data()
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let read = chunk.withUnsafeMutableBytes { VSIFReadL($0.baseAddress, 1, $0.count, file) }
                if read > 0 { data.append(contentsOf: chunk[0..<read]) }
                if read < chunk.count { break }
            }
            return data
        }
    }
}

extension RasterDataset {
    /// The bytes of this raster written in a file format, e.g. `encoded(driver: "PNG")` for an
    /// image to send over HTTP. The file is made in `/vsimem/` and removed afterwards.
    ///
    /// - Parameters:
    ///   - driver: a GDAL driver that supports `CreateCopy` (`"PNG"`, `"JPEG"`, `"GTiff"`, …).
    ///   - options: creation options, e.g. `["ZLEVEL=6"]`.
    public func encoded(driver: String, options: [String] = []) throws -> Data {
        let path = "/vsimem/geoio-encoded-\(UUID().uuidString)"
        defer { withQuietGDAL { _ = VSIUnlink(path) } }
        // Scoped so that the copy is closed (and its file complete) before it is read.
        try { _ = try copy(driver: driver, path: path, options: options) }()
        return try GDAL.readFile(path)
    }
}
