//! One-interval funding over a run of rows on the straight path (see
//! `funding::Settler::settle_rows`): each row's payment from its quantity and its
//! instrument's [`Estimate`], and the run's sums per instrument, with no branch per row.
//!
//! Two kernels do the same steps. The one-row loop runs anywhere. On a CPU with AVX-512
//! (F and DQ; detected at run time by `pulp`, whose safe wrappers keep this crate free of
//! `unsafe`) and at most [`TABLE`] instruments, eight rows go at once: the estimates are
//! read from two registers by a permutation instead of a load per row, the 64-bit products
//! take one instruction, and each instrument's sums are masked additions. Every lane does
//! the very same IEEE and wrapping integer steps as the one-row loop, in the same order,
//! so the bits do not depend on the kernel: the tests below hold the two to each other.

use crate::money::{nearest_f64, nearest_i64, Estimate};
use crate::steps::Steps;

/// Rows per run: on the straight path a payment is below 2^49 and a row's quantity units
/// below 2^51 in magnitude, so a run's sums stay below 2^58 and 2^60, within `i64`.
pub(crate) const RUN: usize = 512;

/// Quantities below this many contracts are read in `f64` in a run ([`units_in_f64`]):
/// `|q| · 1e9` stays below 2^51.
pub(crate) const RUN_QTY_LIMIT: f64 = 2.0e6;

/// Instruments the AVX-512 kernel takes: its estimate table is two registers of eight.
const TABLE: usize = 16;

/// One instrument's sums over a run of straight rows (see [`RUN`]).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct RunSums {
    pub rows: i64,
    pub received: i64,
    pub paid: i64,
    pub units: i64,
}

impl RunSums {
    /// Adds `other`'s sums, wrapping as a run's sums do (see [`StraightRuns::settle`]).
    #[inline(always)]
    fn add(&mut self, other: &RunSums) {
        self.rows = self.rows.wrapping_add(other.rows);
        self.received = self.received.wrapping_add(other.received);
        self.paid = self.paid.wrapping_add(other.paid);
        self.units = self.units.wrapping_add(other.units);
    }
}

/// Quantity `x · 1e9` read as units, half away from zero, in `f64` (`|x| < 2^51`): `|x|`
/// rounded to the nearest integer, ties to even, then up by one where that left exactly
/// 0.5 below (a tie rounded down). `|x|` less its nearest integer is exact. No
/// conversion, so a loop of them has no branch.
#[inline(always)]
pub(crate) fn units_in_f64(x: f64) -> f64 {
    let magnitude = x.abs();
    let nearest = nearest_f64(magnitude);
    let up = if magnitude - nearest >= 0.5 { 1.0 } else { 0.0 };
    (nearest + up).copysign(x)
}

/// One row on the straight path: its payment, its quantity units, and whether it is on
/// the path (its quantity readable in `f64` in a run, its quotient trusted). Off the
/// path the quantity is read as 0, so the steps stay in range.
#[inline(always)]
fn straight_row(qty: f64, estimate: &Estimate) -> (i64, i64, bool) {
    let straight = qty.abs() < RUN_QTY_LIMIT;
    let units_f64 = units_in_f64(if straight { qty } else { 0.0 } * 1e9);
    let units = nearest_i64(units_f64);
    let (amount, trusted) = estimate.floor_times_flagged(units, units_f64);
    (amount, units, straight & trusted)
}

/// Runs of one settlement: the instruments' estimates ([`Estimate::UNTRUSTED`] for one
/// off the straight path) and, where the CPU and the instrument count allow, the AVX-512
/// kernel.
pub(crate) struct StraightRuns {
    estimates: Vec<Estimate>,
    #[cfg(target_arch = "x86_64")]
    wide: Option<avx512::Kernel>,
}

impl StraightRuns {
    /// Runs with `steps`: eight rows at a time where they ask for it and the CPU and
    /// the instrument count allow, else one.
    pub(crate) fn new(estimates: Vec<Estimate>, steps: Steps) -> Self {
        #[cfg(not(target_arch = "x86_64"))]
        let _ = steps;
        StraightRuns {
            #[cfg(target_arch = "x86_64")]
            wide: steps.lanes(|| avx512::Kernel::new(&estimates)),
            estimates,
        }
    }

    /// The payments of a run of rows (`qty`, `instrument`: at most [`RUN`], every
    /// instrument id below the number of estimates) into `payments`, and their sums per
    /// instrument added to `sums` (one per estimate), without a branch per row: `false`
    /// when a row is off the path, and then the payments and sums are to be discarded
    /// (they may hold meaningless, wrapped amounts).
    ///
    /// A row of quantity 0 reads as 0 units, whose payment is 0: it needs no branch
    /// either (only its count is kept out).
    pub(crate) fn settle(
        &self,
        qty: &[f64],
        instrument: &[u32],
        payments: &mut [i64],
        sums: &mut [RunSums],
    ) -> bool {
        debug_assert!(qty.len() <= RUN);
        debug_assert_eq!(sums.len(), self.estimates.len());
        #[cfg(target_arch = "x86_64")]
        if let Some(kernel) = &self.wide {
            return kernel.settle(qty, instrument, payments, sums);
        }
        one_row_at_a_time(&self.estimates, qty, instrument, payments, sums)
    }
}

/// The run row by row, each row's sums added to its instrument's.
fn one_row_at_a_time(
    estimates: &[Estimate],
    qty: &[f64],
    instrument: &[u32],
    payments: &mut [i64],
    sums: &mut [RunSums],
) -> bool {
    let mut on_path = true;
    for (slot, (&qty, &id)) in payments.iter_mut().zip(qty.iter().zip(instrument)) {
        let id = id as usize;
        let (amount, units, straight) = straight_row(qty, &estimates[id]);
        on_path &= straight;
        *slot = amount;
        // Wrapping: a run off the path may sum meaningless amounts, but is discarded; on
        // the path every sum is within i64 (see `RUN`), where wrapping is exact.
        let sum = &mut sums[id];
        sum.rows = sum.rows.wrapping_add(i64::from(qty != 0.0));
        sum.received = sum.received.wrapping_add(amount.max(0));
        sum.paid = sum.paid.wrapping_add(amount.min(0));
        sum.units = sum.units.wrapping_add(units);
    }
    on_path
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::{
        __m256i, __m512d, __m512i, __mmask8, _CMP_GE_OQ, _CMP_LT_OQ, _CMP_NEQ_UQ,
    };

    use pulp::x86::V4;
    use pulp::{cast, Simd, WithSimd};

    use super::{one_row_at_a_time, RunSums, RUN, RUN_QTY_LIMIT, TABLE};
    use crate::money::{Estimate, ESTIMATE_MAX_QUOTIENT, ROUNDING_SHIFT};

    /// Rows per step: one 512-bit register of `f64` or `i64`.
    const LANES: usize = 8;

    /// The AVX-512 kernel for one settlement's estimates (at most [`TABLE`]).
    pub(super) struct Kernel {
        simd: V4,
        /// The estimates padded with [`Estimate::UNTRUSTED`] to [`TABLE`] entries.
        table: [Estimate; TABLE],
    }

    impl Kernel {
        /// `None` when the CPU lacks AVX-512 F and DQ or there are more than [`TABLE`]
        /// instruments.
        pub(super) fn new(estimates: &[Estimate]) -> Option<Self> {
            if estimates.len() > TABLE {
                return None;
            }
            let simd = V4::try_new()?;
            let mut table = [Estimate::UNTRUSTED; TABLE];
            table[..estimates.len()].copy_from_slice(estimates);
            Some(Kernel { simd, table })
        }

        /// [`super::StraightRuns::settle`] on this kernel.
        pub(super) fn settle(
            &self,
            qty: &[f64],
            instrument: &[u32],
            payments: &mut [i64],
            sums: &mut [RunSums],
        ) -> bool {
            Simd::vectorize(
                self.simd,
                Run {
                    kernel: self,
                    qty,
                    instrument,
                    payments,
                    sums,
                },
            )
        }
    }

    /// One run, executed with the AVX-512 features enabled.
    struct Run<'a> {
        kernel: &'a Kernel,
        qty: &'a [f64],
        instrument: &'a [u32],
        payments: &'a mut [i64],
        sums: &'a mut [RunSums],
    }

    impl WithSimd for Run<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> bool {
            let Run {
                kernel,
                qty,
                instrument,
                payments,
                sums,
            } = self;
            let n = qty.len();
            let whole = n - n % LANES;
            let mut units = [0i64; RUN];
            let mut on_path = kernel.payments(
                &qty[..whole],
                &instrument[..whole],
                &mut payments[..whole],
                &mut units[..whole],
            );
            // The last rows (fewer than a register) one by one, summed with the others.
            let mut tail_sums = [RunSums::default(); TABLE];
            on_path &= one_row_at_a_time(
                &kernel.table,
                &qty[whole..],
                &instrument[whole..],
                &mut payments[whole..],
                &mut tail_sums,
            );
            // One sum per instrument (at most TABLE).
            for (id, sum) in sums.iter_mut().enumerate() {
                let run = kernel.sums_of(
                    id as u32,
                    &qty[..whole],
                    &instrument[..whole],
                    &payments[..whole],
                    &units[..whole],
                );
                sum.add(&run);
                sum.add(&tail_sums[id]);
            }
            on_path
        }
    }

    impl Kernel {
        /// The payments and quantity units of whole registers of rows; `false` when a row
        /// is off the path. The steps of [`super::straight_row`], eight lanes at a time.
        #[inline(always)]
        fn payments(
            &self,
            qty: &[f64],
            instrument: &[u32],
            payments: &mut [i64],
            units: &mut [i64],
        ) -> bool {
            let f = self.simd.avx512f;
            let dq = self.simd.avx512dq;
            let table = |part: &[Estimate], field: fn(&Estimate) -> [u8; 8]| -> __m512i {
                let mut lanes = [[0u8; 8]; LANES];
                for (lane, estimate) in lanes.iter_mut().zip(part) {
                    *lane = field(estimate);
                }
                cast(lanes)
            };
            let (low, high) = self.table.split_at(LANES);
            let ratio = |e: &Estimate| e.ratio().to_ne_bytes();
            let multiplier = |e: &Estimate| e.multiplier().to_ne_bytes();
            let divisor = |e: &Estimate| e.divisor().to_ne_bytes();
            let ratios: (__m512d, __m512d) = (
                f._mm512_castsi512_pd(table(low, ratio)),
                f._mm512_castsi512_pd(table(high, ratio)),
            );
            let multipliers = (table(low, multiplier), table(high, multiplier));
            let divisors = (table(low, divisor), table(high, divisor));

            let limit = f._mm512_set1_pd(RUN_QTY_LIMIT);
            let scale = f._mm512_set1_pd(1e9);
            let shift = f._mm512_set1_pd(ROUNDING_SHIFT);
            let shift_bits = f._mm512_set1_epi64(ROUNDING_SHIFT.to_bits() as i64);
            let half = f._mm512_set1_pd(0.5);
            let one = f._mm512_set1_pd(1.0);
            let sign = f._mm512_set1_epi64(i64::MIN);
            let max_quotient = f._mm512_set1_pd(ESTIMATE_MAX_QUOTIENT);
            // `nearest_i64`: the integer left in the low bits by adding the shift.
            let nearest_i64 = |x: __m512d| {
                f._mm512_sub_epi64(f._mm512_castpd_si512(f._mm512_add_pd(x, shift)), shift_bits)
            };

            let mut on_path: __mmask8 = 0xff;
            let rows = qty
                .chunks_exact(LANES)
                .zip(instrument.chunks_exact(LANES))
                .zip(
                    payments
                        .chunks_exact_mut(LANES)
                        .zip(units.chunks_exact_mut(LANES)),
                );
            for ((qty, ids), (payments, units)) in rows {
                let qty: [f64; LANES] = qty.try_into().expect("a register of rows");
                let ids: [u32; LANES] = ids.try_into().expect("a register of rows");
                let qty: __m512d = cast(qty);
                let ids = f._mm512_cvtepu32_epi64(cast::<_, __m256i>(ids));
                // units_in_f64(if straight { qty } else { 0.0 } * 1e9)
                let straight = f._mm512_cmp_pd_mask::<_CMP_LT_OQ>(f._mm512_abs_pd(qty), limit);
                let x = f._mm512_maskz_mul_pd(straight, qty, scale);
                let magnitude = f._mm512_abs_pd(x);
                let nearest = f._mm512_sub_pd(f._mm512_add_pd(magnitude, shift), shift);
                let tie_below =
                    f._mm512_cmp_pd_mask::<_CMP_GE_OQ>(f._mm512_sub_pd(magnitude, nearest), half);
                let rounded = f._mm512_add_pd(nearest, f._mm512_maskz_mov_pd(tie_below, one));
                // copysign: `rounded` is never negative, so its sign bit is clear.
                let units_f64 = f._mm512_castsi512_pd(f._mm512_or_si512(
                    f._mm512_castpd_si512(rounded),
                    f._mm512_and_si512(f._mm512_castpd_si512(x), sign),
                ));
                let row_units = nearest_i64(units_f64);
                // estimate.floor_times_flagged(units, units_f64)
                let ratio = f._mm512_permutex2var_pd(ratios.0, ids, ratios.1);
                let multiplier = f._mm512_permutex2var_epi64(multipliers.0, ids, multipliers.1);
                let divisor = f._mm512_permutex2var_epi64(divisors.0, ids, divisors.1);
                let estimate = f._mm512_mul_pd(units_f64, ratio);
                let trusted =
                    f._mm512_cmp_pd_mask::<_CMP_LT_OQ>(f._mm512_abs_pd(estimate), max_quotient);
                let nearest = nearest_i64(estimate);
                let remainder = f._mm512_sub_epi64(
                    dq._mm512_mullo_epi64(row_units, multiplier),
                    dq._mm512_mullo_epi64(nearest, divisor),
                );
                let amount = f._mm512_add_epi64(nearest, f._mm512_srai_epi64::<63>(remainder));
                on_path &= straight & trusted;
                let amount: [i64; LANES] = cast(amount);
                let row_units: [i64; LANES] = cast(row_units);
                payments.copy_from_slice(&amount);
                units.copy_from_slice(&row_units);
            }
            on_path == 0xff
        }

        /// Instrument `id`'s sums over whole registers of rows: masked additions, with
        /// the wrapping of [`one_row_at_a_time`].
        #[inline(always)]
        fn sums_of(
            &self,
            id: u32,
            qty: &[f64],
            instrument: &[u32],
            payments: &[i64],
            units: &[i64],
        ) -> RunSums {
            let f = self.simd.avx512f;
            let zero = f._mm512_setzero_si512();
            let zero_f64 = f._mm512_setzero_pd();
            let id = f._mm512_set1_epi64(i64::from(id));
            let (mut received, mut paid, mut sum_units) = (zero, zero, zero);
            let mut rows = 0i64;
            let columns = qty
                .chunks_exact(LANES)
                .zip(instrument.chunks_exact(LANES))
                .zip(payments.chunks_exact(LANES).zip(units.chunks_exact(LANES)));
            for ((qty, ids), (amounts, units)) in columns {
                let qty: [f64; LANES] = qty.try_into().expect("a register of rows");
                let ids: [u32; LANES] = ids.try_into().expect("a register of rows");
                let amounts: [i64; LANES] = amounts.try_into().expect("a register of rows");
                let units: [i64; LANES] = units.try_into().expect("a register of rows");
                let ids = f._mm512_cvtepu32_epi64(cast::<_, __m256i>(ids));
                let mine = f._mm512_cmpeq_epi64_mask(ids, id);
                let held = f._mm512_mask_cmp_pd_mask::<_CMP_NEQ_UQ>(
                    mine,
                    cast::<_, __m512d>(qty),
                    zero_f64,
                );
                rows += i64::from(held.count_ones());
                let amounts: __m512i = cast(amounts);
                received = f._mm512_mask_add_epi64(
                    received,
                    mine,
                    received,
                    f._mm512_max_epi64(amounts, zero),
                );
                paid = f._mm512_mask_add_epi64(paid, mine, paid, f._mm512_min_epi64(amounts, zero));
                sum_units = f._mm512_mask_add_epi64(sum_units, mine, sum_units, cast(units));
            }
            RunSums {
                rows,
                received: f._mm512_reduce_add_epi64(received),
                paid: f._mm512_reduce_add_epi64(paid),
                units: f._mm512_reduce_add_epi64(sum_units),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Coefficient;
    use crate::test_rng::Rng;

    /// Instrument `i`'s estimate: a linear contract's payment per 1e-9 contract in µUSDT
    /// (contract size × mark × rate, at varied scales and signs); with `off_path`,
    /// every fifth is off the straight path.
    fn estimates(n: usize, off_path: bool, rng: &mut Rng) -> Vec<Estimate> {
        (0..n)
            .map(|i| {
                if off_path && i % 5 == 4 {
                    return Estimate::UNTRUSTED;
                }
                let size = [0.001, 0.01, 0.1, 1.0][rng.below(4) as usize];
                let mark = (rng.below(10_000_000) + 1) as f64 / 100.0;
                let rate = (rng.below(20_001) as f64 - 10_000.0) * 1e-7;
                Coefficient::new(true, &[size, mark, rate], None, 6 - 9)
                    .and_then(|k| k.estimate())
                    .unwrap_or(Estimate::UNTRUSTED)
            })
            .collect()
    }

    /// A quantity: 0, a tie at 1e-9 (x.5 units), a whole or fractional contract count,
    /// a tiny one, or (rarely) one too large for a run.
    fn quantity(rng: &mut Rng) -> f64 {
        let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
        sign * match rng.below(12) {
            0 => 0.0,
            1 => (rng.below(1_000_000) as f64 + 0.5) * 1e-9,
            2 => rng.below(20_000) as f64,
            3 => rng.below(1_000) as f64 * 1e-12,
            4 if rng.below(400) == 0 => 2.5e6,
            5 if rng.below(100) == 0 => 1_999_999.999_999_999,
            _ => rng.below(100_000_000) as f64 / 1e4,
        }
    }

    fn run(runs: &StraightRuns, qty: &[f64], instrument: &[u32]) -> (bool, Vec<i64>, Vec<RunSums>) {
        let mut payments = vec![0; qty.len()];
        let mut sums = vec![RunSums::default(); runs.estimates.len()];
        let on_path = runs.settle(qty, instrument, &mut payments, &mut sums);
        (on_path, payments, sums)
    }

    #[test]
    fn every_kernel_gives_the_one_row_loops_bits() {
        // Runs of every length class (empty, under a register, whole registers, a part
        // register over), 1 to 17 instruments (17: past the AVX-512 table), quantities
        // with ties, zeros, tiny and too-large ones: the run's flag, its payments and its
        // sums per instrument are the one-row loop's, bit for bit, on or off the path.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut on_path_runs = 0;
        for case in 0..600 {
            let n_instruments = 1 + case % 17;
            let estimates = estimates(n_instruments, case % 3 == 0, &mut rng);
            let len = match case % 4 {
                0 => rng.below(8) as usize,
                1 => 8 * (1 + rng.below(64) as usize),
                _ => rng.below(RUN as u64 + 1) as usize,
            };
            let qty: Vec<f64> = (0..len).map(|_| quantity(&mut rng)).collect();
            let instrument: Vec<u32> = (0..len)
                .map(|_| rng.below(n_instruments as u64) as u32)
                .collect();
            let fast = run(
                &StraightRuns::new(estimates.clone(), Steps::Best),
                &qty,
                &instrument,
            );
            let one_row = run(
                &StraightRuns::new(estimates, Steps::Scalar),
                &qty,
                &instrument,
            );
            assert_eq!(
                fast, one_row,
                "case {case}: {len} rows, {n_instruments} instruments"
            );
            on_path_runs += usize::from(fast.0);
        }
        // Both outcomes are exercised.
        assert!(
            (100..500).contains(&on_path_runs),
            "{on_path_runs} runs on the path"
        );
    }

    #[test]
    fn runs_on_the_path_pay_each_row_its_exact_floor() {
        // Three instruments, a run of 203 rows (25 registers and 3 rows): each payment is
        // floor(units · multiplier / divisor) computed in i128, and the sums are the
        // payments' and the units' own.
        let mut rng = Rng(7);
        let coefficients: Vec<Coefficient> = [
            (0.001, 96_450.37, 0.000_123_4),
            (0.01, 3_187.25, -0.000_075),
            (1.0, 0.5123, 0.000_01),
        ]
        .iter()
        .map(|&(size, mark, rate)| Coefficient::new(true, &[size, mark, rate], None, -3).unwrap())
        .collect();
        let estimates: Vec<Estimate> = coefficients.iter().map(|k| k.estimate().unwrap()).collect();
        let qty: Vec<f64> = (0..203)
            .map(|r| match r % 9 {
                0 => 0.0,
                1 => -0.000_000_002_5,
                _ => (rng.below(2_000_000_000) as f64 - 1e9) / 1e3,
            })
            .collect();
        let instrument: Vec<u32> = (0..203).map(|r| (r * 7 % 3) as u32).collect();
        let (on_path, payments, sums) = run(
            &StraightRuns::new(estimates, Steps::Best),
            &qty,
            &instrument,
        );
        assert!(on_path);
        let mut expected = [RunSums::default(); 3];
        for ((&q, &id), &paid) in qty.iter().zip(&instrument).zip(&payments) {
            // The quantity's decimal at 9 places, half away from zero.
            let units = (q * 1e9).round() as i64;
            let floor = coefficients[id as usize]
                .floor_times(i128::from(units))
                .unwrap();
            assert_eq!(paid, floor, "{q} of instrument {id}");
            let sum = &mut expected[id as usize];
            sum.rows += i64::from(q != 0.0);
            sum.received += floor.max(0);
            sum.paid += floor.min(0);
            sum.units += units;
        }
        assert_eq!(sums, expected);
        assert!(expected.iter().all(|s| s.received > 0 && s.paid < 0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_kernel_runs_where_the_cpu_has_it() {
        let has =
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq");
        let estimates = vec![Estimate::UNTRUSTED; 16];
        assert_eq!(
            StraightRuns::new(estimates.clone(), Steps::Best)
                .wide
                .is_some(),
            has
        );
        assert!(StraightRuns::new(estimates, Steps::Scalar).wide.is_none());
        // More instruments than its table: the one-row loop.
        let more = vec![Estimate::UNTRUSTED; 17];
        assert!(StraightRuns::new(more, Steps::Best).wide.is_none());
    }
}
