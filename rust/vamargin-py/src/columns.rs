//! Turning core result structs into numpy columns.

use numpy::{Element, IntoPyArray, PyArray1};
use pyo3::prelude::*;

/// A numpy column holding `field(item)` for every item, in order.
pub fn column<'py, T, U: Element>(
    py: Python<'py>,
    items: &[T],
    field: impl Fn(&T) -> U,
) -> Bound<'py, PyArray1<U>> {
    items.iter().map(field).collect::<Vec<_>>().into_pyarray(py)
}
