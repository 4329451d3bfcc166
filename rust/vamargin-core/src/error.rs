//! The one error type of the core.
//!
//! Kernels trust validated input; these variants cover what the edge checks in Rust
//! (parameter tables, key indexes, column shapes) and what can fail at run time.

/// Everything the core can refuse, each variant carrying what a user needs to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A configuration parameter is invalid; the message names the key.
    #[error("{key}: {reason}")]
    Config { key: String, reason: String },
    /// A key column holds the same key twice.
    #[error("row {row}: duplicate key {key}")]
    DuplicateKey { row: usize, key: i64 },
    /// A foreign-key column refers to a key that does not exist.
    #[error("row {row}: unknown key {key}")]
    UnknownKey { row: usize, key: i64 },
    /// A dense id column holds an id outside its table.
    #[error("{column} row {row}: id {id} is out of range (table has {len} rows)")]
    IdOutOfRange {
        column: &'static str,
        row: usize,
        id: u64,
        len: usize,
    },
    /// An integer amount does not fit in `i64` (never wrapped).
    #[error("{what} overflows a 64-bit integer")]
    Overflow { what: &'static str },
    /// Two columns of one table, or a table and its index, disagree on length.
    #[error("{column}: length {actual} does not match {expected}")]
    LengthMismatch {
        column: &'static str,
        expected: usize,
        actual: usize,
    },
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Result with the core's error.
pub type Result<T> = std::result::Result<T, Error>;
