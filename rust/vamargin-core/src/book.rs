//! The columnar book: borrowed columns, dense ids, and rows grouped by account.
//!
//! Positions and holdings stay in the caller's row order (outputs line up with inputs);
//! a [`Grouping`] lists each account's rows, in row order, so an account's sums are one
//! fixed-order loop whatever the thread count.

use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::columns::{Columns, Zeroed};
use crate::error::{Error, Result};
use crate::params::EngineParams;
use crate::perp;
use crate::prefetch::Prefetch;
use crate::scan::{first_id_out_of_range, first_where};

/// Rows of a table grouped by account: account `a` owns rows
/// `order[offsets[a]..offsets[a + 1]]` (or that range itself when the table is already
/// sorted by account, the common case, which needs no `order`).
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    offsets: Vec<usize>,
    order: Option<Vec<u32>>,
    /// Built with keys, and no account has two rows of the same key (found as the rows
    /// were grouped, so [`first_repeated_key`] need not read them again).
    distinct_keys: bool,
}

impl Grouping {
    /// Groups rows by account (dense indexes `< n_accounts`) and, within an account, by
    /// `key_of_row` (then by row). Keys unique within an account (asset; instrument and
    /// margin mode) make each account's row order — and so its floating-point sums —
    /// independent of how the input rows were ordered.
    pub fn build(
        account_of_row: &[u32],
        key_of_row: Option<&[u32]>,
        n_accounts: usize,
        column: &'static str,
    ) -> Result<Self> {
        Self::build_into(account_of_row, key_of_row, n_accounts, column, &Zeroed)
    }

    /// [`Grouping::build`] with its columns (offsets, order, and the radix sort's
    /// scratch) from `columns`.
    pub fn build_into(
        account_of_row: &[u32],
        key_of_row: Option<&[u32]>,
        n_accounts: usize,
        column: &'static str,
        columns: &impl Columns,
    ) -> Result<Self> {
        if account_of_row.len() > u32::MAX as usize {
            return Err(Error::LengthMismatch {
                column,
                expected: u32::MAX as usize,
                actual: account_of_row.len(),
            });
        }
        if let Some(keys) = key_of_row {
            if keys.len() != account_of_row.len() {
                return Err(Error::LengthMismatch {
                    column,
                    expected: account_of_row.len(),
                    actual: keys.len(),
                });
            }
        }
        let key = |row: usize| key_of_row.map_or(0, |keys| keys[row]);
        let out_of_range = |row: usize| Error::IdOutOfRange {
            column,
            row,
            id: u64::from(account_of_row[row]),
            len: n_accounts,
        };
        // Rows in (account, key) order, keys strictly increasing within an account: the
        // common case, found while the accounts' starts are written.
        match sorted_offsets(account_of_row, key_of_row, n_accounts, columns) {
            Sorted::Offsets(offsets) => {
                return Ok(Grouping {
                    offsets,
                    order: None,
                    distinct_keys: key_of_row.is_some(),
                })
            }
            Sorted::OutOfRange(row) => return Err(out_of_range(row)),
            Sorted::No => {}
        }
        if let Some(row) = first_id_out_of_range(account_of_row, n_accounts) {
            return Err(out_of_range(row));
        }
        if let Some(grouping) = radix_grouping(account_of_row, key_of_row, n_accounts, columns) {
            return Ok(grouping);
        }
        let offsets = counted_offsets(
            account_of_row.iter().map(|&a| a as usize),
            n_accounts,
            columns,
        );
        let mut next = offsets[..n_accounts].to_vec();
        let mut order = vec![0u32; account_of_row.len()];
        for (row, &account) in account_of_row.iter().enumerate() {
            let slot = &mut next[account as usize];
            // Row count was checked against u32::MAX above.
            order[*slot] = row as u32;
            *slot += 1;
        }
        let mut distinct_keys = key_of_row.is_some();
        if key_of_row.is_some() {
            for a in 0..n_accounts {
                // Groups are small: the counting sort left them in row order, and a
                // stable sort by key keeps rows with equal keys in row order.
                let rows = &mut order[offsets[a]..offsets[a + 1]];
                rows.sort_by_key(|&row| key(row as usize));
                distinct_keys &= rows
                    .windows(2)
                    .all(|pair| key(pair[0] as usize) != key(pair[1] as usize));
            }
        }
        Ok(Grouping {
            offsets,
            order: Some(order),
            distinct_keys,
        })
    }

    pub fn n_accounts(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The grouping's columns (offsets, and the order unless rows are sorted), for a
    /// caller that reuses them; the grouping is left with no accounts.
    pub fn take_columns(&mut self) -> (Vec<usize>, Option<Vec<u32>>) {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        (offsets, self.order.take())
    }

    /// The row of each (account, position in account) slot: for tests and checks.
    #[cfg(test)]
    fn rows(&self) -> Vec<usize> {
        let mut rows = Vec::with_capacity(self.n_rows());
        (0..self.n_accounts()).for_each(|a| self.for_each_row(a, |r| rows.push(r)));
        rows
    }

    pub fn n_rows(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// Whether the rows were already in account order.
    pub fn is_sorted(&self) -> bool {
        self.order.is_none()
    }

    /// When the rows were already in account order: where each account's rows start,
    /// plus the row count at the end (account `a` holds rows `starts[a]..starts[a + 1]`).
    pub fn row_starts(&self) -> Option<&[usize]> {
        self.order.is_none().then_some(self.offsets.as_slice())
    }

    /// Where each account's rows start in the grouping's order, plus the row count at the
    /// end: account `a` holds `offsets[a + 1] − offsets[a]` rows.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Calls `f(row)` for every row of `account`, in row order.
    #[inline]
    pub fn for_each_row(&self, account: usize, f: impl FnMut(usize)) {
        self.rows_of(account).for_each(f);
    }

    /// The rows of `account`, in row order. A loop over them keeps its body in line (a
    /// closure handed to [`Grouping::for_each_row`] can end up called once per row).
    #[inline]
    pub fn rows_of(&self, account: usize) -> RowsOf<'_> {
        let range = self.offsets[account]..self.offsets[account + 1];
        match &self.order {
            None => RowsOf::InPlace(range),
            Some(order) => RowsOf::Reordered(order[range].iter()),
        }
    }
}

/// The rows of one account of a [`Grouping`].
#[derive(Debug, Clone)]
pub enum RowsOf<'a> {
    /// Rows already laid out by account.
    InPlace(std::ops::Range<usize>),
    /// Rows through the grouping's order.
    Reordered(std::slice::Iter<'a, u32>),
}

impl Iterator for RowsOf<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        match self {
            RowsOf::InPlace(range) => range.next(),
            RowsOf::Reordered(rows) => rows.next().map(|&row| row as usize),
        }
    }
}

/// Where each account's rows start when rows are laid out by account (plus the row count
/// at the end), from the account of every row (each `< n_accounts`, in any order).
fn counted_offsets(
    accounts: impl Iterator<Item = usize>,
    n_accounts: usize,
    columns: &impl Columns,
) -> Vec<usize> {
    let mut offsets = columns.usizes(n_accounts + 1);
    offsets.fill(0);
    for account in accounts {
        offsets[account + 1] += 1;
    }
    running_sum(&mut offsets);
    offsets
}

/// Replaces each count by the sum of it and the counts before it. The sum is carried in
/// a register: read back from the slot just written, each addition would wait on the
/// store before it.
fn running_sum(counts: &mut [usize]) {
    let mut sum = 0;
    for count in counts {
        sum += *count;
        *count = sum;
    }
}

/// Rows [`sorted_offsets`] walks between two looks at whether they were in order.
const ORDER_PIECE: usize = 4096;

/// What [`sorted_offsets`] found.
enum Sorted {
    /// The rows are in order: where each account's rows start, plus the row count.
    Offsets(Vec<usize>),
    /// The rows are in order up to this one, the first whose account is not below the
    /// account count.
    OutOfRange(usize),
    /// The rows are not in order.
    No,
}

/// Where each account's rows start (plus the row count at the end), if the rows are in
/// order: accounts never decreasing and, with `key_of_row`, keys strictly increasing
/// within an account. Blocks of accounts in parallel, each finding its rows by binary
/// search, then walking them once: every row is compared with the one before it, and
/// each row of an account whose start lies after it in the block writes its end there
/// (the last row's write stays); a running maximum then carries the starts over accounts
/// without rows. No branch depends on how many rows an account has. The maximum is
/// carried in a register: read back from the slot just written, it waited on the store
/// each account.
///
/// The binary searches assume the order the walks check. Each block's last search is the
/// next block's first, so the blocks' rows tile the rows below the first of an account
/// past the count, and every row is compared with the one before it; a block whose
/// search went backwards, or a row outside its block's accounts, is out of order.
fn sorted_offsets(
    account_of_row: &[u32],
    key_of_row: Option<&[u32]>,
    n_accounts: usize,
    columns: &impl Columns,
) -> Sorted {
    let start_of = |account: usize| account_of_row.partition_point(|&a| (a as usize) < account);
    let arch = pulp::Arch::new();
    let mut offsets = columns.usizes(n_accounts + 1);
    let in_order = offsets
        .par_chunks_mut(SCAN_BLOCK)
        .enumerate()
        .map(|(block, out)| {
            // The column may hold stale values: accounts without rows need a 0 here.
            out.fill(0);
            // `out[i]` is where account `first + i` starts: the number of rows of the
            // accounts before it.
            let first = block * SCAN_BLOCK;
            // The block walks the rows of its accounts: of its last slot's account too,
            // whose end is where the next block starts, except in the last block, whose
            // last slot is the end of the rows of every account.
            let past = if first + out.len() > n_accounts {
                first + out.len() - 1
            } else {
                first + out.len()
            };
            let rows = start_of(first)..start_of(past);
            if rows.start > rows.end {
                return false;
            }
            let rows_end = rows.end;
            out[0] = rows.start;
            let (accounts, ends) = (past - first, out.len() - 1);
            // In pieces, so that rows out of order stop the walk early. A piece's rows
            // are compared with the rows before them in one loop without branches (it
            // vectorises), then write their ends: while they are in cache.
            for piece in rows.step_by(ORDER_PIECE) {
                let end = (piece + ORDER_PIECE).min(rows_end);
                let compared = piece.max(1)..end.max(1);
                let before = compared.start - 1..compared.end - 1;
                let in_order = arch.dispatch(InOrder {
                    now: &account_of_row[compared.clone()],
                    then: &account_of_row[before.clone()],
                    keys: key_of_row.map(|keys| (&keys[compared], &keys[before])),
                });
                // In order, the piece's accounts lie between its first and last rows'.
                let slot = |row: usize| (account_of_row[row] as usize).wrapping_sub(first);
                if !in_order || slot(piece) >= accounts || slot(end - 1) >= accounts {
                    return false;
                }
                for (row, &account) in (piece..).zip(&account_of_row[piece..end]) {
                    // Account `first + i` ends where slot `i + 1` starts.
                    let slot = account as usize - first;
                    if slot < ends {
                        out[slot + 1] = row + 1;
                    }
                }
            }
            let mut start = 0;
            for slot in out.iter_mut() {
                start = start.max(*slot);
                *slot = start;
            }
            true
        })
        .all(|in_order| in_order);
    if !in_order {
        return Sorted::No;
    }
    let past = start_of(n_accounts);
    if past < account_of_row.len() {
        return Sorted::OutOfRange(past);
    }
    Sorted::Offsets(offsets)
}

/// Whether each row of a piece comes after the row before it (`now[i]` after
/// `then[i]`): accounts not decreasing and, with keys, keys strictly increasing within an
/// account. One loop without branches, compiled for the CPU's vector features (a struct,
/// not a closure, so that it is in line in the function `pulp` compiles with them).
struct InOrder<'a> {
    now: &'a [u32],
    then: &'a [u32],
    keys: Option<(&'a [u32], &'a [u32])>,
}

impl pulp::WithSimd for InOrder<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
        let InOrder { now, then, keys } = self;
        match keys {
            None => now.iter().zip(then).fold(true, |ok, (a, p)| ok & (a >= p)),
            Some((keys, keys_before)) => now
                .iter()
                .zip(then)
                .zip(keys.iter().zip(keys_before))
                .fold(true, |ok, ((a, p), (k, q))| {
                    ok & ((a > p) | ((a == p) & (k > q)))
                }),
        }
    }
}

/// Most bits per digit of [`radix_grouping`]: at most 2048 buckets, whose write
/// positions stay in cache while a pass scatters.
const RADIX_BITS: u32 = 11;

/// Groups unsorted rows by a radix sort of the composite `account·n_keys + key` with the
/// row as payload; the sort is stable, so equal keys keep their row order, as the
/// per-account sort would leave them. `None` when the composite does not fit in 32 bits
/// (the caller then sorts per account).
///
/// The first pass partitions the rows by the composite's most significant digit: it
/// reads sequentially and writes to at most 2048 streams (grouping row by row would write
/// at random across the table). Each partition, a few thousand rows of neighbouring
/// accounts, is then sorted by the remaining digits least significant first, in
/// parallel and in cache. A stable partition followed by a stable sort of each part is
/// the stable sort of the whole, so the grouping is the same whatever the thread count.
fn radix_grouping(
    account_of_row: &[u32],
    key_of_row: Option<&[u32]>,
    n_accounts: usize,
    columns: &impl Columns,
) -> Option<Grouping> {
    let n_keys = key_of_row.map_or(1, |keys| keys.iter().max().map_or(1, |&k| k as u64 + 1));
    let span = n_accounts as u64 * n_keys;
    if span > u64::from(u32::MAX) {
        return None;
    }
    // Both factors fit in 32 bits because their product does.
    let n_keys = n_keys as u32;
    let mut composite = columns.u32s(account_of_row.len());
    match key_of_row {
        Some(keys) => composite
            .par_iter_mut()
            .zip(account_of_row.par_iter().zip(keys))
            .for_each(|(c, (&account, &key))| *c = account * n_keys + key),
        None => composite.copy_from_slice(account_of_row),
    }
    let bits = u64::BITS - span.saturating_sub(1).leading_zeros();
    // As few passes as digits of at most RADIX_BITS allow, the bits spread evenly.
    let passes = bits.div_ceil(RADIX_BITS).max(1);
    let digit_bits = bits.div_ceil(passes).max(1);
    let top_shift = (passes - 1) * digit_bits;
    let top_digit = |c: u32| (c >> top_shift) as usize;
    let n_parts = ((span.saturating_sub(1) >> top_shift) + 1) as usize;

    // Pass 1: the stable partition by the top digit. Row count was checked against
    // u32::MAX by the caller.
    let counts = composite
        .par_chunks(SCAN_BLOCK)
        .fold(
            || vec![0usize; n_parts],
            |mut counts, chunk| {
                chunk.iter().for_each(|&c| counts[top_digit(c)] += 1);
                counts
            },
        )
        .reduce(
            || vec![0usize; n_parts],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut next = vec![0usize; n_parts];
    for part in 1..n_parts {
        next[part] = next[part - 1] + counts[part - 1];
    }
    // Every slot of `sorted` and `order` is written once: the counts add up to the rows.
    let mut sorted = columns.u32s(composite.len());
    let mut order = columns.u32s(composite.len());
    for (row, &c) in composite.iter().enumerate() {
        let slot = &mut next[top_digit(c)];
        sorted[*slot] = c;
        order[*slot] = row as u32;
        *slot += 1;
    }
    // The scratch is freed, not pooled: kept, it would add to the peak memory of the
    // revaluation that follows (80 MB at 10M positions).
    drop(composite);

    // Passes 2…: each part by the lower digits, least significant first.
    if passes > 1 {
        let mut parts = Vec::with_capacity(n_parts);
        let (mut keys_rest, mut rows_rest) = (&mut sorted[..], &mut order[..]);
        for &count in &counts {
            let (keys, more_keys) = keys_rest.split_at_mut(count);
            let (rows, more_rows) = rows_rest.split_at_mut(count);
            parts.push((keys, rows));
            (keys_rest, rows_rest) = (more_keys, more_rows);
        }
        parts.into_par_iter().for_each_init(
            || RadixScratch::new(digit_bits),
            |scratch, (keys, rows)| lsd_sort(keys, rows, scratch, digit_bits, passes - 1),
        );
    }
    // Two rows of an account share a key when their composites are equal, and then they
    // lie side by side.
    let distinct_keys = key_of_row.is_some() && !has_adjacent_equal(&sorted);
    // Where each account starts, from the sorted composites.
    let offsets = counted_offsets(
        sorted.iter().map(|&c| (c / n_keys) as usize),
        n_accounts,
        columns,
    );
    drop(sorted);
    Some(Grouping {
        offsets,
        order: Some(order),
        distinct_keys,
    })
}

/// Whether two neighbours of `values` are equal: parallel blocks, each comparing every
/// value with the one before it without branches, so the comparisons vectorise.
fn has_adjacent_equal(values: &[u32]) -> bool {
    rows_after_the_first(values.len()).any(|rows| {
        values[rows.start - 1..rows.end - 1]
            .iter()
            .zip(&values[rows])
            .fold(false, |equal, (a, b)| equal | (a == b))
    })
}

/// Rows `1..len` in parallel blocks of [`SCAN_BLOCK`], for scans that compare every row
/// with the one before it.
fn rows_after_the_first(len: usize) -> impl IndexedParallelIterator<Item = Range<usize>> {
    (0..len.div_ceil(SCAN_BLOCK))
        .into_par_iter()
        .map(move |block| {
            let end = ((block + 1) * SCAN_BLOCK).min(len);
            (block * SCAN_BLOCK).max(1).min(end)..end
        })
}

/// What [`lsd_sort`] reuses from one part to the next on a thread: room for a part's keys
/// and rows, and the digit counters.
struct RadixScratch {
    keys: Vec<u32>,
    rows: Vec<u32>,
    next: Vec<usize>,
}

impl RadixScratch {
    fn new(digit_bits: u32) -> Self {
        RadixScratch {
            keys: Vec::new(),
            rows: Vec::new(),
            next: vec![0; (1 << digit_bits) + 1],
        }
    }
}

/// Sorts `keys` (carrying `rows`) stably by their lowest `passes · digit_bits` bits, one
/// digit per pass, least significant first.
fn lsd_sort(
    keys: &mut [u32],
    rows: &mut [u32],
    scratch: &mut RadixScratch,
    digit_bits: u32,
    passes: u32,
) {
    let n = keys.len();
    if n < 2 {
        return;
    }
    let RadixScratch {
        keys: key_scratch,
        rows: row_scratch,
        next,
    } = scratch;
    key_scratch.clear();
    key_scratch.resize(n, 0);
    row_scratch.clear();
    row_scratch.resize(n, 0);
    let mask = (1usize << digit_bits) - 1;
    // Even passes read from the slices and write to the scratch; odd passes back.
    for pass in 0..passes {
        let shift = pass * digit_bits;
        let digit = |c: u32| (c >> shift) as usize & mask;
        let (from_keys, from_rows, to_keys, to_rows): (&[u32], &[u32], &mut [u32], &mut [u32]) =
            if pass % 2 == 0 {
                (keys, rows, key_scratch, row_scratch)
            } else {
                (key_scratch, row_scratch, keys, rows)
            };
        next.fill(0);
        for &c in from_keys {
            next[digit(c) + 1] += 1;
        }
        running_sum(next);
        for (&c, &row) in from_keys.iter().zip(from_rows) {
            let slot = &mut next[digit(c)];
            to_keys[*slot] = c;
            to_rows[*slot] = row;
            *slot += 1;
        }
    }
    if passes % 2 == 1 {
        keys.copy_from_slice(key_scratch);
        rows.copy_from_slice(row_scratch);
    }
}

/// Maps external `account_id`s to dense indexes `0..n` (their row in the accounts table).
///
/// - Contiguous ascending ids are mapped by subtraction.
/// - Other strictly ascending ids (the usual dump of an accounts table) keep a copy of the
///   ids: non-decreasing lookups (tables dumped in account order) merge against it in
///   parallel blocks, single ids are found by binary search, and the hash table for
///   unordered lookups is built the first time one is needed.
/// - Anything else is hashed at once, which is also how duplicates are found: an open
///   addressing table with a multiplicative hash, read-only after build, so lookups run in
///   parallel.
#[derive(Debug)]
pub struct AccountIndex {
    len: usize,
    layout: Layout,
}

#[derive(Debug)]
enum Layout {
    Dense {
        first: i64,
    },
    Ascending {
        ids: Vec<i64>,
        table: OnceLock<HashTable>,
    },
    Hashed(HashTable),
}

/// Open addressing with linear probing; a key and its row share a slot, so a probe that
/// hits reads one cache line.
#[derive(Debug)]
struct HashTable {
    slots: Vec<Slot>,
    shift: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: i64,
    /// `EMPTY` for a free slot.
    row: u32,
}

const EMPTY: u32 = u32::MAX;

/// How many ids ahead of its probes a hash table build or lookup sends for a slot.
const LOOKUP_AHEAD: usize = 16;

#[inline]
fn slot_of(key: i64, shift: u32) -> usize {
    // Fibonacci hashing: the top bits of key·2^64/φ.
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
}

impl HashTable {
    /// The table of `ids`; a repeated id is an error naming the row of its repeat.
    fn build(ids: &[i64]) -> Result<Self> {
        // A load factor between 1/3 and 2/3.
        let capacity = (ids.len() + ids.len() / 2).next_power_of_two().max(16);
        let shift = 64 - capacity.trailing_zeros();
        let mut slots = vec![Slot { key: 0, row: EMPTY }; capacity];
        let mask = capacity - 1;
        let prefetch = Prefetch::new();
        for (row, &id) in ids.iter().enumerate() {
            if let Some(&later) = ids.get(row + LOOKUP_AHEAD) {
                prefetch.read(&slots[slot_of(later, shift)]);
            }
            let mut at = slot_of(id, shift);
            loop {
                let slot = &mut slots[at];
                if slot.row == EMPTY {
                    // Fewer than u32::MAX ids (checked by the caller).
                    *slot = Slot {
                        key: id,
                        row: row as u32,
                    };
                    break;
                }
                if slot.key == id {
                    return Err(Error::DuplicateKey { row, key: id });
                }
                at = (at + 1) & mask;
            }
        }
        Ok(HashTable { slots, shift })
    }

    /// Sends for the slot where a probe for `id` starts.
    #[inline(always)]
    fn prefetch(&self, prefetch: &Prefetch, id: i64) {
        prefetch.read(&self.slots[slot_of(id, self.shift)]);
    }

    #[inline]
    fn get(&self, id: i64) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut at = slot_of(id, self.shift);
        loop {
            let slot = self.slots[at];
            if slot.row == EMPTY {
                return None;
            }
            if slot.key == id {
                return Some(slot.row);
            }
            at = (at + 1) & mask;
        }
    }
}

impl AccountIndex {
    pub fn build(ids: &[i64]) -> Result<Self> {
        if ids.len() >= EMPTY as usize {
            return Err(Error::LengthMismatch {
                column: "account_id",
                expected: EMPTY as usize - 1,
                actual: ids.len(),
            });
        }
        let len = ids.len();
        // Both checks are branch-free folds over blocks of ids, in parallel (see
        // `scan::first_where`).
        let dense = ids.first().is_some_and(|&first| {
            // Id `i` is `first + i` (without overflow).
            let off = |i: usize, id: i64| !(id >= first && id.abs_diff(first) == i as u64);
            let any_off = |rows: Range<usize>| {
                (rows.start..)
                    .zip(&ids[rows])
                    .fold(false, |any, (i, &id)| any | off(i, id))
            };
            first_where(len, any_off, |i| off(i, ids[i])).is_none()
        });
        // Pair `p` is the ids at `p` and `p + 1`.
        let descends = |p: usize| ids[p] >= ids[p + 1];
        let any_descends = |pairs: Range<usize>| {
            let (now, next) = (&ids[pairs.clone()], &ids[pairs.start + 1..pairs.end + 1]);
            now.iter()
                .zip(next)
                .fold(false, |any, (id, after)| any | (id >= after))
        };
        let layout = if dense {
            Layout::Dense { first: ids[0] }
        } else if first_where(len.saturating_sub(1), any_descends, descends).is_none() {
            Layout::Ascending {
                ids: ids.to_vec(),
                table: OnceLock::new(),
            }
        } else {
            Layout::Hashed(HashTable::build(ids)?)
        };
        Ok(AccountIndex { len, layout })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, id: i64) -> Option<u32> {
        match &self.layout {
            Layout::Dense { first } => {
                let offset = id.checked_sub(*first)?;
                (0..self.len as i64)
                    .contains(&offset)
                    .then_some(offset as u32)
            }
            // Fewer than u32::MAX ids (checked when built).
            Layout::Ascending { ids, .. } => ids.binary_search(&id).ok().map(|row| row as u32),
            Layout::Hashed(table) => table.get(id),
        }
    }

    /// Dense indexes of `ids`; the first unknown id is an error naming its row.
    pub fn lookup_all(&self, ids: &[i64]) -> Result<Vec<u32>> {
        self.lookup_all_into(ids, &Zeroed)
    }

    /// [`AccountIndex::lookup_all`] into a column from `columns`.
    pub fn lookup_all_into(&self, ids: &[i64], columns: &impl Columns) -> Result<Vec<u32>> {
        let mut rows = columns.u32s(ids.len());
        match &self.layout {
            Layout::Dense { .. } => lookup_each(ids, &mut rows, |id| self.get(id), |_| ())?,
            Layout::Ascending { ids: sorted, table } => {
                if !merge_lookup(sorted, ids, &mut rows)? {
                    let table = table.get_or_init(|| {
                        HashTable::build(sorted).expect("ascending ids have no duplicates")
                    });
                    lookup_hashed(table, ids, &mut rows)?;
                }
            }
            Layout::Hashed(table) => lookup_hashed(table, ids, &mut rows)?,
        }
        Ok(rows)
    }
}

/// `ids` looked up in `table` (see [`lookup_each`]), each id's slot sent for
/// [`LOOKUP_AHEAD`] ids before it is probed: the probes read a table far larger than the
/// caches at random.
fn lookup_hashed(table: &HashTable, ids: &[i64], rows: &mut [u32]) -> Result<()> {
    let prefetch = Prefetch::new();
    lookup_each(
        ids,
        rows,
        |id| table.get(id),
        |id| table.prefetch(&prefetch, id),
    )
}

/// `ids` looked up one by one with `get` into `rows` (as long), in parallel blocks, with
/// `ahead` told of each id [`LOOKUP_AHEAD`] ids before it is looked up; the first unknown
/// id is an error naming its row.
fn lookup_each(
    ids: &[i64],
    rows: &mut [u32],
    get: impl Fn(i64) -> Option<u32> + Sync,
    ahead: impl Fn(i64) + Sync,
) -> Result<()> {
    let first_unknown = rows
        .par_chunks_mut(SCAN_BLOCK)
        .zip(ids.par_chunks(SCAN_BLOCK))
        .enumerate()
        .filter_map(|(block, (out, ids))| {
            for (i, (slot, &id)) in out.iter_mut().zip(ids).enumerate() {
                if let Some(&later) = ids.get(i + LOOKUP_AHEAD) {
                    ahead(later);
                }
                match get(id) {
                    Some(row) => *slot = row,
                    None => return Some(block * SCAN_BLOCK + i),
                }
            }
            None
        })
        .min();
    match first_unknown {
        Some(row) => Err(Error::UnknownKey { row, key: ids[row] }),
        None => Ok(()),
    }
}

/// What one block of a merge lookup found.
enum Merged {
    Done,
    Unknown(usize),
    Unordered,
}

/// Rows of `ids` in strictly ascending `sorted`, written to `rows` (as long), when `ids` is
/// non-decreasing (tables dumped in account order): each parallel block binary-searches its
/// first id, then merges. `Ok(false)` when `ids` is not in order (the caller then hashes,
/// overwriting every row).
fn merge_lookup(sorted: &[i64], ids: &[i64], rows: &mut [u32]) -> Result<bool> {
    let outcomes: Vec<Merged> = rows
        .par_chunks_mut(SCAN_BLOCK)
        .zip(ids.par_chunks(SCAN_BLOCK))
        .enumerate()
        .map(|(block, (out, block_ids))| {
            let start = block * SCAN_BLOCK;
            // Order across blocks: this block's first id against the previous block's last.
            if start > 0 && ids[start - 1] > block_ids[0] {
                return Merged::Unordered;
            }
            let mut at = sorted.partition_point(|&id| id < block_ids[0]);
            let mut previous = block_ids[0];
            for (i, (slot, &id)) in out.iter_mut().zip(block_ids).enumerate() {
                if id < previous {
                    return Merged::Unordered;
                }
                // A row stays on its account or moves to the next one: the step depends on
                // the ids alone, not on a load from `sorted`, so rows do not wait on each
                // other's loads. Only past accounts without rows (or at an unknown id)
                // does it search on.
                at += usize::from(id != previous);
                previous = id;
                if sorted.get(at) != Some(&id) {
                    while at < sorted.len() && sorted[at] < id {
                        at += 1;
                    }
                    if at == sorted.len() || sorted[at] != id {
                        return Merged::Unknown(start + i);
                    }
                }
                // The index holds fewer than u32::MAX ids (checked when built).
                *slot = at as u32;
            }
            Merged::Done
        })
        .collect();
    if outcomes.iter().any(|o| matches!(o, Merged::Unordered)) {
        return Ok(false);
    }
    match outcomes.iter().find_map(|o| match o {
        Merged::Unknown(row) => Some(*row),
        _ => None,
    }) {
        Some(row) => Err(Error::UnknownKey { row, key: ids[row] }),
        None => Ok(true),
    }
}

/// Account-level inputs (one row per account, dense index = row).
#[derive(Debug, Clone, Copy)]
pub struct Accounts<'a> {
    pub credit_limit: &'a [f64],
}

/// Spot holdings and cash.
#[derive(Debug, Clone, Copy)]
pub struct Holdings<'a> {
    pub account: &'a [u32],
    pub asset: &'a [u32],
    pub amount: &'a [f64],
}

/// Perpetual positions.
#[derive(Debug, Clone, Copy)]
pub struct Positions<'a> {
    pub account: &'a [u32],
    pub instrument: &'a [u32],
    pub qty: &'a [f64],
    pub entry_price: &'a [f64],
    /// NaN = cross; otherwise the margin locked in this isolated position (settle ccy).
    pub isolated_margin: Option<&'a [f64]>,
    /// NaN = the tier's maximum; otherwise the leverage the position chose.
    pub leverage: Option<&'a [f64]>,
}

impl Positions<'_> {
    #[inline]
    pub fn isolated_margin(&self, row: usize) -> Option<f64> {
        self.isolated_margin
            .map(|col| col[row])
            .filter(|m| !m.is_nan())
    }

    /// The leverage chosen for row `row`, NaN when none (its contract's maximum applies).
    #[inline]
    pub fn leverage(&self, row: usize) -> f64 {
        self.leverage.map_or(f64::NAN, |col| col[row])
    }

    /// Row `row`'s margins with its contract marked at `marks[instrument]`. In line in
    /// the loops that call it (a pre-trade check, per row of the account).
    #[inline(always)]
    pub fn margins_at(&self, params: &EngineParams, marks: &[f64], row: usize) -> perp::Margins {
        let instrument = self.instrument[row] as usize;
        perp::margins(
            &params.perpetuals[instrument],
            self.qty[row],
            self.entry_price[row],
            marks[instrument],
            self.leverage(row),
        )
    }
}

/// A whole book, borrowed, with its groupings; built through [`Book::new`], which checks
/// every shape and id against the parameters so kernels can index without fear, or
/// [`Book::for_single_account`], which checks the shapes only.
#[derive(Debug, Clone, Copy)]
pub struct Book<'a> {
    pub accounts: Accounts<'a>,
    pub holdings: Holdings<'a>,
    pub positions: Positions<'a>,
    pub holding_groups: &'a Grouping,
    pub position_groups: &'a Grouping,
}

/// A column of `actual` rows where `expected` were due is a length mismatch.
pub(crate) fn check_len(column: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            column,
            expected,
            actual,
        })
    }
}

/// Rows per block when scanning a column: each block's maximum is one vectorised pass,
/// and only a block that fails is searched for its first bad row.
const SCAN_BLOCK: usize = 64 * 1024;

fn check_ids(column: &'static str, ids: &[u32], len: usize) -> Result<()> {
    match first_id_out_of_range(ids, len) {
        None => Ok(()),
        Some(row) => Err(Error::IdOutOfRange {
            column,
            row,
            id: u64::from(ids[row]),
            len,
        }),
    }
}

impl<'a> Book<'a> {
    pub fn new(
        params: &EngineParams,
        accounts: Accounts<'a>,
        holdings: Holdings<'a>,
        positions: Positions<'a>,
        holding_groups: &'a Grouping,
        position_groups: &'a Grouping,
    ) -> Result<Self> {
        let book = Self::for_single_account(
            accounts,
            holdings,
            positions,
            holding_groups,
            position_groups,
        )?;
        check_ids("holdings.asset", holdings.asset, params.assets.len())?;
        check_ids(
            "positions.instrument",
            positions.instrument,
            params.perpetuals.len(),
        )?;
        Ok(book)
    }

    pub fn n_accounts(&self) -> usize {
        self.accounts.credit_limit.len()
    }

    /// A book whose column lengths are all checked but whose ids are not (O(1) instead
    /// of O(rows)): for single-account kernels, which check the ids of the rows they read
    /// with [`Book::check_account_ids`]. [`Book::new`] adds the id checks.
    pub fn for_single_account(
        accounts: Accounts<'a>,
        holdings: Holdings<'a>,
        positions: Positions<'a>,
        holding_groups: &'a Grouping,
        position_groups: &'a Grouping,
    ) -> Result<Self> {
        let n = positions.qty.len();
        check_len(
            "holdings.asset",
            holdings.account.len(),
            holdings.asset.len(),
        )?;
        check_len(
            "holdings.amount",
            holdings.account.len(),
            holdings.amount.len(),
        )?;
        check_len(
            "holdings grouping",
            holdings.account.len(),
            holding_groups.n_rows(),
        )?;
        check_len("positions.instrument", n, positions.instrument.len())?;
        check_len("positions.account", n, positions.account.len())?;
        check_len("positions.entry_price", n, positions.entry_price.len())?;
        for column in [positions.isolated_margin, positions.leverage]
            .into_iter()
            .flatten()
        {
            check_len("positions margin columns", n, column.len())?;
        }
        check_len("positions grouping", n, position_groups.n_rows())?;
        check_len(
            "holdings grouping accounts",
            accounts.credit_limit.len(),
            holding_groups.n_accounts(),
        )?;
        check_len(
            "positions grouping accounts",
            accounts.credit_limit.len(),
            position_groups.n_accounts(),
        )?;
        Ok(Book {
            accounts,
            holdings,
            positions,
            holding_groups,
            position_groups,
        })
    }

    /// Checks the asset and instrument ids of one account's rows.
    pub fn check_account_ids(&self, params: &EngineParams, account: usize) -> Result<()> {
        if account >= self.n_accounts() {
            return Err(Error::IdOutOfRange {
                column: "account",
                row: account,
                id: account as u64,
                len: self.n_accounts(),
            });
        }
        let mut bad = None;
        self.holding_groups.for_each_row(account, |row| {
            if self.holdings.asset[row] as usize >= params.assets.len() {
                bad.get_or_insert((
                    "holdings.asset",
                    row,
                    u64::from(self.holdings.asset[row]),
                    params.assets.len(),
                ));
            }
        });
        self.position_groups.for_each_row(account, |row| {
            let id = self.positions.instrument[row];
            if id as usize >= params.perpetuals.len() {
                bad.get_or_insert((
                    "positions.instrument",
                    row,
                    u64::from(id),
                    params.perpetuals.len(),
                ));
            }
        });
        match bad {
            None => Ok(()),
            Some((column, row, id, len)) => Err(Error::IdOutOfRange {
                column,
                row,
                id,
                len,
            }),
        }
    }
}

/// The first row (in table order) that repeats the key of an earlier row of its account,
/// for a grouping built with these `keys` (an account's rows in key order, equal keys in
/// row order, so a repeat follows what it repeats). Rows whose `qty` is 0 (empty
/// positions) are skipped when `qty` is given. Accounts run in parallel.
///
/// For positions the key is `2·instrument + isolated` (one row per account, instrument
/// and margin mode); for holdings it is the asset.
///
/// A grouping that found its keys distinct as it grouped the rows (no two rows of an
/// account share one, empty or not) answers at once, without reading a row.
pub fn first_repeated_key(keys: &[u32], groups: &Grouping, qty: Option<&[f64]>) -> Option<usize> {
    if groups.distinct_keys {
        return None;
    }
    (0..groups.n_accounts())
        .into_par_iter()
        .with_min_len(1024)
        .filter_map(|account| {
            let mut previous: Option<u32> = None;
            let mut first_repeat: Option<usize> = None;
            groups.for_each_row(account, |row| {
                if qty.is_some_and(|q| q[row] == 0.0) {
                    return;
                }
                let key = keys[row];
                if previous == Some(key) {
                    // The account's rows run in key order: a repeat of a smaller key can
                    // come later in the table than one of a larger key.
                    first_repeat = Some(first_repeat.map_or(row, |first: usize| first.min(row)));
                }
                previous = Some(key);
            });
            first_repeat
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::Stale;
    use crate::test_rng::Rng;

    #[test]
    fn grouping_keeps_row_order_within_each_account() {
        let groups = Grouping::build(&[2, 0, 2, 1, 0], None, 4, "account").unwrap();
        assert!(!groups.is_sorted());
        let rows_of = |a| {
            let mut rows = Vec::new();
            groups.for_each_row(a, |r| rows.push(r));
            rows
        };
        assert_eq!(rows_of(0), vec![1, 4]);
        assert_eq!(rows_of(1), vec![3]);
        assert_eq!(rows_of(2), vec![0, 2]);
        assert_eq!(rows_of(3), Vec::<usize>::new());
    }

    #[test]
    fn keys_order_rows_within_an_account() {
        let groups = Grouping::build(&[1, 0, 1, 1], Some(&[7, 3, 2, 9]), 2, "account").unwrap();
        let mut rows = Vec::new();
        groups.for_each_row(1, |r| rows.push(r));
        assert_eq!(rows, vec![2, 0, 3]);
        // Already in (account, key) order: no permutation is kept.
        assert!(Grouping::build(&[0, 1, 1], Some(&[5, 1, 2]), 2, "account")
            .unwrap()
            .is_sorted());
        assert!(!Grouping::build(&[0, 1, 1], Some(&[5, 2, 1]), 2, "account")
            .unwrap()
            .is_sorted());
    }

    #[test]
    fn radix_and_per_account_sorts_group_alike() {
        // A scrambled table with repeated keys: small keys take the radix sort.
        let n = 5_000;
        let account: Vec<u32> = (0..n).map(|r| (r * 7919 % 613) as u32).collect();
        let small: Vec<u32> = (0..n).map(|r| (r * 104_729 % 11) as u32).collect();
        // Keys so large that account·n_keys overflows 32 bits: the per-account sorts.
        let large: Vec<u32> = small.iter().map(|&k| k + (1 << 30)).collect();
        let counted = Grouping::build(&account, Some(&small), 613, "account").unwrap();
        let sorted = Grouping::build(&account, Some(&large), 613, "account").unwrap();
        assert!(!counted.is_sorted());
        assert_eq!(counted, sorted);
        let rows = counted.rows();
        for pair in rows.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (ka, kb) = ((account[a], small[a], a), (account[b], small[b], b));
            assert!(ka < kb, "{ka:?} then {kb:?}");
        }
    }

    #[test]
    fn radix_partition_then_part_sorts_match_the_per_account_sorts() {
        // 600 000 accounts × 11 keys: a 23-bit composite, so three digits (a partition
        // by the top one, then two passes per part), and parts of very different sizes.
        let (n, n_accounts) = (60_000usize, 600_000usize);
        let account: Vec<u32> = (0..n)
            .map(|r| ((r * 7_919 + r * r % 97) % n_accounts) as u32)
            .collect();
        let small: Vec<u32> = (0..n).map(|r| (r * 104_729 % 11) as u32).collect();
        let large: Vec<u32> = small.iter().map(|&k| k + (1 << 30)).collect();
        let radix = Grouping::build(&account, Some(&small), n_accounts, "account").unwrap();
        let per_account = Grouping::build(&account, Some(&large), n_accounts, "account").unwrap();
        assert_eq!(radix, per_account);
        // Without keys: 20 bits, two digits (one pass per part, copied back).
        let by_account = Grouping::build(&account, None, n_accounts, "account").unwrap();
        let rows = by_account.rows();
        for pair in rows.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!((account[a], a) < (account[b], b));
        }
    }

    /// Groupings built in columns of stale values equal those built in zeroed ones: in
    /// account order (empty accounts across blocks), radix-sorted, and by key.
    #[test]
    fn groupings_from_stale_columns_equal_fresh_ones() {
        let n = 3 * SCAN_BLOCK + 5;
        let n_accounts = 2 * n / 3 + 3;
        let in_order: Vec<u32> = (0..n).map(|r| (r / 3 * 2) as u32).collect();
        let scattered: Vec<u32> = (0..n).map(|r| (r * 7919 % n_accounts) as u32).collect();
        let keys: Vec<u32> = (0..n).map(|r| (r % 5) as u32).collect();
        for (accounts, keys) in [
            (&in_order, None),
            (&scattered, None),
            (&scattered, Some(&keys[..])),
        ] {
            let fresh = Grouping::build(accounts, keys, n_accounts, "a").unwrap();
            let stale = Grouping::build_into(accounts, keys, n_accounts, "a", &Stale).unwrap();
            assert_eq!(stale, fresh);
            assert_eq!(fresh.is_sorted(), keys.is_none() && accounts == &in_order);
        }
    }

    #[test]
    fn sorted_offsets_span_blocks_and_empty_accounts() {
        // Accounts 0, 3, 3, 4, …: every third account has no rows; more accounts than a
        // block, and the last accounts have none.
        let n_accounts = 2 * SCAN_BLOCK + 5;
        let account: Vec<u32> = (0..n_accounts as u32 - 10)
            .filter(|a| a % 3 != 1)
            .flat_map(|a| std::iter::repeat_n(a, (a % 3 + 1) as usize))
            .collect();
        let groups = Grouping::build(&account, None, n_accounts, "account").unwrap();
        assert!(groups.is_sorted());
        let mut expected = vec![0usize; n_accounts + 1];
        for &a in &account {
            expected[a as usize + 1] += 1;
        }
        for a in 0..n_accounts {
            expected[a + 1] += expected[a];
        }
        assert_eq!(groups.offsets, expected);
    }

    #[test]
    fn order_is_checked_across_and_within_blocks() {
        // Three blocks of rows, three per account with keys 1, 2, 3: an account straddles
        // the first block boundary, so its first row there is compared across blocks.
        let n = 3 * SCAN_BLOCK;
        let account: Vec<u32> = (0..n).map(|r| (r / 3) as u32).collect();
        let keys: Vec<u32> = (0..n).map(|r| (r % 3 + 1) as u32).collect();
        let n_accounts = n / 3 + 1;
        assert_eq!(account[SCAN_BLOCK], account[SCAN_BLOCK - 1]);
        let sorted = |account: &[u32], keys: Option<&[u32]>| {
            Grouping::build(account, keys, n_accounts, "account")
                .unwrap()
                .is_sorted()
        };
        assert!(sorted(&account, Some(&keys)));
        assert!(sorted(&account, None));
        for row in [SCAN_BLOCK, 2 * SCAN_BLOCK + 777] {
            // The row's key repeats the one before it (the same account): out of order
            // with keys, in order without.
            let mut repeated = keys.clone();
            repeated[row] = repeated[row - 1];
            assert!(!sorted(&account, Some(&repeated)), "key repeated at {row}");
            // The row's account goes back one: out of order either way.
            let mut back = account.clone();
            back[row] = back[row - 1] - 1;
            assert!(!sorted(&back, Some(&keys)), "account back at {row}");
            assert!(!sorted(&back, None), "account back at {row}");
        }
    }

    #[test]
    fn sorted_rows_need_no_order() {
        let groups = Grouping::build(&[0, 0, 1, 3], None, 4, "account").unwrap();
        assert!(groups.is_sorted());
        let mut rows = Vec::new();
        groups.for_each_row(3, |r| rows.push(r));
        assert_eq!(rows, vec![3]);
    }

    #[test]
    fn grouping_rejects_an_account_out_of_range() {
        let out_of_range = |row, id| Error::IdOutOfRange {
            column: "positions.account",
            row,
            id,
            len: 2,
        };
        // Rows in order (the range is checked at the last row, the error names the
        // first bad one), and rows out of order (scanned).
        let err = Grouping::build(&[0, 5], None, 2, "positions.account").unwrap_err();
        assert_eq!(err, out_of_range(1, 5));
        let err = Grouping::build(&[0, 1, 2, 2, 7], None, 2, "positions.account").unwrap_err();
        assert_eq!(err, out_of_range(2, 2));
        let keys = [0, 1, 0, 1, 0];
        let err = Grouping::build(&[0, 0, 1, 3, 3], Some(&keys), 2, "positions.account");
        assert_eq!(err.unwrap_err(), out_of_range(3, 3));
        let err = Grouping::build(&[1, 6, 0, 2], None, 2, "positions.account").unwrap_err();
        assert_eq!(err, out_of_range(1, 6));
    }

    #[test]
    fn sorted_offsets_agree_with_a_plain_scan() {
        // Accounts in order over several blocks of accounts (runs of empty ones too),
        // then disturbed: a row moved back or past its block's accounts, a key repeated,
        // an account past the count at the end or in the middle. Each grouping is what a
        // row-by-row scan says: sorted with the counted offsets, the first row out of
        // range, or grouped through an order (which the sort's tests cover).
        let mut rng = Rng(0x5851_f42d_4c95_7f2d);
        let n_accounts = 2 * SCAN_BLOCK + 300;
        for case in 0..40 {
            let mut account = Vec::new();
            let mut keys = Vec::new();
            for a in 0..n_accounts as u32 {
                let n = [0, 0, 1, 2, 3][rng.below(5) as usize];
                account.extend(std::iter::repeat_n(a, n));
                keys.extend(1..=n as u32);
            }
            let rows = account.len();
            let row = rng.below(rows as u64) as usize;
            match case % 5 {
                0 => {}
                1 => account[row] = account[row].saturating_sub(1 + rng.below(3) as u32),
                2 => account[row] += SCAN_BLOCK as u32,
                3 => keys[row] = keys[row.saturating_sub(1)],
                _ => account[row] = n_accounts as u32 + rng.below(2) as u32,
            }
            let with_keys = case % 2 == 0;
            let key = |r: usize| if with_keys { keys[r] } else { 0 };
            let in_order = (1..rows).all(|r| {
                let (a, p) = (account[r], account[r - 1]);
                a > p || (a == p && (!with_keys || key(r) > key(r - 1)))
            });
            let first_out = account.iter().position(|&a| a as usize >= n_accounts);
            let got = Grouping::build(
                &account,
                with_keys.then_some(&keys[..]),
                n_accounts,
                "account",
            );
            match (first_out, got) {
                (Some(r), Err(err)) => assert_eq!(
                    err,
                    Error::IdOutOfRange {
                        column: "account",
                        row: r,
                        id: u64::from(account[r]),
                        len: n_accounts,
                    },
                    "case {case}"
                ),
                (None, Ok(groups)) => {
                    assert_eq!(groups.is_sorted(), in_order, "case {case}");
                    let mut expected = vec![0usize; n_accounts + 1];
                    for &a in &account {
                        expected[a as usize + 1] += 1;
                    }
                    for a in 0..n_accounts {
                        expected[a + 1] += expected[a];
                    }
                    assert_eq!(groups.offsets, expected, "case {case}");
                }
                (want, got) => panic!("case {case}: out of range at {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn sorted_offsets_agree_with_a_plain_scan_on_every_short_table() {
        // Two blocks of accounts, and every table of up to four rows over accounts at
        // the blocks' edges and past the count: the binary searches then meet tables out
        // of order, ranges past rows out of range, and blocks whose search goes back.
        let n_accounts = SCAN_BLOCK + 2;
        let values =
            [0, 1, SCAN_BLOCK - 1, SCAN_BLOCK, n_accounts, n_accounts + 1].map(|a| a as u32);
        let mut checked = 0;
        for len in 0..=4u32 {
            for code in 0..values.len().pow(len) {
                let account: Vec<u32> = (0..len)
                    .map(|i| values[code / values.len().pow(i) % values.len()])
                    .collect();
                let got = Grouping::build(&account, None, n_accounts, "account");
                match account.iter().position(|&a| a as usize >= n_accounts) {
                    Some(row) => assert_eq!(
                        got.unwrap_err(),
                        Error::IdOutOfRange {
                            column: "account",
                            row,
                            id: u64::from(account[row]),
                            len: n_accounts,
                        },
                        "{account:?}"
                    ),
                    None => {
                        let groups = got.unwrap();
                        let in_order = account.windows(2).all(|pair| pair[0] <= pair[1]);
                        assert_eq!(groups.is_sorted(), in_order, "{account:?}");
                        let mut rows = groups.rows();
                        rows.sort_unstable();
                        assert_eq!(rows, (0..account.len()).collect::<Vec<_>>(), "{account:?}");
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=4).map(|len| 6usize.pow(len)).sum::<usize>());
    }

    #[test]
    fn duplicate_positions_are_found_per_account_and_mode() {
        let account = [0, 1, 0, 0, 1];
        let qty = [1.0, 2.0, -1.0, 1.0, 0.0];
        // 2·instrument + isolated: row 2 is isolated on instrument 0, row 3 cross on 1.
        let keys = [0, 0, 1, 2, 0];
        let groups = Grouping::build(&account, Some(&keys), 2, "account").unwrap();
        // Cross and isolated on one instrument may coexist; an empty row is ignored.
        assert_eq!(first_repeated_key(&keys, &groups, Some(&qty)), None);
        // Counting the empty row, account 1 repeats instrument 0 (cross) at row 4.
        assert_eq!(first_repeated_key(&keys, &groups, None), Some(4));
        // Account 0: rows 2 and 3 both cross on instrument 1; row 3 is the repeat.
        let keys = [0, 0, 2, 2, 0];
        let groups = Grouping::build(&account, Some(&keys), 2, "account").unwrap();
        assert_eq!(first_repeated_key(&keys, &groups, Some(&qty)), Some(3));
    }

    #[test]
    fn groupings_know_when_their_keys_are_distinct() {
        // Sorted by account and key: the order scan finds the keys distinct.
        let sorted = Grouping::build(&[0, 0, 1], Some(&[1, 2, 0]), 2, "account").unwrap();
        assert!(sorted.is_sorted() && sorted.distinct_keys);
        // Without keys nothing is known.
        assert!(
            !Grouping::build(&[0, 0, 1], None, 2, "account")
                .unwrap()
                .distinct_keys
        );
        // Out of order (the radix sort): distinct keys, then account 1 holding key 3 at
        // rows 0 and 3, which the walk still finds, or skips when row 0 is empty.
        let account = [1, 0, 1, 1, 0];
        let keys = [3, 1, 0, 2, 0];
        let radix = Grouping::build(&account, Some(&keys), 2, "account").unwrap();
        assert!(!radix.is_sorted() && radix.distinct_keys);
        assert_eq!(first_repeated_key(&keys, &radix, None), None);
        let keys = [3, 1, 0, 3, 0];
        let radix = Grouping::build(&account, Some(&keys), 2, "account").unwrap();
        assert!(!radix.distinct_keys);
        assert_eq!(first_repeated_key(&keys, &radix, None), Some(3));
        let qty = [0.0, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(first_repeated_key(&keys, &radix, Some(&qty)), None);
        // Accounts × keys beyond 32 bits (the per-account sort), both ways.
        let keys = [1 << 20, 5, 1 << 19];
        let wide = Grouping::build(&[1, 0, 1], Some(&keys), 1 << 13, "account").unwrap();
        assert!(!wide.is_sorted() && wide.distinct_keys);
        let keys = [1 << 20, 5, 1 << 20];
        let wide = Grouping::build(&[1, 0, 1], Some(&keys), 1 << 13, "account").unwrap();
        assert!(!wide.distinct_keys);
        assert_eq!(first_repeated_key(&keys, &wide, None), Some(2));
    }

    #[test]
    fn repeated_keys_are_found_in_table_order() {
        // Account 1 holds key 4 at rows 1 and 3; account 0 holds key 2 at rows 2 and 4.
        let account = [1, 1, 0, 1, 0];
        let keys = [7, 4, 2, 4, 2];
        let groups = Grouping::build(&account, Some(&keys), 2, "account").unwrap();
        assert_eq!(first_repeated_key(&keys, &groups, None), Some(3));
        let unique = [7, 4, 2, 5, 3];
        let groups = Grouping::build(&account, Some(&unique), 2, "account").unwrap();
        assert_eq!(first_repeated_key(&unique, &groups, None), None);
        // One account repeating two keys: key 5 at rows 0 and 1, key 3 at rows 2 and 3.
        // The walk meets key 3's repeat first; row 1 comes first in the table.
        let keys = [5, 5, 3, 3];
        let groups = Grouping::build(&[0; 4], Some(&keys), 1, "account").unwrap();
        assert_eq!(first_repeated_key(&keys, &groups, None), Some(1));
        // An empty row does not count: with row 0 empty, row 1 repeats nothing.
        let qty = [0.0, 1.0, 1.0, 1.0];
        assert_eq!(first_repeated_key(&keys, &groups, Some(&qty)), Some(3));
    }

    #[test]
    fn dense_and_hashed_indexes_agree() {
        let dense = AccountIndex::build(&[10, 11, 12]).unwrap();
        let hashed = AccountIndex::build(&[12, 10, 11]).unwrap();
        assert_eq!(dense.lookup_all(&[12, 10]).unwrap(), vec![2, 0]);
        assert_eq!(hashed.lookup_all(&[12, 10]).unwrap(), vec![0, 1]);
        assert_eq!(dense.get(13), None);
        assert_eq!(hashed.get(-7), None);
    }

    #[test]
    fn layouts_are_told_apart_across_blocks_and_at_the_ends_of_i64() {
        let layout = |ids: &[i64]| match AccountIndex::build(ids).unwrap().layout {
            Layout::Dense { .. } => "dense",
            Layout::Ascending { .. } => "ascending",
            Layout::Hashed(_) => "hashed",
        };
        // Contiguous, over three blocks of the scans.
        let mut ids: Vec<i64> = (0..3 * SCAN_BLOCK as i64 + 5).map(|i| i - 70_000).collect();
        assert_eq!(layout(&ids), "dense");
        // A gap in the second block: ascending, not contiguous.
        for id in &mut ids[SCAN_BLOCK + 7..] {
            *id += 3;
        }
        assert_eq!(layout(&ids), "ascending");
        // A descent in the last block only.
        let n = ids.len();
        ids.swap(n - 2, n - 1);
        assert_eq!(layout(&ids), "hashed");
        // first + i overflowing is not contiguous, even where it wraps onto the id.
        assert_eq!(layout(&[i64::MAX, i64::MIN]), "hashed");
        assert_eq!(layout(&[i64::MAX - 1, i64::MAX]), "dense");
        assert_eq!(layout(&[i64::MIN, i64::MIN + 1]), "dense");
        assert_eq!(layout(&[i64::MIN, i64::MAX]), "ascending");
        assert_eq!(layout(&[7]), "dense");
        // Below the first id by its row is not contiguous either.
        assert_eq!(layout(&[5, 4]), "hashed");
        // A repeat is not ascending: hashed, where it is named.
        assert_eq!(
            AccountIndex::build(&[3, 5, 5, 9]).unwrap_err(),
            Error::DuplicateKey { row: 2, key: 5 }
        );
    }

    #[test]
    fn lookups_write_every_row_of_a_stale_column() {
        use crate::columns::Stale;
        let dense = AccountIndex::build(&[10, 11, 12]).unwrap();
        let ascending = AccountIndex::build(&[3, 13, 23, 33]).unwrap();
        for (index, ids) in [
            (&dense, vec![12, 10, 11]),
            (&ascending, vec![3, 3, 23, 33]), // in order: merged
            (&ascending, vec![33, 3, 13]),    // out of order: hashed after the merge gave up
        ] {
            assert_eq!(
                index.lookup_all_into(&ids, &Stale).unwrap(),
                index.lookup_all(&ids).unwrap()
            );
        }
    }

    #[test]
    fn sorted_lookups_merge_and_agree_with_the_hash() {
        let index = AccountIndex::build(&[3, 13, 23, 33]).unwrap();
        assert_eq!(index.lookup_all(&[3, 3, 23, 33]).unwrap(), vec![0, 0, 2, 3]);
        // Accounts without rows are stepped over (13 here; 3 and 13 in the second).
        assert_eq!(
            index.lookup_all(&[3, 23, 23, 33]).unwrap(),
            vec![0, 2, 2, 3]
        );
        assert_eq!(index.lookup_all(&[23, 33, 33]).unwrap(), vec![2, 3, 3]);
        assert_eq!(index.lookup_all(&[33, 3]).unwrap(), vec![3, 0]); // unsorted: hashed
        assert_eq!(
            index.lookup_all(&[3, 13, 14, 33]).unwrap_err(),
            Error::UnknownKey { row: 2, key: 14 }
        );
        assert_eq!(
            index.lookup_all(&[40]).unwrap_err(),
            Error::UnknownKey { row: 0, key: 40 }
        );
    }

    #[test]
    fn block_merges_find_the_first_unknown_and_fall_back_when_unordered() {
        // Strictly ascending, not contiguous: the merge layout.
        let accounts: Vec<i64> = (0..1000).map(|i| i * 7 + 3).collect();
        let index = AccountIndex::build(&accounts).unwrap();
        // Three blocks of lookups, non-decreasing, with repeats.
        let ids: Vec<i64> = (0..3 * SCAN_BLOCK)
            .map(|i| accounts[i * 1000 / (3 * SCAN_BLOCK)])
            .collect();
        let rows = index.lookup_all(&ids).unwrap();
        assert!(rows
            .iter()
            .zip(&ids)
            .all(|(&r, &id)| accounts[r as usize] == id));
        // Unknown ids in the second and third blocks: the earlier row is named.
        let mut bad = ids.clone();
        bad[2 * SCAN_BLOCK + 5] = 5;
        bad[SCAN_BLOCK + 9] += 1;
        assert_eq!(
            index.lookup_all(&bad).unwrap_err(),
            Error::UnknownKey {
                row: SCAN_BLOCK + 9,
                key: ids[SCAN_BLOCK + 9] + 1
            }
        );
        // Out of order across a block boundary: hashed, same rows.
        let mut unordered = ids.clone();
        unordered.swap(SCAN_BLOCK - 1, 2 * SCAN_BLOCK);
        let hashed = index.lookup_all(&unordered).unwrap();
        assert!(hashed
            .iter()
            .zip(&unordered)
            .all(|(&r, &id)| accounts[r as usize] == id));
        assert_eq!(index.get(10), Some(1));
        assert_eq!(index.get(11), None);
    }

    #[test]
    fn unordered_lookups_agree_with_get_and_name_the_first_unknown_row() {
        let n = 3_000i64;
        let scattered = |i: i64| (i * 7_919) % n; // a permutation: 7919 is prime
        let layouts: [Vec<i64>; 3] = [
            (0..n).map(|i| i + 100).collect(),                  // dense
            (0..n).map(|i| i * 7 + 3).collect(),                // ascending
            (0..n).map(|i| scattered(i) * 5 - 2_000).collect(), // hashed, 0 among them
        ];
        for accounts in &layouts {
            let index = AccountIndex::build(accounts).unwrap();
            // Unordered lookups over two parallel blocks.
            let ids: Vec<i64> = (0..SCAN_BLOCK as i64 + 77)
                .map(|i| accounts[scattered(i % n) as usize])
                .collect();
            let rows = index.lookup_all(&ids).unwrap();
            for (&row, &id) in rows.iter().zip(&ids) {
                assert_eq!(accounts[row as usize], id);
                assert_eq!(index.get(id), Some(row));
            }
            // Unknown ids in both blocks: the earlier row is named. 0 is not an account
            // of the first two layouts (an empty hash slot's key is 0 too).
            let unknown = if accounts.contains(&0) { 1 } else { 0 };
            let mut bad = ids.clone();
            bad[SCAN_BLOCK + 3] = unknown;
            bad[21] = unknown;
            assert_eq!(
                index.lookup_all(&bad).unwrap_err(),
                Error::UnknownKey {
                    row: 21,
                    key: unknown
                }
            );
        }
    }

    #[test]
    fn index_names_the_first_duplicate_and_unknown_rows() {
        assert_eq!(
            AccountIndex::build(&[5, 9, 5]).unwrap_err(),
            Error::DuplicateKey { row: 2, key: 5 }
        );
        let index = AccountIndex::build(&[5, 9]).unwrap();
        assert_eq!(
            index.lookup_all(&[9, 4, 3]).unwrap_err(),
            Error::UnknownKey { row: 1, key: 4 }
        );
    }
}
