import Hummingbird

/// `GET /tiles/{z}/{x}/{y}.png`: the raster as map tiles (see ``MapGrid``).
struct MapController<Context: RequestContext> {
    let renderer: MapTileRenderer?
    let grid: MapGrid
    let unavailable: String?

    func addRoutes(to router: Router<Context>) {
        refuseOtherMethods(on: router, "/tiles/{z}/{x}/{y}.png", allowed: [.get])
        router.get("/tiles/{z}/{x}/{y}.png") { _, context in
            let z = try integer(context, "z"), x = try integer(context, "x"), y = try integer(context, "y")
            guard let renderer else {
                throw GeoSAM2ServerError(.serviceUnavailable, "the map is unavailable: \(unavailable ?? "the raster cannot be read")")
            }
            guard let png = try await offload({ try renderer.png(zoom: z, column: x, row: y) }) else {
                throw GeoSAM2ServerError.notFound("no map tile \(z)/\(x)/\(y): zoom levels are 0–\(grid.nativeZoom), and at zoom \(min(max(z, 0), grid.nativeZoom)) there are \(grid.tileCount(zoom: min(max(z, 0), grid.nativeZoom)).columns)×\(grid.tileCount(zoom: min(max(z, 0), grid.nativeZoom)).rows) tiles")
            }
            return Response(status: .ok, headers: [.contentType: "image/png", .cacheControl: "max-age=600"],
                            body: .init(byteBuffer: ByteBuffer(bytes: png)))
        }
    }

    private func integer(_ context: Context, _ name: String) throws -> Int {
        guard let text = context.parameters.get(name), text.count <= 9, let value = Int(text) else {
            throw GeoSAM2ServerError.badRequest("tile \(name) must be an integer")
        }
        return value
    }
}
