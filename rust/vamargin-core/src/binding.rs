//! Binding a book's string columns to a configuration: one parallel pass per table that
//! turns dictionary codes into config ids and finds the first row each check rejects.
//!
//! The checks report rows, not messages: the caller names the table, the value and the
//! rule (the Python `Book.bind` owns that wording). Every "first row" is the smallest row
//! in table order, whatever the thread count.

use rayon::prelude::*;

use crate::columns::Columns;

/// Rows per parallel block.
const BLOCK: usize = 64 * 1024;

/// A code whose name is not configured maps to this in a lookup table.
pub const UNKNOWN: u32 = u32::MAX;

/// Positions resolved against a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundPositions {
    /// Config perpetual id per row (0 where the code is unknown: see `first_unknown`).
    pub instrument: Vec<u32>,
    /// Grouping key per row: `2·instrument + isolated`, unique per account.
    pub key: Vec<u32>,
    /// Per config perpetual: held by a row with `qty ≠ 0` (empty rows need no price).
    pub used: Vec<bool>,
    /// First row whose code maps to [`UNKNOWN`] (or lies outside the table).
    pub first_unknown: Option<usize>,
}

/// Holdings resolved against a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundHoldings {
    /// Config asset id per row (0 where the code is unknown: see `first_unknown`).
    pub asset: Vec<u32>,
    /// Per config asset: held by some row.
    pub used: Vec<bool>,
    pub first_unknown: Option<usize>,
    /// First negative amount of an asset that is not borrowable.
    pub first_unborrowable_loan: Option<usize>,
    /// First negative amount held by an account that may not borrow.
    pub first_unapproved_loan: Option<usize>,
}

#[inline]
fn resolve(lut: &[u32], code: i32) -> u32 {
    usize::try_from(code)
        .ok()
        .and_then(|c| lut.get(c).copied())
        .unwrap_or(UNKNOWN)
}

fn earliest(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn merge_used(mut a: Vec<bool>, b: Vec<bool>) -> Vec<bool> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x |= y);
    a
}

/// Resolves position instrument `codes` through `lut` (code → config id, [`UNKNOWN`] for
/// names not configured) into ids, grouping keys and the instruments in use.
/// `n_instruments` sizes `used`; the two columns come from `columns`. Slices must be of
/// one length (the caller checks).
pub fn bind_positions(
    codes: &[i32],
    lut: &[u32],
    qty: &[f64],
    isolated_margin: Option<&[f64]>,
    n_instruments: usize,
    columns: &impl Columns,
) -> BoundPositions {
    let n = codes.len();
    let mut instrument = columns.u32s(n);
    let mut key = columns.u32s(n);
    let (used, first_unknown) = instrument
        .par_chunks_mut(BLOCK)
        .zip(key.par_chunks_mut(BLOCK))
        .enumerate()
        .map(|(block, (ids, keys))| {
            let start = block * BLOCK;
            let mut used = vec![false; n_instruments];
            let mut first_unknown = None;
            for (i, (id, k)) in ids.iter_mut().zip(keys.iter_mut()).enumerate() {
                let row = start + i;
                let resolved = resolve(lut, codes[row]);
                if resolved as usize >= n_instruments {
                    first_unknown.get_or_insert(row);
                    (*id, *k) = (0, 0);
                    continue;
                }
                *id = resolved;
                let isolated = isolated_margin.is_some_and(|m| !m[row].is_nan());
                *k = 2 * resolved + u32::from(isolated);
                // Read only until the instrument is found in use: after a block's first
                // rows, `qty` is not read at all (8 bytes a row this pass need not move).
                let used = &mut used[resolved as usize];
                if !*used && qty[row] != 0.0 {
                    *used = true;
                }
            }
            (used, first_unknown)
        })
        .reduce(
            || (vec![false; n_instruments], None),
            |(ua, fa), (ub, fb)| (merge_used(ua, ub), earliest(fa, fb)),
        );
    BoundPositions {
        instrument,
        key,
        used,
        first_unknown,
    }
}

/// Resolves holding asset `codes` through `lut` and checks loans: a negative `amount`
/// must be of a `borrowable` asset (per config asset) and held by an account that may
/// borrow (`may_borrow`, per account row; `account` gives each holding's row). The
/// asset column comes from `columns`.
pub fn bind_holdings(
    codes: &[i32],
    lut: &[u32],
    amount: &[f64],
    account: &[u32],
    borrowable: &[bool],
    may_borrow: &[bool],
    columns: &impl Columns,
) -> BoundHoldings {
    let n_assets = borrowable.len();
    let mut asset = columns.u32s(codes.len());
    type Firsts = (Option<usize>, Option<usize>, Option<usize>);
    let (used, (first_unknown, first_unborrowable_loan, first_unapproved_loan)) = asset
        .par_chunks_mut(BLOCK)
        .enumerate()
        .map(|(block, ids)| {
            let start = block * BLOCK;
            let mut used = vec![false; n_assets];
            let mut firsts: Firsts = (None, None, None);
            for (i, id) in ids.iter_mut().enumerate() {
                let row = start + i;
                let resolved = resolve(lut, codes[row]);
                if resolved as usize >= n_assets {
                    firsts.0.get_or_insert(row);
                    *id = 0;
                    continue;
                }
                *id = resolved;
                used[resolved as usize] = true;
                if amount[row] < 0.0 {
                    if !borrowable[resolved as usize] {
                        firsts.1.get_or_insert(row);
                    }
                    if !may_borrow
                        .get(account[row] as usize)
                        .copied()
                        .unwrap_or(false)
                    {
                        firsts.2.get_or_insert(row);
                    }
                }
            }
            (used, firsts)
        })
        .reduce(
            || (vec![false; n_assets], (None, None, None)),
            |(ua, fa), (ub, fb)| {
                (
                    merge_used(ua, ub),
                    (
                        earliest(fa.0, fb.0),
                        earliest(fa.1, fb.1),
                        earliest(fa.2, fb.2),
                    ),
                )
            },
        );
    BoundHoldings {
        asset,
        used,
        first_unknown,
        first_unborrowable_loan,
        first_unapproved_loan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::{Stale, Zeroed};
    use crate::test_rng::Rng;

    #[test]
    fn positions_resolve_key_and_mark_live_instruments() {
        // Codes 0 → perp 2, 1 → perp 0, 2 → not configured.
        let lut = [2, 0, UNKNOWN];
        let qty = [1.0, 0.0, -2.0];
        let isolated = [f64::NAN, 5.0, 3.0];
        let bound = bind_positions(&[0, 1, 1], &lut, &qty, Some(&isolated), 3, &Zeroed);
        assert_eq!(bound.instrument, vec![2, 0, 0]);
        assert_eq!(bound.key, vec![4, 1, 1]);
        // Perp 0's first row is empty, its second live; perp 1 is unheld.
        assert_eq!(bound.used, vec![true, false, true]);
        assert_eq!(bound.first_unknown, None);
        // Unknown rows read 0 even in a column handed over with stale values.
        let bound = bind_positions(&[0, 2, 2, -1], &lut, &[1.0; 4], None, 3, &Stale);
        assert_eq!(bound.first_unknown, Some(1));
        assert_eq!(bound.instrument, vec![2, 0, 0, 0]);
        assert_eq!(bound.key, vec![4, 0, 0, 0]);
    }

    /// The binding row by row, without blocks: the reference the parallel blocks and
    /// their merging are checked against.
    fn reference_positions(
        codes: &[i32],
        lut: &[u32],
        qty: &[f64],
        isolated: Option<&[f64]>,
        n_instruments: usize,
    ) -> BoundPositions {
        let mut bound = BoundPositions {
            instrument: vec![0; codes.len()],
            key: vec![0; codes.len()],
            used: vec![false; n_instruments],
            first_unknown: None,
        };
        for row in 0..codes.len() {
            let id = resolve(lut, codes[row]);
            if id as usize >= n_instruments {
                bound.first_unknown.get_or_insert(row);
                continue;
            }
            bound.instrument[row] = id;
            bound.key[row] = 2 * id + u32::from(isolated.is_some_and(|m| !m[row].is_nan()));
            bound.used[id as usize] |= qty[row] != 0.0;
        }
        bound
    }

    fn reference_holdings(
        codes: &[i32],
        lut: &[u32],
        amount: &[f64],
        account: &[u32],
        borrowable: &[bool],
        may_borrow: &[bool],
    ) -> BoundHoldings {
        let mut bound = BoundHoldings {
            asset: vec![0; codes.len()],
            used: vec![false; borrowable.len()],
            first_unknown: None,
            first_unborrowable_loan: None,
            first_unapproved_loan: None,
        };
        for row in 0..codes.len() {
            let id = resolve(lut, codes[row]);
            if id as usize >= borrowable.len() {
                bound.first_unknown.get_or_insert(row);
                continue;
            }
            bound.asset[row] = id;
            bound.used[id as usize] = true;
            if amount[row] < 0.0 {
                if !borrowable[id as usize] {
                    bound.first_unborrowable_loan.get_or_insert(row);
                }
                if !may_borrow
                    .get(account[row] as usize)
                    .copied()
                    .unwrap_or(false)
                {
                    bound.first_unapproved_loan.get_or_insert(row);
                }
            }
        }
        bound
    }

    #[test]
    fn blocks_bind_as_the_row_by_row_reference_does() {
        // Books over several blocks, with 3 and with 70 ids (more than fit a 64-bit mask):
        // unknown codes (negative, past the table, mapped past the config) in some, rare
        // loans, flat rows, NaN margins and amounts, accounts past `may_borrow`.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut next = move |m: u64| rng.below(m);
        for (case, n_ids) in [3usize, 70, 3, 70, 0].into_iter().enumerate() {
            let n = 2 * BLOCK + 1_000 + case;
            let mut lut: Vec<u32> = (0..n_ids as u32 + 2).collect();
            lut.push(UNKNOWN);
            let table = lut.len() as u64;
            let errors = case % 2 == 1;
            let codes: Vec<i32> = (0..n)
                .map(|_| match next(50_000) {
                    0 if errors => -1,
                    1 if errors => table as i32 + 3,
                    // In the table, mapped to an id past the config.
                    2 if errors => n_ids as i32 + 1,
                    _ => next(n_ids.max(1) as u64) as i32,
                })
                .collect();
            let value = |next: &mut dyn FnMut(u64) -> u64| match next(1_000) {
                0 => f64::NAN,
                1..=3 => 0.0,
                4..=6 if errors => -1.5,
                _ => next(100) as f64,
            };
            let mut qty: Vec<f64> = (0..n).map(|_| value(&mut next)).collect();
            // Ids 1 and 66 held only by flat rows (not in use); ids 2 and 67 by one live
            // row, the first, then flat ones (in use).
            let mut seen = [false; 2];
            for (row, &code) in codes.iter().enumerate() {
                match code {
                    1 | 66 => qty[row] = 0.0,
                    2 | 67 => {
                        let first = &mut seen[usize::from(code == 67)];
                        qty[row] = if *first { 0.0 } else { 3.0 };
                        *first = true;
                    }
                    _ => {}
                }
            }
            let margin: Vec<f64> = (0..n).map(|_| value(&mut next)).collect();
            let account: Vec<u32> = (0..n).map(|_| next(1_000) as u32).collect();
            let borrowable: Vec<bool> = (0..n_ids).map(|id| id % 2 == 0).collect();
            let may_borrow: Vec<bool> = (0..990).map(|a| a % 5 != 0).collect();
            for isolated in [None, Some(margin.as_slice())] {
                let got = bind_positions(&codes, &lut, &qty, isolated, n_ids, &Stale);
                let want = reference_positions(&codes, &lut, &qty, isolated, n_ids);
                assert_eq!(got, want, "positions, case {case}");
            }
            let got = bind_holdings(
                &codes,
                &lut,
                &qty,
                &account,
                &borrowable,
                &may_borrow,
                &Stale,
            );
            let want = reference_holdings(&codes, &lut, &qty, &account, &borrowable, &may_borrow);
            assert_eq!(got, want, "holdings, case {case}");
            if errors && n_ids > 0 {
                assert!(want.first_unknown.is_some() && want.first_unapproved_loan.is_some());
            }
            if n_ids > 0 {
                let used = &reference_positions(&codes, &lut, &qty, None, n_ids).used;
                assert!(!used[1] && used[2]);
                if n_ids > 67 {
                    assert!(!used[66] && used[67]);
                }
            }
        }
    }

    #[test]
    fn the_first_unknown_row_is_found_across_blocks() {
        let n = 3 * BLOCK + 7;
        let mut codes = vec![0i32; n];
        codes[2 * BLOCK + 3] = 9;
        codes[BLOCK + 1] = 9;
        let bound = bind_positions(&codes, &[0], &vec![1.0; n], None, 1, &Zeroed);
        assert_eq!(bound.first_unknown, Some(BLOCK + 1));
    }

    #[test]
    fn holdings_report_each_loan_rule_at_its_first_row() {
        // Assets: 0 cash (borrowable), 1 coin (not). Accounts: 0 may borrow, 1 may not.
        let lut = [0, 1];
        let codes = [0, 1, 1, 0, 0];
        let amount = [-5.0, 2.0, -1.0, -3.0, 4.0];
        let account = [0, 0, 0, 1, 1];
        let bound = bind_holdings(
            &codes,
            &lut,
            &amount,
            &account,
            &[true, false],
            &[true, false],
            &Zeroed,
        );
        assert_eq!(bound.asset, vec![0, 1, 1, 0, 0]);
        assert_eq!(bound.used, vec![true, true]);
        assert_eq!(bound.first_unknown, None);
        assert_eq!(bound.first_unborrowable_loan, Some(2));
        assert_eq!(bound.first_unapproved_loan, Some(3));
        // Code 2 is not configured: its row reads 0 in a column of stale values.
        let bound = bind_holdings(
            &[1, 2],
            &lut,
            &[1.0, 1.0],
            &[0, 0],
            &[true, false],
            &[true],
            &Stale,
        );
        assert_eq!(bound.asset, vec![1, 0]);
        assert_eq!(bound.first_unknown, Some(1));
    }
}
