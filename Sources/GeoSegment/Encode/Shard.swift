/// `--shard K/N` of `encode` and `generate`: the share of a run's tiles one process takes — every
/// N-th tile from the K-th, in the run's order — so that N processes cover every tile once.
enum Shard {
    /// Refuses a shard outside 0 ≤ K < N.
    static func validate(_ shard: (index: Int, count: Int)?) throws {
        if let shard, !(shard.count >= 1 && (0..<shard.count).contains(shard.index)) {
            throw GeoSegmentError("--shard K/N needs 0 ≤ K < N")
        }
    }

    /// The items of shard `shard` (all of them without one).
    static func share<Item>(of items: [Item], _ shard: (index: Int, count: Int)?) -> [Item] {
        guard let shard else { return items }
        return items.enumerated().filter { $0.offset % shard.count == shard.index }.map(\.element)
    }
}
