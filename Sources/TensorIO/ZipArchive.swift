/// One member of a zip archive, located but not read.
struct ZipEntry: Sendable {
    let name: String
    /// Compression method (0 = stored). Only stored entries can be read in place.
    let method: UInt16
    /// Absolute file offset of the member's first data byte.
    let dataOffset: Int
    /// Uncompressed size, from the central directory.
    let size: Int
    /// Compressed size, from the central directory.
    let compressedSize: Int
}

/// Minimal read-only zip directory parser for PyTorch's `torch.save` containers.
///
/// Only what torch writes is needed: a single-disk archive of STORED members, possibly with ZIP64
/// records. Sizes are taken from the central directory and the data offset from the *local* header
/// (whose extra field differs from the central one: it carries torch's 64-byte alignment padding).
struct ZipDirectory {
    /// Members in central-directory order.
    let entries: [ZipEntry]
    /// Name → index into `entries` (first occurrence wins).
    let index: [String: Int]

    private static let eocdSignature: UInt32 = 0x0605_4b50
    private static let zip64LocatorSignature: UInt32 = 0x0706_4b50
    private static let zip64EOCDSignature: UInt32 = 0x0606_4b50
    private static let centralSignature: UInt32 = 0x0201_4b50
    private static let localSignature: UInt32 = 0x0403_4b50

    init(_ r: ByteReader) throws {
        let file = r.name
        // 1. Find the end-of-central-directory record, scanning backwards over a possible comment.
        guard r.count >= 22 else {
            throw TensorIOError("\(file): truncated: zip end-of-central-directory record not found")
        }
        var eocd = -1
        let lowest = max(0, r.count - 22 - 0xFFFF)
        var pos = r.count - 22
        while pos >= lowest {
            if try r.u32(pos, "EOCD") == Self.eocdSignature {
                // Accept only a record whose comment length reaches exactly the end of the file,
                // so signature bytes inside data are not mistaken for the record.
                let commentLength = Int(try r.u16(pos + 20, "EOCD comment length"))
                if pos + 22 + commentLength == r.count { eocd = pos; break }
            }
            pos -= 1
        }
        guard eocd >= 0 else {
            throw TensorIOError("\(file): truncated: zip end-of-central-directory record not found")
        }

        var entryCount = UInt64(try r.u16(eocd + 10, "EOCD entry count"))
        var cdSize = UInt64(try r.u32(eocd + 12, "EOCD directory size"))
        var cdOffset = UInt64(try r.u32(eocd + 16, "EOCD directory offset"))

        // 2. ZIP64: the locator sits immediately before the EOCD and points at the ZIP64 EOCD.
        if eocd >= 20, try r.u32(eocd - 20, "ZIP64 locator") == Self.zip64LocatorSignature {
            let z64 = try checkedInt(try r.u64(eocd - 20 + 8, "ZIP64 locator"), file, "ZIP64 end-of-central-directory offset")
            guard try r.u32(z64, "ZIP64 end-of-central-directory record") == Self.zip64EOCDSignature else {
                throw TensorIOError("\(file): corrupt: ZIP64 end-of-central-directory record not found at offset \(z64)")
            }
            entryCount = try r.u64(z64 + 32, "ZIP64 entry count")
            cdSize = try r.u64(z64 + 40, "ZIP64 directory size")
            cdOffset = try r.u64(z64 + 48, "ZIP64 directory offset")
        } else if entryCount == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            throw TensorIOError("\(file): corrupt: zip directory fields are saturated but no ZIP64 locator is present")
        }

        let directoryOffset = try checkedInt(cdOffset, file, "central directory offset")
        let directorySize = try checkedInt(cdSize, file, "central directory size")
        try r.check(directoryOffset, directorySize, "zip central directory")
        // Each central header is at least 46 bytes: a larger count is a lie (and would make us
        // reserve absurd amounts of memory).
        guard entryCount <= UInt64(directorySize / 46) else {
            throw TensorIOError("\(file): corrupt: zip claims \(entryCount) entries in a \(directorySize)-byte central directory")
        }

        // 3. Walk the central directory.
        var entries: [ZipEntry] = []
        entries.reserveCapacity(Int(entryCount))
        var index: [String: Int] = [:]
        var p = directoryOffset
        let directoryEnd = directoryOffset + directorySize
        for n in 0..<Int(entryCount) {
            guard p <= directoryEnd - 46 else {
                throw TensorIOError("\(file): truncated: zip central directory ends inside entry \(n)")
            }
            guard try r.u32(p, "central directory entry") == Self.centralSignature else {
                throw TensorIOError("\(file): corrupt: bad signature for zip central directory entry \(n) at offset \(p)")
            }
            let flags = try r.u16(p + 8, "entry flags")
            let method = try r.u16(p + 10, "entry method")
            var compressed = UInt64(try r.u32(p + 20, "entry compressed size"))
            var uncompressed = UInt64(try r.u32(p + 24, "entry size"))
            let nameLength = Int(try r.u16(p + 28, "entry name length"))
            let extraLength = Int(try r.u16(p + 30, "entry extra length"))
            let commentLength = Int(try r.u16(p + 32, "entry comment length"))
            var localOffset = UInt64(try r.u32(p + 42, "entry local header offset"))
            let recordLength = 46 + nameLength + extraLength + commentLength
            guard p + recordLength <= directoryEnd else {
                throw TensorIOError("\(file): truncated: zip central directory entry \(n) runs past the directory end")
            }
            let nameBytes = try r.bytes(p + 46, nameLength, "entry name")
            let name = String(decoding: nameBytes, as: UTF8.self)

            // ZIP64 extended information (id 0x0001): present values replace saturated fields, in
            // the fixed order uncompressed, compressed, local offset.
            var q = p + 46 + nameLength
            let extraEnd = q + extraLength
            while q + 4 <= extraEnd {
                let id = try r.u16(q, "extra field id")
                let len = Int(try r.u16(q + 2, "extra field length"))
                let body = q + 4
                guard body + len <= extraEnd else {
                    throw TensorIOError("\(file): corrupt: extra field of zip entry '\(name)' overruns its header")
                }
                if id == 0x0001 {
                    var f = body
                    func next() throws -> UInt64 {
                        guard f + 8 <= body + len else {
                            throw TensorIOError("\(file): corrupt: ZIP64 extra field of zip entry '\(name)' is too short")
                        }
                        defer { f += 8 }
                        return try r.u64(f, "ZIP64 extra field")
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try next() }
                    if compressed == 0xFFFF_FFFF { compressed = try next() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next() }
                }
                q = body + len
            }

            guard flags & 1 == 0 else {
                throw TensorIOError("\(file): zip entry '\(name)' is encrypted, which PyTorch never writes")
            }
            let size = try checkedInt(uncompressed, file, "size of zip entry '\(name)'")
            let compressedSize = try checkedInt(compressed, file, "compressed size of zip entry '\(name)'")
            let lho = try checkedInt(localOffset, file, "local header offset of zip entry '\(name)'")

            // 4. Data begins after the LOCAL header's own name and extra fields.
            guard try r.u32(lho, "local header of zip entry '\(name)'") == Self.localSignature else {
                throw TensorIOError("\(file): corrupt: bad local header signature for zip entry '\(name)' at offset \(lho)")
            }
            let localName = Int(try r.u16(lho + 26, "local header of '\(name)'"))
            let localExtra = Int(try r.u16(lho + 28, "local header of '\(name)'"))
            let dataOffset = lho + 30 + localName + localExtra
            try r.check(dataOffset, compressedSize, "data of zip entry '\(name)'")

            if index[name] == nil { index[name] = entries.count }
            entries.append(ZipEntry(name: name, method: method, dataOffset: dataOffset, size: size, compressedSize: compressedSize))
            p += recordLength
        }
        self.entries = entries
        self.index = index
    }

    func entry(_ name: String) -> ZipEntry? {
        index[name].map { entries[$0] }
    }
}
