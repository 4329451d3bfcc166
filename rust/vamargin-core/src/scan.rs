//! Input checks over whole columns: the first row that breaks a rule, found by scanning
//! blocks of rows in parallel (the earliest block with a bad row wins, then that block
//! is scanned in order), so a 10M-row column is checked without temporary arrays.

use std::ops::Range;

use rayon::prelude::*;

/// Rows per block: large enough to amortise scheduling, small enough to stop early.
const BLOCK: usize = 64 * 1024;

/// The first of `0..n` for which `bad` holds. `any_bad(range)` says whether a block has
/// one: it runs over every row of the block without stopping early, so it can be a
/// branch-free fold the compiler vectorises; only the block found is scanned row by row.
fn first_where(
    n: usize,
    any_bad: impl Fn(Range<usize>) -> bool + Sync,
    bad: impl Fn(usize) -> bool,
) -> Option<usize> {
    let rows = |b: usize| b * BLOCK..n.min((b + 1) * BLOCK);
    let block = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .position_first(|b| any_bad(rows(b)))?;
    rows(block).find(|&row| bad(row))
}

/// First row holding ±∞, or NaN unless `allow_nan`.
pub fn first_not_finite(values: &[f64], allow_nan: bool) -> Option<usize> {
    // `|v| == ∞` for ±∞, `v != v` for NaN: comparisons only, combined with `|`.
    let bad = |v: f64| (v.abs() == f64::INFINITY) | (!allow_nan & v.is_nan());
    first_where(
        values.len(),
        |rows| values[rows].iter().fold(false, |any, &v| any | bad(v)),
        |row| bad(values[row]),
    )
}

/// First row whose id is not below `len` (ids indexing a table of `len` rows): each block
/// is one vectorised maximum.
pub fn first_id_out_of_range(ids: &[u32], len: usize) -> Option<usize> {
    first_where(
        ids.len(),
        |rows| ids[rows].iter().fold(0, |max, &id| max.max(id)) as usize >= len,
        |row| ids[row] as usize >= len,
    )
}

/// First row whose value is below `bound` (or equal to it, when `or_equal`); NaN is never
/// below. With `where_nonzero`, only rows where that column is not 0 count (a column of
/// the same length; the caller checks).
pub fn first_below(
    values: &[f64],
    bound: f64,
    or_equal: bool,
    where_nonzero: Option<&[f64]>,
) -> Option<usize> {
    let below = |v: f64| (v < bound) | (or_equal & (v == bound));
    match where_nonzero {
        None => first_where(
            values.len(),
            |rows| values[rows].iter().fold(false, |any, &v| any | below(v)),
            |row| below(values[row]),
        ),
        Some(mask) => first_where(
            values.len(),
            |rows| {
                let (values, mask) = (&values[rows.clone()], &mask[rows]);
                values
                    .iter()
                    .zip(mask)
                    .fold(false, |any, (&v, &m)| any | (below(v) & (m != 0.0)))
            },
            |row| below(values[row]) & (mask[row] != 0.0),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_bad_row_across_blocks() {
        let mut values = vec![1.0; 3 * BLOCK + 17];
        assert_eq!(first_not_finite(&values, false), None);
        values[2 * BLOCK + 5] = f64::NAN;
        values[3 * BLOCK + 1] = f64::INFINITY;
        assert_eq!(first_not_finite(&values, false), Some(2 * BLOCK + 5));
        assert_eq!(first_not_finite(&values, true), Some(3 * BLOCK + 1));
        values[7] = f64::NEG_INFINITY;
        assert_eq!(first_not_finite(&values, true), Some(7));
    }

    #[test]
    fn below_skips_nan_and_rows_the_mask_excludes() {
        let values = [2.0, f64::NAN, 0.0, -1.0, 0.5];
        assert_eq!(first_below(&values, 0.0, false, None), Some(3));
        assert_eq!(first_below(&values, 0.0, true, None), Some(2));
        let qty = [1.0, 1.0, 0.0, 0.0, 3.0];
        assert_eq!(first_below(&values, 0.0, true, Some(&qty)), None);
        assert_eq!(first_below(&values, 1.0, false, Some(&qty)), Some(4));
        assert_eq!(first_below(&[], 0.0, true, None), None);
    }

    #[test]
    fn ids_out_of_range_are_found_from_the_first_block_that_has_one() {
        let mut ids = vec![3u32; 2 * BLOCK + 9];
        assert_eq!(first_id_out_of_range(&ids, 4), None);
        ids[BLOCK + 2] = 4;
        ids[2 * BLOCK] = 9;
        assert_eq!(first_id_out_of_range(&ids, 4), Some(BLOCK + 2));
        assert_eq!(first_id_out_of_range(&ids, 5), Some(2 * BLOCK));
        assert_eq!(first_id_out_of_range(&[], 0), None);
    }
}
