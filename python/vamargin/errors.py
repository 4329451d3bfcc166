"""The exception hierarchy (defined in the Rust extension, so kernels and Python raise the
same classes).

- ``MarginError(ValueError)``: base of every vamargin error.
- ``ConfigError``: the risk configuration is invalid; the message names the key.
- ``DataError``: a book, price or scenario table is invalid; the message names the table,
  column and first offending row (0-based).
- ``EligibilityError``: an account does what its eligibility does not allow.
"""

from vamargin._core import ConfigError, DataError, EligibilityError, MarginError

__all__ = ["ConfigError", "DataError", "EligibilityError", "MarginError"]
