import Kernels
import TensorIO

/// How feature maps are stored in tile files.
///
/// - `q16` (default): 16-bit integers with a per-channel scale and offset
///   (`value = q · scale + offset`, tensors `NAME`, `NAME.scale`, `NAME.offset`). Same size as
///   float16, but its error is uniform over each channel's range instead of growing with the
///   magnitude: on Hiera-T features (values up to ±18) float16 moved decoder logits by 4e-3 —
///   over the 1e-3 parity tolerance — where q16 moves them by 5e-4.
/// - `f16`: IEEE half precision, for tools that want plain floats.
/// - `f32`: exact.
public enum FeatureDType: String, Sendable, CaseIterable {
    case q16, f16, f32

    /// Tensors to write for one feature map `[C, H, W]`.
    func entries(name: String, map: Tensor) -> [(name: String, tensor: Tensor, dtype: DType)] {
        switch self {
        case .f32: return [(name, map, .float32)]
        case .f16: return [(name, map, .float16)]
        case .q16:
            let channels = map.shape[0], plane = map.count / max(channels, 1)
            var quantised = [Float](repeating: 0, count: map.count)
            var scales = [Float](repeating: 1, count: channels), offsets = [Float](repeating: 0, count: channels)
            map.scalars.withUnsafeBufferPointer { x in
                for c in 0..<channels {
                    let values = x[(c * plane)..<((c + 1) * plane)]
                    let lo = values.min() ?? 0, hi = values.max() ?? 0
                    let scale = hi > lo ? (hi - lo) / 65535 : 1
                    // Codes run over the full Int16 range: q = round((x − lo)/scale) − 32768.
                    let offset = lo + 32768 * scale
                    scales[c] = scale
                    offsets[c] = offset
                    for i in (c * plane)..<((c + 1) * plane) {
                        quantised[i] = min(32767, max(-32768, ((x[i] - lo) / scale).rounded() - 32768))
                    }
                }
            }
            return [(name, Tensor(shape: map.shape, scalars: quantised), .int16),
                    ("\(name).scale", Tensor(shape: [channels], scalars: scales), .float32),
                    ("\(name).offset", Tensor(shape: [channels], scalars: offsets), .float32)]
        }
    }

    /// The storage dtype of the map tensor itself.
    var mapDType: DType {
        switch self {
        case .q16: return .int16
        case .f16: return .float16
        case .f32: return .float32
        }
    }

    /// Reads a feature map back as floats.
    static func decode(name: String, from archive: any TensorArchive) throws -> Tensor {
        var map = try archive.tensor(named: name)
        guard archive.info("\(name).scale") != nil else { return map }
        let channels = map.shape[0], plane = map.count / max(channels, 1)
        let (scale, offset) = try quantisation(of: name, channels: channels, in: archive)
        map.scalars.withUnsafeMutableBufferPointer { x in
            for c in 0..<channels {
                let (s, o) = (scale.scalars[c], offset.scalars[c])
                for i in (c * plane)..<((c + 1) * plane) { x[i] = x[i] * s + o }
            }
        }
        return map
    }

    /// Reads a feature map `[C, H, W]` back as floats laid out channels-last, `[H, W, C]` — the
    /// decoder's layout. For q16 maps the dequantisation and the transposition are one pass over
    /// the file's int16 codes, with the same arithmetic as `decode` (`q · scale + offset`).
    static func decodeChannelsLast(name: String, from archive: SafetensorsFile) throws -> Tensor {
        guard let info = archive.info(name), info.dtype == .int16, info.shape.count == 3,
              archive.info("\(name).scale") != nil else {
            return try decode(name: name, from: archive).channelsLast()
        }
        let (channels, height, width) = (info.shape[0], info.shape[1], info.shape[2])
        let plane = height * width
        let (scale, offset) = try quantisation(of: name, channels: channels, in: archive)
        var out = Tensor(unsafeUninitializedShape: [height, width, channels])
        try archive.withRawBytes(of: name) { raw in
            guard let codes = raw.baseAddress else { return }
            out.scalars.withUnsafeMutableBufferPointer { o in
                scale.scalars.withUnsafeBufferPointer { sp in
                    offset.scalars.withUnsafeBufferPointer { op in
                        nonisolated(unsafe) let (dst, s, f) = (o.baseAddress!, sp.baseAddress!, op.baseAddress!)  // disjoint blocks
                        let block = 64
                        Parallel.forEachChunk((plane + block - 1) / block, minimumChunk: 16) { blocks in
                            for b in blocks {
                                let (p0, p1) = (b * block, min(plane, (b + 1) * block))
                                for c in 0..<channels {
                                    let (sc, of) = (s[c], f[c])
                                    let row = codes + 2 * (c * plane)
                                    for p in p0..<p1 {
                                        // Unaligned little-endian loads: files from elsewhere need not align tensors.
                                        let q = Int16(littleEndian: row.loadUnaligned(fromByteOffset: 2 * p, as: Int16.self))
                                        dst[p * channels + c] = Float(q) * sc + of
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// A q16 map's per-channel scale and offset, checked against its channel count.
    private static func quantisation(of name: String, channels: Int, in archive: any TensorArchive) throws -> (scale: Tensor, offset: Tensor) {
        let scale = try archive.tensor(named: "\(name).scale"), offset = try archive.tensor(named: "\(name).offset")
        guard scale.count == channels, offset.count == channels else {
            throw GeoSegmentError("\(name): scale/offset do not match its \(channels) channels")
        }
        return (scale, offset)
    }
}
