//! Sums by account of rows in any order, by partitioning them first: each row's amount,
//! account and key are copied, in table order, into the bucket of its account's high
//! bits (a few hundred to a few thousand accounts a bucket), then each bucket adds its
//! rows into a small table of its accounts' cells, in cache.
//!
//! [`crate::money::sum_by_account`] reads each account's rows through the grouping's
//! order instead: on a book not laid out by account, two scattered reads a row (its id
//! and its amount). Here the rows are read in order twice and written once, to at most
//! [`MOST_BUCKETS`] streams at a time, so nothing waits on a scattered read.
//!
//! Integer sums do not depend on the order of their additions, so the results are those
//! of [`crate::money::sum_by_account`] whenever that one does not overflow, and it
//! cannot when the rows' amounts add up to at most `i64::MAX` in magnitude: then no
//! account's running sum can, in any order. Past that bound [`sum_partitioned`] answers
//! `None`, and the caller sums in account order (where an account's overflow is found
//! and reported).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::money::{check_keys, AccountSumBlocks, AccountSums};
use crate::scan::first_id_out_of_range;

/// The most buckets: their write positions stay in cache while the rows are copied.
const MOST_BUCKETS: usize = 2048;

/// Bits of a copied row that hold its cell in its bucket's table; the amount is in the
/// others (so an amount must be below 2^47 in magnitude to be copied).
const CELL_BITS: u32 = 16;

/// Amounts below this in magnitude fit beside a cell in a copied row.
const MOST_AMOUNT: u64 = 1 << (63 - CELL_BITS);

/// Rows per parallel piece of the counting and copying passes.
const PIECE: usize = 1 << 18;

/// One row, copied into its bucket: its amount, shifted up past its cell in the bucket's
/// table (its account's place in the bucket times the keys used, plus its key's place
/// among them). Eight bytes a row.
#[inline(always)]
fn packed(amount: i64, cell: u32) -> u64 {
    ((amount as u64) << CELL_BITS) | u64::from(cell)
}

/// [`packed`]'s amount and cell.
#[inline(always)]
fn unpacked(row: u64) -> (i64, usize) {
    (
        (row as i64) >> CELL_BITS,
        (row & ((1 << CELL_BITS) - 1)) as usize,
    )
}

/// Buckets of `2^shift` accounts: about [`MOST_BUCKETS`] of them, or more where a
/// bucket's cells (its accounts times the `width` keys used) would not fit in
/// [`CELL_BITS`].
fn bucket_shift(n_accounts: usize, width: usize) -> u32 {
    let bits = usize::BITS - n_accounts.max(1).leading_zeros();
    let cell_room =
        CELL_BITS.saturating_sub((width.max(1) - 1).checked_ilog2().map_or(0, |b| b + 1));
    bits.saturating_sub(MOST_BUCKETS.trailing_zeros())
        .min(cell_room)
}

/// Per account and key, the sum of `amounts` over the rows of that account
/// (`account_of_row`) whose id (`ids`) has that key (`key_of[id]`), non-zero sums only,
/// in account then key order, as [`crate::money::sum_by_account`] gives them.
///
/// `None` when the amounts add up to more than `i64::MAX` in magnitude (see the module's
/// notes), an amount is 2^47 or more in magnitude, or more than 2^16 keys are used (a
/// copied row could not hold it).
/// Ids, keys and accounts out of range are errors, as there.
pub(crate) fn sum_partitioned(
    account_of_row: &[u32],
    n_accounts: usize,
    ids: &[u32],
    key_of: &[u32],
    amounts: &[i64],
    n_keys: usize,
) -> Result<Option<AccountSumBlocks>> {
    let n = amounts.len();
    for (column, len) in [("ids", ids.len()), ("account_of_row", account_of_row.len())] {
        if len != n {
            return Err(Error::LengthMismatch {
                column,
                expected: n,
                actual: len,
            });
        }
    }
    check_keys(ids, key_of, n_keys)?;
    if let Some(row) = first_id_out_of_range(account_of_row, n_accounts) {
        return Err(Error::IdOutOfRange {
            column: "account_of_row",
            row,
            id: u64::from(account_of_row[row]),
            len: n_accounts,
        });
    }
    if n_accounts >= u32::MAX as usize {
        return Err(Error::LengthMismatch {
            column: "account_of_row",
            expected: u32::MAX as usize - 1,
            actual: n_accounts,
        });
    }
    // The keys used, ascending, and each id's key as a place among them.
    let mut keys = key_of.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let slot_of_id: Vec<u32> = key_of
        .iter()
        .map(|key| keys.partition_point(|k| k < key) as u32)
        .collect();
    let width = keys.len();
    if width > 1 << CELL_BITS {
        return Ok(None); // a row could not name its cell
    }
    let shift = bucket_shift(n_accounts, width);
    let n_buckets = (n_accounts >> shift) + 1;
    let pieces: Vec<std::ops::Range<usize>> = (0..n.div_ceil(PIECE))
        .map(|p| p * PIECE..n.min((p + 1) * PIECE))
        .collect();

    // Rows per bucket in each piece, each piece's amounts in magnitude, and its largest.
    let counted: Vec<(Vec<usize>, u64, u64)> = pieces
        .par_iter()
        .map(|rows| {
            let mut counts = vec![0usize; n_buckets];
            for &account in &account_of_row[rows.clone()] {
                counts[(account >> shift) as usize] += 1;
            }
            let (magnitude, largest) =
                amounts[rows.clone()]
                    .iter()
                    .fold((0u64, 0u64), |(sum, largest), a| {
                        let a = a.unsigned_abs();
                        (sum.saturating_add(a), largest.max(a))
                    });
            (counts, magnitude, largest)
        })
        .collect();
    let magnitude = counted
        .iter()
        .fold(0u64, |sum, (_, m, _)| sum.saturating_add(*m));
    let largest = counted.iter().map(|(_, _, l)| *l).max().unwrap_or(0);
    if magnitude > i64::MAX as u64 || largest >= MOST_AMOUNT {
        return Ok(None);
    }

    // Each bucket's rows in one run (from `starts[bucket]`), piece after piece: each
    // piece's share of each bucket, split off in that order.
    let mut copied = vec![0u64; n];
    let mut shares: Vec<Vec<&mut [u64]>> = (0..pieces.len()).map(|_| Vec::new()).collect();
    let mut starts = Vec::with_capacity(n_buckets + 1);
    let mut rest: &mut [u64] = &mut copied;
    for bucket in 0..n_buckets {
        starts.push(n - rest.len());
        for (piece, (counts, _, _)) in counted.iter().enumerate() {
            let (share, tail) = rest.split_at_mut(counts[bucket]);
            shares[piece].push(share);
            rest = tail;
        }
    }
    starts.push(n);
    let mask = (1u32 << shift) - 1;
    // A bucket's accounts times the keys used fit in CELL_BITS (see `shift`).
    let cell_width = width as u32;
    shares
        .into_par_iter()
        .zip(&pieces)
        .for_each(|(mut shares, rows)| {
            let mut next = vec![0usize; n_buckets];
            let rows = account_of_row[rows.clone()]
                .iter()
                .zip(&ids[rows.clone()])
                .zip(&amounts[rows.clone()]);
            for ((&account, &id), &amount) in rows {
                let bucket = (account >> shift) as usize;
                let cell = (account & mask) * cell_width + slot_of_id[id as usize];
                shares[bucket][next[bucket]] = packed(amount, cell);
                next[bucket] += 1;
            }
        });

    // Each bucket's sums, in a table of its accounts' cells.
    let blocks: Vec<AccountSums> = (0..n_buckets)
        .into_par_iter()
        .map(|bucket| {
            let first = bucket << shift;
            let accounts = (n_accounts - first.min(n_accounts)).min(1 << shift);
            let mut cells = vec![0i64; accounts * width];
            for &row in &copied[starts[bucket]..starts[bucket + 1]] {
                let (amount, cell) = unpacked(row);
                let cell = &mut cells[cell];
                *cell = cell.wrapping_add(amount);
            }
            let mut sums = AccountSums::default();
            for (account, cells) in cells.chunks_exact(width.max(1)).enumerate() {
                for (&key, &amount) in keys.iter().zip(cells) {
                    if amount != 0 {
                        // Below u32::MAX (checked above).
                        sums.account.push((first + account) as u32);
                        sums.key.push(key);
                        sums.amount.push(amount);
                    }
                }
            }
            sums
        })
        .collect();
    Ok(Some(AccountSumBlocks { blocks }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Grouping;
    use crate::money::sum_by_account;
    use crate::test_rng::Rng;

    fn agree(
        account_of_row: &[u32],
        n_accounts: usize,
        ids: &[u32],
        key_of: &[u32],
        amounts: &[i64],
        n_keys: usize,
    ) {
        let groups = Grouping::build(account_of_row, None, n_accounts, "accounts").unwrap();
        let want = sum_by_account(&groups, ids, key_of, amounts, n_keys)
            .unwrap()
            .concatenate();
        let got = sum_partitioned(account_of_row, n_accounts, ids, key_of, amounts, n_keys)
            .unwrap()
            .expect("within the bound")
            .concatenate();
        assert_eq!(got, want);
    }

    #[test]
    fn a_worked_example() {
        // Accounts 0..3; ids 0, 1 are key 2, id 2 is key 0 (key 1 unused).
        let account_of_row = [2, 0, 2, 0, 1, 2];
        let ids = [0, 2, 1, 0, 1, 2];
        let amounts = [5, -4, 7, 4, 0, -1];
        let got = sum_partitioned(&account_of_row, 3, &ids, &[2, 2, 0], &amounts, 3)
            .unwrap()
            .unwrap()
            .concatenate();
        // Account 0: key 0 (id 2) −4, key 2 (id 0) 4. Account 1: one row of 0, no sum.
        // Account 2: key 0 −1, key 2 5 + 7 = 12.
        assert_eq!(got.account, [0, 0, 2, 2]);
        assert_eq!(got.key, [0, 2, 0, 2]);
        assert_eq!(got.amount, [-4, 4, -1, 12]);
    }

    #[test]
    fn scattered_rows_sum_as_in_account_order() {
        let mut rng = Rng(29);
        // Small books, and books of more accounts than buckets over several pieces.
        let sizes = [
            (40, 300),
            (1, 50),
            (5_000, PIECE + 999),
            (3 * MOST_BUCKETS + 7, 20_000),
        ];
        for case in 0..40 {
            let (most_accounts, most_rows) = sizes[case % sizes.len()];
            let n_accounts = 1 + rng.below(most_accounts as u64) as usize;
            let n = rng.below(most_rows as u64) as usize;
            let n_ids = 1 + rng.below(6) as usize;
            let n_keys = 1 + rng.below(5) as usize;
            let key_of: Vec<u32> = (0..n_ids)
                .map(|_| rng.below(n_keys as u64) as u32)
                .collect();
            let account_of_row: Vec<u32> = (0..n)
                .map(|_| rng.below(n_accounts as u64) as u32)
                .collect();
            let ids: Vec<u32> = (0..n).map(|_| rng.below(n_ids as u64) as u32).collect();
            // Some amounts cancel, so some sums are 0 and left out.
            let amounts: Vec<i64> = (0..n)
                .map(|_| rng.below(7) as i64 - 3 + if case % 3 == 0 { 1 << 40 } else { 0 })
                .collect();
            agree(&account_of_row, n_accounts, &ids, &key_of, &amounts, n_keys);
        }
    }

    #[test]
    fn the_magnitude_bound_sends_the_caller_to_the_ordered_sums() {
        // Rows of one account that cancel in pairs: its sums stay in range in any order,
        // but 2^16 + 1 rows of 2^47 − 1 add up past i64::MAX in magnitude: answered by
        // the ordered sums, not here. 2^16 rows add up to 2^63 − 2^16: within the bound.
        let largest = MOST_AMOUNT as i64 - 1;
        let rows = |n: usize| -> Vec<i64> {
            (0..n)
                .map(|r| if r % 2 == 0 { largest } else { -largest })
                .collect()
        };
        let (within, past) = (rows(1 << 16), rows((1 << 16) + 1));
        let zeros = |n: usize| vec![0u32; n];
        let got = sum_partitioned(
            &zeros(within.len()),
            1,
            &zeros(within.len()),
            &[0],
            &within,
            1,
        )
        .unwrap()
        .unwrap();
        assert!(got.is_empty()); // they cancel
        assert!(
            sum_partitioned(&zeros(past.len()), 1, &zeros(past.len()), &[0], &past, 1)
                .unwrap()
                .is_none()
        );
        // An amount too large to copy beside its cell: the ordered sums answer.
        let too_large = MOST_AMOUNT as i64;
        assert!(sum_partitioned(&[0], 1, &[0], &[0], &[-too_large], 1)
            .unwrap()
            .is_none());
        let amounts = [too_large - 1, 1 - too_large];
        let got = sum_partitioned(&[0, 0], 1, &[0; 2], &[0], &amounts, 1)
            .unwrap()
            .unwrap();
        assert!(got.is_empty()); // they cancel
    }

    #[test]
    fn rows_pack_their_amount_and_cell() {
        for amount in [
            0,
            1,
            -1,
            MOST_AMOUNT as i64 - 1,
            1 - MOST_AMOUNT as i64,
            -12_345,
        ] {
            for cell in [0, 1, (1 << CELL_BITS) - 1, 777] {
                assert_eq!(unpacked(packed(amount, cell)), (amount, cell as usize));
            }
        }
    }

    #[test]
    fn buckets_hold_what_a_row_can_name() {
        for (n_accounts, width, shift) in [
            (0, 1, 0),
            (2_047, 3, 0),
            (2_048, 3, 1),
            (2_150_000, 3, 11),   // the 10M book: 1 050 buckets of 2 048
            (1 << 22, 40, 10),    // 40 keys: 1 024 accounts a bucket at most
            (1 << 22, 65_536, 0), // one account a bucket
        ] {
            let got = bucket_shift(n_accounts, width);
            assert_eq!(got, shift, "{n_accounts} accounts, {width} keys");
            assert!((width << got) <= 1 << CELL_BITS);
        }
    }

    #[test]
    fn many_keys_make_smaller_buckets() {
        // 40 keys used: a bucket's cells must fit in CELL_BITS, so buckets of 1024
        // accounts or fewer, over more than MOST_BUCKETS accounts.
        let mut rng = Rng(7);
        let n_accounts = 5 * MOST_BUCKETS + 3;
        let n = 30_000;
        let key_of: Vec<u32> = (0..40).collect();
        let account_of_row: Vec<u32> = (0..n)
            .map(|_| rng.below(n_accounts as u64) as u32)
            .collect();
        let ids: Vec<u32> = (0..n).map(|_| rng.below(40) as u32).collect();
        let amounts: Vec<i64> = (0..n).map(|_| rng.below(1_000) as i64 - 400).collect();
        agree(&account_of_row, n_accounts, &ids, &key_of, &amounts, 64);
    }

    #[test]
    fn out_of_range_inputs_are_errors() {
        let err = |result: Result<Option<AccountSumBlocks>>| result.unwrap_err().to_string();
        let e = err(sum_partitioned(&[0, 3], 2, &[0, 0], &[0], &[1, 2], 1));
        assert!(e.contains("account_of_row row 1"), "{e}");
        let e = err(sum_partitioned(&[0, 1], 2, &[0, 1], &[0], &[1, 2], 1));
        assert!(e.contains("ids row 1"), "{e}");
        let e = err(sum_partitioned(&[0, 1], 2, &[0, 0], &[2], &[1, 2], 2));
        assert!(e.contains("key_of"), "{e}");
        let e = err(sum_partitioned(&[0], 2, &[0, 0], &[0], &[1, 2], 1));
        assert!(e.contains("account_of_row: length 1"), "{e}");
    }

    #[test]
    fn no_rows_and_no_accounts_give_no_sums() {
        let got = sum_partitioned(&[], 0, &[], &[0], &[], 1).unwrap().unwrap();
        assert!(got.is_empty());
        let got = sum_partitioned(&[], 5, &[], &[0], &[], 1).unwrap().unwrap();
        assert!(got.is_empty());
    }
}
