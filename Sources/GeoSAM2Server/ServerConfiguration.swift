import Foundation

/// How `geosam2 serve` runs.
public struct ServerConfiguration: Sendable {
    /// Interface to bind: loopback by default; anything else exposes the raster and the API to the network.
    public var host = "127.0.0.1"
    /// TCP port (0: any free port; the URL printed says which).
    public var port = 8080
    /// The GeoPackage that committed objects are saved to.
    public var outputPath: String
    /// Its layer (default: `objects`).
    public var outputLayer: String?
    /// The web UI's files (default: the ones bundled with the tool).
    public var uiDirectory: String?
    /// Leaflet, as Debian's `libjs-leaflet` installs it; served at `/vendor/leaflet/`.
    public var leafletDirectory = "/usr/share/javascript/leaflet"
    /// Largest request body accepted, in bytes.
    public var maxBodyBytes = 1 << 20
    /// Log every request (method, path, status) on stderr.
    public var logRequests = false
    /// Build map overviews into the store for a large raster that has none.
    public var prepareMapOverviews = true

    public init(outputPath: String) {
        self.outputPath = outputPath
    }

    /// The default output beside a store: `DIR/STEM_objects.gpkg` for the store `DIR/STEM.geosam2`.
    public static func defaultOutputPath(forStore store: URL) -> String {
        let url = store.standardizedFileURL
        var stem = url.lastPathComponent
        if stem.hasSuffix(".geosam2") { stem = String(stem.dropLast(".geosam2".count)) }
        return url.deletingLastPathComponent().appendingPathComponent("\(stem)_objects.gpkg").path
    }

    /// Whether `host` is a loopback address (the safe default).
    public var isLoopback: Bool { Loopback.isLoopback(host: host) }

    /// The UI files bundled with the tool: the resource bundle beside the executable (or the test
    /// bundle), else the package's source folder (a development build run from elsewhere).
    public static var bundledUIDirectory: String? {
        let fm = FileManager.default
        let bundleName = "GeoSAM2_GeoSAM2Server.resources"
        var candidates = [Bundle.main.bundleURL.appendingPathComponent(bundleName).appendingPathComponent("Public")]
        if let executable = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            candidates.append(executable.deletingLastPathComponent().appendingPathComponent(bundleName).appendingPathComponent("Public"))
        }
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources/Public"))
        return candidates.first { fm.fileExists(atPath: $0.appendingPathComponent("index.html").path) }?.path
    }
}
