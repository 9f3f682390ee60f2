import CGDAL

extension RasterDataset {
    /// Converts this raster as `gdal_translate` would (`GDALTranslate`), e.g. to a resampled VRT:
    /// `translate(to: "/vsimem/x.vrt", arguments: ["-of", "VRT", "-outsize", "50%", "50%", "-r", "average"])`.
    ///
    /// A VRT result is virtual: its pixels are computed from this raster when read, so reading a
    /// window costs only that window.
    public func translate(to path: String, arguments: [String]) throws -> RasterDataset {
        let args = StringList(arguments)
        let result = try withQuietGDAL { () throws -> GDALDatasetH? in
            let options = args.withCSL { GDALTranslateOptionsNew($0, nil) }
            guard let options else { throw GeoIOError.gdal("invalid translate options \(arguments.joined(separator: " "))") }
            defer { GDALTranslateOptionsFree(options) }
            var usageError: Int32 = 0
            return GDALTranslate(path, handle, options, &usageError)
        }
        guard let result else { throw GeoIOError.gdal("cannot translate raster", path: label) }
        let translated = RasterDataset(handle: result, path: path)
        translated.source = self
        return translated
    }
}

extension RasterDataset {
    /// A mosaic of several rasters as one VRT at `path` (`GDALBuildVRT`, as `gdalbuildvrt` does):
    /// the rasters must share a CRS and band layout; their pixels are read from the sources when
    /// the VRT is read.
    public static func buildVRT(at path: String, sources: [String], arguments: [String] = []) throws -> RasterDataset {
        guard !sources.isEmpty else { throw GeoIOError.gdal("a mosaic needs at least one raster") }
        let args = StringList(arguments), names = StringList(sources)
        let result = try withQuietGDAL { () throws -> GDALDatasetH? in
            let options = args.withCSL { GDALBuildVRTOptionsNew($0, nil) }
            guard let options else { throw GeoIOError.gdal("invalid mosaic options \(arguments.joined(separator: " "))") }
            defer { GDALBuildVRTOptionsFree(options) }
            var usageError: Int32 = 0
            return names.withConstCSL { GDALBuildVRT(path, Int32(sources.count), nil, $0, options, &usageError) }
        }
        guard let result else { throw GeoIOError.gdal("cannot build a mosaic of \(sources.count) rasters", path: path) }
        return RasterDataset(handle: result, path: path)
    }
}
