import CZstd
import Kernels
import TensorIO

/// How feature maps are stored in tile files.
///
/// - `q16z` (default): the q16 codes below, split into byte planes: `NAME.low` holds the low
///   bytes as they are (`uint8 [C, H, W]`) and `NAME.high` the high bytes as a zstd stream (one
///   frame per group of channels, so that tiles load on several cores). The codes and the values
///   are exactly q16's; only the high bytes, which cluster where a channel's values do, compress.
///   Random-weight Hiera-T features come to about 8.1 MB a tile instead of 8.39 MB. Any zstd
///   decoder reads the high bytes (Python's `zstandard` with `read_across_frames=True`); then
///   `value = (high · 256 + low − 32768) · scale + offset`.
/// - `q16`: 16-bit integers with a per-channel scale and offset (`value = q · scale + offset`,
///   tensors `NAME`, `NAME.scale`, `NAME.offset`), readable by any safetensors reader. Same size as
///   float16, but its error is uniform over each channel's range instead of growing with the
///   magnitude: on Hiera-T features (values up to ±18) float16 moved decoder logits by 4e-3 —
///   over the 1e-3 parity tolerance — where q16 moves them by 5e-4.
/// - `f16`: IEEE half precision, for tools that want plain floats.
/// - `f32`: exact.
public enum FeatureDType: String, Sendable, CaseIterable {
    case q16z, q16, f16, f32

    /// zstd's default level: at the levels above it the high bytes shrink by a few percent more,
    /// and encoding a tile's planes slows from milliseconds to a second.
    static let compressionLevel: Int32 = 3
    /// Frames per high-byte plane (at most one per channel): the decompression is split over them.
    static let framesPerMap = 8

    /// Tensors to write for one feature map `[C, H, W]`.
    func entries(name: String, map: Tensor) throws -> [SafetensorsWriter.Entry] {
        switch self {
        case .f32: return [.init(name: name, tensor: map, dtype: .float32)]
        case .f16: return [.init(name: name, tensor: map, dtype: .float16)]
        case .q16, .q16z:
            let (codes, scales, offsets) = Self.quantise(map)
            let channels = map.shape[0]
            let quantisation: [SafetensorsWriter.Entry] = [
                .init(name: "\(name).scale", tensor: Tensor(shape: [channels], scalars: scales), dtype: .float32),
                .init(name: "\(name).offset", tensor: Tensor(shape: [channels], scalars: offsets), dtype: .float32),
            ]
            if self == .q16 {
                var bytes = [UInt8](repeating: 0, count: 2 * codes.count)
                for (i, u) in codes.enumerated() {
                    let q = u ^ 0x8000  // the signed code u − 32768, as two's-complement bits
                    (bytes[2 * i], bytes[2 * i + 1]) = (UInt8(q & 0xFF), UInt8(q >> 8))
                }
                return [.init(name: name, bytes: bytes, dtype: .int16, shape: map.shape)] + quantisation
            }
            let low = codes.map { UInt8($0 & 0xFF) }
            let high = try Self.compressFrames(codes.map { UInt8($0 >> 8) }, frames: min(channels, Self.framesPerMap))
            return [.init(name: "\(name).low", bytes: low, dtype: .uint8, shape: map.shape),
                    .init(name: "\(name).high", bytes: high, dtype: .uint8, shape: [high.count])] + quantisation
        }
    }

    /// Per-channel min–max quantisation to unsigned 16-bit codes `u`: `value ≈ (u − 32768) · scale
    /// + offset`, i.e. the signed code `q = u − 32768` of the q16 format.
    static func quantise(_ map: Tensor) -> (codes: [UInt16], scales: [Float], offsets: [Float]) {
        let channels = map.shape[0], plane = map.count / max(channels, 1)
        var codes = [UInt16](repeating: 0, count: map.count)
        var scales = [Float](repeating: 1, count: channels), offsets = [Float](repeating: 0, count: channels)
        let x = map.pointer
        for c in 0..<channels {
            let values = UnsafeBufferPointer(start: x + c * plane, count: plane)
            let lo = values.min() ?? 0, hi = values.max() ?? 0
            let scale = hi > lo ? (hi - lo) / 65535 : 1
            // Codes run over the full Int16 range: q = round((x − lo)/scale) − 32768.
            let offset = lo + 32768 * scale
            scales[c] = scale
            offsets[c] = offset
            for i in (c * plane)..<((c + 1) * plane) {
                codes[i] = UInt16(min(65535, max(0, ((x[i] - lo) / scale).rounded())))
            }
        }
        return (codes, scales, offsets)
    }

    /// The tensor that carries a map's shape `[C, H, W]` in a tile file, and its dtype.
    func shapeTensor(of name: String) -> (name: String, dtype: DType) {
        switch self {
        case .q16z: return ("\(name).low", .uint8)
        case .q16: return (name, .int16)
        case .f16: return (name, .float16)
        case .f32: return (name, .float32)
        }
    }

    /// Reads a feature map back as floats, `[C, H, W]`.
    static func decode(name: String, from archive: SafetensorsFile) throws -> Tensor {
        guard archive.info("\(name).scale") != nil else { return try archive.tensor(named: name) }
        return try withCodes(of: name, in: archive) { codes, shape, scale, offset in
            let channels = shape[0], plane = shape.reduce(1, *) / max(channels, 1)
            var map = Tensor(unsafeUninitializedShape: shape)
            let x = map.mutablePointer
            for c in 0..<channels {
                let (s, o) = (scale[c], offset[c])
                for p in 0..<plane { x[c * plane + p] = Float(codes.code(c * plane + p)) * s + o }
            }
            return map
        }
    }

    /// Reads a feature map `[C, H, W]` back as floats laid out channels-last, `[H, W, C]` — the
    /// decoder's layout. For quantised maps the dequantisation and the transposition are one pass
    /// over the codes, with the same arithmetic as `decode` (`q · scale + offset`).
    static func decodeChannelsLast(name: String, from archive: SafetensorsFile) throws -> Tensor {
        guard archive.info("\(name).scale") != nil, let (height, width) = spatialSize(of: name, in: archive) else {
            return try decode(name: name, from: archive).channelsLast()
        }
        return try withCodes(of: name, in: archive) { codes, shape, scale, offset in
            let channels = shape[0], plane = height * width
            var out = Tensor(unsafeUninitializedShape: [height, width, channels])
            let o = out.mutablePointer
            nonisolated(unsafe) let dst = o  // disjoint blocks per chunk
            let block = 64
            Parallel.forEachChunk((plane + block - 1) / block, minimumChunk: 16) { blocks in
                if AcceleratedOps.hasDequantizeTranspose {
                    // Blocks transposed in registers (the loop below scatters its stores).
                    let pixels = (blocks.lowerBound * block)..<min(plane, blocks.upperBound * block)
                    AcceleratedOps.dequantizeTranspose(signed: codes.signed, high: codes.high, low: codes.low, channels: channels,
                                                       plane: plane, pixels: pixels, scale: scale.baseAddress!,
                                                       offset: offset.baseAddress!, into: dst)
                    return
                }
                for b in blocks {
                    let (p0, p1) = (b * block, min(plane, (b + 1) * block))
                    for c in 0..<channels {
                        let (sc, of) = (scale[c], offset[c])
                        for p in p0..<p1 { dst[p * channels + c] = Float(codes.code(c * plane + p)) * sc + of }
                    }
                }
            }
            return out
        }
    }

    private static func spatialSize(of name: String, in archive: SafetensorsFile) -> (Int, Int)? {
        let shape = (archive.info(name) ?? archive.info("\(name).low"))?.shape ?? []
        return shape.count == 3 ? (shape[1], shape[2]) : nil
    }

    /// Signed q16 codes, read from a q16 tensor or rebuilt from q16z's byte planes.
    struct Codes: @unchecked Sendable {
        // @unchecked: read-only views of the file mapping or of a buffer the caller keeps alive.
        let signed: UnsafeRawPointer?
        let high: UnsafePointer<UInt8>?, low: UnsafePointer<UInt8>?

        @inline(__always) func code(_ i: Int) -> Int32 {
            if let signed {
                // Unaligned little-endian loads: files from elsewhere need not align tensors.
                return Int32(Int16(littleEndian: signed.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
            }
            return (Int32(high.unsafelyUnwrapped[i]) << 8 | Int32(low.unsafelyUnwrapped[i])) - 32768
        }
    }

    /// Calls `body` with a quantised map's codes, its shape `[C, …]`, and its per-channel scale and
    /// offset (both checked against the file).
    private static func withCodes<T>(
        of name: String, in archive: SafetensorsFile,
        _ body: (Codes, [Int], UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>) throws -> T
    ) throws -> T {
        let split = archive.info(name) == nil
        let codesName = split ? "\(name).low" : name
        guard let info = archive.info(codesName), info.dtype == (split ? .uint8 : .int16), info.shape.count >= 1 else {
            throw GeoSegmentError("\(name): no \(split ? "uint8 \(codesName)" : "int16 codes") tensor")
        }
        let channels = info.shape[0], count = info.shape.reduce(1, *)
        let scale = try archive.tensor(named: "\(name).scale"), offset = try archive.tensor(named: "\(name).offset")
        guard scale.count == channels, offset.count == channels else {
            throw GeoSegmentError("\(name): scale/offset do not match its \(channels) channels")
        }
        // The buffers borrow scale's and offset's storage, kept alive for the whole decode.
        return try withExtendedLifetime((scale, offset)) {
            let (s, o) = (UnsafeBufferPointer(start: scale.pointer, count: channels), UnsafeBufferPointer(start: offset.pointer, count: channels))
            guard split else {
                return try archive.withRawBytes(of: name) { try body(Codes(signed: $0.baseAddress, high: nil, low: nil), info.shape, s, o) }
            }
            guard archive.info("\(name).high")?.dtype == .uint8 else { throw GeoSegmentError("\(name): no uint8 \(name).high tensor") }
            let high = try archive.withRawBytes(of: "\(name).high") { try decompressFrames($0, count: count, name: "\(name).high") }
            return try high.withUnsafeBufferPointer { h in
                try archive.withRawBytes(of: codesName) { low in
                    try body(Codes(signed: nil, high: h.baseAddress, low: low.bindMemory(to: UInt8.self).baseAddress), info.shape, s, o)
                }
            }
        }
    }

    // MARK: zstd

    /// Compresses `bytes` as `frames` zstd frames of (nearly) equal parts, concatenated: a valid
    /// zstd stream that decompresses to `bytes`. Each frame records its size and a checksum of its
    /// content, so damage is an error at load time rather than wrong features.
    static func compressFrames(_ bytes: [UInt8], frames: Int) throws -> [UInt8] {
        guard let context = ZSTD_createCCtx() else { throw GeoSegmentError("zstd: cannot create a compression context") }
        defer { ZSTD_freeCCtx(context) }
        func check(_ code: Int) throws -> Int {
            guard ZSTD_isError(code) == 0 else { throw GeoSegmentError("zstd: \(String(cString: ZSTD_getErrorName(code)))") }
            return code
        }
        _ = try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, compressionLevel))
        _ = try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1))
        let part = max(1, (bytes.count + max(frames, 1) - 1) / max(frames, 1))
        var out: [UInt8] = []
        try bytes.withUnsafeBytes { src in
            for start in stride(from: 0, to: bytes.count, by: part) {
                let size = min(part, bytes.count - start)
                var frame = [UInt8](repeating: 0, count: ZSTD_compressBound(size))
                let written = try check(frame.withUnsafeMutableBytes { ZSTD_compress2(context, $0.baseAddress, $0.count, src.baseAddress! + start, size) })
                out.append(contentsOf: frame[0..<written])
            }
        }
        return out
    }

    /// Decompresses a stream of zstd frames that must hold exactly `count` bytes, one frame per
    /// worker at a time. Frames must record their size (ours do); anything else is refused.
    static func decompressFrames(_ stream: UnsafeRawBufferPointer, count: Int, name: String) throws -> [UInt8] {
        // Walk the frame headers first: where each frame starts, how long it is, what it holds.
        var frames: [(source: Int, size: Int, destination: Int, content: Int)] = []
        var (offset, filled) = (0, 0)
        while offset < stream.count {
            let source = stream.baseAddress! + offset
            let size = ZSTD_findFrameCompressedSize(source, stream.count - offset)
            guard ZSTD_isError(size) == 0 else {
                throw GeoSegmentError("\(name): corrupt zstd stream (\(String(cString: ZSTD_getErrorName(size))))")
            }
            let content = ZSTD_getFrameContentSize(source, size)
            guard content <= UInt64(count - filled) else {
                throw GeoSegmentError("\(name): zstd frame of unknown size or larger than the map")
            }
            frames.append((offset, size, filled, Int(content)))
            offset += size
            filled += Int(content)
        }
        guard filled == count else { throw GeoSegmentError("\(name): holds \(filled) bytes, the map needs \(count)") }
        var out = [UInt8](repeating: 0, count: count)
        var failures = [Int](repeating: 0, count: frames.count)
        out.withUnsafeMutableBytes { o in
            failures.withUnsafeMutableBufferPointer { f in
                // Disjoint: each frame writes its own range of `out` and its own failure slot.
                nonisolated(unsafe) let (dst, src, fail) = (o.baseAddress!, stream.baseAddress!, f.baseAddress!)
                let list = frames
                Parallel.forEachChunk(list.count, minimumChunk: 1) { range in
                    for i in range {
                        let frame = list[i]
                        let n = ZSTD_decompress(dst + frame.destination, frame.content, src + frame.source, frame.size)
                        fail[i] = ZSTD_isError(n) != 0 ? n : (n == frame.content ? 0 : Int.min)
                    }
                }
            }
        }
        if let bad = failures.first(where: { $0 != 0 }) {
            let reason = bad == Int.min ? "short frame" : String(cString: ZSTD_getErrorName(bad))
            throw GeoSegmentError("\(name): corrupt zstd stream (\(reason))")
        }
        return out
    }
}
