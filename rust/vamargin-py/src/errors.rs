//! The exception hierarchy, defined once here and re-exported by `vamargin`.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use vamargin_core::Error;

create_exception!(
    vamargin._core,
    MarginError,
    PyValueError,
    "Base class of every vamargin error."
);
create_exception!(
    vamargin._core,
    ConfigError,
    MarginError,
    "The risk configuration is invalid."
);
create_exception!(
    vamargin._core,
    DataError,
    MarginError,
    "A book, price or scenario table is invalid."
);
create_exception!(
    vamargin._core,
    EligibilityError,
    MarginError,
    "An account does something its eligibility does not allow (e.g. a loan without credit approval)."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("MarginError", py.get_type::<MarginError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("EligibilityError", py.get_type::<EligibilityError>())?;
    Ok(())
}

/// Maps a core error to its Python class, prefixing `context` (e.g. a table name or a
/// config key) to the message.
pub fn to_py(error: Error, context: &str) -> PyErr {
    let message = match (&error, context.is_empty()) {
        (_, true) => error.to_string(),
        // A config key continues the caller's path: `perpetual[X]` + `tiers[1].mmr`.
        (Error::Config { .. }, false) => format!("{context}.{error}"),
        (_, false) => format!("{context}: {error}"),
    };
    match error {
        Error::Config { .. } => ConfigError::new_err(message),
        Error::Overflow { .. }
        | Error::DuplicateKey { .. }
        | Error::UnknownKey { .. }
        | Error::IdOutOfRange { .. }
        | Error::LengthMismatch { .. } => DataError::new_err(message),
    }
}
