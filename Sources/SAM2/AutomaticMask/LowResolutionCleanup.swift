/// The hole and sprinkle removal of `SAM2Transforms.postprocess_masks` (`max_hole_area`,
/// `max_sprinkle_area`), which is where sam2's automatic mask generator applies
/// `min_mask_region_area`: on each low-resolution logit map, before upsampling.
///
/// - Holes: 8-connected components of `logit <= 0` (the outer background included) with at most
///   `maxHoleArea` pixels are set to `+10`.
/// - Sprinkles: 8-connected components of `logit > 0` with at most `maxSprinkleArea` pixels are
///   set to `−10`.
///
/// Both labellings come from the original logits; holes are written first. Parity: the predictor's
/// threshold here is always 0, whatever the generator's `mask_threshold`. The official code runs
/// this through a CUDA kernel and silently skips it elsewhere (a CPU reference shows no effect),
/// so parity tests run with the area 0.
public enum LowResolutionCleanup {
    /// Applies both steps in place to a `side × side` map; an area of 0 turns a step off.
    public static func apply(_ logits: UnsafeMutablePointer<Float>, side: Int, maxHoleArea: Double, maxSprinkleArea: Double) {
        guard maxHoleArea > 0 || maxSprinkleArea > 0 else { return }
        let n = side * side
        let positive = (0..<n).map { logits[$0] > 0 }
        let holes = maxHoleArea > 0 ? smallComponents(of: positive.map { !$0 }, side: side, maxArea: maxHoleArea) : []
        let sprinkles = maxSprinkleArea > 0 ? smallComponents(of: positive, side: side, maxArea: maxSprinkleArea) : []
        for i in holes { logits[i] = 10 }
        for i in sprinkles { logits[i] = -10 }
    }

    /// The pixels of the 8-connected components of `set` with at most `maxArea` pixels.
    static func smallComponents(of set: [Bool], side: Int, maxArea: Double) -> [Int] {
        var label = [Int32](repeating: -1, count: set.count)
        var result: [Int] = []
        var stack: [Int] = [], members: [Int] = []
        for seed in set.indices where set[seed] && label[seed] < 0 {
            label[seed] = 0
            stack = [seed]
            members.removeAll(keepingCapacity: true)
            while let p = stack.popLast() {
                members.append(p)
                let (y, x) = (p / side, p % side)
                for dy in -1...1 {
                    let yy = y + dy
                    guard yy >= 0, yy < side else { continue }
                    for dx in -1...1 where dx != 0 || dy != 0 {
                        let xx = x + dx
                        guard xx >= 0, xx < side else { continue }
                        let q = yy * side + xx
                        if set[q], label[q] < 0 {
                            label[q] = 0
                            stack.append(q)
                        }
                    }
                }
            }
            // Parity: `areas <= max_area`, inclusive.
            if Double(members.count) <= maxArea { result += members }
        }
        return result
    }
}
