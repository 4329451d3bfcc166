//! The sums of runs of rows laid out by account then key ([`sum_sorted_runs`]), eight
//! rows at a time on AVX-512.
//!
//! [`sum_sorted_runs`] walks a block's rows one at a time, and each step waits on the
//! last: the open run's sum, its slot, its account. Here a register of eight rows is
//! summed at once:
//!
//! - each row's account is the running maximum of a block column holding each account
//!   at the row where it starts (0 elsewhere), written from `starts`: no column of the
//!   book is read for it, and where accounts without rows start at the same row, the
//!   last of them, the one with rows, is left there;
//! - each row's cell, `account · 2^32 + key`, is compared with the row before it (the
//!   last lane of the register before, brought in by `alignr`): a different cell opens a
//!   run; a smaller one means the rows are not in (account, key) order;
//! - a segmented scan adds every lane's predecessors within its run in three shifted,
//!   masked additions (1, 2 and 4 lanes back), and the lanes before the register's first
//!   opening row add the sum carried from the register before;
//! - a run ends in the lane before the next opening one, so the ends of a register are
//!   known once the next register's cells are: each register's ends, where the sum is not
//!   0, are compressed to the front of a register and stored in one step.
//!
//! The additions are in a different order than one row at a time: where any of them
//! wraps (tested on the sign bits), the lanes give up and the caller asks
//! [`sum_sorted_runs`], which knows whether a sum really overflowed. Where no addition
//! wraps, every sum the lanes hold is the exact sum of its rows, so the results are the
//! same. The lanes also give up when the rows are not in order (the caller's
//! [`sum_sorted_runs`] then says so).
//!
//! `pulp` detects AVX-512 F at run time and its safe wrappers keep this crate free of
//! `unsafe`; elsewhere the callers keep [`sum_sorted_runs`].
//!
//! [`sum_sorted_runs`]: crate::money::sum_sorted_runs

use crate::money::{AccountSums, CellSums};

/// Ids the key table takes: two registers of eight.
pub(crate) const IDS: usize = 16;

/// Sums of sorted runs, eight rows at a time, for rows whose key is `key_of_id[id]`.
pub(crate) struct RunSumLanes {
    #[cfg(target_arch = "x86_64")]
    simd: pulp::x86::V4,
    /// Each id's key, padded to [`IDS`] entries with zeros.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    keys: [u64; IDS],
    /// How many ids the table holds: a row's id must be below this.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    n_ids: u64,
}

impl RunSumLanes {
    /// `None` when the CPU lacks AVX-512 F or there are more than [`IDS`] ids.
    pub(crate) fn new(key_of_id: &[u32]) -> Option<Self> {
        if key_of_id.len() > IDS {
            return None;
        }
        let mut keys = [0u64; IDS];
        for (slot, &key) in keys.iter_mut().zip(key_of_id) {
            *slot = u64::from(key);
        }
        let n_ids = key_of_id.len() as u64;
        #[cfg(target_arch = "x86_64")]
        {
            let simd = pulp::x86::V4::try_new()?;
            Some(RunSumLanes { simd, keys, n_ids })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (keys, n_ids);
            None
        }
    }

    /// What `sum_sorted_runs(first_account, starts, n_keys, |r| key_of_id[ids[r]],
    /// amounts)` returns as [`SortedRuns::Sums`](crate::money::SortedRuns::Sums), when
    /// it does and the lanes can tell: `None` when a row's key is smaller than the one
    /// before it in the same account, when an addition in the lanes' order wraps, or
    /// when an id is not below `key_of_id.len()`. The caller then asks
    /// [`crate::money::sum_sorted_runs`].
    pub(crate) fn sums(
        &self,
        first_account: usize,
        starts: &[usize],
        n_keys: usize,
        ids: &[u32],
        amounts: &[i64],
    ) -> Option<AccountSums> {
        let n = amounts.len();
        // Past every real account is the padding's (see `avx512`).
        let n_accounts = starts.len() - 1;
        if ids.len() != n
            || starts[n_accounts] - starts[0] != n
            || first_account + n_accounts >= u32::MAX as usize
        {
            return None;
        }
        let room = CellSums::room(n_keys, starts);
        #[cfg(target_arch = "x86_64")]
        {
            let opened = opened_accounts(first_account, starts);
            self.sums_avx512(room, &opened, ids, amounts)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = room;
            None
        }
    }
}

/// Each account `first_account + a` at the row where it starts (`starts[a] −
/// starts[0]`), 0 at the other rows: where several start at one row (those before the
/// last have no rows), the last. A running maximum of it gives each row's account.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn opened_accounts(first_account: usize, starts: &[usize]) -> Vec<u32> {
    let first_row = starts[0];
    let n_accounts = starts.len() - 1;
    let mut opened = vec![0u32; starts[n_accounts] - first_row];
    for (a, &start) in starts[..n_accounts].iter().enumerate() {
        if let Some(slot) = opened.get_mut(start - first_row) {
            // Below u32::MAX: checked by the caller.
            *slot = (first_account + a) as u32;
        }
    }
    opened
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::{__m256i, __m512i, __mmask8};

    use pulp::x86::V4;
    use pulp::{cast, Simd, WithSimd};

    use super::RunSumLanes;
    use crate::money::AccountSums;

    /// Rows per step: one 512-bit register of `i64`.
    const LANES: usize = 8;

    /// Runs held between two copies to the output; room for one more register past it.
    const BUFFER: usize = 256;

    /// `(a ^ c) & (b ^ c)` as `_mm512_ternarylogic_epi64`'s table: with `c = a + b`, its
    /// sign bit is set where the addition wrapped.
    const WRAPPED: i32 = 0x42;

    impl RunSumLanes {
        pub(super) fn sums_avx512(
            &self,
            room: usize,
            opened: &[u32],
            ids: &[u32],
            amounts: &[i64],
        ) -> Option<AccountSums> {
            Simd::vectorize(
                self.simd,
                Block {
                    lanes: self,
                    room,
                    opened,
                    ids,
                    amounts,
                },
            )
        }
    }

    /// One block, summed with the AVX-512 features enabled.
    struct Block<'a> {
        lanes: &'a RunSumLanes,
        room: usize,
        /// Each account at the row where it starts, 0 elsewhere (see
        /// [`super::opened_accounts`]).
        opened: &'a [u32],
        ids: &'a [u32],
        amounts: &'a [i64],
    }

    /// The runs found so far, between copies to the output.
    struct Found {
        account: [u32; BUFFER + LANES],
        key: [u32; BUFFER + LANES],
        amount: [i64; BUFFER + LANES],
        len: usize,
        sums: AccountSums,
    }

    impl Found {
        #[inline(always)]
        fn flush(&mut self) {
            let n = self.len;
            self.sums.account.extend_from_slice(&self.account[..n]);
            self.sums.key.extend_from_slice(&self.key[..n]);
            self.sums.amount.extend_from_slice(&self.amount[..n]);
            self.len = 0;
        }
    }

    /// The scan's state from one register of rows to the next, and what it reads.
    ///
    /// The steps are methods, not closures: a closure does not take on the AVX-512
    /// features of the function it is written in, and its intrinsics become calls.
    struct Scan {
        simd: V4,
        /// Each id's key: two registers of eight.
        keys: (__m512i, __m512i),
        /// The id count, in every lane.
        n_ids: __m512i,
        /// The last register's accounts, in every lane its last.
        account: __m512i,
        /// The last register's cells (its last lane is the row before the next).
        cells: __m512i,
        /// The last register's running sums, before their ends are known.
        sums: __m512i,
        /// The last register's opening rows.
        opens: __mmask8,
        /// The sum of the run open at the last register's last row, in every lane.
        carry: __m512i,
        /// Sign bits set where an addition wrapped.
        wrapped: __m512i,
        /// Set where a row's cell was smaller than the one before it, or its id was
        /// out of the table.
        disorder: __mmask8,
        found: Found,
    }

    impl Scan {
        /// A register of rows: their cells, their running sums, and the last
        /// register's runs that end.
        #[inline(always)]
        fn step(&mut self, opened: [u32; LANES], ids: [u32; LANES], amounts: [i64; LANES]) {
            let f = self.simd.avx512f;
            let zero = f._mm512_setzero_si512();
            let last_lane = f._mm512_set1_epi64(LANES as i64 - 1);
            let ids = f._mm512_cvtepu32_epi64(cast::<_, __m256i>(ids));
            let key = f._mm512_permutex2var_epi64(self.keys.0, ids, self.keys.1);
            // Each row's account: the largest opened at or before it (lanes before the
            // register's first are zeros; the last register's account carries over).
            let mut account = f._mm512_cvtepu32_epi64(cast::<_, __m256i>(opened));
            account = f._mm512_max_epu64(account, f._mm512_alignr_epi64::<7>(account, zero));
            account = f._mm512_max_epu64(account, f._mm512_alignr_epi64::<6>(account, zero));
            account = f._mm512_max_epu64(account, f._mm512_alignr_epi64::<4>(account, zero));
            account = f._mm512_max_epu64(account, self.account);
            self.account = f._mm512_permutexvar_epi64(last_lane, account);
            let cells = f._mm512_or_si512(f._mm512_slli_epi64::<32>(account), key);
            let before = f._mm512_alignr_epi64::<7>(cells, self.cells);
            let opens = f._mm512_cmpneq_epu64_mask(cells, before);
            self.disorder |= f._mm512_cmplt_epu64_mask(cells, before)
                | f._mm512_cmpge_epu64_mask(ids, self.n_ids);

            // Segmented scan: each lane adds the lanes 1, 2 and 4 back unless a run
            // opened in between (`reach`: a run opened within the lanes added so far).
            // Lanes before the register's first are zeros: adding them changes nothing,
            // and the carry below continues a run from the last register. The block's
            // first row needs no flag of its own: the state before it is an empty run of
            // sum 0, which is never kept.
            let mut sums: __m512i = cast(amounts);
            let mut reach = opens;
            sums = self.add(sums, !reach, f._mm512_alignr_epi64::<7>(sums, zero));
            reach |= reach << 1;
            sums = self.add(sums, !reach, f._mm512_alignr_epi64::<6>(sums, zero));
            reach |= reach << 2;
            sums = self.add(sums, !reach, f._mm512_alignr_epi64::<4>(sums, zero));
            // The lanes before the first opening row continue the carried run.
            let mut opened = opens;
            opened |= opened << 1;
            opened |= opened << 2;
            opened |= opened << 4;
            sums = self.add(sums, !opened, self.carry);

            // The last register's runs end before each of its opening rows, and at its
            // last lane when this register's first row opens.
            let ends = (self.opens >> 1) | ((opens & 1) << 7);
            let keep = ends & f._mm512_cmpneq_epi64_mask(self.sums, zero);
            let cells_kept = f._mm512_maskz_compress_epi64(keep, self.cells);
            let sums_kept = f._mm512_maskz_compress_epi64(keep, self.sums);
            let kept_keys: [u32; LANES] = cast(f._mm512_cvtepi64_epi32(cells_kept));
            let kept_accounts: [u32; LANES] =
                cast(f._mm512_cvtepi64_epi32(f._mm512_srli_epi64::<32>(cells_kept)));
            let kept_sums: [i64; LANES] = cast(sums_kept);
            let found = &mut self.found;
            let at = found.len;
            found.key[at..at + LANES].copy_from_slice(&kept_keys);
            found.account[at..at + LANES].copy_from_slice(&kept_accounts);
            found.amount[at..at + LANES].copy_from_slice(&kept_sums);
            found.len += keep.count_ones() as usize;
            if found.len > BUFFER {
                found.flush();
            }

            self.carry = f._mm512_permutexvar_epi64(last_lane, sums);
            self.cells = cells;
            self.sums = sums;
            self.opens = opens;
        }

        /// `sums + other` in the lanes of `mask`, noting where it wraps.
        #[inline(always)]
        fn add(&mut self, sums: __m512i, mask: __mmask8, other: __m512i) -> __m512i {
            let f = self.simd.avx512f;
            let sum = f._mm512_mask_add_epi64(sums, mask, sums, other);
            let wrapped = f._mm512_ternarylogic_epi64::<WRAPPED>(sums, other, sum);
            self.wrapped = f._mm512_or_si512(self.wrapped, wrapped);
            sum
        }
    }

    impl WithSimd for Block<'_> {
        type Output = Option<AccountSums>;

        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> Option<AccountSums> {
            let Block {
                lanes,
                room,
                opened,
                ids,
                amounts,
            } = self;
            let f = lanes.simd.avx512f;
            let zero = f._mm512_setzero_si512();
            let (low, high) = lanes.keys.split_at(LANES);
            let low: [u64; LANES] = low.try_into().expect("a register of keys");
            let high: [u64; LANES] = high.try_into().expect("a register of keys");
            let mut scan = Scan {
                simd: lanes.simd,
                keys: (cast(low), cast(high)),
                n_ids: f._mm512_set1_epi64(lanes.n_ids as i64),
                account: zero,
                cells: zero,
                sums: zero,
                opens: 0,
                carry: zero,
                wrapped: zero,
                disorder: 0,
                found: Found {
                    account: [0; BUFFER + LANES],
                    key: [0; BUFFER + LANES],
                    amount: [0; BUFFER + LANES],
                    len: 0,
                    sums: AccountSums {
                        account: Vec::with_capacity(room),
                        key: Vec::with_capacity(room),
                        amount: Vec::with_capacity(room),
                    },
                },
            };
            let n = amounts.len();
            let whole = n - n % LANES;
            let rows = opened[..whole]
                .chunks_exact(LANES)
                .zip(ids[..whole].chunks_exact(LANES))
                .zip(amounts[..whole].chunks_exact(LANES));
            for ((opened, ids), amounts) in rows {
                scan.step(
                    opened.try_into().expect("a register of rows"),
                    ids.try_into().expect("a register of rows"),
                    amounts.try_into().expect("a register of rows"),
                );
            }
            // The last rows, padded with rows of an account past every real one (each
            // opens a run, of sum 0, which is not kept), then one register of padding
            // to end the last real run.
            let mut last = ([u32::MAX; LANES], [0u32; LANES], [0i64; LANES]);
            if whole < n {
                last.0[..n - whole].copy_from_slice(&opened[whole..]);
                last.1[..n - whole].copy_from_slice(&ids[whole..]);
                last.2[..n - whole].copy_from_slice(&amounts[whole..]);
                scan.step(last.0, last.1, last.2);
            }
            scan.step([u32::MAX; LANES], [0; LANES], [0; LANES]);
            scan.found.flush();
            let wrapped = f._mm512_cmplt_epi64_mask(scan.wrapped, zero);
            (scan.disorder == 0 && wrapped == 0).then_some(scan.found.sums)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{sum_sorted_runs, SortedRuns};
    use crate::test_rng::Rng;

    /// Where each account's rows start, from `first_row`, plus the end.
    fn starts_of(first_row: usize, rows_per_account: &[usize]) -> Vec<usize> {
        let mut starts = vec![first_row];
        for &n in rows_per_account {
            starts.push(starts[starts.len() - 1] + n);
        }
        starts
    }

    /// The lanes' sums and the one-row sums of a block: its first account, where each
    /// account's rows start (plus the end), and each row's id and amount.
    fn both(
        lanes: &RunSumLanes,
        key_of_id: &[u32],
        first: usize,
        starts: &[usize],
        n_keys: usize,
        ids: &[u32],
        amounts: &[i64],
    ) -> (Option<AccountSums>, SortedRuns) {
        let wide = lanes.sums(first, starts, n_keys, ids, amounts);
        let key_of = |row: usize| key_of_id[ids[row] as usize];
        let one_row = sum_sorted_runs(first, starts, n_keys, key_of, amounts);
        (wide, one_row)
    }

    #[test]
    fn lanes_sum_each_account_and_key_as_one_row_at_a_time_does() {
        let key_of_id = [0u32, 2, 1];
        let Some(lanes) = RunSumLanes::new(&key_of_id) else {
            return; // no AVX-512 here: the callers keep the one-row sums
        };
        // Accounts 10 (3 rows), 11 (none), 12 (2), 13 (1), as in `money`'s worked case:
        // 10's key 0 sums 5 − 2 = 3 and key 2 is 7; 12's key 1 sums 4 − 4 = 0 and is
        // dropped; 13's key 1 is 9.
        let starts = starts_of(40, &[3, 0, 2, 1]);
        assert_eq!(opened_accounts(10, &starts), [10, 0, 0, 12, 0, 13]);
        let ids = [0u32, 0, 1, 2, 2, 2];
        let amounts = [5i64, -2, 7, 4, -4, 9];
        let (wide, one_row) = both(&lanes, &key_of_id, 10, &starts, 3, &ids, &amounts);
        let expected = AccountSums {
            account: vec![10, 10, 13],
            key: vec![0, 2, 1],
            amount: vec![3, 7, 9],
        };
        assert_eq!(wide, Some(expected.clone()));
        assert_eq!(one_row, SortedRuns::Sums(expected));
    }

    #[test]
    fn lanes_give_up_where_one_row_at_a_time_must_decide() {
        let key_of_id = [0u32, 1, 2];
        let Some(lanes) = RunSumLanes::new(&key_of_id) else {
            return;
        };
        let starts = starts_of(0, &[3, 1]);
        // Within account 0, key 1 after key 2.
        assert_eq!(
            lanes.sums(0, &starts, 3, &[2, 2, 1, 0], &[1, 1, 1, 1]),
            None
        );
        // i64::MAX + 1 in one run overflows; in two runs it does not, but the lanes'
        // additions may still wrap on the way, so they leave it to the one-row sums.
        let big = [i64::MAX, 1, 0, 0];
        assert_eq!(lanes.sums(0, &starts, 3, &[0, 0, 0, 0], &big), None);
        // -1 + MAX + 1 never overflows one row at a time, but 1 + MAX does in the lanes.
        let amounts = [-1, i64::MAX, 1, 4];
        let (wide, one_row) = both(&lanes, &key_of_id, 0, &starts, 3, &[0, 0, 0, 1], &amounts);
        assert_eq!(wide, None);
        assert!(matches!(one_row, SortedRuns::Sums(_)));
        // An id past the table (its key would read as 0, in order here).
        assert_eq!(
            lanes.sums(0, &starts, 3, &[0, 1, 2, 3], &[1, 1, 1, 1]),
            None
        );
        // An account row where the padding's account begins.
        let last = u32::MAX as usize - 1;
        assert_eq!(lanes.sums(last, &[0, 1, 2], 3, &[0, 0], &[1, 1]), None);
        // The same rows in order are summed.
        let in_order = lanes.sums(0, &starts, 3, &[0, 1, 2, 0], &[1, 1, 1, 1]);
        assert_eq!(in_order.map(|sums| sums.amount), Some(vec![1, 1, 1, 1]));
    }

    #[test]
    fn lanes_refuse_more_ids_than_the_table_holds() {
        assert!(RunSumLanes::new(&[0; IDS + 1]).is_none());
    }

    #[test]
    fn lanes_are_the_one_row_sums_of_random_blocks() {
        // Random blocks laid out by account then key: up to 9 rows an account, a fifth
        // of the accounts empty (runs of them too), up to 16 ids mapping to up to 5 keys,
        // amounts that often cancel or are large enough to wrap; every length from
        // nothing to far past the lanes' buffer, so every tail length. Some blocks have
        // a key out of order.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| rng.below(n);
        let mut decided = [0usize; 3];
        for case in 0..600 {
            let n_keys = 1 + next(5) as usize;
            let n_ids = 1 + next(IDS as u64) as usize;
            let key_of_id: Vec<u32> = (0..n_ids).map(|_| next(n_keys as u64) as u32).collect();
            let Some(lanes) = RunSumLanes::new(&key_of_id) else {
                return;
            };
            let n_accounts = [0, 1, 3, 40, 400][case % 5] + next(5) as usize;
            let first = next(1_000) as usize;
            let big = case % 7 == 3;
            let (mut ids, mut amounts, mut rows) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..n_accounts {
                let n = if next(5) == 0 {
                    0
                } else {
                    1 + next(9) as usize
                };
                let mut account_ids: Vec<u32> = (0..n).map(|_| next(n_ids as u64) as u32).collect();
                account_ids.sort_by_key(|&id| key_of_id[id as usize]);
                if case % 11 == 5 && n > 1 && next(20) == 0 {
                    account_ids.reverse();
                }
                ids.extend(account_ids);
                amounts.extend((0..n).map(|_| {
                    if big {
                        (next(u64::MAX) as i64) >> next(3)
                    } else {
                        next(7) as i64 - 3
                    }
                }));
                rows.push(n);
            }
            let starts = starts_of(next(100) as usize, &rows);
            let (wide, one_row) = both(&lanes, &key_of_id, first, &starts, n_keys, &ids, &amounts);
            match (wide, one_row) {
                (Some(sums), SortedRuns::Sums(expected)) => {
                    assert_eq!(sums, expected, "case {case}");
                    decided[0] += 1;
                }
                (Some(sums), other) => panic!("case {case}: lanes {sums:?}, one row {other:?}"),
                (None, SortedRuns::Sums(_)) => {
                    assert!(big, "case {case}: the lanes gave up on small sums");
                    decided[1] += 1;
                }
                (None, _) => decided[2] += 1,
            }
        }
        // Every outcome was seen: summed, given up on a wrap, and given up with the rows
        // out of order or a sum overflowing.
        assert!(decided.iter().all(|&n| n > 0), "{decided:?}");
    }
}
