//! The revaluation's two per-row steps, eight rows at a time on AVX-512: a position's
//! margins ([`perp::PositionTerms::margins`] and what it adds to its account's cross
//! sums) and its prices ([`perp::Exposure`]'s liquidation and bankruptcy prices and
//! [`perp::adl_score`]).
//!
//! Both steps are long scalar code with a bracket search and several divisions, and a
//! revaluation on a built book spends most of its time in them. Here every contract's
//! figures (up to [`CONTRACTS`] contracts of up to [`TIERS`] brackets) sit in tables of
//! sixteen, read per lane by a permutation of two registers; both contract kinds are
//! computed in every lane and the lane's kind picks one; the bracket searches become one
//! masked comparison per bracket; and the cases the scalar code branches on (an empty
//! row, no exposure, a balance that is not finite, a price that is not positive) become
//! masks. Every lane does the same IEEE steps as the scalar code, in the same order, so
//! the bits do not depend on the kernel: the tests below hold the two to each other.
//!
//! `pulp` detects AVX-512 F at run time and its safe wrappers keep this crate free of
//! `unsafe`; elsewhere (or with more contracts or brackets) the callers keep the scalar
//! steps.

use crate::perp::ContractKind;
use crate::valuation::{PositionPrices, Quote};

/// Contracts the tables take: two registers of eight.
pub(crate) const CONTRACTS: usize = 16;

/// Brackets per contract the tables take.
pub(crate) const TIERS: usize = 8;

/// Rows per step: one 512-bit register of `f64`.
pub(crate) const LANES: usize = 8;

/// One figure per contract, padded to [`CONTRACTS`].
type Table = [f64; CONTRACTS];

/// What the lanes read of the contracts and their quotes, as tables by contract id.
#[derive(Debug, Clone)]
struct Tables {
    /// 1.0 for a linear contract, 0.0 for an inverse one.
    linear: Table,
    contract_size: Table,
    mark: Table,
    /// `1/mark` for an inverse contract (NaN for a linear one, as in `MarkTerms`).
    reciprocal: Table,
    settle_price: Table,
    /// `1/settle_price`.
    per_settle_unit: Table,
    /// Bracket `j`'s figures; a contract with fewer brackets has NaN floors beyond its
    /// last (a NaN floor is never reached), and its last bracket's figures repeated.
    floor: [Table; TIERS],
    mmr: [Table; TIERS],
    maintenance_amount: [Table; TIERS],
    max_leverage: [Table; TIERS],
    /// The last bracket's figures (where the liquidation price's search ends).
    last_floor: Table,
    last_mmr: Table,
    last_maintenance_amount: Table,
    /// The most brackets of any contract (at least 1): the searches go no further.
    tiers: usize,
}

impl Tables {
    /// `None` with more than [`CONTRACTS`] contracts or [`TIERS`] brackets.
    fn new(quotes: &[Quote<'_>]) -> Option<Self> {
        if quotes.len() > CONTRACTS
            || quotes
                .iter()
                .any(|quote| quote.contract.tiers.tiers().len() > TIERS)
        {
            return None;
        }
        let zero = [0.0; CONTRACTS];
        let mut tables = Tables {
            linear: zero,
            contract_size: zero,
            mark: zero,
            reciprocal: zero,
            settle_price: zero,
            per_settle_unit: zero,
            floor: [[f64::NAN; CONTRACTS]; TIERS],
            mmr: [zero; TIERS],
            maintenance_amount: [zero; TIERS],
            max_leverage: [zero; TIERS],
            last_floor: zero,
            last_mmr: zero,
            last_maintenance_amount: zero,
            tiers: 1,
        };
        for (id, quote) in quotes.iter().enumerate() {
            let contract = quote.contract;
            tables.linear[id] = match contract.kind {
                ContractKind::Linear => 1.0,
                ContractKind::Inverse => 0.0,
            };
            tables.contract_size[id] = contract.contract_size;
            tables.mark[id] = quote.mark.mark();
            tables.reciprocal[id] = quote.mark.reciprocal();
            tables.settle_price[id] = quote.settle_price;
            tables.per_settle_unit[id] = quote.per_settle_unit;
            let brackets = contract.tiers.tiers();
            tables.tiers = tables.tiers.max(brackets.len());
            let last = brackets[brackets.len() - 1];
            for j in 0..TIERS {
                let bracket = brackets.get(j).unwrap_or(&last);
                if j < brackets.len() {
                    tables.floor[j][id] = bracket.floor;
                }
                tables.mmr[j][id] = bracket.mmr;
                tables.maintenance_amount[j][id] = bracket.maintenance_amount;
                tables.max_leverage[j][id] = bracket.max_leverage;
            }
            tables.last_floor[id] = last.floor;
            tables.last_mmr[id] = last.mmr;
            tables.last_maintenance_amount[id] = last.maintenance_amount;
        }
        Some(tables)
    }
}

/// A register of rows' margin inputs: quantity, entry price, contract id, chosen leverage
/// (NaN: none) and isolated margin (NaN: cross).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MarginInputs {
    pub qty: [f64; LANES],
    pub entry_price: [f64; LANES],
    pub instrument: [u32; LANES],
    pub leverage: [f64; LANES],
    pub isolated_margin: [f64; LANES],
}

/// A register of rows' margins, tier (1-based) and cross contributions (reporting
/// currency; +0.0 for isolated and empty rows), as the scalar steps compute them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct MarginOutputs {
    pub notional: [f64; LANES],
    pub upnl: [f64; LANES],
    pub initial_margin: [f64; LANES],
    pub maintenance_margin: [f64; LANES],
    pub tier: [u8; LANES],
    pub cross_upnl: [f64; LANES],
    pub cross_initial: [f64; LANES],
    pub cross_maintenance: [f64; LANES],
}

/// A register of rows' price inputs: the position, its uPnL and notional from the
/// margins, and the three balances that back it (settle currency): for the liquidation
/// price, for the bankruptcy price, and its margin balance for the ADL score.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PriceInputs {
    pub qty: [f64; LANES],
    pub entry_price: [f64; LANES],
    pub instrument: [u32; LANES],
    pub upnl: [f64; LANES],
    pub notional: [f64; LANES],
    pub liquidation_balance: [f64; LANES],
    pub bankruptcy_balance: [f64; LANES],
    pub margin_balance: [f64; LANES],
}

/// Rows for the margins step: the book's position columns over a range of rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MarginRows<'a> {
    pub qty: &'a [f64],
    pub entry_price: &'a [f64],
    pub instrument: &'a [u32],
    /// NaN or no column: the bracket's maximum.
    pub leverage: Option<&'a [f64]>,
    /// NaN or no column: cross.
    pub isolated_margin: Option<&'a [f64]>,
}

/// Where the margins step writes, one element per row.
#[derive(Debug)]
pub(crate) struct MarginColumns<'a> {
    pub notional: &'a mut [f64],
    pub upnl: &'a mut [f64],
    pub initial_margin: &'a mut [f64],
    pub maintenance_margin: &'a mut [f64],
    pub tier: &'a mut [u8],
    pub cross_upnl: &'a mut [f64],
    pub cross_initial: &'a mut [f64],
    pub cross_maintenance: &'a mut [f64],
}

/// Rows for the prices step: the position and its figures from the margins step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PriceRows<'a> {
    pub qty: &'a [f64],
    pub entry_price: &'a [f64],
    pub instrument: &'a [u32],
    pub upnl: &'a [f64],
    pub notional: &'a [f64],
}

/// What backs the cross positions of a block of accounts (reporting currency; see
/// `valuation::CrossBacking`), one column per figure, indexed by account less `first`.
/// Each column has [`LANES`] elements of slack past the block's last account, so that a
/// register of consecutive accounts can be read from any account of the block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccountBacking<'a> {
    pub first: u32,
    pub wallet: &'a [f64],
    pub holdings_value: &'a [f64],
    pub cross_maintenance: &'a [f64],
    pub cross_upnl: &'a [f64],
    pub equity: &'a [f64],
}

/// What the prices step reads to work out rows' balances itself, for rows laid out by
/// account: each row's account (book ids, ascending), isolated margin (NaN or no column:
/// cross) and maintenance margin, and the backing of the rows' accounts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BalanceRows<'a> {
    pub account: &'a [u32],
    pub isolated_margin: Option<&'a [f64]>,
    pub maintenance_margin: &'a [f64],
    pub backing: AccountBacking<'a>,
}

/// A register of rows' balance inputs: isolated margin (NaN: cross), maintenance margin,
/// and their accounts' backing by figure (wallet, holdings value, cross maintenance,
/// cross uPnL, equity).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BalanceInputs {
    pub isolated_margin: [f64; LANES],
    pub maintenance_margin: [f64; LANES],
    pub backing: [[f64; LANES]; 5],
}

/// The two steps on AVX-512 for one revaluation's quotes.
#[derive(Debug, Clone)]
pub(crate) struct PositionLanes {
    #[cfg(target_arch = "x86_64")]
    simd: pulp::x86::V4,
    tables: Box<Tables>,
}

impl PositionLanes {
    /// `None` when the CPU lacks AVX-512 F and DQ, or the contracts do not fit the
    /// tables.
    pub(crate) fn new(quotes: &[Quote<'_>]) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            let simd = pulp::x86::V4::try_new()?;
            let tables = Box::new(Tables::new(quotes)?);
            Some(PositionLanes { simd, tables })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = quotes;
            None
        }
    }

    /// Each row's margins, tier and cross contributions.
    pub(crate) fn margins(&self, rows: MarginRows<'_>, out: MarginColumns<'_>) {
        #[cfg(target_arch = "x86_64")]
        self.margins_avx512(rows, out);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, out);
    }

    /// Each row's liquidation price, bankruptcy price and ADL score, written over the
    /// three balances `out` holds when called (liquidation, bankruptcy and margin
    /// balance, in that order of columns).
    pub(crate) fn prices(&self, rows: PriceRows<'_>, out: PositionPrices<'_>) {
        #[cfg(target_arch = "x86_64")]
        self.prices_avx512(rows, out);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, out);
    }

    /// [`Self::prices`] of rows laid out by account, their balances worked out in the
    /// lanes from `balances` (the one-row `valuation` steps' formula, bit for bit).
    pub(crate) fn prices_from_backing(
        &self,
        rows: PriceRows<'_>,
        balances: BalanceRows<'_>,
        out: PositionPrices<'_>,
    ) {
        #[cfg(target_arch = "x86_64")]
        self.prices_from_backing_avx512(rows, balances, out);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, balances, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::{
        __m128i, __m256i, __m512d, __m512i, __mmask8, _CMP_GE_OQ, _CMP_GT_OQ, _CMP_LE_OQ,
        _CMP_LT_OQ, _CMP_NEQ_UQ, _CMP_UNORD_Q,
    };

    use pulp::x86::V4;
    use pulp::{cast, Simd, WithSimd};

    use super::{
        AccountBacking, BalanceInputs, BalanceRows, MarginColumns, MarginInputs, MarginOutputs,
        MarginRows, PositionLanes, PositionPrices, PriceInputs, PriceRows, Table, Tables, LANES,
    };

    /// A register's lanes picked from a table by contract id.
    #[derive(Clone, Copy)]
    struct Pick {
        simd: V4,
        ids: __m512i,
    }

    impl Pick {
        #[inline(always)]
        fn of(&self, table: &Table) -> __m512d {
            let (low, high) = table.split_at(LANES);
            let low: [f64; LANES] = low.try_into().expect("half a table");
            let high: [f64; LANES] = high.try_into().expect("half a table");
            self.simd
                .avx512f
                ._mm512_permutex2var_pd(cast(low), self.ids, cast(high))
        }
    }

    /// A step over the registers of some rows: whole registers, then (`WHOLE` false) the
    /// last rows, fewer than a register, padded to one (a quantity of 0: an empty row)
    /// and written back as far as the rows go.
    trait Registers {
        fn rows(&self) -> usize;
        fn step<const WHOLE: bool>(&mut self, start: usize);
    }

    /// Every register of a step's rows, in a function compiled with the AVX-512 features
    /// (the step is in line there: no call per register).
    struct Run<R>(R);

    impl<R: Registers> WithSimd for Run<R> {
        type Output = ();

        #[inline(always)]
        fn with_simd<D: Simd>(self, _: D) {
            let Run(mut registers) = self;
            let n = registers.rows();
            let whole = n - n % LANES;
            for start in (0..whole).step_by(LANES) {
                registers.step::<true>(start);
            }
            if whole < n {
                registers.step::<false>(whole);
            }
        }
    }

    /// Rows through the margins step.
    struct MarginRun<'a> {
        lanes: &'a PositionLanes,
        rows: MarginRows<'a>,
        out: MarginColumns<'a>,
    }

    impl Registers for MarginRun<'_> {
        fn rows(&self) -> usize {
            self.rows.qty.len()
        }

        #[inline(always)]
        fn step<const WHOLE: bool>(&mut self, start: usize) {
            margins_at::<WHOLE>(self.lanes, &self.rows, &mut self.out, start);
        }
    }

    /// The margins step on the register of rows at `start`.
    #[inline(always)]
    fn margins_at<const WHOLE: bool>(
        lanes: &PositionLanes,
        rows: &MarginRows<'_>,
        out: &mut MarginColumns<'_>,
        start: usize,
    ) {
        let nan = f64::NAN;
        let inputs = MarginInputs {
            qty: register::<WHOLE, _>(rows.qty, start, 0.0),
            entry_price: register::<WHOLE, _>(rows.entry_price, start, 0.0),
            instrument: register::<WHOLE, _>(rows.instrument, start, 0),
            leverage: rows.leverage.map_or([nan; LANES], |column| {
                register::<WHOLE, _>(column, start, nan)
            }),
            isolated_margin: rows.isolated_margin.map_or([nan; LANES], |column| {
                register::<WHOLE, _>(column, start, nan)
            }),
        };
        let figures = margins(lanes.simd, &lanes.tables, &inputs);
        put::<WHOLE, _>(out.notional, start, &figures.notional);
        put::<WHOLE, _>(out.upnl, start, &figures.upnl);
        put::<WHOLE, _>(out.initial_margin, start, &figures.initial_margin);
        put::<WHOLE, _>(out.maintenance_margin, start, &figures.maintenance_margin);
        put::<WHOLE, _>(out.tier, start, &figures.tier);
        put::<WHOLE, _>(out.cross_upnl, start, &figures.cross_upnl);
        put::<WHOLE, _>(out.cross_initial, start, &figures.cross_initial);
        put::<WHOLE, _>(out.cross_maintenance, start, &figures.cross_maintenance);
    }

    /// Rows through the prices step.
    struct PriceRun<'a> {
        lanes: &'a PositionLanes,
        rows: PriceRows<'a>,
        out: PositionPrices<'a>,
    }

    impl Registers for PriceRun<'_> {
        fn rows(&self) -> usize {
            self.rows.qty.len()
        }

        #[inline(always)]
        fn step<const WHOLE: bool>(&mut self, start: usize) {
            prices_at::<WHOLE>(self.lanes, &self.rows, &mut self.out, start);
        }
    }

    /// The prices step on the register of rows at `start`.
    #[inline(always)]
    fn prices_at<const WHOLE: bool>(
        lanes: &PositionLanes,
        rows: &PriceRows<'_>,
        out: &mut PositionPrices<'_>,
        start: usize,
    ) {
        let inputs = PriceInputs {
            qty: register::<WHOLE, _>(rows.qty, start, 0.0),
            entry_price: register::<WHOLE, _>(rows.entry_price, start, 0.0),
            instrument: register::<WHOLE, _>(rows.instrument, start, 0),
            upnl: register::<WHOLE, _>(rows.upnl, start, 0.0),
            notional: register::<WHOLE, _>(rows.notional, start, 0.0),
            liquidation_balance: register::<WHOLE, _>(out.liquidation_price, start, 0.0),
            bankruptcy_balance: register::<WHOLE, _>(out.bankruptcy_price, start, 0.0),
            margin_balance: register::<WHOLE, _>(out.adl_score, start, 0.0),
        };
        let [liquidation, bankruptcy, score] = prices(lanes.simd, &lanes.tables, &inputs);
        put::<WHOLE, _>(out.liquidation_price, start, &liquidation);
        put::<WHOLE, _>(out.bankruptcy_price, start, &bankruptcy);
        put::<WHOLE, _>(out.adl_score, start, &score);
    }

    /// Rows laid out by account through the balances and the prices step.
    struct BackedPriceRun<'a> {
        lanes: &'a PositionLanes,
        rows: PriceRows<'a>,
        balances: BalanceRows<'a>,
        out: PositionPrices<'a>,
    }

    impl Registers for BackedPriceRun<'_> {
        fn rows(&self) -> usize {
            self.rows.qty.len()
        }

        #[inline(always)]
        fn step<const WHOLE: bool>(&mut self, start: usize) {
            backed_prices_at::<WHOLE>(self.lanes, &self.rows, &self.balances, &mut self.out, start);
        }
    }

    /// The balances and prices of the register of rows at `start`.
    #[inline(always)]
    fn backed_prices_at<const WHOLE: bool>(
        lanes: &PositionLanes,
        rows: &PriceRows<'_>,
        balances: &BalanceRows<'_>,
        out: &mut PositionPrices<'_>,
        start: usize,
    ) {
        let simd = lanes.simd;
        let instrument = register::<WHOLE, _>(rows.instrument, start, 0);
        let upnl = register::<WHOLE, _>(rows.upnl, start, 0.0);
        let nan = f64::NAN;
        // Padded rows take the last row's account: their ids stay in the block.
        let last_account = balances.account.last().copied().unwrap_or(0);
        let account = register::<WHOLE, _>(balances.account, start, last_account);
        let inputs = BalanceInputs {
            isolated_margin: balances.isolated_margin.map_or([nan; LANES], |column| {
                register::<WHOLE, _>(column, start, nan)
            }),
            maintenance_margin: register::<WHOLE, _>(balances.maintenance_margin, start, 0.0),
            backing: backing_of(simd, &balances.backing, account),
        };
        let [liquidation_balance, bankruptcy_balance, margin_balance] =
            row_balances(simd, &lanes.tables, instrument, upnl, &inputs);
        let inputs = PriceInputs {
            qty: register::<WHOLE, _>(rows.qty, start, 0.0),
            entry_price: register::<WHOLE, _>(rows.entry_price, start, 0.0),
            instrument,
            upnl,
            notional: register::<WHOLE, _>(rows.notional, start, 0.0),
            liquidation_balance,
            bankruptcy_balance,
            margin_balance,
        };
        let [liquidation, bankruptcy, score] = prices(simd, &lanes.tables, &inputs);
        put::<WHOLE, _>(out.liquidation_price, start, &liquidation);
        put::<WHOLE, _>(out.bankruptcy_price, start, &bankruptcy);
        put::<WHOLE, _>(out.adl_score, start, &score);
    }

    /// The backing of a register of rows' accounts (ascending book ids), figure by
    /// figure. When the register's accounts lie within eight of each other (the common
    /// case: an account has a few rows), each figure is one read of eight consecutive
    /// accounts and a permutation; otherwise eight reads.
    #[inline(always)]
    fn backing_of(
        simd: V4,
        backing: &AccountBacking<'_>,
        account: [u32; LANES],
    ) -> [[f64; LANES]; 5] {
        let f = simd.avx512f;
        let columns = [
            backing.wallet,
            backing.holdings_value,
            backing.cross_maintenance,
            backing.cross_upnl,
            backing.equity,
        ];
        let low = account[0];
        let base = (low - backing.first) as usize;
        // No closures here: one passed to `array::map` is compiled apart from this
        // function, without its AVX-512 features, and its intrinsics become calls.
        let mut figures = [[0.0; LANES]; 5];
        if account[LANES - 1] - low < LANES as u32 {
            let offsets = f._mm512_sub_epi64(
                f._mm512_cvtepu32_epi64(cast::<_, __m256i>(account)),
                f._mm512_set1_epi64(i64::from(low)),
            );
            for (figure, column) in figures.iter_mut().zip(columns) {
                let eight: [f64; LANES] = register::<true, _>(column, base, 0.0);
                *figure = cast(f._mm512_permutexvar_pd(offsets, cast(eight)));
            }
        } else {
            for (figure, column) in figures.iter_mut().zip(columns) {
                for (value, &id) in figure.iter_mut().zip(&account) {
                    *value = column[(id - backing.first) as usize];
                }
            }
        }
        figures
    }

    impl PositionLanes {
        /// [`super::PositionLanes::prices_from_backing`] on this CPU.
        pub(super) fn prices_from_backing_avx512(
            &self,
            rows: PriceRows<'_>,
            balances: BalanceRows<'_>,
            out: PositionPrices<'_>,
        ) {
            Simd::vectorize(
                self.simd,
                Run(BackedPriceRun {
                    lanes: self,
                    rows,
                    balances,
                    out,
                }),
            );
        }

        /// A register's balances (for the tests).
        #[cfg(test)]
        pub(super) fn register_balances(
            &self,
            instrument: [u32; LANES],
            upnl: [f64; LANES],
            rows: &BalanceInputs,
        ) -> [[f64; LANES]; 3] {
            row_balances(self.simd, &self.tables, instrument, upnl, rows)
        }
    }

    /// `valuation`'s balances of a register of rows, lane by lane: an isolated row's
    /// `(m, m, m + uPnL)`; a cross row's from its account's backing, the other cross
    /// positions at their current marks, converted to the settle currency.
    #[inline(always)]
    fn row_balances(
        simd: V4,
        tables: &Tables,
        instrument: [u32; LANES],
        upnl: [f64; LANES],
        rows: &BalanceInputs,
    ) -> [[f64; LANES]; 3] {
        let f = simd.avx512f;
        let pick = pick(simd, instrument);
        let upnl: __m512d = cast(upnl);
        let margin: __m512d = cast(rows.isolated_margin);
        let maintenance: __m512d = cast(rows.maintenance_margin);
        let cross = f._mm512_cmp_pd_mask::<_CMP_UNORD_Q>(margin, margin);
        let [wallet, holdings_value, cross_maintenance, cross_upnl, equity] = rows.backing;
        let (wallet, holdings_value): (__m512d, __m512d) = (cast(wallet), cast(holdings_value));
        let (cross_maintenance, cross_upnl): (__m512d, __m512d) =
            (cast(cross_maintenance), cast(cross_upnl));
        let equity: __m512d = cast(equity);
        let settle_price = pick.of(&tables.settle_price);
        let per_settle_unit = pick.of(&tables.per_settle_unit);
        let other_upnl = f._mm512_sub_pd(cross_upnl, f._mm512_mul_pd(upnl, settle_price));
        let other_maintenance = f._mm512_sub_pd(
            cross_maintenance,
            f._mm512_mul_pd(maintenance, settle_price),
        );
        let liquidation = f._mm512_mul_pd(
            f._mm512_add_pd(f._mm512_sub_pd(wallet, other_maintenance), other_upnl),
            per_settle_unit,
        );
        let bankruptcy =
            f._mm512_mul_pd(f._mm512_add_pd(holdings_value, other_upnl), per_settle_unit);
        let margin_balance = f._mm512_mul_pd(equity, per_settle_unit);
        [
            cast(select(simd, cross, liquidation, margin)),
            cast(select(simd, cross, bankruptcy, margin)),
            cast(select(
                simd,
                cross,
                margin_balance,
                f._mm512_add_pd(margin, upnl),
            )),
        ]
    }

    impl PositionLanes {
        /// [`super::PositionLanes::margins`] on this CPU.
        pub(super) fn margins_avx512(&self, rows: MarginRows<'_>, out: MarginColumns<'_>) {
            Simd::vectorize(
                self.simd,
                Run(MarginRun {
                    lanes: self,
                    rows,
                    out,
                }),
            );
        }

        /// [`super::PositionLanes::prices`] on this CPU.
        pub(super) fn prices_avx512(&self, rows: PriceRows<'_>, out: PositionPrices<'_>) {
            Simd::vectorize(
                self.simd,
                Run(PriceRun {
                    lanes: self,
                    rows,
                    out,
                }),
            );
        }

        /// One register through each step (for the tests).
        #[cfg(test)]
        pub(super) fn register_margins(&self, rows: &MarginInputs) -> MarginOutputs {
            margins(self.simd, &self.tables, rows)
        }

        #[cfg(test)]
        pub(super) fn register_prices(&self, rows: &PriceInputs) -> [[f64; LANES]; 3] {
            prices(self.simd, &self.tables, rows)
        }
    }

    /// The register of `column` at `start`: a whole one, or (`WHOLE` false) the
    /// column's last rows padded with `fill`.
    #[inline(always)]
    fn register<const WHOLE: bool, T: Copy>(column: &[T], start: usize, fill: T) -> [T; LANES] {
        if WHOLE {
            column[start..start + LANES]
                .try_into()
                .expect("a register of rows")
        } else {
            let rest = &column[start..];
            let n = rest.len().min(LANES);
            let mut lanes = [fill; LANES];
            lanes[..n].copy_from_slice(&rest[..n]);
            lanes
        }
    }

    /// Writes a register back to `column` at `start`: all of it, or (`WHOLE` false) as
    /// many lanes as the column has rows left.
    #[inline(always)]
    fn put<const WHOLE: bool, T: Copy>(column: &mut [T], start: usize, lanes: &[T; LANES]) {
        if WHOLE {
            column[start..start + LANES].copy_from_slice(lanes);
        } else {
            let rest = &mut column[start..];
            let n = rest.len().min(LANES);
            rest[..n].copy_from_slice(&lanes[..n]);
        }
    }

    /// The ids of a register of rows, widened for the permutations.
    #[inline(always)]
    fn pick(simd: V4, instrument: [u32; LANES]) -> Pick {
        let ids = simd
            .avx512f
            ._mm512_cvtepu32_epi64(cast::<_, __m256i>(instrument));
        Pick { simd, ids }
    }

    /// `x` where `mask`, else `y`.
    #[inline(always)]
    fn select(simd: V4, mask: __mmask8, x: __m512d, y: __m512d) -> __m512d {
        simd.avx512f._mm512_mask_blend_pd(mask, y, x)
    }

    /// Lanes where `x` is finite: `|x| < ∞` (false for NaN).
    #[inline(always)]
    fn finite(simd: V4, x: __m512d) -> __mmask8 {
        let f = simd.avx512f;
        f._mm512_cmp_pd_mask::<_CMP_LT_OQ>(f._mm512_abs_pd(x), f._mm512_set1_pd(f64::INFINITY))
    }

    /// `copysign(1, x)`: `f64::signum` for any `x` but NaN.
    #[inline(always)]
    fn sign_of(simd: V4, x: __m512d) -> __m512d {
        let f = simd.avx512f;
        let sign_bit = f._mm512_set1_epi64(i64::MIN);
        f._mm512_castsi512_pd(f._mm512_or_si512(
            f._mm512_castpd_si512(f._mm512_set1_pd(1.0)),
            f._mm512_and_si512(f._mm512_castpd_si512(x), sign_bit),
        ))
    }

    /// `-x`: the sign bit flipped.
    #[inline(always)]
    fn negate(simd: V4, x: __m512d) -> __m512d {
        let f = simd.avx512f;
        f._mm512_castsi512_pd(
            f._mm512_xor_si512(f._mm512_castpd_si512(x), f._mm512_set1_epi64(i64::MIN)),
        )
    }

    /// [`crate::perp::PositionTerms::margins`] and [`crate::valuation`]'s cross
    /// contribution, lane by lane.
    #[inline(always)]
    fn margins(simd: V4, tables: &Tables, rows: &MarginInputs) -> MarginOutputs {
        let f = simd.avx512f;
        let pick = pick(simd, rows.instrument);
        let qty: __m512d = cast(rows.qty);
        let entry: __m512d = cast(rows.entry_price);
        let zero = f._mm512_setzero_pd();
        // `qty == 0.0` rows are empty (every figure +0.0); `!=` is true for NaN.
        let live = f._mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(qty, zero);
        let linear = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(pick.of(&tables.linear), zero);
        let contract_size = pick.of(&tables.contract_size);
        let mark = pick.of(&tables.mark);
        let size = f._mm512_mul_pd(f._mm512_abs_pd(qty), contract_size);
        let signed_size = f._mm512_mul_pd(qty, contract_size);
        let entry_term = select(
            simd,
            linear,
            entry,
            f._mm512_div_pd(f._mm512_set1_pd(1.0), entry),
        );
        let notional = select(
            simd,
            linear,
            f._mm512_mul_pd(size, mark),
            f._mm512_div_pd(size, mark),
        );
        let upnl = f._mm512_mul_pd(
            signed_size,
            select(
                simd,
                linear,
                f._mm512_sub_pd(mark, entry_term),
                f._mm512_sub_pd(entry_term, pick.of(&tables.reciprocal)),
            ),
        );
        // The bracket: the last whose floor is at most the notional (floors increase,
        // so the lanes that reach a floor reached every one below it).
        let mut tier = f._mm512_setzero_si512();
        let mut mmr = pick.of(&tables.mmr[0]);
        let mut maintenance_amount = pick.of(&tables.maintenance_amount[0]);
        let mut max_leverage = pick.of(&tables.max_leverage[0]);
        for j in 1..tables.tiers {
            let reached = f._mm512_cmp_pd_mask::<_CMP_LE_OQ>(pick.of(&tables.floor[j]), notional);
            if reached == 0 {
                break; // No lane reaches this floor, so none reaches a higher one.
            }
            tier = f._mm512_mask_mov_epi64(tier, reached, f._mm512_set1_epi64(j as i64));
            mmr = f._mm512_mask_mov_pd(mmr, reached, pick.of(&tables.mmr[j]));
            maintenance_amount = f._mm512_mask_mov_pd(
                maintenance_amount,
                reached,
                pick.of(&tables.maintenance_amount[j]),
            );
            max_leverage =
                f._mm512_mask_mov_pd(max_leverage, reached, pick.of(&tables.max_leverage[j]));
        }
        // NaN compares false, so "no choice" keeps the bracket's maximum.
        let chosen: __m512d = cast(rows.leverage);
        let below = f._mm512_cmp_pd_mask::<_CMP_LT_OQ>(chosen, max_leverage);
        let leverage = select(simd, below, chosen, max_leverage);
        let initial = f._mm512_div_pd(notional, leverage);
        let maintenance = f._mm512_sub_pd(f._mm512_mul_pd(notional, mmr), maintenance_amount);
        // Cross: live and no isolated margin (NaN).
        let isolated: __m512d = cast(rows.isolated_margin);
        let cross = live & f._mm512_cmp_pd_mask::<_CMP_UNORD_Q>(isolated, isolated);
        let settle_price = pick.of(&tables.settle_price);
        // 1-based; an empty row's is 1 (bracket 0, as the scalar step leaves it).
        let one = f._mm512_set1_epi64(1);
        let tier = f._mm512_mask_add_epi64(one, live, tier, one);
        let tier: [u8; 16] = cast::<__m128i, _>(f._mm512_cvtepi64_epi8(tier));
        let mut tier_bytes = [0u8; LANES];
        tier_bytes.copy_from_slice(&tier[..LANES]);
        let contribution = |x: __m512d| -> [f64; LANES] {
            cast(f._mm512_maskz_mov_pd(cross, f._mm512_mul_pd(x, settle_price)))
        };
        let live_only = |x: __m512d| -> [f64; LANES] { cast(f._mm512_maskz_mov_pd(live, x)) };
        MarginOutputs {
            notional: live_only(notional),
            upnl: live_only(upnl),
            initial_margin: live_only(initial),
            maintenance_margin: live_only(maintenance),
            tier: tier_bytes,
            cross_upnl: contribution(upnl),
            cross_initial: contribution(initial),
            cross_maintenance: contribution(maintenance),
        }
    }

    /// [`crate::perp::Exposure`]'s liquidation and bankruptcy prices and
    /// [`crate::perp::adl_score`], lane by lane (NaN where the scalar steps give none).
    #[inline(always)]
    fn prices(simd: V4, tables: &Tables, rows: &PriceInputs) -> [[f64; LANES]; 3] {
        let f = simd.avx512f;
        let pick = pick(simd, rows.instrument);
        let qty: __m512d = cast(rows.qty);
        let entry: __m512d = cast(rows.entry_price);
        let zero = f._mm512_setzero_pd();
        let nan = f._mm512_set1_pd(f64::NAN);
        let linear = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(pick.of(&tables.linear), zero);
        // Exposure::new: a = |q|·cs positive and finite, entry price positive.
        let a = f._mm512_mul_pd(f._mm512_abs_pd(qty), pick.of(&tables.contract_size));
        let exposed = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(a, zero)
            & finite(simd, a)
            & f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(entry, zero);
        let entry_value = select(
            simd,
            linear,
            f._mm512_mul_pd(a, entry),
            f._mm512_div_pd(a, entry),
        );
        let side = sign_of(simd, qty);
        let side_value = f._mm512_mul_pd(side, entry_value);
        let side_size = f._mm512_mul_pd(side, a);
        // balance_line: b1 is ±a either way.
        let b1 = select(simd, linear, side_size, negate(simd, side_size));
        let b0_of = |balance: __m512d| {
            select(
                simd,
                linear,
                f._mm512_sub_pd(balance, side_value),
                f._mm512_add_pd(balance, side_value),
            )
        };

        // Liquidation price.
        let balance: __m512d = cast(rows.liquidation_balance);
        let b0 = b0_of(balance);
        let direction = sign_of(simd, b1);
        let started = f._mm512_cmp_pd_mask::<_CMP_GE_OQ>(
            f._mm512_mul_pd(
                f._mm512_add_pd(b0, pick.of(&tables.maintenance_amount[0])),
                direction,
            ),
            zero,
        );
        // b1/a is exactly ±1 (b1 is ±a), so the slope is the direction.
        let slope = direction;
        let mut found: __mmask8 = 0;
        let mut mmr = pick.of(&tables.last_mmr);
        let mut maintenance_amount = pick.of(&tables.last_maintenance_amount);
        let mut floor = pick.of(&tables.last_floor);
        let mut next_floor = nan;
        let mut this_floor = pick.of(&tables.floor[0]);
        for j in 0..tables.tiers - 1 {
            if found == 0xff {
                break; // Every lane's bracket is found: the rest changes nothing.
            }
            let next = pick.of(&tables.floor[j + 1]);
            let tier_mmr = pick.of(&tables.mmr[j]);
            let tier_amount = pick.of(&tables.maintenance_amount[j]);
            let gap = f._mm512_sub_pd(
                f._mm512_add_pd(b0, f._mm512_mul_pd(slope, next)),
                f._mm512_sub_pd(f._mm512_mul_pd(next, tier_mmr), tier_amount),
            );
            let reached =
                f._mm512_cmp_pd_mask::<_CMP_GE_OQ>(f._mm512_mul_pd(gap, direction), zero) & !found;
            mmr = f._mm512_mask_mov_pd(mmr, reached, tier_mmr);
            maintenance_amount = f._mm512_mask_mov_pd(maintenance_amount, reached, tier_amount);
            floor = f._mm512_mask_mov_pd(floor, reached, this_floor);
            next_floor = f._mm512_mask_mov_pd(next_floor, reached, next);
            found |= reached;
            this_floor = next;
        }
        let x = f._mm512_div_pd(
            f._mm512_add_pd(b0, maintenance_amount),
            f._mm512_sub_pd(f._mm512_mul_pd(a, mmr), b1),
        );
        let notional_at = f._mm512_mul_pd(a, x);
        let below = f._mm512_cmp_pd_mask::<_CMP_LT_OQ>(notional_at, floor);
        // Without a next bracket `next_floor` is NaN, which compares false.
        let above = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(notional_at, next_floor) & !below;
        // Rare, so divided only when a lane needs it: one division for both clamps.
        let clamped = below | above;
        let x = if clamped == 0 {
            x
        } else {
            let bound = select(simd, below, floor, next_floor);
            select(simd, clamped, f._mm512_div_pd(bound, a), x)
        };
        let priced = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(x, zero) & finite(simd, x);
        let price = select(simd, linear, x, f._mm512_div_pd(f._mm512_set1_pd(1.0), x));
        let liquidation = select(
            simd,
            exposed & finite(simd, balance) & !started & priced,
            price,
            nan,
        );

        // Bankruptcy price: x = −b0/b1, an inverse contract's price 1/x = −b1/b0.
        let balance: __m512d = cast(rows.bankruptcy_balance);
        let b0 = b0_of(balance);
        // One division either way: each lane's operands are picked first.
        let price = f._mm512_div_pd(
            negate(simd, select(simd, linear, b0, b1)),
            select(simd, linear, b1, b0),
        );
        let priced = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(price, zero) & finite(simd, price);
        let bankruptcy = select(simd, exposed & finite(simd, balance) & priced, price, nan);

        // ADL score: uPnL·over / (entry value·under), the operands picked by profit.
        let upnl: __m512d = cast(rows.upnl);
        let notional: __m512d = cast(rows.notional);
        let margin_balance: __m512d = cast(rows.margin_balance);
        let scored = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(entry_value, zero)
            & f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(notional, zero)
            & f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(margin_balance, zero);
        let profitable = f._mm512_cmp_pd_mask::<_CMP_GT_OQ>(upnl, zero);
        let over = select(simd, profitable, notional, margin_balance);
        let under = select(simd, profitable, margin_balance, notional);
        let score = f._mm512_div_pd(
            f._mm512_mul_pd(upnl, over),
            f._mm512_mul_pd(entry_value, under),
        );
        let score = select(simd, exposed & scored, score, nan);
        [cast(liquidation), cast(bankruptcy), cast(score)]
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::params::PerpetualParams;
    use crate::perp::{self, ContractKind, PositionTerms};
    use crate::test_rng::Rng;
    use crate::tiers::TierTable;

    /// A value from a list that reaches every branch of the steps: zeros of both signs,
    /// ordinary magnitudes of both signs, extremes, infinities and NaN.
    fn awkward(rng: &mut Rng, ordinary: f64) -> f64 {
        let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
        sign * match rng.below(24) {
            0 => 0.0,
            1 => f64::INFINITY,
            2 => f64::NAN,
            3 => 1e300,
            4 => 1e-300,
            5 => f64::MIN_POSITIVE,
            _ => ordinary * (rng.below(1_000_000) as f64 + 1.0) / 1e5,
        }
    }

    /// A contract of either kind, with 1 to [`TIERS`] brackets on a ladder that starts
    /// anywhere from tiny to huge, or a fixed rate with a maintenance amount.
    fn contract(rng: &mut Rng) -> PerpetualParams {
        let kind = if rng.below(2) == 0 {
            ContractKind::Linear
        } else {
            ContractKind::Inverse
        };
        let size = [0.001, 0.01, 1.0, 10.0, 100.0][rng.below(5) as usize];
        let tiers = if rng.below(6) == 0 {
            TierTable::fixed(
                rng.below(100) as f64 / 1_000.0,
                rng.below(2_000) as f64 - 1_000.0,
            )
        } else {
            let n = 1 + rng.below(TIERS as u64) as usize;
            let step = [1.0, 50_000.0, 1e7][rng.below(3) as usize];
            let mut floor = 0.0;
            let mut mmr = 0.002 + rng.below(10) as f64 / 1_000.0;
            let brackets: Vec<_> = (0..n)
                .map(|k| {
                    if k > 0 {
                        floor += step * (rng.below(50) as f64 + 1.0);
                        mmr += rng.below(3) as f64 / 200.0;
                    }
                    // Leverage just inside 1/mmr, or none.
                    let leverage = if rng.below(5) == 0 {
                        f64::INFINITY
                    } else {
                        (1.0 / mmr).floor() - 1.0
                    };
                    (floor, mmr, leverage)
                })
                .collect();
            TierTable::new(&brackets)
        }
        .expect("a valid tier table");
        PerpetualParams::new(kind, size, rng.below(3) as u32, tiers).expect("a valid contract")
    }

    /// A balance at an edge of the liquidation price's search for `qty` contracts entered
    /// at `entry`: where the margin balance less the maintenance margin is zero at no
    /// notional (the search does not start), or at a bracket's floor (the root lies on
    /// the floor, and rounding may put it a hair outside its bracket).
    fn balance_at_edge(contract: &PerpetualParams, qty: f64, entry: f64, rng: &mut Rng) -> f64 {
        let a = qty.abs() * contract.contract_size;
        let side = qty.signum();
        let linear = contract.kind == ContractKind::Linear;
        let entry_value = if linear { a * entry } else { a / entry };
        // balance(x) = b0 + slope·N at a notional N, slope ±1; b0 = balance ∓ side·EV.
        let slope = if linear { side } else { -side };
        let brackets = contract.tiers.tiers();
        let b0 = if rng.below(3) == 0 {
            -brackets[0].maintenance_amount
        } else {
            let k = rng.below(brackets.len() as u64) as usize;
            let tier = &brackets[k];
            (tier.floor * tier.mmr - tier.maintenance_amount) - slope * tier.floor
        };
        if linear {
            b0 + side * entry_value
        } else {
            b0 - side * entry_value
        }
    }

    /// The one-row margins step: [`perp::PositionTerms::margins`] and the cross
    /// contribution, as `valuation` computes them.
    fn one_row_margins(quote: &Quote<'_>, rows: &MarginInputs, lane: usize) -> [u64; 8] {
        let qty = rows.qty[lane];
        if qty == 0.0 {
            return [0, 0, 0, 0, 1, 0, 0, 0];
        }
        let contract = quote.contract;
        let m = PositionTerms::new(contract, qty, rows.entry_price[lane], rows.leverage[lane])
            .margins(contract, &quote.mark);
        let cross = rows.isolated_margin[lane].is_nan();
        let contribution = |x: f64| if cross { x * quote.settle_price } else { 0.0 };
        [
            m.notional.to_bits(),
            m.upnl.to_bits(),
            m.initial_margin.to_bits(),
            m.maintenance_margin.to_bits(),
            m.tier as u64 + 1,
            contribution(m.upnl).to_bits(),
            contribution(m.initial_margin).to_bits(),
            contribution(m.maintenance_margin).to_bits(),
        ]
    }

    /// `valuation`'s balances of one row: isolated `(m, m, m + uPnL)`, or from its
    /// account's backing (wallet, holdings value, cross maintenance, cross uPnL, equity).
    fn one_row_balances(
        quote: &Quote<'_>,
        upnl: f64,
        rows: &BalanceInputs,
        lane: usize,
    ) -> [u64; 3] {
        let margin = rows.isolated_margin[lane];
        let [wallet, holdings_value, cross_maintenance, cross_upnl, equity] =
            rows.backing.map(|figure| figure[lane]);
        let balances = if margin.is_nan() {
            let other_upnl = cross_upnl - upnl * quote.settle_price;
            let other_maintenance =
                cross_maintenance - rows.maintenance_margin[lane] * quote.settle_price;
            [
                (wallet - other_maintenance + other_upnl) * quote.per_settle_unit,
                (holdings_value + other_upnl) * quote.per_settle_unit,
                equity * quote.per_settle_unit,
            ]
        } else {
            [margin, margin, margin + upnl]
        };
        balances.map(f64::to_bits)
    }

    /// The one-row prices step, as `valuation` computes it.
    fn one_row_prices(quote: &Quote<'_>, rows: &PriceInputs, lane: usize) -> [u64; 3] {
        let contract = quote.contract;
        let qty = rows.qty[lane];
        let exposure = (qty != 0.0)
            .then(|| {
                perp::Exposure::new(
                    contract.kind,
                    contract.contract_size,
                    qty,
                    rows.entry_price[lane],
                )
            })
            .flatten();
        let prices = match exposure {
            Some(exposure) => [
                exposure
                    .liquidation_price(rows.liquidation_balance[lane], &contract.tiers)
                    .unwrap_or(f64::NAN),
                exposure
                    .bankruptcy_price(rows.bankruptcy_balance[lane])
                    .unwrap_or(f64::NAN),
                perp::adl_score(
                    rows.upnl[lane],
                    exposure.entry_value(),
                    rows.notional[lane],
                    rows.margin_balance[lane],
                ),
            ],
            None => [f64::NAN; 3],
        };
        prices.map(f64::to_bits)
    }

    #[test]
    fn every_lane_gives_the_one_row_steps_bits() {
        // 3 000 registers over 300 sets of 1 to 16 contracts of 1 to 8 brackets (fixed
        // tables among them), with awkward quantities, prices, leverages, margins and
        // balances: every figure of every lane is the one-row step's, bit for bit. The
        // balances are mostly near the positions' own (so that the searches end in every
        // bracket), and sometimes anything.
        let Some(_) = pulp::x86::V4::try_new() else {
            return; // No AVX-512 here: the callers keep the one-row steps.
        };
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut priced = [0usize; 3];
        let mut brackets_reached = [false; TIERS];
        for set in 0..300 {
            let n_contracts = 1 + set % CONTRACTS;
            let contracts: Vec<PerpetualParams> =
                (0..n_contracts).map(|_| contract(&mut rng)).collect();
            let asset_prices = [1.0, 61_234.5, 0.25];
            let quotes: Vec<Quote<'_>> = contracts
                .iter()
                .map(|c| {
                    let mark = match rng.below(10) {
                        0 => 1e-9,
                        1 => 1e12,
                        _ => (rng.below(10_000_000) + 1) as f64 / 100.0,
                    };
                    Quote::new(c, mark, &asset_prices)
                })
                .collect();
            let lanes = PositionLanes::new(&quotes).expect("the tables take them");
            for _ in 0..10 {
                let mut margins_in = MarginInputs::default();
                for lane in 0..LANES {
                    let id = rng.below(n_contracts as u64) as u32;
                    let mark = quotes[id as usize].mark.mark();
                    margins_in.instrument[lane] = id;
                    let contract = quotes[id as usize].contract;
                    margins_in.qty[lane] = if rng.below(6) == 0 {
                        // A notional at a bracket's floor (exactly, often).
                        let brackets = contract.tiers.tiers();
                        let floor = brackets[rng.below(brackets.len() as u64) as usize].floor;
                        match contract.kind {
                            ContractKind::Linear => floor / contract.contract_size / mark,
                            ContractKind::Inverse => floor * mark / contract.contract_size,
                        }
                    } else {
                        awkward(&mut rng, 5_000.0)
                    };
                    margins_in.entry_price[lane] = if rng.below(4) == 0 {
                        awkward(&mut rng, mark)
                    } else {
                        mark * (0.5 + rng.below(1_000) as f64 / 1_000.0)
                    };
                    margins_in.leverage[lane] = match rng.below(3) {
                        0 => f64::NAN,
                        1 => 1.0 + rng.below(200) as f64,
                        _ => awkward(&mut rng, 10.0),
                    };
                    margins_in.isolated_margin[lane] = match rng.below(3) {
                        0 => f64::NAN,
                        _ => awkward(&mut rng, 1_000.0),
                    };
                }
                let margins = lanes.register_margins(&margins_in);
                for lane in 0..LANES {
                    let quote = &quotes[margins_in.instrument[lane] as usize];
                    let lane_bits = [
                        margins.notional[lane].to_bits(),
                        margins.upnl[lane].to_bits(),
                        margins.initial_margin[lane].to_bits(),
                        margins.maintenance_margin[lane].to_bits(),
                        u64::from(margins.tier[lane]),
                        margins.cross_upnl[lane].to_bits(),
                        margins.cross_initial[lane].to_bits(),
                        margins.cross_maintenance[lane].to_bits(),
                    ];
                    let expected = one_row_margins(quote, &margins_in, lane);
                    assert_eq!(lane_bits, expected, "set {set}, margins lane {lane}");
                    brackets_reached[usize::from(margins.tier[lane]) - 1] = true;
                }

                let mut prices_in = PriceInputs {
                    qty: margins_in.qty,
                    entry_price: margins_in.entry_price,
                    instrument: margins_in.instrument,
                    upnl: margins.upnl,
                    notional: margins.notional,
                    ..PriceInputs::default()
                };
                for lane in 0..LANES {
                    let scale = margins.notional[lane].abs().max(1.0);
                    let contract = quotes[prices_in.instrument[lane] as usize].contract;
                    let (qty, entry) = (prices_in.qty[lane], prices_in.entry_price[lane]);
                    let balance = |rng: &mut Rng| match rng.below(5) {
                        0 => awkward(rng, scale),
                        1 => balance_at_edge(contract, qty, entry, rng),
                        _ => scale * (rng.below(2_000) as f64 - 1_000.0) / 4_000.0,
                    };
                    prices_in.liquidation_balance[lane] = balance(&mut rng);
                    prices_in.bankruptcy_balance[lane] = balance(&mut rng);
                    prices_in.margin_balance[lane] = balance(&mut rng);
                }
                let prices = lanes.register_prices(&prices_in);
                let mut balance_in = BalanceInputs {
                    isolated_margin: margins_in.isolated_margin,
                    maintenance_margin: margins.maintenance_margin,
                    ..BalanceInputs::default()
                };
                for figure in &mut balance_in.backing {
                    for value in figure.iter_mut() {
                        *value = awkward(&mut rng, 1e6);
                    }
                }
                let balances =
                    lanes.register_balances(prices_in.instrument, prices_in.upnl, &balance_in);
                for lane in 0..LANES {
                    let quote = &quotes[prices_in.instrument[lane] as usize];
                    let lane_bits = [0, 1, 2].map(|k| prices[k][lane].to_bits());
                    let expected = one_row_prices(quote, &prices_in, lane);
                    assert_eq!(lane_bits, expected, "set {set}, prices lane {lane}");
                    let lane_bits = [0, 1, 2].map(|k| balances[k][lane].to_bits());
                    let expected = one_row_balances(quote, prices_in.upnl[lane], &balance_in, lane);
                    assert_eq!(lane_bits, expected, "set {set}, balances lane {lane}");
                    for (count, price) in priced.iter_mut().zip(&prices) {
                        *count += usize::from(!price[lane].is_nan());
                    }
                }
            }
        }
        // Every bracket is reached, and each price is found in many lanes and missing
        // in many.
        assert!(brackets_reached.iter().all(|&b| b), "{brackets_reached:?}");
        for count in priced {
            assert!((2_000..22_000).contains(&count), "{priced:?}");
        }
    }

    #[test]
    fn columns_of_any_length_go_through_the_steps() {
        // Runs of 0 to 40 rows (whole registers and a part one) give each row the
        // register steps' figures, with the leverage and isolated columns present or
        // not, and write nothing past the run.
        let Some(_) = pulp::x86::V4::try_new() else {
            return;
        };
        let mut rng = Rng(99);
        let contracts: Vec<PerpetualParams> = (0..5).map(|_| contract(&mut rng)).collect();
        let asset_prices = [1.0, 60_000.0, 2.0];
        let quotes: Vec<Quote<'_>> = contracts
            .iter()
            .map(|c| Quote::new(c, 3_000.0 + rng.below(60_000) as f64, &asset_prices))
            .collect();
        let lanes = PositionLanes::new(&quotes).unwrap();
        let mut backed_prices = 0;
        // Which spans of accounts (last less first, 8 or more as 8) registers had.
        let mut spans = [false; LANES + 1];
        for n in 0..=40 {
            let qty: Vec<f64> = (0..n).map(|_| awkward(&mut rng, 100.0)).collect();
            let entry: Vec<f64> = (0..n).map(|_| 1_000.0 + rng.below(90_000) as f64).collect();
            let instrument: Vec<u32> = (0..n).map(|_| rng.below(5) as u32).collect();
            let leverage: Vec<f64> = (0..n).map(|_| 1.0 + rng.below(50) as f64).collect();
            let isolated: Vec<f64> = (0..n)
                .map(|_| [f64::NAN, 250.0][rng.below(2) as usize])
                .collect();
            for with_columns in [false, true] {
                let mut out: Vec<Vec<f64>> = vec![vec![-7.0; n + 1]; 7];
                let mut tier = vec![0xA5u8; n + 1];
                {
                    let [notional, upnl, initial, maintenance, cu, ci, cm] = &mut out[..] else {
                        unreachable!()
                    };
                    lanes.margins(
                        MarginRows {
                            qty: &qty,
                            entry_price: &entry,
                            instrument: &instrument,
                            leverage: with_columns.then_some(&leverage[..]),
                            isolated_margin: with_columns.then_some(&isolated[..]),
                        },
                        MarginColumns {
                            notional: &mut notional[..n],
                            upnl: &mut upnl[..n],
                            initial_margin: &mut initial[..n],
                            maintenance_margin: &mut maintenance[..n],
                            tier: &mut tier[..n],
                            cross_upnl: &mut cu[..n],
                            cross_initial: &mut ci[..n],
                            cross_maintenance: &mut cm[..n],
                        },
                    );
                }
                assert!(out.iter().all(|column| column[n] == -7.0) && tier[n] == 0xA5);
                for row in 0..n {
                    let nan = f64::NAN;
                    let mut one = MarginInputs {
                        qty: [0.0; LANES],
                        entry_price: [0.0; LANES],
                        instrument: [0; LANES],
                        leverage: [nan; LANES],
                        isolated_margin: [nan; LANES],
                    };
                    one.qty[0] = qty[row];
                    one.entry_price[0] = entry[row];
                    one.instrument[0] = instrument[row];
                    if with_columns {
                        one.leverage[0] = leverage[row];
                        one.isolated_margin[0] = isolated[row];
                    }
                    let quote = &quotes[instrument[row] as usize];
                    let expected = one_row_margins(quote, &one, 0);
                    let got = [
                        out[0][row].to_bits(),
                        out[1][row].to_bits(),
                        out[2][row].to_bits(),
                        out[3][row].to_bits(),
                        u64::from(tier[row]),
                        out[4][row].to_bits(),
                        out[5][row].to_bits(),
                        out[6][row].to_bits(),
                    ];
                    assert_eq!(got, expected, "{n} rows, row {row}");
                }

                // Prices over the same rows, from balances in the output columns.
                let balances: Vec<[f64; 3]> = (0..n)
                    .map(|_| [0, 1, 2].map(|_| rng.below(20_000) as f64 - 5_000.0))
                    .collect();
                let mut prices: Vec<Vec<f64>> = (0..3)
                    .map(|k| {
                        let mut column: Vec<f64> = balances.iter().map(|b| b[k]).collect();
                        column.push(-7.0);
                        column
                    })
                    .collect();
                {
                    let [liquidation, bankruptcy, score] = &mut prices[..] else {
                        unreachable!()
                    };
                    lanes.prices(
                        PriceRows {
                            qty: &qty,
                            entry_price: &entry,
                            instrument: &instrument,
                            upnl: &out[1][..n],
                            notional: &out[0][..n],
                        },
                        PositionPrices {
                            liquidation_price: &mut liquidation[..n],
                            bankruptcy_price: &mut bankruptcy[..n],
                            adl_score: &mut score[..n],
                        },
                    );
                }
                assert!(prices.iter().all(|column| column[n] == -7.0));
                for row in 0..n {
                    let mut one = PriceInputs::default();
                    one.qty[0] = qty[row];
                    one.entry_price[0] = entry[row];
                    one.instrument[0] = instrument[row];
                    one.upnl[0] = out[1][row];
                    one.notional[0] = out[0][row];
                    [
                        one.liquidation_balance[0],
                        one.bankruptcy_balance[0],
                        one.margin_balance[0],
                    ] = balances[row];
                    let quote = &quotes[instrument[row] as usize];
                    let expected = one_row_prices(quote, &one, 0);
                    let got = [0, 1, 2].map(|k| prices[k][row].to_bits());
                    assert_eq!(got, expected, "{n} rows, prices of row {row}");
                }

                // The same rows laid out by account (ascending ids from 1 000, a few rows
                // each, with gaps: some registers' accounts lie within eight of each other
                // and some do not), their balances worked out in the lanes.
                let first = 1_000u32;
                let mut account = Vec::with_capacity(n);
                let mut id = first + rng.below(3) as u32;
                for _ in 0..n {
                    if rng.below(3) == 0 {
                        id += 1 + [0, 0, 1, 9][rng.below(4) as usize];
                    }
                    account.push(id);
                }
                let height = (id - first) as usize + 1 + LANES;
                let backing: Vec<Vec<f64>> = (0..5)
                    .map(|_| (0..height).map(|_| awkward(&mut rng, 50_000.0)).collect())
                    .collect();
                let mut backed: Vec<Vec<f64>> = vec![vec![-7.0; n + 1]; 3];
                {
                    let [liquidation, bankruptcy, score] = &mut backed[..] else {
                        unreachable!()
                    };
                    lanes.prices_from_backing(
                        PriceRows {
                            qty: &qty,
                            entry_price: &entry,
                            instrument: &instrument,
                            upnl: &out[1][..n],
                            notional: &out[0][..n],
                        },
                        BalanceRows {
                            account: &account,
                            isolated_margin: with_columns.then_some(&isolated[..]),
                            maintenance_margin: &out[3][..n],
                            backing: AccountBacking {
                                first,
                                wallet: &backing[0],
                                holdings_value: &backing[1],
                                cross_maintenance: &backing[2],
                                cross_upnl: &backing[3],
                                equity: &backing[4],
                            },
                        },
                        PositionPrices {
                            liquidation_price: &mut liquidation[..n],
                            bankruptcy_price: &mut bankruptcy[..n],
                            adl_score: &mut score[..n],
                        },
                    );
                }
                assert!(backed.iter().all(|column| column[n] == -7.0));
                for row in 0..n {
                    let quote = &quotes[instrument[row] as usize];
                    let mut one = BalanceInputs::default();
                    one.isolated_margin[0] = if with_columns {
                        isolated[row]
                    } else {
                        f64::NAN
                    };
                    one.maintenance_margin[0] = out[3][row];
                    for (figure, column) in one.backing.iter_mut().zip(&backing) {
                        figure[0] = column[(account[row] - first) as usize];
                    }
                    let balances =
                        one_row_balances(quote, out[1][row], &one, 0).map(f64::from_bits);
                    let mut priced = PriceInputs::default();
                    priced.qty[0] = qty[row];
                    priced.entry_price[0] = entry[row];
                    priced.instrument[0] = instrument[row];
                    priced.upnl[0] = out[1][row];
                    priced.notional[0] = out[0][row];
                    [
                        priced.liquidation_balance[0],
                        priced.bankruptcy_balance[0],
                        priced.margin_balance[0],
                    ] = balances;
                    let expected = one_row_prices(quote, &priced, 0);
                    let got = [0, 1, 2].map(|k| backed[k][row].to_bits());
                    assert_eq!(got, expected, "{n} rows by account, row {row}");
                    backed_prices += usize::from(!backed[0][row].is_nan());
                }
                for window in account.windows(LANES) {
                    spans[((window[LANES - 1] - window[0]) as usize).min(LANES)] = true;
                }
            }
        }
        // Lanes found prices from their accounts' backing, and registers' accounts
        // spanned every width up to eight and beyond.
        assert!(backed_prices > 100, "{backed_prices}");
        assert!(spans.iter().all(|&s| s), "{spans:?}");
    }

    #[test]
    fn the_lanes_run_where_the_cpu_has_them_and_the_tables_take_the_contracts() {
        let has = pulp::x86::V4::try_new().is_some();
        let mut rng = Rng(5);
        let contracts: Vec<PerpetualParams> =
            (0..CONTRACTS + 1).map(|_| contract(&mut rng)).collect();
        let quotes: Vec<Quote<'_>> = contracts
            .iter()
            .map(|c| Quote::new(c, 100.0, &[1.0, 1.0, 1.0]))
            .collect();
        assert_eq!(PositionLanes::new(&quotes[..CONTRACTS]).is_some(), has);
        // One contract more than the tables.
        assert!(PositionLanes::new(&quotes).is_none());
        // A contract with more brackets than the tables.
        let many: Vec<_> = (0..=TIERS)
            .map(|k| (k as f64 * 1_000.0, 0.001 * (k + 1) as f64, 10.0))
            .collect();
        let wide =
            PerpetualParams::new(ContractKind::Linear, 1.0, 0, TierTable::new(&many).unwrap())
                .unwrap();
        let quote = Quote::new(&wide, 100.0, &[1.0]);
        assert!(PositionLanes::new(&[quote]).is_none());
    }
}
