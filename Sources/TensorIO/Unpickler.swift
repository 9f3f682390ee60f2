/// A restricted, data-only unpickler for PyTorch's `data.pkl`.
///
/// Python's pickle is a program for a stack machine that can import and call anything. This VM
/// implements only the opcodes `torch.save` emits for a state dict, and knows a fixed whitelist of
/// globals that it *interprets* (never calls): `OrderedDict`, the two tensor rebuild functions and
/// the storage classes. Anything else is refused before it is ever looked at again.

/// A tensor described by the pickle: where its elements live, not the elements themselves.
struct TensorRecord: Sendable {
    /// Storage key (`data/<key>` in the zip).
    let storageKey: String
    let dtype: DType
    /// Element count declared by the persistent id.
    let storageCount: Int
    let offset: Int
    let shape: [Int]
    let strides: [Int]
}

/// The whitelisted globals.
enum PickleGlobal: Equatable {
    case orderedDict
    case rebuildTensorV2
    case rebuildParameter
    case storage(DType)

    /// Resolves `module.name`, or `nil` if the global is not allowed.
    init?(module: String, name: String) {
        switch (module, name) {
        case ("collections", "OrderedDict"): self = .orderedDict
        case ("torch._utils", "_rebuild_tensor_v2"): self = .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): self = .rebuildParameter
        case ("torch", "FloatStorage"): self = .storage(.float32)
        case ("torch", "HalfStorage"): self = .storage(.float16)
        case ("torch", "BFloat16Storage"): self = .storage(.bfloat16)
        case ("torch", "DoubleStorage"): self = .storage(.float64)
        case ("torch", "LongStorage"): self = .storage(.int64)
        case ("torch", "IntStorage"): self = .storage(.int32)
        case ("torch", "ShortStorage"): self = .storage(.int16)
        case ("torch", "CharStorage"): self = .storage(.int8)
        case ("torch", "ByteStorage"): self = .storage(.uint8)
        case ("torch", "BoolStorage"): self = .storage(.bool)
        default: return nil
        }
    }
}

/// Mutable containers are reference types because pickle's memo shares them: a dict fetched
/// with BINGET and then filled by SETITEMS must be the very dict stored earlier.
final class PickleList { var items: [PickleValue] = [] }

final class PickleDict {
    private(set) var keys: [PickleValue] = []
    private(set) var values: [PickleValue] = []
    /// String keys → position, so repeated assignment replaces instead of duplicating.
    private var stringIndex: [String: Int] = [:]

    func set(_ key: PickleValue, _ value: PickleValue) {
        if case .string(let s) = key {
            if let i = stringIndex[s] { values[i] = value; return }
            stringIndex[s] = keys.count
        }
        keys.append(key)
        values.append(value)
    }

    func value(forString key: String) -> PickleValue? {
        stringIndex[key].map { values[$0] }
    }

    var count: Int { keys.count }

    /// Drops every child so teardown never recurses (see `Unpickler.arena`).
    func removeAll() { keys = []; values = []; stringIndex = [:] }
}

/// Tuples are immutable in Python but still boxed, so every composite can be emptied at teardown.
final class PickleTuple {
    var items: [PickleValue]
    init(_ items: [PickleValue]) { self.items = items }
}

/// A pickled value, restricted to what a state dict can contain.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer that does not fit in 64 bits; kept only so it can be rejected where used.
    case bigInt
    case float(Double)
    case string(String)
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    /// EMPTY_SET/ADDITEMS: contents are irrelevant to state dicts but must be accepted.
    case set(PickleList)
    case global(PickleGlobal)
    /// A typed storage returned by `persistent_load`.
    case storage(key: String, dtype: DType, count: Int)
    case tensor(TensorRecord)

    /// Short type name for error messages.
    var typeName: String {
        switch self {
        case .none: "None"
        case .bool: "bool"
        case .int, .bigInt: "int"
        case .float: "float"
        case .string: "str"
        case .tuple: "tuple"
        case .list: "list"
        case .dict: "dict"
        case .set: "set"
        case .global: "global"
        case .storage: "storage"
        case .tensor: "tensor"
        }
    }
}

/// Validates a persistent id's storage (its zip entry exists and holds `count` elements), or throws.
typealias StorageLookup = (_ key: String, _ dtype: DType, _ count: Int) throws -> Void

struct Unpickler {
    private let r: ByteReader
    private let start: Int
    private let end: Int
    /// Label for error messages, e.g. "checkpoint.pt: data.pkl".
    private let context: String
    private let lookupStorage: StorageLookup

    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]
    /// Storages already resolved by key, so shared storages are validated once and stay consistent.
    private var storages: [String: (DType, Int)] = [:]
    /// Every container ever created. Emptied at the end so that deallocating a hostile, deeply
    /// nested (or cyclic) structure never recurses through the Swift stack or leaks.
    private var arena: [AnyObject] = []

    /// - Parameters:
    ///   - r: reader over the whole file; the pickle occupies `[start, start + length)`.
    ///   - lookupStorage: validates a persistent id's storage (existence and size).
    init(_ r: ByteReader, start: Int, length: Int, context: String, lookupStorage: @escaping StorageLookup) {
        self.r = r
        self.start = start
        self.end = start + length
        self.context = context
        self.lookupStorage = lookupStorage
    }

    private func fail(_ message: String) -> TensorIOError {
        TensorIOError("\(context): \(message)")
    }

    /// Runs the program and hands the result to `extract` before the object graph is torn down;
    /// `extract` must copy out what it needs (plain values only).
    mutating func run<T>(_ extract: (PickleValue) throws -> T) throws -> T {
        defer { teardown() }
        let result = try execute()
        return try extract(result)
    }

    private mutating func teardown() {
        stack = []
        memo = [:]
        for object in arena {
            switch object {
            case let d as PickleDict: d.removeAll()
            case let l as PickleList: l.items = []
            case let t as PickleTuple: t.items = []
            default: break
            }
        }
        arena = []
    }

    // MARK: Reading operands

    private var pc = 0

    private mutating func take(_ n: Int, _ what: String) throws -> Int {
        guard n >= 0, pc <= end, n <= end - pc else {
            throw fail("truncated: \(what) at offset \(pc - start) runs past the end of the pickle")
        }
        defer { pc += n }
        return pc
    }

    private mutating func readU8(_ what: String) throws -> UInt8 { try r.u8(try take(1, what), what) }
    private mutating func readU16(_ what: String) throws -> UInt16 { try r.u16(try take(2, what), what) }
    private mutating func readU32(_ what: String) throws -> UInt32 { try r.u32(try take(4, what), what) }
    private mutating func readU64(_ what: String) throws -> UInt64 { try r.u64(try take(8, what), what) }

    private mutating func readString(_ length: UInt64, _ what: String) throws -> String {
        guard length <= UInt64(end - pc) else {
            throw fail("truncated: \(what) of \(length) bytes at offset \(pc - start) runs past the end of the pickle")
        }
        let n = Int(length)
        let bytes = try r.bytes(try take(n, what), n, what)
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw fail("corrupt: \(what) at offset \(pc - n - start) is not valid UTF-8")
        }
        return s
    }

    /// Reads a `\n`-terminated ASCII line (GLOBAL operands).
    private mutating func readLine(_ what: String) throws -> String {
        var bytes: [UInt8] = []
        while true {
            let b = try readU8(what)
            if b == 0x0A { break }
            bytes.append(b)
            guard bytes.count <= 256 else { throw fail("corrupt: \(what) is longer than 256 bytes") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: Stack helpers

    private mutating func pop(_ op: String) throws -> PickleValue {
        guard let v = stack.popLast() else { throw fail("corrupt: \(op) on an empty stack") }
        if let m = marks.last, stack.count < m { throw fail("corrupt: \(op) pops past a MARK") }
        return v
    }

    private func top(_ op: String) throws -> PickleValue {
        guard let v = stack.last else { throw fail("corrupt: \(op) on an empty stack") }
        return v
    }

    /// Pops everything above the most recent MARK (and the mark itself).
    private mutating func popToMark(_ op: String) throws -> [PickleValue] {
        guard let m = marks.popLast() else { throw fail("corrupt: \(op) without a MARK") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    private mutating func makeTuple(_ items: [PickleValue]) -> PickleValue {
        let t = PickleTuple(items)
        arena.append(t)
        return .tuple(t)
    }

    private mutating func memoPut(_ index: Int) throws {
        memo[index] = try top("memo put")
    }

    private func memoGet(_ index: Int) throws -> PickleValue {
        guard let v = memo[index] else { throw fail("corrupt: memo entry \(index) read before it was written") }
        return v
    }

    private func refuse(_ module: String, _ name: String) -> TensorIOError {
        let shown = module.isEmpty ? name : "\(module).\(name)"
        return fail("refusing to load: checkpoint references \(shown), which a state_dict never needs")
    }

    // MARK: The VM

    private mutating func execute() throws -> PickleValue {
        pc = start
        while true {
            let opOffset = pc - start
            let op = try readU8("opcode")
            switch op {
            case 0x80:  // PROTO
                let v = try readU8("PROTO version")
                guard v <= 5 else { throw fail("unsupported pickle protocol \(v)") }
            case 0x95:  // FRAME: a length hint only.
                _ = try readU64("FRAME length")
            case 0x2E:  // STOP
                guard stack.count == 1, marks.isEmpty else {
                    throw fail("corrupt: STOP with \(stack.count) values on the stack")
                }
                return stack[0]
            case 0x28:  // MARK
                marks.append(stack.count)
            case 0x7D:  // EMPTY_DICT
                let d = PickleDict(); arena.append(d); stack.append(.dict(d))
            case 0x5D:  // EMPTY_LIST
                let l = PickleList(); arena.append(l); stack.append(.list(l))
            case 0x8F:  // EMPTY_SET
                let l = PickleList(); arena.append(l); stack.append(.set(l))
            case 0x29:  // EMPTY_TUPLE
                let t = makeTuple([])
                stack.append(t)
            case 0x74:  // TUPLE
                let items = try popToMark("TUPLE")
                let t = makeTuple(items)
                stack.append(t)
            case 0x85, 0x86, 0x87:  // TUPLE1/2/3
                let n = Int(op - 0x84)
                var items: [PickleValue] = []
                for _ in 0..<n { items.append(try pop("TUPLE\(n)")) }
                let t = makeTuple(items.reversed())
                stack.append(t)
            case 0x4E:  // NONE
                stack.append(.none)
            case 0x88: stack.append(.bool(true))   // NEWTRUE
            case 0x89: stack.append(.bool(false))  // NEWFALSE
            case 0x4B:  // BININT1
                let v = Int(try readU8("BININT1"))
                stack.append(.int(v))
            case 0x4D:  // BININT2
                let v = Int(try readU16("BININT2"))
                stack.append(.int(v))
            case 0x4A:  // BININT (signed)
                let v = Int(Int32(bitPattern: try readU32("BININT")))
                stack.append(.int(v))
            case 0x8A:  // LONG1: n-byte two's-complement little-endian.
                let n = Int(try readU8("LONG1 length"))
                let at = try take(n, "LONG1 value")
                let bytes = try r.bytes(at, n, "LONG1 value")
                stack.append(Self.decodeLong(bytes))
            case 0x47:  // BINFLOAT: big-endian IEEE double.
                // `readU64` decodes little-endian; swapping yields the big-endian value.
                let bits = try readU64("BINFLOAT").byteSwapped
                stack.append(.float(Double(bitPattern: bits)))
            case 0x58:  // BINUNICODE
                let n = try readU32("BINUNICODE length")
                let v = try readString(UInt64(n), "BINUNICODE string")
                stack.append(.string(v))
            case 0x8C:  // SHORT_BINUNICODE
                let n = try readU8("SHORT_BINUNICODE length")
                let v = try readString(UInt64(n), "SHORT_BINUNICODE string")
                stack.append(.string(v))
            case 0x8D:  // BINUNICODE8
                let n = try readU64("BINUNICODE8 length")
                let v = try readString(n, "BINUNICODE8 string")
                stack.append(.string(v))
            case 0x71:  // BINPUT
                try memoPut(Int(try readU8("BINPUT index")))
            case 0x72:  // LONG_BINPUT
                try memoPut(Int(try readU32("LONG_BINPUT index")))
            case 0x94:  // MEMOIZE
                try memoPut(memo.count)
            case 0x68:  // BINGET
                let v = try memoGet(Int(try readU8("BINGET index")))
                stack.append(v)
            case 0x6A:  // LONG_BINGET
                let v = try memoGet(Int(try readU32("LONG_BINGET index")))
                stack.append(v)
            case 0x63:  // GLOBAL
                let module = try readLine("GLOBAL module")
                let name = try readLine("GLOBAL name")
                guard let g = PickleGlobal(module: module, name: name) else { throw refuse(module, name) }
                stack.append(.global(g))
            case 0x93:  // STACK_GLOBAL
                let nameValue = try pop("STACK_GLOBAL")
                let moduleValue = try pop("STACK_GLOBAL")
                guard case .string(let name) = nameValue, case .string(let module) = moduleValue else {
                    throw fail("corrupt: STACK_GLOBAL operands are not strings")
                }
                guard let g = PickleGlobal(module: module, name: name) else { throw refuse(module, name) }
                stack.append(.global(g))
            case 0x61:  // APPEND
                let v = try pop("APPEND")
                guard case .list(let l) = try top("APPEND") else { throw fail("corrupt: APPEND to a \(try top("APPEND").typeName)") }
                l.items.append(v)
            case 0x65:  // APPENDS
                let items = try popToMark("APPENDS")
                guard case .list(let l) = try top("APPENDS") else { throw fail("corrupt: APPENDS to a \(try top("APPENDS").typeName)") }
                l.items.append(contentsOf: items)
            case 0x90:  // ADDITEMS
                let items = try popToMark("ADDITEMS")
                guard case .set(let s) = try top("ADDITEMS") else { throw fail("corrupt: ADDITEMS to a \(try top("ADDITEMS").typeName)") }
                s.items.append(contentsOf: items)
            case 0x73:  // SETITEM
                let value = try pop("SETITEM")
                let key = try pop("SETITEM")
                guard case .dict(let d) = try top("SETITEM") else { throw fail("corrupt: SETITEM on a \(try top("SETITEM").typeName)") }
                d.set(key, value)
            case 0x75:  // SETITEMS
                let items = try popToMark("SETITEMS")
                guard items.count % 2 == 0 else { throw fail("corrupt: SETITEMS with an odd number of items") }
                guard case .dict(let d) = try top("SETITEMS") else { throw fail("corrupt: SETITEMS on a \(try top("SETITEMS").typeName)") }
                var i = 0
                while i < items.count { d.set(items[i], items[i + 1]); i += 2 }
            case 0x51:  // BINPERSID
                let pid = try pop("BINPERSID")
                let storage = try persistentLoad(pid)
                stack.append(storage)
            case 0x52:  // REDUCE
                let args = try pop("REDUCE")
                let callable = try pop("REDUCE")
                let result = try reduce(callable, args)
                stack.append(result)
            case 0x81:  // NEWOBJ: only OrderedDict.__new__(OrderedDict) makes sense here.
                let args = try pop("NEWOBJ")
                let cls = try pop("NEWOBJ")
                guard case .global(.orderedDict) = cls, case .tuple(let t) = args, t.items.isEmpty else {
                    throw fail("refusing to load: NEWOBJ of a \(cls.typeName), which a state_dict never needs")
                }
                let d = PickleDict(); arena.append(d); stack.append(.dict(d))
            case 0x62:  // BUILD: state such as an OrderedDict's `_metadata` is irrelevant here.
                let state = try pop("BUILD")
                let object = try top("BUILD")
                switch object {
                case .dict, .tensor: _ = state
                default: throw fail("corrupt: BUILD on a \(object.typeName)")
                }
            default:
                throw fail("unsupported pickle opcode 0x\(String(op, radix: 16, uppercase: true)) at offset \(opOffset)")
            }
        }
    }

    /// Decodes a LONG1 payload; values beyond 64 bits become `.bigInt`.
    static func decodeLong(_ bytes: [UInt8]) -> PickleValue {
        if bytes.isEmpty { return .int(0) }
        let negative = bytes[bytes.count - 1] & 0x80 != 0
        if bytes.count > 8 {
            // Fits only if every extra byte is pure sign extension of byte 7.
            let fill: UInt8 = negative ? 0xFF : 0
            guard bytes[8...].allSatisfy({ $0 == fill }), (bytes[7] & 0x80 != 0) == negative else { return .bigInt }
        }
        var v: UInt64 = negative ? ~0 : 0
        for (i, b) in bytes.prefix(8).enumerated() {
            v &= ~(UInt64(0xFF) << (8 * UInt64(i)))
            v |= UInt64(b) << (8 * UInt64(i))
        }
        return .int(Int(Int64(bitPattern: v)))
    }

    // MARK: Interpreting the whitelisted callables

    private mutating func persistentLoad(_ pid: PickleValue) throws -> PickleValue {
        guard case .tuple(let t) = pid, t.items.count == 5,
              case .string("storage") = t.items[0],
              case .global(let g) = t.items[1], case .storage(let dtype) = g,
              case .string(let key) = t.items[2],
              case .string = t.items[3],
              case .int(let count) = t.items[4]
        else {
            throw fail("corrupt: persistent id is not ('storage', StorageType, key, location, numel)")
        }
        guard count >= 0 else { throw fail("corrupt: storage '\(key)' has negative element count \(count)") }
        if let (knownType, knownCount) = storages[key] {
            guard knownType == dtype, knownCount == count else {
                throw fail("corrupt: storage '\(key)' is referenced with conflicting types or sizes")
            }
        } else {
            try lookupStorage(key, dtype, count)
            storages[key] = (dtype, count)
        }
        return .storage(key: key, dtype: dtype, count: count)
    }

    private mutating func reduce(_ callable: PickleValue, _ argsValue: PickleValue) throws -> PickleValue {
        guard case .global(let g) = callable else {
            throw fail("refusing to load: REDUCE calls a \(callable.typeName), not a known global")
        }
        guard case .tuple(let argsBox) = argsValue else { throw fail("corrupt: REDUCE arguments are not a tuple") }
        let args = argsBox.items
        switch g {
        case .orderedDict:
            // OrderedDict() — items follow via SETITEMS. Also accept OrderedDict([(k, v), …]).
            let d = PickleDict(); arena.append(d)
            if args.count == 1, case .list(let pairs) = args[0] {
                for p in pairs.items {
                    guard case .tuple(let kv) = p, kv.items.count == 2 else { throw fail("corrupt: OrderedDict item is not a pair") }
                    d.set(kv.items[0], kv.items[1])
                }
            } else if !args.isEmpty {
                throw fail("corrupt: OrderedDict called with unexpected arguments")
            }
            return .dict(d)
        case .rebuildTensorV2:
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard args.count >= 4, case .storage(let key, let dtype, let count) = args[0] else {
                throw fail("corrupt: _rebuild_tensor_v2 arguments are not (storage, offset, size, stride, …)")
            }
            guard case .int(let offset) = args[1] else { throw fail("corrupt: _rebuild_tensor_v2 storage offset is a \(args[1].typeName)") }
            let shape = try intTuple(args[2], "size")
            let strides = try intTuple(args[3], "stride")
            return .tensor(TensorRecord(storageKey: key, dtype: dtype, storageCount: count,
                                        offset: offset, shape: shape, strides: strides))
        case .rebuildParameter:
            // (data, requires_grad, backward_hooks) → data
            guard let first = args.first, case .tensor = first else {
                throw fail("corrupt: _rebuild_parameter argument is not a tensor")
            }
            return first
        case .storage:
            throw fail("refusing to load: checkpoint calls a storage class, which a state_dict never needs")
        }
    }

    private func intTuple(_ v: PickleValue, _ what: String) throws -> [Int] {
        guard case .tuple(let t) = v else { throw fail("corrupt: tensor \(what) is a \(v.typeName), not a tuple") }
        return try t.items.map {
            switch $0 {
            case .int(let i): return i
            case .bigInt: throw fail("corrupt: tensor \(what) contains an integer wider than 64 bits")
            default: throw fail("corrupt: tensor \(what) contains a \($0.typeName)")
            }
        }
    }
}
