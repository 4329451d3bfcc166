//! The book as the kernels see it: account index, groupings, and `CoreBook`, a handle on
//! a validated book's numpy columns that every kernel borrows (never copies).

use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;
use vamargin_core as core;
use vamargin_core::{AccountIndex, Accounts, Book, Grouping, Holdings, Positions};

use crate::column_pool::{give_back, result_array, Recycled};
use crate::errors::{to_py, DataError};
use crate::params::PyEngineParams;
use crate::pool;

/// `account_id` → dense row of the accounts table.
#[pyclass(frozen, name = "AccountIndex", module = "vamargin._core")]
pub struct PyAccountIndex {
    inner: AccountIndex,
}

#[pymethods]
impl PyAccountIndex {
    /// Indexes `ids` (the accounts table's `account_id` column); a duplicate is a
    /// `DataError` naming its row.
    #[new]
    fn new(py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<Self> {
        let ids = ids.as_slice()?;
        let pool = pool::current()?;
        let inner = py
            .detach(|| pool::install(&pool, || AccountIndex::build(ids)))
            .map_err(|e| to_py(e, "accounts.account_id"))?;
        Ok(PyAccountIndex { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Dense row of one account id, or `None`.
    fn get(&self, account_id: i64) -> Option<u32> {
        self.inner.get(account_id)
    }

    /// Dense rows of `ids`; an unknown id is a `DataError` naming `context` and its row.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray1<'py, i64>,
        context: &str,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let ids = ids.as_slice()?;
        let pool = pool::current()?;
        let rows = py
            .detach(|| pool::install(&pool, || self.inner.lookup_all_into(ids, &Recycled)))
            .map_err(|e| to_py(e, context))?;
        result_array(py, rows)
    }
}

/// Rows of a table grouped by account (a stable counting sort, built once per book).
#[pyclass(frozen, name = "Grouping", module = "vamargin._core")]
pub struct PyGrouping {
    pub inner: Grouping,
}

#[pymethods]
impl PyGrouping {
    /// Groups rows by account and, within an account, by `keys` (unique per account).
    #[new]
    #[pyo3(signature = (account_rows, n_accounts, context, keys=None))]
    fn new(
        py: Python<'_>,
        account_rows: PyReadonlyArray1<'_, u32>,
        n_accounts: usize,
        context: &str,
        keys: Option<PyReadonlyArray1<'_, u32>>,
    ) -> PyResult<Self> {
        let rows = account_rows.as_slice()?;
        let keys = keys.as_ref().map(|k| k.as_slice()).transpose()?;
        let pool = pool::current()?;
        let inner = py
            .detach(|| {
                pool::install(&pool, || {
                    Grouping::build_into(rows, keys, n_accounts, "account", &Recycled)
                })
            })
            .map_err(|e| to_py(e, context))?;
        Ok(PyGrouping { inner })
    }

    #[getter]
    fn is_sorted(&self) -> bool {
        self.inner.is_sorted()
    }

    #[getter]
    fn n_accounts(&self) -> usize {
        self.inner.n_accounts()
    }
}

impl Drop for PyGrouping {
    /// The offsets and order go to the column pool, for the next book of this shape.
    fn drop(&mut self) {
        let (offsets, order) = self.inner.take_columns();
        give_back(offsets);
        if let Some(order) = order {
            give_back(order);
        }
    }
}

/// A validated, config-bound book: handles on its numpy columns and groupings.
#[pyclass(frozen, name = "CoreBook", module = "vamargin._core")]
pub struct PyCoreBook {
    account_id: Py<PyArray1<i64>>,
    credit_limit: Py<PyArray1<f64>>,
    holding_account: Py<PyArray1<u32>>,
    holding_asset: Py<PyArray1<u32>>,
    holding_amount: Py<PyArray1<f64>>,
    holding_groups: Py<PyGrouping>,
    position_account: Py<PyArray1<u32>>,
    position_instrument: Py<PyArray1<u32>>,
    qty: Py<PyArray1<f64>>,
    entry_price: Py<PyArray1<f64>>,
    isolated_margin: Option<Py<PyArray1<f64>>>,
    leverage: Option<Py<PyArray1<f64>>>,
    position_groups: Py<PyGrouping>,
}

#[pymethods]
impl PyCoreBook {
    #[new]
    #[pyo3(signature = (
        account_id, credit_limit,
        holding_account, holding_asset, holding_amount, holding_groups,
        position_account, position_instrument, qty, entry_price, isolated_margin, leverage,
        position_groups,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        account_id: Py<PyArray1<i64>>,
        credit_limit: Py<PyArray1<f64>>,
        holding_account: Py<PyArray1<u32>>,
        holding_asset: Py<PyArray1<u32>>,
        holding_amount: Py<PyArray1<f64>>,
        holding_groups: Py<PyGrouping>,
        position_account: Py<PyArray1<u32>>,
        position_instrument: Py<PyArray1<u32>>,
        qty: Py<PyArray1<f64>>,
        entry_price: Py<PyArray1<f64>>,
        isolated_margin: Option<Py<PyArray1<f64>>>,
        leverage: Option<Py<PyArray1<f64>>>,
        position_groups: Py<PyGrouping>,
    ) -> Self {
        PyCoreBook {
            account_id,
            credit_limit,
            holding_account,
            holding_asset,
            holding_amount,
            holding_groups,
            position_account,
            position_instrument,
            qty,
            entry_price,
            isolated_margin,
            leverage,
            position_groups,
        }
    }
}

/// Read-only borrows of a `CoreBook`'s columns, held while a kernel runs.
pub struct BorrowedBook<'py> {
    pub account_id: PyReadonlyArray1<'py, i64>,
    credit_limit: PyReadonlyArray1<'py, f64>,
    holding_account: PyReadonlyArray1<'py, u32>,
    holding_asset: PyReadonlyArray1<'py, u32>,
    holding_amount: PyReadonlyArray1<'py, f64>,
    position_account: PyReadonlyArray1<'py, u32>,
    position_instrument: PyReadonlyArray1<'py, u32>,
    qty: PyReadonlyArray1<'py, f64>,
    entry_price: PyReadonlyArray1<'py, f64>,
    isolated_margin: Option<PyReadonlyArray1<'py, f64>>,
    leverage: Option<PyReadonlyArray1<'py, f64>>,
    holding_groups: &'py Grouping,
    position_groups: &'py Grouping,
}

impl PyCoreBook {
    pub fn borrow<'py>(&'py self, py: Python<'py>) -> BorrowedBook<'py> {
        BorrowedBook {
            account_id: self.account_id.bind(py).readonly(),
            credit_limit: self.credit_limit.bind(py).readonly(),
            holding_account: self.holding_account.bind(py).readonly(),
            holding_asset: self.holding_asset.bind(py).readonly(),
            holding_amount: self.holding_amount.bind(py).readonly(),
            position_account: self.position_account.bind(py).readonly(),
            position_instrument: self.position_instrument.bind(py).readonly(),
            qty: self.qty.bind(py).readonly(),
            entry_price: self.entry_price.bind(py).readonly(),
            isolated_margin: self.isolated_margin.as_ref().map(|a| a.bind(py).readonly()),
            leverage: self.leverage.as_ref().map(|a| a.bind(py).readonly()),
            holding_groups: &self.holding_groups.get().inner,
            position_groups: &self.position_groups.get().inner,
        }
    }
}

/// Borrows `book`, checks it against `params` and runs `work(book, account_ids)` with the
/// GIL released, inside the vamargin pool; a core error becomes a Python error naming
/// `what`.
pub fn on_book<T: Send>(
    py: Python<'_>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    what: &str,
    work: impl FnOnce(&Book<'_>, &[i64]) -> core::Result<T> + Send,
) -> PyResult<T> {
    let borrowed = book.borrow(py);
    let (accounts, holdings, positions) = borrowed.columns()?;
    let account_ids = borrowed.account_id.as_slice()?;
    let pool = pool::current()?;
    // The book's id checks run in parallel too: inside the pool, without the GIL.
    py.detach(|| {
        pool::install(&pool, || {
            let core_book = Book::new(
                &params.inner,
                accounts,
                holdings,
                positions,
                borrowed.holding_groups,
                borrowed.position_groups,
            )
            .map_err(|e| (e, "book"))?;
            work(&core_book, account_ids).map_err(|e| (e, what))
        })
    })
    .map_err(|(e, context)| to_py(e, context))
}

pub fn optional_slice<'a>(
    array: &'a Option<PyReadonlyArray1<'_, f64>>,
) -> PyResult<Option<&'a [f64]>> {
    array
        .as_ref()
        .map(|a| a.as_slice().map_err(PyErr::from))
        .transpose()
}

impl BorrowedBook<'_> {
    /// The core's view for a single-account kernel, which checks the ids it reads: O(1).
    pub fn account_book(&self) -> PyResult<Book<'_>> {
        let (accounts, holdings, positions) = self.columns()?;
        Book::for_single_account(
            accounts,
            holdings,
            positions,
            self.holding_groups,
            self.position_groups,
        )
        .map_err(|e| to_py(e, "book"))
    }

    fn columns(&self) -> PyResult<(Accounts<'_>, Holdings<'_>, Positions<'_>)> {
        let accounts = Accounts {
            credit_limit: self.credit_limit.as_slice()?,
        };
        let holdings = Holdings {
            account: self.holding_account.as_slice()?,
            asset: self.holding_asset.as_slice()?,
            amount: self.holding_amount.as_slice()?,
        };
        let positions = Positions {
            account: self.position_account.as_slice()?,
            instrument: self.position_instrument.as_slice()?,
            qty: self.qty.as_slice()?,
            entry_price: self.entry_price.as_slice()?,
            isolated_margin: optional_slice(&self.isolated_margin)?,
            leverage: optional_slice(&self.leverage)?,
        };
        if self.account_id.len()? != accounts.credit_limit.len() {
            return Err(DataError::new_err(
                "accounts: account_id and credit_limit lengths differ",
            ));
        }
        Ok((accounts, holdings, positions))
    }
}

fn same_lengths(table: &str, lengths: &[usize]) -> PyResult<()> {
    if lengths.windows(2).all(|pair| pair[0] == pair[1]) {
        Ok(())
    } else {
        Err(DataError::new_err(format!(
            "{table}: columns have different lengths {lengths:?}"
        )))
    }
}

/// Position instruments resolved: `(instrument, key, used, first_unknown_row)`; see
/// `vamargin_core::binding::bind_positions`.
#[pyfunction]
#[pyo3(signature = (codes, lut, qty, isolated_margin, n_instruments))]
#[allow(clippy::type_complexity)]
pub fn bind_positions<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, i32>,
    lut: PyReadonlyArray1<'py, u32>,
    qty: PyReadonlyArray1<'py, f64>,
    isolated_margin: Option<PyReadonlyArray1<'py, f64>>,
    n_instruments: usize,
) -> PyResult<(
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<bool>>,
    Option<usize>,
)> {
    let (codes, lut, qty) = (codes.as_slice()?, lut.as_slice()?, qty.as_slice()?);
    let isolated = optional_slice(&isolated_margin)?;
    let mut lengths = vec![codes.len(), qty.len()];
    lengths.extend(isolated.map(<[f64]>::len));
    same_lengths("positions", &lengths)?;
    let pool = pool::current()?;
    let bound = py.detach(|| {
        pool::install(&pool, || {
            core::binding::bind_positions(codes, lut, qty, isolated, n_instruments, &Recycled)
        })
    });
    Ok((
        result_array(py, bound.instrument)?,
        result_array(py, bound.key)?,
        bound.used.into_pyarray(py),
        bound.first_unknown,
    ))
}

/// Holding assets resolved and loans checked: `(asset, used, first_unknown_row,
/// first_unborrowable_loan_row, first_unapproved_loan_row)`; see
/// `vamargin_core::binding::bind_holdings`.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn bind_holdings<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, i32>,
    lut: PyReadonlyArray1<'py, u32>,
    amount: PyReadonlyArray1<'py, f64>,
    account: PyReadonlyArray1<'py, u32>,
    borrowable: PyReadonlyArray1<'py, bool>,
    may_borrow: PyReadonlyArray1<'py, bool>,
) -> PyResult<(
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<bool>>,
    Option<usize>,
    Option<usize>,
    Option<usize>,
)> {
    let (codes, lut, amount) = (codes.as_slice()?, lut.as_slice()?, amount.as_slice()?);
    let (account, borrowable) = (account.as_slice()?, borrowable.as_slice()?);
    let may_borrow = may_borrow.as_slice()?;
    same_lengths("holdings", &[codes.len(), amount.len(), account.len()])?;
    let pool = pool::current()?;
    let bound = py.detach(|| {
        pool::install(&pool, || {
            core::binding::bind_holdings(
                codes, lut, amount, account, borrowable, may_borrow, &Recycled,
            )
        })
    });
    Ok((
        result_array(py, bound.asset)?,
        bound.used.into_pyarray(py),
        bound.first_unknown,
        bound.first_unborrowable_loan,
        bound.first_unapproved_loan,
    ))
}

/// A rule as Python states it: `(values, kind, bound, where_nonzero)`, `kind` one of
/// `"finite"`, `"finite_or_nan"` (`bound` unused), `"at_least"` and `"above"` (NaN
/// fails), `"at_least_or_nan"` and `"above_or_nan"` (NaN passes).
type RuleSpec<'py> = (
    PyReadonlyArray1<'py, f64>,
    String,
    f64,
    Option<PyReadonlyArray1<'py, f64>>,
);

/// The first rule (in order) that some row breaks and the first row breaking it, as
/// `(rule, row)`, or `None`; one parallel pass over the columns (see
/// `vamargin_core::scan::first_broken`).
#[pyfunction]
pub fn first_broken_rule(
    py: Python<'_>,
    rules: Vec<RuleSpec<'_>>,
) -> PyResult<Option<(usize, usize)>> {
    if rules.len() > core::scan::MAX_RULES {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "at most {} rules per call, got {}",
            core::scan::MAX_RULES,
            rules.len()
        )));
    }
    let mut lengths = Vec::with_capacity(2 * rules.len());
    let mut checked = Vec::with_capacity(rules.len());
    for (values, kind, bound, where_nonzero) in &rules {
        let values = values.as_slice()?;
        let where_nonzero = optional_slice(where_nonzero)?;
        lengths.push(values.len());
        lengths.extend(where_nonzero.map(<[f64]>::len));
        let at_least = |strict, allow_nan| core::scan::Rule::AtLeast {
            values,
            min: *bound,
            strict,
            allow_nan,
            where_nonzero,
        };
        checked.push(match kind.as_str() {
            "finite" | "finite_or_nan" => core::scan::Rule::Finite {
                values,
                allow_nan: kind == "finite_or_nan",
            },
            "at_least" => at_least(false, false),
            "above" => at_least(true, false),
            "at_least_or_nan" => at_least(false, true),
            "above_or_nan" => at_least(true, true),
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "unknown rule {kind:?} (finite, finite_or_nan, at_least, above, \
                     at_least_or_nan, above_or_nan)"
                )))
            }
        });
    }
    same_lengths("rule columns", &lengths)?;
    let pool = pool::current()?;
    Ok(py.detach(|| pool::install(&pool, || core::scan::first_broken(&checked))))
}

/// First row repeating the key of an earlier row of its account, for a grouping built
/// with these `keys`, or `None`; rows whose `qty` is 0 are skipped when `qty` is given.
#[pyfunction]
#[pyo3(signature = (keys, groups, qty=None))]
pub fn first_repeated_key(
    py: Python<'_>,
    keys: PyReadonlyArray1<'_, u32>,
    groups: &PyGrouping,
    qty: Option<PyReadonlyArray1<'_, f64>>,
) -> PyResult<Option<usize>> {
    let keys = keys.as_slice()?;
    let qty = optional_slice(&qty)?;
    let mut lengths = vec![keys.len(), groups.inner.n_rows()];
    lengths.extend(qty.map(<[f64]>::len));
    same_lengths("grouping keys", &lengths)?;
    let pool = pool::current()?;
    Ok(py.detach(|| pool::install(&pool, || core::first_repeated_key(keys, &groups.inner, qty))))
}
