//! How a kernel runs its per-row steps: eight rows at a time on AVX-512 where it can
//! (the revaluation's and stress's `position_lanes`, funding's `funding_run` and
//! `run_sum_lanes`), or one at a time. Both give the same results, so the choice is
//! for A/B timing and for the tests that hold the two to each other.

/// How a kernel runs its per-row steps. Both give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Steps {
    /// Eight rows at a time where the CPU has AVX-512 and the kernel's tables fit
    /// (contracts, brackets, instruments); else one.
    Best,
    /// One row at a time.
    Scalar,
}

impl Steps {
    /// [`Steps::Scalar`] when `VAMARGIN_SCALAR_ROWS` asks for it (for A/B timing; any
    /// value but empty or `0`), else [`Steps::Best`].
    pub(crate) fn from_environment() -> Self {
        match std::env::var_os("VAMARGIN_SCALAR_ROWS") {
            Some(v) if !v.is_empty() && v != "0" => Steps::Scalar,
            _ => Steps::Best,
        }
    }

    /// `make()`'s eight-rows-at-a-time kernel when these steps ask for one (`make` says
    /// `None` where the CPU or the kernel's tables do not allow it), else `None`.
    pub(crate) fn lanes<T>(self, make: impl FnOnce() -> Option<T>) -> Option<T> {
        match self {
            Steps::Best => make(),
            Steps::Scalar => None,
        }
    }
}
