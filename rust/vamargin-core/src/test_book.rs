//! A book for unit tests: columns owned in one place, grouped the way `Book.bind` groups
//! them, and viewed as a [`Book`] on demand.

use crate::book::{Accounts, Book, Grouping, Holdings, Positions};
use crate::params::EngineParams;

/// A small book's columns and groupings. Holdings are grouped by account then asset (as
/// the bindings do); positions by account, in row order.
pub(crate) struct TestBook {
    pub credit: Vec<f64>,
    pub h_account: Vec<u32>,
    pub h_asset: Vec<u32>,
    pub h_amount: Vec<f64>,
    pub p_account: Vec<u32>,
    pub p_instrument: Vec<u32>,
    pub qty: Vec<f64>,
    pub entry: Vec<f64>,
    pub isolated: Option<Vec<f64>>,
    pub holding_groups: Grouping,
    pub position_groups: Grouping,
}

impl TestBook {
    /// `credit` per account; holdings as `(account, asset, amount)` rows; positions as
    /// `(account, instrument, qty, entry price)` rows, with an isolated margin per row
    /// (NaN: cross) or none.
    pub(crate) fn new(
        credit: &[f64],
        holdings: &[(u32, u32, f64)],
        positions: &[(u32, u32, f64, f64)],
        isolated: Option<&[f64]>,
    ) -> Self {
        let n_accounts = credit.len();
        let h_account: Vec<u32> = holdings.iter().map(|h| h.0).collect();
        let h_asset: Vec<u32> = holdings.iter().map(|h| h.1).collect();
        let p_account: Vec<u32> = positions.iter().map(|p| p.0).collect();
        let holding_groups = Grouping::build(&h_account, Some(&h_asset), n_accounts, "holdings")
            .expect("test holdings group");
        let position_groups =
            Grouping::build(&p_account, None, n_accounts, "positions").expect("test positions");
        TestBook {
            credit: credit.to_vec(),
            h_amount: holdings.iter().map(|h| h.2).collect(),
            h_account,
            h_asset,
            p_instrument: positions.iter().map(|p| p.1).collect(),
            qty: positions.iter().map(|p| p.2).collect(),
            entry: positions.iter().map(|p| p.3).collect(),
            p_account,
            isolated: isolated.map(<[f64]>::to_vec),
            holding_groups,
            position_groups,
        }
    }

    /// The columns as a [`Book`] checked against `params`.
    pub(crate) fn book(&self, params: &EngineParams) -> Book<'_> {
        Book::new(
            params,
            Accounts {
                credit_limit: &self.credit,
            },
            Holdings {
                account: &self.h_account,
                asset: &self.h_asset,
                amount: &self.h_amount,
            },
            Positions {
                account: &self.p_account,
                instrument: &self.p_instrument,
                qty: &self.qty,
                entry_price: &self.entry,
                isolated_margin: self.isolated.as_deref(),
                leverage: None,
            },
            &self.holding_groups,
            &self.position_groups,
        )
        .expect("a valid test book")
    }
}
