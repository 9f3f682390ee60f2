#!/usr/bin/env python3
"""Coefficients of the table-driven erf in Sources/CKernels/internal.h (`gs_erf512`).

erf on [0, 4) is cut into 32 intervals of width 1/8; on interval k, with t = 8|x| − k in [0, 1),
erf(x) ≈ c0 + t·(c1 + t·(c2 + t·(c3 + t·(c4 + t·c5)))). Each interval's quintic is a least-squares
fit on Chebyshev nodes (close to minimax), done in float64 and rounded to float32. The script
prints the C tables and the largest error of the float32 evaluation against math.erf.
"""
import math

import numpy as np

INTERVALS, DEGREE, WIDTH = 32, 5, 0.125


def fit(k):
    nodes = np.cos(np.pi * (np.arange(64) + 0.5) / 64) * 0.5 + 0.5  # Chebyshev nodes on [0, 1]
    x = (k + nodes) * WIDTH
    y = np.array([math.erf(v) for v in x])
    coefficients = np.polynomial.polynomial.polyfit(nodes, y, DEGREE).astype(np.float32)
    if k == 0:
        coefficients[0] = 0  # erf(0) = 0 exactly (the fit leaves about 2e-11)
    return coefficients


def evaluate(table, x):
    """The kernel's arithmetic in float32 (FMA rounding approximated by float32 steps)."""
    x = np.float32(x)
    a = np.minimum(np.abs(x), np.float32(3.99))
    scaled = a * np.float32(8)
    k = np.floor(scaled)
    t = (scaled - k).astype(np.float32)
    k = k.astype(int)
    p = table[k, DEGREE]
    for j in range(DEGREE - 1, -1, -1):
        p = (p * t + table[k, j]).astype(np.float32)
    return np.copysign(p, x)


def c_literal(value):
    text = f"{float(value):.9g}"
    return text + (".0f" if text.lstrip("-").isdigit() else "f")


def main():
    table = np.stack([fit(k) for k in range(INTERVALS)])
    xs = np.linspace(-4.5, 4.5, 900_001, dtype=np.float32)
    error = np.abs(evaluate(table, xs).astype(np.float64) - np.array([math.erf(float(v)) for v in xs]))
    print(f"// max |error| of the float32 evaluation on [-4.5, 4.5]: {error.max():.3g}")
    for j in range(DEGREE + 1):
        values = ", ".join(c_literal(v) for v in table[:, j])
        print(f"static const float gs_erf_c{j}[{INTERVALS}] = {{{values}}};")


if __name__ == "__main__":
    main()
