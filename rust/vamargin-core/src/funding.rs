//! Funding: the rate from premium samples, and settlement in integer minor units with the
//! rounding dust and the house's share posted, so every instrument's postings sum to 0.
//!
//! Money conventions (see [`crate::money`]): each payment is credited to its account and
//! floored (a payer pays the ceiling, a receiver gets the floor). Quantities are read at
//! [`QTY_DECIMALS`] places, the same reading for every payment and for the open-interest
//! total, so the totals below are exact:
//!
//! - `house` is what the platform pays because long and short open interest differ: the
//!   funding of a position opposite to the net open interest, rounded against the house;
//! - `dust` is what rounding left over: `−(Σ payments + house)`, never negative.

use crate::book::{Grouping, Positions};
use crate::columns::{Columns, Zeroed};
use crate::error::{Error, Result};
use crate::funding_run::{RunSums, StraightRuns, RUN};
use crate::money::{
    sum_by_account, sum_sorted_runs, AccountSumBlocks, CellSums, Coefficient, Estimate,
    ExactAmount, ExactSum, SortedRuns,
};
use crate::parallel::{column_bundle, map_chunks, SplitRows};
use crate::params::EngineParams;
use crate::partitioned_sums::sum_partitioned;
use crate::perp::ContractKind;
use crate::run_sum_lanes::RunSumLanes;
use crate::steps::Steps;

/// Decimal places a quantity is read with when it moves money (1e-9 contract).
pub const QTY_DECIMALS: i32 = 9;
/// Decimal places of a funding index: quote per base (linear), coin per quote (inverse).
pub const fn index_decimals(kind: ContractKind) -> i32 {
    match kind {
        ContractKind::Linear => 12,
        ContractKind::Inverse => 18,
    }
}

const CHUNK: usize = 16 * 1024;
/// Quantities below this many contracts read as 1e-9 units by one multiplication and a
/// rounding (see [`qty_units`]).
const QTY_STRAIGHT_LIMIT: f64 = 9.0e6;

/// Premium of one sample: how far the impact bid is above, or the impact ask below, the
/// index, as a fraction of the index.
pub fn premium(impact_bid: f64, impact_ask: f64, index_price: f64) -> f64 {
    ((impact_bid - index_price).max(0.0) - (index_price - impact_ask).max(0.0)) / index_price
}

/// Funding rate for one interval: `p̄ + clamp(r − p̄, −clamp, +clamp)`, then within
/// `±cap` (`cap = ∞` for none); `p̄` is the mean of the interval's premium samples.
pub fn funding_rate(premiums: &[f64], interest_rate: f64, clamp: f64, cap: f64) -> f64 {
    let mean = if premiums.is_empty() {
        0.0
    } else {
        premiums.iter().sum::<f64>() / premiums.len() as f64
    };
    let rate = mean + (interest_rate - mean).clamp(-clamp, clamp);
    rate.clamp(-cap, cap)
}

/// What each instrument's funding is settled against.
#[derive(Debug, Clone, Copy)]
pub enum FundingBasis<'a> {
    /// One interval at `rates[i]` and mark `marks[i]` per instrument.
    Mark { rates: &'a [f64], marks: &'a [f64] },
    /// Cumulative index: each position pays the index move since its last settlement.
    Index {
        index_now: &'a [f64],
        position_index: &'a [f64],
    },
}

/// The outcome of one settlement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FundingSettlement {
    /// Per position row: minor units of its settle asset credited (negative = paid).
    pub payments: Vec<i64>,
    /// Per instrument: rounding dust posted to the platform's funding account (≥ 0).
    pub dust: Vec<i64>,
    /// Per instrument: the platform's posting for the open-interest imbalance.
    pub house: Vec<i64>,
    /// Per instrument: Σ of positive and of negative payments.
    pub received: Vec<i64>,
    pub paid: Vec<i64>,
    /// Per instrument: the exact net open interest the house is computed from — Σ
    /// quantities in 1e-9 contracts (one interval), or Σ quantity units × index move in
    /// index units (index basis). Sums over parts of a book add up to the whole book's,
    /// so a partitioned settlement gets its house from [`house_posting`].
    pub open_interest: Vec<ExactSum>,
}

/// The house's posting for an instrument whose accounts hold `open_interest` (as in
/// [`FundingSettlement::open_interest`]): the exact funding of the opposite position,
/// floored against the house.
pub fn house_posting(
    params: &EngineParams,
    basis: &FundingBasis<'_>,
    settle_decimals: &[u32],
    instrument: usize,
    open_interest: ExactSum,
) -> Result<i64> {
    let contract = params
        .perpetuals
        .get(instrument)
        .ok_or(Error::IdOutOfRange {
            column: "instrument",
            row: 0,
            id: instrument as u64,
            len: params.perpetuals.len(),
        })?;
    let settle = contract.settle_asset as usize;
    let settle_decimals = *settle_decimals.get(settle).ok_or(Error::LengthMismatch {
        column: "settle_decimals",
        expected: params.assets.len(),
        actual: settle_decimals.len(),
    })?;
    let details = Instrument {
        kind: contract.kind,
        contract_size: contract.contract_size,
        settle_decimals,
    };
    let net = ExactAmount::from_sum(open_interest).times_integer(-1);
    let index_move = match basis {
        FundingBasis::Mark { .. } => None,
        FundingBasis::Index { .. } => Some(1),
    };
    exact_payment(&details, basis, instrument, net, index_move).floor()
}

/// A quantity as an integer count of 1e-9 contracts: its decimal as written, rounded
/// half-even to 9 places if it has more.
#[inline]
fn qty_units(qty: f64) -> Option<i64> {
    // Below 2^53 / 1e9 contracts, q·1e9 is within half a unit of the decimal's value, so
    // rounding it is exact; beyond, read the decimal itself.
    if qty.abs() < QTY_STRAIGHT_LIMIT {
        return Some(round_half_away(qty * 1e9));
    }
    index_units(qty, QTY_DECIMALS).and_then(|units| i64::try_from(units).ok())
}

/// `x.round()` (half away from zero) for `|x| < 2^53`, without a call to libm: the
/// conversion truncates, and the fraction it drops is exact (from 2^52 on every `f64` is
/// an integer and the fraction is 0).
#[inline]
fn round_half_away(x: f64) -> i64 {
    let truncated = x as i64;
    let fraction = x - truncated as f64;
    truncated + i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5)
}

/// An index value as an integer at the instrument's index scale: its shortest decimal,
/// exactly when it has no more places than the scale, else rounded half-even to it.
fn index_units(value: f64, decimals: i32) -> Option<i128> {
    let (negative, mantissa, exponent) = crate::money::to_decimal(value)?;
    let shift = exponent + decimals;
    let magnitude = if shift >= 0 {
        i128::from(mantissa).checked_mul(10i128.checked_pow(shift as u32)?)?
    } else {
        let divisor = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
        let (q, r) = (
            i128::from(mantissa) / divisor,
            i128::from(mantissa) % divisor,
        );
        let twice = r.saturating_mul(2);
        q + i128::from(twice > divisor || (twice == divisor && q % 2 == 1))
    };
    Some(if negative { -magnitude } else { magnitude })
}

column_bundle!(
    /// Settlement output.
    Payments { payment: i64 }
);

struct Instrument {
    kind: ContractKind,
    contract_size: f64,
    settle_decimals: u32,
}

/// The exact amount (in minor units, credited to the holder) of `qty_units` 1e-9
/// contracts, or of the net open interest when `qty_units` is a sum.
fn exact_payment(
    instrument: &Instrument,
    basis: &FundingBasis<'_>,
    id: usize,
    qty: ExactAmount,
    index_move: Option<i128>,
) -> ExactAmount {
    let base = qty
        .times_integer(-1)
        .times(instrument.contract_size)
        .times_pow10_signed(instrument.settle_decimals as i32 - QTY_DECIMALS);
    match (basis, instrument.kind) {
        (FundingBasis::Mark { rates, marks }, ContractKind::Linear) => {
            base.times(marks[id]).times(rates[id])
        }
        (FundingBasis::Mark { rates, marks }, ContractKind::Inverse) => {
            base.times(rates[id]).divided_by(marks[id])
        }
        (FundingBasis::Index { .. }, kind) => base
            .times_i128(index_move.unwrap_or(0))
            .times_pow10_signed(-index_decimals(kind)),
    }
}

/// Settles one funding interval (or the index move) for every position.
///
/// `settle_decimals[asset]` gives each asset's minor unit (`10^-d`). Errors: an amount
/// that overflows `i64`, or an index or quantity that cannot be read as an integer.
pub fn settle_funding(
    params: &EngineParams,
    positions: &Positions<'_>,
    basis: FundingBasis<'_>,
    settle_decimals: &[u32],
) -> Result<FundingSettlement> {
    settle_funding_into(params, positions, basis, settle_decimals, &Zeroed)
}

/// [`settle_funding`], the payments in a column from `columns` (every element is
/// written). Rows go eight at a time where the CPU has AVX-512, unless
/// `VAMARGIN_SCALAR_ROWS` asks for one at a time (the same bits either way).
pub fn settle_funding_into(
    params: &EngineParams,
    positions: &Positions<'_>,
    basis: FundingBasis<'_>,
    settle_decimals: &[u32],
    columns: &impl Columns,
) -> Result<FundingSettlement> {
    let steps = Steps::from_environment();
    settle_funding_with(params, positions, basis, settle_decimals, columns, steps)
}

/// [`settle_funding_into`] with its rows' `steps`.
fn settle_funding_with(
    params: &EngineParams,
    positions: &Positions<'_>,
    basis: FundingBasis<'_>,
    settle_decimals: &[u32],
    columns: &impl Columns,
    steps: Steps,
) -> Result<FundingSettlement> {
    let settler = Settler::new(params, positions, basis, settle_decimals, steps)?;
    let mut payments = columns.i64s(positions.qty.len());
    // Per chunk, in row order: its totals, or the error of its first bad row (so the
    // first error among them is the book's first).
    let chunk_totals = map_chunks(
        Payments {
            payment: &mut payments,
        },
        CHUNK,
        &|first, chunk: Payments<'_>| {
            let mut lanes = settler.lanes();
            settler.settle_rows(first, chunk.payment, &mut lanes)?;
            Ok(settler.totals(lanes))
        },
    );
    let chunk_totals = chunk_totals.into_iter().collect::<Result<Vec<_>>>()?;
    settler.finish(payments, chunk_totals)
}

/// Rows from which a book not laid out by account has its payments summed by
/// partitioning them (see `partitioned_sums`) rather than through the grouping's order.
/// Measured on this project's 2-vCPU machine, built funding on shuffled books, the
/// partitioned sums against the grouping's: 1.10× the time at 1M rows, 0.98× at 2M,
/// 0.77× at 3M, 0.69× at 10M. Below that, the rows the grouping's order reads at random
/// (12 bytes a row) stay in cache.
const PARTITION_ROWS: usize = 1 << 21;

/// [`settle_funding`], and each account's payments summed per settle asset: the
/// settlement's postings by account, in account then asset order (as
/// [`crate::money::sum_by_account`] gives them).
///
/// When the positions are laid out by account (`groups` is sorted), each block of
/// accounts makes its rows' payments, then sums them per account while they are in
/// cache; otherwise the payments are made, then summed: partitioned by account first
/// when `positions.account` gives each row's account and there are `PARTITION_ROWS`
/// or more (see `partitioned_sums`), else through the grouping. The payments column
/// comes from `columns`. Rows go eight at a time where the CPU has AVX-512 (payments and
/// sums), unless `VAMARGIN_SCALAR_ROWS` asks for one at a time (the same results either
/// way).
pub fn settle_funding_by_account(
    params: &EngineParams,
    positions: &Positions<'_>,
    groups: &Grouping,
    basis: FundingBasis<'_>,
    settle_decimals: &[u32],
    columns: &impl Columns,
) -> Result<(FundingSettlement, AccountSumBlocks)> {
    let steps = Steps::from_environment();
    settle_funding_by_account_with(
        params,
        positions,
        groups,
        basis,
        settle_decimals,
        columns,
        steps,
        PARTITION_ROWS,
    )
}

/// [`settle_funding_by_account`] with its rows' `steps`, partitioning a book not laid
/// out by account from `partition_rows` rows (see [`PARTITION_ROWS`]).
#[allow(clippy::too_many_arguments)]
fn settle_funding_by_account_with(
    params: &EngineParams,
    positions: &Positions<'_>,
    groups: &Grouping,
    basis: FundingBasis<'_>,
    settle_decimals: &[u32],
    columns: &impl Columns,
    steps: Steps,
    partition_rows: usize,
) -> Result<(FundingSettlement, AccountSumBlocks)> {
    if groups.n_rows() != positions.qty.len() {
        return Err(Error::LengthMismatch {
            column: "positions (grouping)",
            expected: positions.qty.len(),
            actual: groups.n_rows(),
        });
    }
    let n_assets = params.assets.len();
    // Each row's payment counts under its instrument's settle asset.
    let settle_of: Vec<u32> = params.perpetuals.iter().map(|p| p.settle_asset).collect();
    let Some(starts) = groups.row_starts() else {
        let settlement =
            settle_funding_with(params, positions, basis, settle_decimals, columns, steps)?;
        // Many rows are partitioned by account, then summed in cache; fewer, or without
        // the rows' accounts, or where the sums could overflow, they are summed in
        // account order through the grouping (where an account's overflow is found and
        // reported).
        let partitioned = if positions.account.is_empty() || positions.qty.len() < partition_rows {
            None
        } else {
            sum_partitioned(
                positions.account,
                groups.n_accounts(),
                positions.instrument,
                &settle_of,
                &settlement.payments,
                n_assets,
            )?
        };
        let sums = match partitioned {
            Some(sums) => sums,
            None => sum_by_account(
                groups,
                positions.instrument,
                &settle_of,
                &settlement.payments,
                n_assets,
            )?,
        };
        return Ok((settlement, sums));
    };
    let settler = Settler::new(params, positions, basis, settle_decimals, steps)?;
    let mut payments = columns.i64s(positions.qty.len());
    // The runs eight rows at a time, where the steps and the CPU allow.
    let run_lanes = steps.lanes(|| RunSumLanes::new(&settle_of));
    // Per block, in account order: its totals and its accounts' sums (`None` when an
    // account's total overflowed), or the error of its first bad row.
    let work = |first: usize, block: AccountPayments<'_>| {
        let AccountPayments { payments, starts } = block;
        let first_row = starts[0];
        let mut lanes = settler.lanes();
        // The block's payments, then its accounts' sums while the payments are in cache.
        settler.settle_rows(first_row, payments, &mut lanes)?;
        let block_rows = first_row..starts[starts.len() - 1];
        let instrument = &positions.instrument[block_rows];
        // Rows in account then instrument order (as a grouping by position key leaves
        // them) are usually in account then settle asset order too: each (account, asset)
        // is then one run of rows.
        let key_of = |row: usize| settle_of[instrument[row] as usize];
        let in_lanes = run_lanes
            .as_ref()
            .and_then(|lanes| lanes.sums(first, starts, n_assets, instrument, payments));
        let runs = match in_lanes {
            Some(sums) => SortedRuns::Sums(sums),
            None => sum_sorted_runs(first, starts, n_assets, key_of, payments),
        };
        let summed = match runs {
            SortedRuns::Sums(sums) => Some(sums),
            SortedRuns::Overflow => None,
            SortedRuns::NotSorted => {
                let mut sums = CellSums::new(n_assets, starts);
                let mut summed = || {
                    for (i, rows) in starts.windows(2).enumerate() {
                        let rows = rows[0] - first_row..rows[1] - first_row;
                        for row in rows {
                            sums.add(key_of(row) as usize, payments[row])?;
                        }
                        sums.close(first + i);
                    }
                    Some(())
                };
                summed().map(|()| sums.into_sums())
            }
        };
        Ok((settler.totals(lanes), summed))
    };
    let blocks = map_chunks(
        AccountPayments {
            payments: &mut payments,
            starts,
        },
        ACCOUNT_CHUNK,
        &work,
    );
    // A row's error first, as settling then summing would report it.
    let blocks = blocks.into_iter().collect::<Result<Vec<_>>>()?;
    let (totals, parts): (Vec<_>, Vec<_>) = blocks.into_iter().unzip();
    let parts = parts
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or(Error::Overflow {
            what: "an account's total",
        })?;
    let settlement = settler.finish(payments, totals)?;
    Ok((settlement, AccountSumBlocks { blocks: parts }))
}

/// Accounts per parallel block of [`settle_funding_by_account`].
const ACCOUNT_CHUNK: usize = 4096;

/// The payments of a block of accounts whose positions are laid out by account: split at
/// an account, the payments split where its rows start.
struct AccountPayments<'a> {
    payments: &'a mut [i64],
    /// Where each of the block's accounts' rows start (book rows), plus where the last
    /// one's end.
    starts: &'a [usize],
}

impl SplitRows for AccountPayments<'_> {
    fn rows(&self) -> usize {
        self.starts.len() - 1
    }

    fn split_at_row(self, mid: usize) -> (Self, Self) {
        let (left, right) = self
            .payments
            .split_at_mut(self.starts[mid] - self.starts[0]);
        (
            AccountPayments {
                payments: left,
                starts: &self.starts[..=mid],
            },
            AccountPayments {
                payments: right,
                starts: &self.starts[mid..],
            },
        )
    }
}

/// Per-instrument exact totals of a chunk of rows: Σ payments, and the open interest (or
/// Σ q·index move), summed as the payments are made. Every total is an exact integer sum,
/// so the order chunks are merged in does not matter.
#[derive(Clone, Default)]
struct Totals {
    rows: usize,
    received: i128,
    paid: i128,
    /// Σ quantity units of the chunk's one-interval rows (each below 2^63, at most a
    /// chunk of them), folded into `open_interest` once per chunk.
    units: i128,
    open_interest: ExactSum,
}

impl Totals {
    #[inline(always)]
    fn count(&mut self, amount: i64) {
        self.rows += 1;
        self.received += i128::from(amount.max(0));
        self.paid += i128::from(amount.min(0));
    }

    fn add_run(&mut self, run: &RunSums) {
        self.rows += run.rows as usize;
        self.received += i128::from(run.received);
        self.paid += i128::from(run.paid);
        self.units += i128::from(run.units);
    }
}

/// One instrument as a chunk of rows sees it: its straight path, its id and the chunk's
/// totals, side by side so a row finds them in one place.
struct Lane {
    straight: Option<Estimate>,
    id: usize,
    totals: Totals,
}

/// What every row of one settlement shares: the instruments, their coefficients, the
/// basis.
struct Settler<'a> {
    params: &'a EngineParams,
    positions: &'a Positions<'a>,
    basis: FundingBasis<'a>,
    settle_decimals: &'a [u32],
    instruments: Vec<Instrument>,
    /// Each instrument's payment per 1e-9 contract (per unit of index move for the index
    /// basis), as an exact coefficient when its digits fit the i128 fast path.
    coefficients: Vec<Option<Coefficient>>,
    /// Each instrument's estimate on the straight path, if it has one.
    straight: Vec<Option<Estimate>>,
    /// Runs of rows on the straight path.
    straight_runs: StraightRuns,
}

impl<'a> Settler<'a> {
    fn new(
        params: &'a EngineParams,
        positions: &'a Positions<'a>,
        basis: FundingBasis<'a>,
        settle_decimals: &'a [u32],
        steps: Steps,
    ) -> Result<Self> {
        let n_instruments = params.perpetuals.len();
        if settle_decimals.len() != params.assets.len() {
            return Err(Error::LengthMismatch {
                column: "settle_decimals",
                expected: params.assets.len(),
                actual: settle_decimals.len(),
            });
        }
        if positions.instrument.len() != positions.qty.len() {
            return Err(Error::LengthMismatch {
                column: "positions.instrument",
                expected: positions.qty.len(),
                actual: positions.instrument.len(),
            });
        }
        if let Some(row) = crate::scan::first_id_out_of_range(positions.instrument, n_instruments) {
            return Err(Error::IdOutOfRange {
                column: "positions.instrument",
                row,
                id: u64::from(positions.instrument[row]),
                len: n_instruments,
            });
        }
        let per_instrument: &[(&'static str, &[f64])] = match &basis {
            FundingBasis::Mark { rates, marks } => &[("funding rates", rates), ("marks", marks)],
            FundingBasis::Index { index_now, .. } => &[("funding index", index_now)],
        };
        for &(column, values) in per_instrument {
            if values.len() != n_instruments {
                return Err(Error::LengthMismatch {
                    column,
                    expected: n_instruments,
                    actual: values.len(),
                });
            }
        }
        if let FundingBasis::Index { position_index, .. } = basis {
            if position_index.len() != positions.qty.len() {
                return Err(Error::LengthMismatch {
                    column: "positions.funding_index",
                    expected: positions.qty.len(),
                    actual: position_index.len(),
                });
            }
        }
        let instruments: Vec<Instrument> = params
            .perpetuals
            .iter()
            .map(|p| Instrument {
                kind: p.kind,
                contract_size: p.contract_size,
                settle_decimals: settle_decimals[p.settle_asset as usize],
            })
            .collect();
        let coefficients: Vec<Option<Coefficient>> = instruments
            .iter()
            .enumerate()
            .map(|(id, instrument)| {
                let shift = instrument.settle_decimals as i32 - QTY_DECIMALS;
                match (basis, instrument.kind) {
                    (FundingBasis::Mark { rates, marks }, ContractKind::Linear) => {
                        Coefficient::new(
                            true,
                            &[instrument.contract_size, marks[id], rates[id]],
                            None,
                            shift,
                        )
                    }
                    (FundingBasis::Mark { rates, marks }, ContractKind::Inverse) => {
                        Coefficient::new(
                            true,
                            &[instrument.contract_size, rates[id]],
                            Some(marks[id]),
                            shift,
                        )
                    }
                    (FundingBasis::Index { .. }, kind) => Coefficient::new(
                        true,
                        &[instrument.contract_size],
                        None,
                        shift - index_decimals(kind),
                    ),
                }
            })
            .collect();
        // A one-interval row whose quantity reads as units by one multiplication takes
        // the straight path: units, the coefficient's estimated floor, the totals.
        let one_interval = matches!(basis, FundingBasis::Mark { .. });
        let straight: Vec<Option<Estimate>> = coefficients
            .iter()
            .map(|k| k.and_then(|k| k.estimate()).filter(|_| one_interval))
            .collect();
        let straight_runs = StraightRuns::new(
            straight
                .iter()
                .map(|estimate| estimate.unwrap_or(Estimate::UNTRUSTED))
                .collect(),
            steps,
        );
        Ok(Settler {
            params,
            positions,
            basis,
            settle_decimals,
            instruments,
            coefficients,
            straight,
            straight_runs,
        })
    }

    fn one_interval(&self) -> bool {
        matches!(self.basis, FundingBasis::Mark { .. })
    }

    /// A chunk's lanes, one per instrument.
    fn lanes(&self) -> Vec<Lane> {
        self.straight
            .iter()
            .enumerate()
            .map(|(id, &straight)| Lane {
                straight,
                id,
                totals: Totals::default(),
            })
            .collect()
    }

    /// The payments of rows `first..first + payments.len()`, counted in `lanes`; stops at
    /// the first row that cannot be settled, with its error.
    ///
    /// One interval settles runs of [`RUN`] rows on the straight path without a branch
    /// per row ([`StraightRuns::settle`]); a run with a row off that path is settled
    /// again row by row.
    fn settle_rows(&self, first: usize, payments: &mut [i64], lanes: &mut [Lane]) -> Result<()> {
        if !self.one_interval() {
            return self.settle_rows_one_by_one(first, payments, lanes);
        }
        let mut sums = vec![RunSums::default(); lanes.len()];
        for (i, run) in payments.chunks_mut(RUN).enumerate() {
            let start = first + i * RUN;
            let rows = start..start + run.len();
            sums.fill(RunSums::default());
            let (qty, instrument) = (
                &self.positions.qty[rows.clone()],
                &self.positions.instrument[rows],
            );
            if self.straight_runs.settle(qty, instrument, run, &mut sums) {
                for (lane, sums) in lanes.iter_mut().zip(&sums) {
                    lane.totals.add_run(sums);
                }
            } else {
                self.settle_rows_one_by_one(start, run, lanes)?;
            }
        }
        Ok(())
    }

    /// [`Settler::settle_rows`], one row at a time.
    fn settle_rows_one_by_one(
        &self,
        first: usize,
        payments: &mut [i64],
        lanes: &mut [Lane],
    ) -> Result<()> {
        let rows = first..first + payments.len();
        let columns = self.positions.qty[rows.clone()]
            .iter()
            .zip(&self.positions.instrument[rows]);
        for (i, (slot, (&qty, &id))) in payments.iter_mut().zip(columns).enumerate() {
            *slot = if qty == 0.0 {
                0
            } else {
                self.settle_row(first + i, qty, &mut lanes[id as usize])?
            };
        }
        Ok(())
    }

    /// The payment of `row`, holding `qty` (not 0) of `lane`'s instrument: credited,
    /// floored, and counted in the lane.
    #[inline(always)]
    fn settle_row(&self, row: usize, qty: f64, lane: &mut Lane) -> Result<i64> {
        if let Some(k) = &lane.straight {
            if qty.abs() < QTY_STRAIGHT_LIMIT {
                let units = round_half_away(qty * 1e9);
                if let Some(amount) = k.floor_times(units) {
                    lane.totals.count(amount);
                    lane.totals.units += i128::from(units);
                    return Ok(amount);
                }
            }
        }
        let id = lane.id;
        let units = qty_units(qty).ok_or(Error::Overflow { what: "quantity" })?;
        let index_move = self.index_move(row, id)?;
        let fast = self.coefficients[id].and_then(|k| match self.basis {
            FundingBasis::Mark { .. } => k.floor_times(i128::from(units)),
            FundingBasis::Index { .. } => i128::from(units)
                .checked_mul(index_move)
                .and_then(|n| k.floor_times(n)),
        });
        let amount = match fast {
            Some(amount) => amount,
            None => exact_payment(
                &self.instruments[id],
                &self.basis,
                id,
                ExactAmount::one().times_integer(units),
                Some(index_move),
            )
            .floor()?,
        };
        lane.totals.count(amount);
        if self.one_interval() {
            lane.totals.units += i128::from(units);
        } else {
            lane.totals
                .open_interest
                .add(i128::from(units).saturating_mul(index_move));
        }
        Ok(amount)
    }

    /// The index move of `row` since its last settlement, in index units (0 for one
    /// interval).
    fn index_move(&self, row: usize, id: usize) -> Result<i128> {
        let FundingBasis::Index {
            index_now,
            position_index,
        } = self.basis
        else {
            return Ok(0);
        };
        let decimals = index_decimals(self.instruments[id].kind);
        let unreadable = || Error::Overflow {
            what: "funding index at its scale",
        };
        let now = index_units(index_now[id], decimals).ok_or_else(unreadable)?;
        let then = index_units(position_index[row], decimals).ok_or_else(unreadable)?;
        Ok(now - then)
    }

    /// A chunk's totals, its quantity units folded into the open interest.
    fn totals(&self, lanes: Vec<Lane>) -> Vec<Totals> {
        lanes
            .into_iter()
            .map(|lane| {
                let mut totals = lane.totals;
                totals.open_interest.add(std::mem::take(&mut totals.units));
                totals
            })
            .collect()
    }

    /// The settlement from its payments and every chunk's totals: per instrument, the
    /// house's posting and the dust.
    fn finish(&self, payments: Vec<i64>, chunks: Vec<Vec<Totals>>) -> Result<FundingSettlement> {
        let totals = chunks.into_iter().fold(
            vec![Totals::default(); self.instruments.len()],
            |mut sum, chunk| {
                for (s, c) in sum.iter_mut().zip(chunk) {
                    s.rows += c.rows;
                    s.received += c.received;
                    s.paid += c.paid;
                    s.open_interest = s.open_interest.merge(c.open_interest);
                }
                sum
            },
        );
        let overflow = |what| Error::Overflow { what };
        let mut settlement = FundingSettlement {
            payments,
            ..FundingSettlement::default()
        };
        for (id, total) in totals.into_iter().enumerate() {
            settlement.open_interest.push(total.open_interest);
            if total.rows == 0 {
                // No open position: nothing moves (and the instrument need not be priced).
                for column in [
                    &mut settlement.house,
                    &mut settlement.dust,
                    &mut settlement.received,
                    &mut settlement.paid,
                ] {
                    column.push(0);
                }
                continue;
            }
            // The house holds the opposite of the net open interest: its exact payment is
            // the negative of the accounts' exact total, floored against the house.
            let house = house_posting(
                self.params,
                &self.basis,
                self.settle_decimals,
                id,
                total.open_interest,
            )?;
            let sum = total.received + total.paid;
            let dust = -(sum + i128::from(house));
            // Each payment was floored from its exact value, and so was the house's: the
            // dust is the sum of the fractions given up, never negative.
            if dust < 0 {
                return Err(overflow("funding dust (postings would not balance)"));
            }
            settlement.house.push(house);
            settlement
                .dust
                .push(i64::try_from(dust).map_err(|_| overflow("funding dust"))?);
            settlement
                .received
                .push(i64::try_from(total.received).map_err(|_| overflow("funding received"))?);
            settlement
                .paid
                .push(i64::try_from(total.paid).map_err(|_| overflow("funding paid"))?);
        }
        Ok(settlement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::Stale;
    use crate::funding_run::units_in_f64;
    use crate::money::nearest_i64;
    use crate::params::{AssetParams, CallTarget, Haircuts, PerpetualParams};
    use crate::test_rng::Rng;
    use crate::tiers::{SizeTiers, TierTable};

    fn params() -> EngineParams {
        let cash = AssetParams::new(
            Haircuts::new(0.0, 0.0, 0.0).unwrap(),
            true,
            SizeTiers::default(),
        );
        let tiers = TierTable::fixed(0.005, 0.0).unwrap();
        EngineParams::new(
            vec![cash.clone(), cash],
            vec![
                PerpetualParams::new(ContractKind::Linear, 0.001, 0, tiers.clone()).unwrap(),
                PerpetualParams::new(ContractKind::Inverse, 100.0, 1, tiers).unwrap(),
            ],
            CallTarget::Initial,
        )
        .unwrap()
    }

    fn positions<'a>(instrument: &'a [u32], qty: &'a [f64]) -> Positions<'a> {
        Positions {
            account: &[],
            instrument,
            qty,
            entry_price: &[],
            isolated_margin: None,
            leverage: None,
        }
    }

    /// Ties both ways, values a hair below a tie, and values with a fraction.
    const ROUNDING_EDGES: [f64; 13] = [
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        3.5,
        0.499_999_999_999_999_94,
        -0.499_999_999_999_999_94,
        123_456_789.000_000_1,
        -987_654_321.499_999,
    ];

    #[test]
    fn rounding_without_libm_matches_f64_round() {
        let large = [
            4_503_599_627_370_495.5,
            -4_503_599_627_370_495.5,
            8_999_999_999_999_999.0,
        ];
        for x in ROUNDING_EDGES.into_iter().chain(large) {
            assert_eq!(round_half_away(x), x.round() as i64, "{x}");
        }
        let mut x = -3.0e6_f64;
        while x < 3.0e6 {
            let scaled = x * 1e9;
            assert_eq!(round_half_away(scaled), scaled.round() as i64, "{scaled}");
            x += 1_234.567_890_123;
        }
    }

    #[test]
    fn units_read_in_f64_round_half_away_as_the_rows_do() {
        // The edges, among them values a hair below a tie (where rounding |x| + 0.5 would
        // give the integer above), values a hair off a tie the other way, tiny ones, and
        // the edges of the run's range (|x| < 2^51).
        let more = [
            1.499_999_999_999_999_8,
            2.500_000_000_000_000_4,
            1e-300,
            -1e-300,
            1_125_899_906_842_623.5,
            -1_125_899_906_842_623.5,
            2_251_799_813_685_247.5,
            -2_251_799_813_685_247.0,
            1_999_999.999_999_999_5e9,
        ];
        let steps = (0..200_000).map(|i| (f64::from(i) - 1e5) * 9_999.876_543_21 * 1e3);
        for x in ROUNDING_EDGES.into_iter().chain(more).chain(steps) {
            let units = units_in_f64(x);
            assert_eq!(units, round_half_away(x) as f64, "{x}");
            assert_eq!(nearest_i64(units), round_half_away(x), "{x}");
        }
    }

    #[test]
    fn rate_clamps_interest_minus_premium_then_caps() {
        // Binance-style: r = 0.01%, clamp ±0.05%.
        assert!((funding_rate(&[0.0002], 0.0001, 0.0005, 0.03) - 0.0001).abs() < 1e-18);
        assert!((funding_rate(&[0.0010], 0.0001, 0.0005, 0.03) - 0.0005).abs() < 1e-18);
        assert!((funding_rate(&[-0.002], 0.0001, 0.0005, 0.03) + 0.0015).abs() < 1e-18);
        assert_eq!(funding_rate(&[0.5], 0.0001, 0.0005, 0.03), 0.03);
    }

    #[test]
    fn premium_uses_the_side_that_crossed_the_index() {
        assert!((premium(101.0, 102.0, 100.0) - 0.01).abs() < 1e-15);
        assert!((premium(98.0, 99.0, 100.0) + 0.01).abs() < 1e-15);
        assert_eq!(premium(99.0, 101.0, 100.0), 0.0);
    }

    #[test]
    fn longs_pay_shorts_and_postings_balance() {
        // BTC linear, 0.001 BTC contracts, mark 96 450.5, rate 0.01%: one contract moves
        // 0.00964505 USDT = 9 645.05 µUSDT. Long 3, short 2: longs pay 28 936 (ceiling of
        // 28 935.15), the short receives 19 290 (floor of 19 290.1); the house holds the
        // net 1 long's opposite and receives floor(9 645.05) = 9 645; dust 1.
        let params = params();
        let instrument = [0, 0];
        let qty = [3.0, -2.0];
        let settlement = settle_funding(
            &params,
            &positions(&instrument, &qty),
            FundingBasis::Mark {
                rates: &[0.0001, 0.0],
                marks: &[96_450.5, 1.0],
            },
            &[6, 8],
        )
        .unwrap();
        assert_eq!(settlement.payments, vec![-28_936, 19_290]);
        assert_eq!(settlement.house, vec![9_645, 0]);
        assert_eq!(settlement.dust, vec![1, 0]);
    }

    #[test]
    fn straight_runs_pay_every_row_its_exact_floor() {
        // Three runs and a part on the straight path, with flat rows; one run has a row
        // past it (2.5e7 contracts, read as a decimal) and another a row too large to
        // read in f64 in a run (4.3e6 contracts, read by one multiplication), which those
        // runs settle row by row: every payment is the exact amount floored, computed here
        // without an estimate, and the totals are the payments' and the quantities' sums.
        let params = params();
        let basis = FundingBasis::Mark {
            rates: &[0.000_123_4, -0.000_075],
            marks: &[96_450.37, 3_187.25],
        };
        let n = 3 * RUN + 100;
        let instrument: Vec<u32> = (0..n).map(|r| (r % 3 % 2) as u32).collect();
        let mut qty: Vec<f64> = (0..n)
            .map(|r| match r % 7 {
                0 => 0.0,
                1 => -((r * 37 % 10_007) as f64) / 1_000.0,
                _ => (r * 131 % 1_000_003) as f64 / 100.0,
            })
            .collect();
        let off_path = RUN + 77;
        qty[off_path] = -2.5e7;
        let past_run_limit = 2 * RUN + 5;
        qty[past_run_limit] = 4_321_987.654_321;
        let positions = positions(&instrument, &qty);
        let settlement = settle_funding(&params, &positions, basis, &[6, 8]).unwrap();

        let settler = Settler::new(&params, &positions, basis, &[6, 8], Steps::Best).unwrap();
        let (mut received, mut paid, mut units) = ([0i64; 2], [0i64; 2], [0i128; 2]);
        for (row, (&q, &id)) in qty.iter().zip(&instrument).enumerate() {
            let id = id as usize;
            let row_units = qty_units(q).unwrap();
            let exact = exact_payment(
                &settler.instruments[id],
                &basis,
                id,
                ExactAmount::one().times_integer(row_units),
                Some(0),
            )
            .floor()
            .unwrap();
            let expected = if q == 0.0 { 0 } else { exact };
            assert_eq!(settlement.payments[row], expected, "row {row}");
            received[id] += expected.max(0);
            paid[id] += expected.min(0);
            units[id] += i128::from(row_units);
        }
        assert_ne!(settlement.payments[off_path], 0);
        assert!(settlement.payments[past_run_limit] < 0);
        assert_eq!(settlement.received, received);
        assert_eq!(settlement.paid, paid);
        for id in 0..2 {
            let mut open_interest = ExactSum::default();
            open_interest.add(units[id]);
            assert_eq!(
                settlement.open_interest[id], open_interest,
                "instrument {id}"
            );
            let house = house_posting(&params, &basis, &[6, 8], id, open_interest).unwrap();
            assert_eq!(settlement.house[id], house);
            assert_eq!(received[id] + paid[id] + house + settlement.dust[id], 0);
        }
    }

    #[test]
    fn house_of_summed_parts_is_the_whole_books_house() {
        // The book of `longs_pay_shorts_and_postings_balance` in two parts: long 3 in
        // one, short 2 in the other. Open interest 3e9 and −2e9 units add to 1e9 (one
        // contract long), whose opposite the house holds: it receives 9 645.
        let params = params();
        let basis = FundingBasis::Mark {
            rates: &[0.0001, 0.0001],
            marks: &[96_450.5, 96_450.5],
        };
        let decimals = [6, 8];
        let part = |qty: &[f64]| {
            let instrument = vec![0u32; qty.len()];
            settle_funding(&params, &positions(&instrument, qty), basis, &decimals)
                .unwrap()
                .open_interest[0]
        };
        let (a, b) = (part(&[3.0]), part(&[-2.0]));
        assert_eq!(a.to_decimal_string().unwrap(), "3000000000");
        let total = a.merge(b);
        assert_eq!(total.to_decimal_string().unwrap(), "1000000000");
        assert_eq!(
            house_posting(&params, &basis, &decimals, 0, total).unwrap(),
            9_645
        );
        assert!(house_posting(&params, &basis, &decimals, 2, total).is_err());
    }

    #[test]
    fn inverse_funding_is_paid_in_coin() {
        // 10 contracts × 100 USD × 0.0001 / 50 000 = 2e-6 BTC = 200 sat.
        let params = params();
        let settlement = settle_funding(
            &params,
            &positions(&[1, 1], &[10.0, -10.0]),
            FundingBasis::Mark {
                rates: &[0.0, 0.0001],
                marks: &[1.0, 50_000.0],
            },
            &[6, 8],
        )
        .unwrap();
        assert_eq!(settlement.payments, vec![-200, 200]);
        assert_eq!((settlement.house[1], settlement.dust[1]), (0, 0));
    }

    #[test]
    fn index_settlement_pays_the_move_since_the_last_settlement() {
        // Index moved by 9.64505 (= 96 450.5 × 0.0001) since position 0 settled, and by
        // twice that since position 1: the long pays 0.00964505 USDT per contract.
        let params = params();
        let settlement = settle_funding(
            &params,
            &positions(&[0, 0], &[1.0, -1.0]),
            FundingBasis::Index {
                index_now: &[19.2901, 0.0],
                position_index: &[9.64505, 0.0],
            },
            &[6, 8],
        )
        .unwrap();
        assert_eq!(settlement.payments, vec![-9_646, 19_290]);
        let total: i64 =
            settlement.payments.iter().sum::<i64>() + settlement.house[0] + settlement.dust[0];
        assert_eq!(total, 0);
        assert!(settlement.dust[0] >= 0);
    }

    /// A book of `n_accounts` accounts with 0 to 5 positions each, in account order: the
    /// account of each row, its instrument and quantity (flat rows, longs and shorts that
    /// cancel within an account, and quantities past the straight path).
    fn book(n_accounts: usize) -> (Vec<u32>, Vec<u32>, Vec<f64>) {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut next = move || rng.next();
        let (mut account, mut instrument, mut qty) = (vec![], vec![], vec![]);
        for a in 0..n_accounts as u32 {
            let n = next() % 6;
            for _ in 0..n {
                account.push(a);
                instrument.push((next() % 2) as u32);
                qty.push(match next() % 8 {
                    0 => 0.0,
                    1 => 2.5e7,
                    _ => ((next() % 20_001) as f64 - 10_000.0) / 1_000.0,
                });
            }
            if n == 5 {
                // A long and a short that cancel: the account's sum is 0 and not kept.
                let last = qty.len() - 1;
                qty[last] = -qty[last - 1];
                instrument[last] = instrument[last - 1];
            }
        }
        (account, instrument, qty)
    }

    #[test]
    fn by_account_settlement_is_settling_then_summing() {
        let params = params();
        let basis = FundingBasis::Mark {
            rates: &[0.000_123_4, -0.000_075],
            marks: &[96_450.37, 3_187.25],
        };
        let n_accounts = 3 * ACCOUNT_CHUNK + 17;
        let (account, instrument, qty) = book(n_accounts);
        let positions = positions(&instrument, &qty);
        let expected = settle_funding(&params, &positions, basis, &[6, 8]).unwrap();
        let expected_sums = sum_by_account(
            &Grouping::build(&account, None, n_accounts, "account").unwrap(),
            &instrument,
            &[0, 1],
            &expected.payments,
            2,
        )
        .unwrap()
        .concatenate();
        assert!(expected_sums.amount.iter().all(|&a| a != 0));
        assert!(expected_sums.amount.len() > n_accounts);

        // Laid out by account: the one-pass walk, over several blocks. Payments go to
        // stale columns here and below, and every one is written (empty rows' too).
        let sorted = Grouping::build(&account, None, n_accounts, "account").unwrap();
        assert!(sorted.is_sorted());
        let (settlement, sums) =
            settle_funding_by_account(&params, &positions, &sorted, basis, &[6, 8], &Stale)
                .unwrap();
        assert_eq!(settlement, expected);
        assert_eq!(sums.concatenate(), expected_sums);

        // The same rows in another `order`: the same sums, each payment at its row, the
        // same house and dust. Whether the rows came out laid out by account is returned.
        let settled_in = |order: &[usize]| {
            let account_o: Vec<u32> = order.iter().map(|&r| account[r]).collect();
            let instrument_o: Vec<u32> = order.iter().map(|&r| instrument[r]).collect();
            let qty_o: Vec<f64> = order.iter().map(|&r| qty[r]).collect();
            let groups = Grouping::build(&account_o, None, n_accounts, "account").unwrap();
            // Rows eight at a time (where the CPU allows) and one at a time; with the rows'
            // accounts (rows not laid out by account are partitioned by account) and
            // without (summed through the grouping).
            let with_accounts = Positions {
                account: &account_o,
                ..self::positions(&instrument_o, &qty_o)
            };
            let without = self::positions(&instrument_o, &qty_o);
            // With the accounts, the rows are partitioned (from 0 rows, for this book).
            let cases = [Steps::Best, Steps::Scalar]
                .into_iter()
                .flat_map(|steps| [(steps, &with_accounts, 0), (steps, &without, 0)]);
            for (steps, positions, partition_rows) in cases {
                let (settlement_o, sums_o) = settle_funding_by_account_with(
                    &params,
                    positions,
                    &groups,
                    basis,
                    &[6, 8],
                    &Stale,
                    steps,
                    partition_rows,
                )
                .unwrap();
                let accounts = positions.account.len();
                assert_eq!(sums_o.concatenate(), expected_sums, "{steps:?}, {accounts}");
                let payments_o: Vec<i64> = order.iter().map(|&r| expected.payments[r]).collect();
                assert_eq!(settlement_o.payments, payments_o);
                assert_eq!(settlement_o.house, expected.house);
                assert_eq!(settlement_o.dust, expected.dust);
            }
            groups.is_sorted()
        };
        // Laid out by account, each account's rows by instrument (as a grouping by
        // position key leaves them): each (account, settle asset) is one run of rows,
        // summed as runs.
        let mut by_key: Vec<usize> = (0..qty.len()).collect();
        by_key.sort_by_key(|&r| (account[r], instrument[r]));
        assert!(settled_in(&by_key));
        // Rows in another order: settled, then summed.
        let reversed: Vec<usize> = (0..qty.len()).rev().collect();
        assert!(!settled_in(&reversed));
    }

    #[test]
    fn by_account_settlement_reports_a_rows_error_before_an_account_overflow() {
        // 1e10 × 0.001 × 1 × 10^6 = 10^13 µUSDT per contract: 6e5 contracts pay 6e18, two
        // such rows overflow their account's i64 total. A quantity of 1e300 contracts
        // cannot be read as 1e-9 units at all.
        let params = params();
        let basis = FundingBasis::Mark {
            rates: &[1.0, 0.0],
            marks: &[1e10, 1.0],
        };
        let account = [0, 0, 1, 2];
        let instrument = [0, 0, 0, 0];
        let groups = Grouping::build(&account, None, 3, "account").unwrap();
        let overflowing = [6e5, 6e5, 1.0, 1.0];
        let err = settle_funding_by_account(
            &params,
            &positions(&instrument, &overflowing),
            &groups,
            basis,
            &[6, 8],
            &Zeroed,
        );
        assert!(
            matches!(err, Err(Error::Overflow { what }) if what == "an account's total"),
            "{err:?}"
        );
        let unreadable = [6e5, 6e5, 1.0, 1e300];
        let err = settle_funding_by_account(
            &params,
            &positions(&instrument, &unreadable),
            &groups,
            basis,
            &[6, 8],
            &Zeroed,
        );
        assert!(
            matches!(err, Err(Error::Overflow { what }) if what == "quantity"),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let params = params();
        let basis = FundingBasis::Mark {
            rates: &[0.0001, 0.0],
            marks: &[96_450.5, 1.0],
        };
        let settle = |instrument: &[u32], qty: &[f64], decimals: &[u32]| {
            settle_funding(&params, &positions(instrument, qty), basis, decimals)
        };
        assert!(matches!(
            settle(&[0, 2], &[1.0, 1.0], &[6, 8]),
            Err(Error::IdOutOfRange { row: 1, .. })
        ));
        assert!(matches!(
            settle(&[0], &[1.0, 1.0], &[6, 8]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            settle(&[0], &[1.0], &[6]),
            Err(Error::LengthMismatch { .. })
        ));
        let short = FundingBasis::Mark {
            rates: &[0.0001],
            marks: &[96_450.5, 1.0],
        };
        assert!(matches!(
            settle_funding(&params, &positions(&[0], &[1.0]), short, &[6, 8]),
            Err(Error::LengthMismatch { .. })
        ));
        let long_marks = FundingBasis::Mark {
            rates: &[0.0001, 0.0],
            marks: &[96_450.5, 1.0, 1.0],
        };
        assert!(matches!(
            settle_funding(&params, &positions(&[0], &[1.0]), long_marks, &[6, 8]),
            Err(Error::LengthMismatch {
                column: "marks",
                ..
            })
        ));
        let groups = Grouping::build(&[0, 0], None, 1, "account").unwrap();
        assert!(matches!(
            settle_funding_by_account(
                &params,
                &positions(&[0], &[1.0]),
                &groups,
                basis,
                &[6, 8],
                &Zeroed
            ),
            Err(Error::LengthMismatch { .. })
        ));
    }
}
