"""The integer lattice Z^d by |k|²: the Fourier levels of the torus T^d."""

import math

import torch


def _sums_of_squares(d, max_value):
    """(max_value + 1,) bool: which integers 0..max_value are sums of ``d`` squares.

    Four squares already give every integer (Lagrange), so at most four rounds are needed.
    """
    reachable = torch.zeros(max_value + 1, dtype=torch.bool)
    reachable[0] = True
    squares = [j * j for j in range(math.isqrt(max_value) + 1)]
    for _ in range(min(d, 4)):
        nxt = torch.zeros_like(reachable)
        for s in squares:
            nxt[s:] |= reachable[:max_value + 1 - s]
        reachable = nxt
    return reachable


def _lattice_eigenvalues(d, n_levels):
    """The first ``n_levels`` distinct values of |k|², k ∈ Z^d, as a Python list of ints."""
    max_value = max(n_levels, 4)
    while True:
        values = torch.nonzero(_sums_of_squares(d, max_value)).flatten()
        if values.numel() >= n_levels:
            return values[:n_levels].tolist()
        max_value *= 2


def lattice_count(d, radius_sq):
    """The number of k ∈ Z^d with |k|² ≤ radius_sq (the Fourier functions of those levels),
    by convolving the counts of one coordinate's squares d times (no lattice is built)."""
    counts = torch.zeros(radius_sq + 1, dtype=torch.float64)
    counts[0] = 1.0
    for _ in range(d):
        new = counts.clone()
        for j in range(1, math.isqrt(radius_sq) + 1):
            new[j * j:] += 2.0 * counts[:radius_sq + 1 - j * j]
        counts = new
    return int(round(float(counts.sum())))


def _lattice_ball(d, radius_sq):
    """(M, d) int64: every k ∈ Z^d with |k|² ≤ radius_sq, in lexicographic order.

    Built one coordinate at a time, keeping only prefixes whose partial |k|² fits, so the work
    is about d · (2R + 1) · M rather than (2R + 1)^d.
    """
    r = math.isqrt(radius_sq)
    coords = torch.arange(-r, r + 1, dtype=torch.long)
    points = torch.zeros((1, 0), dtype=torch.long)
    partial = torch.zeros(1, dtype=torch.long)
    for _ in range(d):
        m = points.shape[0]
        new_partial = (partial.unsqueeze(1) + coords.unsqueeze(0) ** 2).reshape(-1)
        keep = new_partial <= radius_sq
        prefix = points.repeat_interleave(coords.numel(), dim=0)
        last = coords.repeat(m).unsqueeze(1)
        points = torch.cat([prefix, last], dim=1)[keep]
        partial = new_partial[keep]
    return points
