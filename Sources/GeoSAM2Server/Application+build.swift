import Foundation
import GeoSegment
import Hummingbird
import Logging
import NIOCore

/// Builds the `geosam2 serve` application: the web UI, Leaflet, the raster as map tiles, and the
/// JSON API over a store opened with its model.
///
/// - Parameters:
///   - segmenter: the store and the model it was encoded with.
///   - configuration: address, output GeoPackage, limits.
///   - logger: the server's logger (default: warnings and errors only).
///   - onServerRunning: called with the server's URL once it listens (with the real port when
///     `configuration.port` is 0).
/// - Throws: ``GeoSAM2ServerError`` when the UI files are missing or the store is unusable.
public func buildApplication(
    segmenter: Segmenter, configuration: ServerConfiguration, logger: Logger? = nil,
    onServerRunning: @escaping @Sendable (_ url: String) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    var log = logger ?? Logger(label: "geosam2.serve")
    if logger == nil { log.logLevel = configuration.logRequests ? .info : .warning }
    guard (0...65535).contains(configuration.port) else {
        throw GeoSAM2ServerError.badRequest("port must be between 0 and 65535, got \(configuration.port)")
    }
    guard let ui = configuration.uiDirectory ?? ServerConfiguration.bundledUIDirectory else {
        throw GeoSAM2ServerError(.internalServerError, "the web UI files are missing (GeoSAM2_GeoSAM2Server.resources beside the executable)")
    }
    let store = segmenter.store
    let grid = MapGrid(width: store.manifest.source.width, height: store.manifest.source.height)
    let renderer: MapTileRenderer?
    var mapError: String?
    do {
        renderer = try MapTileRenderer(store: store, prepareOverviews: configuration.prepareMapOverviews, inBackground: true) { message in
            FileHandle.standardError.write(Data("\(message)\n".utf8))
        }
    } catch {
        renderer = nil
        mapError = "\(error)"
        log.warning("the map cannot show the raster: \(error)")
    }
    let objects = ObjectRepository(path: configuration.outputPath, layer: configuration.outputLayer, store: store)

    let router = Router(options: .autoGenerateHeadEndpoints)
    if configuration.logRequests { router.add(middleware: LogRequestsMiddleware(.info)) }
    router.add(middleware: SecurityHeadersMiddleware())
    router.add(middleware: JSONErrorMiddleware())
    if configuration.isLoopback { router.add(middleware: LoopbackHostMiddleware()) }
    router.add(middleware: FileMiddleware(ui, searchForIndexHtml: true, logger: log))
    router.add(middleware: FileMiddleware(configuration.leafletDirectory, urlBasePath: "/vendor/leaflet", logger: log))

    try StoreController(store: store, onDemand: segmenter.onDemand, map: grid, mapError: mapError, configuration: configuration)
        .addRoutes(to: router)
    EncodingController(segmenter: segmenter, maxBodyBytes: configuration.maxBodyBytes).addRoutes(to: router)
    MapController(renderer: renderer, grid: grid, unavailable: mapError).addRoutes(to: router)
    SegmentController(segmenter: segmenter, objects: objects, maxBodyBytes: configuration.maxBodyBytes).addRoutes(to: router)
    let jobs = GenerateJobs(segmenter: segmenter, partsRoot: URL(fileURLWithPath: configuration.outputPath + ".generate-parts", isDirectory: true))
    GenerateController(jobs: jobs, objects: objects, maxBodyBytes: configuration.maxBodyBytes).addRoutes(to: router)
    let outputName = URL(fileURLWithPath: configuration.outputPath).deletingPathExtension().lastPathComponent
    ObjectsController(segmenter: segmenter, objects: objects, maxBodyBytes: configuration.maxBodyBytes, outputName: outputName)
        .addRoutes(to: router)

    let host = configuration.host
    return Application(
        router: router,
        configuration: .init(address: .hostname(host, port: configuration.port), serverName: "geosam2"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.port
            let shown = host.contains(":") ? "[\(host)]" : host
            await onServerRunning("http://\(shown):\(port)/")
        },
        logger: log
    )
}
