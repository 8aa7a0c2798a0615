/** The first index of `xs` (sorted by `cmp`) whose element is not before `x`: where `x` would be inserted. */
export function lowerBound<T>(xs: readonly T[], x: T, cmp: (a: T, b: T) => number): number {
  let lo = 0
  let hi = xs.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (cmp(xs[mid]!, x) < 0) lo = mid + 1
    else hi = mid
  }
  return lo
}
