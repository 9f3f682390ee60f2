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
