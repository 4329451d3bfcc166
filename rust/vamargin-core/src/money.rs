//! Money that moves: exact rounding to integer minor units, against the account.
//!
//! An amount credited to an account (negative = the account pays) is always rounded
//! toward −∞: a receiver gets the floor, a payer pays the ceiling. Inputs arrive as `f64`
//! but are read as the decimals they were written as (the shortest decimal that reads
//! back as the same `f64`), and products and quotients of them are rounded exactly: 10 000 × 0.08906 × 7
//! / 365 is exactly 17.08, never 17.09 through a binary representation error.
//!
//! The fast path evaluates the amount in `f64` and takes its floor when the value is far
//! enough from an integer that no representation error can cross it; otherwise (round
//! amounts are common with decimal inputs) the amount is recomputed in 256-bit integers.

use rayon::prelude::*;

use crate::book::Grouping;
use crate::error::{Error, Result};

const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `x` as `±mantissa · 10^exponent`: the shortest decimal that reads back as `x` (what
/// was written, for any input of up to 17 significant digits), or `None` for a
/// non-finite `x`.
pub fn to_decimal(x: f64) -> Option<(bool, u64, i32)> {
    if !x.is_finite() {
        return None;
    }
    if x == 0.0 {
        return Some((false, 0, 0));
    }
    // Rust prints the shortest round-trip representation: "4.0034e-5".
    let text = format!("{:e}", x.abs());
    let (digits, exponent) = text.split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let mantissa: u64 = format!("{whole}{fraction}").parse().ok()?;
    Some((x < 0.0, mantissa, exponent - fraction.len() as i32))
}

/// Decimal places of a minor unit that is a power of ten (`0.01` → 2); `None` otherwise.
pub fn minor_unit_decimals(minor_unit: f64) -> Option<u32> {
    (0..=18u32).find(|&k| {
        let unit = 1.0 / POW10[k as usize] as f64;
        (minor_unit - unit).abs() <= unit * 1e-12
    })
}

/// `multiplier / divisor`: a product of decimal inputs (and at most one decimal divisor)
/// small enough that multiplying it by an integer and flooring is exact `i128` work — the
/// fast path for a coefficient shared by many rows. Both integers are worked out once.
/// When both fit 64 bits, a row's quotient is estimated in `f64` and corrected exactly
/// (see [`Estimate`]), so the common row costs no division.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficient {
    /// `±numerator · 10^max(exponent, 0)`.
    multiplier: i128,
    /// `denominator · 10^max(−exponent, 0)`; `None` when that exceeds any `i128`.
    divisor: Option<i128>,
    estimate: Option<Estimate>,
}

/// A coefficient `multiplier / divisor` with a multiplier that fits `i64` and a divisor
/// below 2^61, floored by estimate and correction instead of a division (a 64-bit `idiv`
/// takes tens of cycles; this is a float multiplication and a few integer steps).
///
/// For `n` in `i64` the quotient `t = n · multiplier / divisor` is estimated as
/// `p = n · ratio` in `f64`. Each of the five roundings (`n`, the multiplier, the
/// divisor, their quotient, the product) is within 2^-53, so `|p − t| < |t| · 2^-50.6`,
/// below 0.32 when `|p| < 2^49`. Rounding `p` to the nearest integer `q` (adding
/// 1.5 · 2^52 leaves it in the low bits) gives `|q − t| < 0.82`, so `q` is `floor(t)` or
/// `floor(t) + 1`. The exact remainder `n · multiplier − q · divisor` then lies in
/// `[−divisor, divisor)`, within `i64`, so wrapping `i64` arithmetic gives it exactly,
/// and its sign says which.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    multiplier: i64,
    divisor: i64,
    ratio: f64,
}

/// Divisors below 2^61 keep a remainder within a divisor of 0 inside `i64`.
const ESTIMATE_MAX_DIVISOR: i128 = 1 << 61;
/// Quotients the `f64` estimate is trusted for: within 2^49, its error is below 0.32.
pub(crate) const ESTIMATE_MAX_QUOTIENT: f64 = (1u64 << 49) as f64;
/// 1.5 · 2^52: added to an `f64` below 2^51 in magnitude, it rounds it to the nearest
/// integer and leaves that integer in the low bits (the sum lies in `[2^52, 2^53)`, where
/// the spacing of `f64` is 1).
pub(crate) const ROUNDING_SHIFT: f64 = (3u64 << 51) as f64;

/// `x` rounded to the nearest integer (ties to even), as `i64`, for `|x| < 2^51`: adding
/// `ROUNDING_SHIFT` leaves the integer in the low bits, so no conversion instruction
/// (nor its handling of NaN and overflow) is needed. Beyond that range the result is
/// meaningless, but every step wraps rather than overflows.
#[inline(always)]
pub fn nearest_i64(x: f64) -> i64 {
    ((x + ROUNDING_SHIFT).to_bits() as i64).wrapping_sub(ROUNDING_SHIFT.to_bits() as i64)
}

/// `x` rounded to the nearest integer (ties to even), in `f64`, for `|x| < 2^51`: the
/// same rounding as [`nearest_i64`], without leaving `f64`.
#[inline(always)]
pub fn nearest_f64(x: f64) -> f64 {
    (x + ROUNDING_SHIFT) - ROUNDING_SHIFT
}

impl Estimate {
    /// An estimate no quotient is trusted with: [`Estimate::floor_times_flagged`] flags
    /// every `n` (its ratio is NaN), so a branch-free loop can give every row of a table
    /// an estimate and send the rows of this one down its exact path.
    pub const UNTRUSTED: Estimate = Estimate {
        multiplier: 0,
        divisor: 1,
        ratio: f64::NAN,
    };

    /// The estimate's parts, for a kernel that reads them lane by lane.
    pub(crate) fn multiplier(&self) -> i64 {
        self.multiplier
    }

    pub(crate) fn divisor(&self) -> i64 {
        self.divisor
    }

    pub(crate) fn ratio(&self) -> f64 {
        self.ratio
    }

    /// `floor(n · multiplier / divisor)`, or `None` when the quotient reaches 2^49.
    #[inline(always)]
    pub fn floor_times(&self, n: i64) -> Option<i64> {
        let (floor, trusted) = self.floor_times_flagged(n, n as f64);
        trusted.then_some(floor)
    }

    /// `(floor(n · multiplier / divisor), true)` when the quotient is below 2^49 in
    /// magnitude; otherwise `(anything, false)`. `n_f64` is `n` as an `f64` (equal to it
    /// exactly, below 2^53 in magnitude): a caller that has `n` in both forms saves the
    /// conversion. No branch: a loop over many rows folds the flags and redoes its rows
    /// another way when one is false.
    #[inline(always)]
    pub fn floor_times_flagged(&self, n: i64, n_f64: f64) -> (i64, bool) {
        let estimate = n_f64 * self.ratio;
        // NaN compares false: not trusted.
        let trusted = estimate.abs() < ESTIMATE_MAX_QUOTIENT;
        // Beyond the trusted range the bits below are meaningless, but every step wraps
        // rather than overflows.
        let nearest = nearest_i64(estimate);
        let remainder = n
            .wrapping_mul(self.multiplier)
            .wrapping_sub(nearest.wrapping_mul(self.divisor));
        (nearest.wrapping_sub(i64::from(remainder < 0)), trusted)
    }
}

/// `x` as a decimal with its trailing zeros removed from the mantissa.
fn stripped_decimal(x: f64) -> Option<(bool, u64, i32)> {
    let (negative, mut mantissa, mut exponent) = to_decimal(x)?;
    if mantissa == 0 {
        return Some((false, 0, 0));
    }
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    Some((negative, mantissa, exponent))
}

impl Coefficient {
    /// `sign · Π factors · 10^shift / divisor`, or `None` when the digits do not fit.
    pub fn new(negative: bool, factors: &[f64], divisor: Option<f64>, shift: i32) -> Option<Self> {
        let mut negative = negative;
        let mut numerator = 1u64;
        let mut exponent = shift;
        let mut denominator = 1u64;
        for &factor in factors {
            let (sign, mantissa, places) = stripped_decimal(factor)?;
            negative ^= sign;
            numerator = numerator.checked_mul(mantissa)?;
            exponent += places;
        }
        if let Some(divisor) = divisor {
            let (sign, mantissa, places) = stripped_decimal(divisor)?;
            if sign || mantissa == 0 {
                return None;
            }
            denominator = mantissa;
            exponent -= places;
        }
        let power = |k: i32| 10i128.checked_pow(k.unsigned_abs());
        let mut multiplier = i128::from(numerator);
        if exponent > 0 {
            multiplier = multiplier.checked_mul(power(exponent)?)?;
        }
        if negative {
            multiplier = -multiplier;
        }
        let divisor = if exponent < 0 {
            power(exponent).and_then(|p| p.checked_mul(i128::from(denominator)))
        } else {
            Some(i128::from(denominator))
        };
        let estimate = match (i64::try_from(multiplier), divisor) {
            (Ok(multiplier), Some(divisor)) if divisor < ESTIMATE_MAX_DIVISOR => Some(Estimate {
                multiplier,
                divisor: divisor as i64,
                ratio: multiplier as f64 / divisor as f64,
            }),
            _ => None,
        };
        Some(Coefficient {
            multiplier,
            divisor,
            estimate,
        })
    }

    /// The estimate-and-correct form, when the multiplier and divisor allow it.
    pub fn estimate(&self) -> Option<Estimate> {
        self.estimate
    }

    /// `floor(n · self)` exactly, or `None` when it does not fit the `i128` fast path.
    #[inline(always)]
    pub fn floor_times(&self, n: i128) -> Option<i64> {
        if let (Some(estimate), Ok(n)) = (&self.estimate, i64::try_from(n)) {
            if let Some(amount) = estimate.floor_times(n) {
                return Some(amount);
            }
        }
        self.floor_times_exact(n)
    }

    /// `floor(n · self)` by integer division.
    fn floor_times_exact(&self, n: i128) -> Option<i64> {
        let value = match (i64::try_from(n), i64::try_from(self.multiplier)) {
            // Two 64-bit factors: one widening multiplication that cannot overflow.
            (Ok(n), Ok(multiplier)) => i128::from(n) * i128::from(multiplier),
            _ => n.checked_mul(self.multiplier)?,
        };
        match self.divisor {
            // The divisor exceeds any i128 value: the quotient is 0 or −1.
            None => Some(if value < 0 { -1 } else { 0 }),
            Some(1) => i64::try_from(value).ok(),
            Some(divisor) => match (i64::try_from(value), i64::try_from(divisor)) {
                (Ok(value), Ok(divisor)) => Some(value.div_euclid(divisor)),
                _ => i64::try_from(value.div_euclid(divisor)).ok(),
            },
        }
    }
}

/// A 256-bit unsigned magnitude, little-endian 64-bit limbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct U256([u64; 4]);

impl U256 {
    fn checked_add(self, other: U256) -> Option<Self> {
        let mut out = [0u64; 4];
        let mut carry = 0u128;
        for (slot, (a, b)) in out.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            let wide = u128::from(*a) + u128::from(*b) + carry;
            *slot = wide as u64;
            carry = wide >> 64;
        }
        (carry == 0).then_some(U256(out))
    }

    /// `self − other` when `self ≥ other`.
    fn checked_sub(self, other: U256) -> Option<Self> {
        let mut out = [0u64; 4];
        let mut borrow = 0i128;
        for (slot, (a, b)) in out.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            let mut wide = i128::from(*a) - i128::from(*b) - borrow;
            borrow = 0;
            if wide < 0 {
                wide += 1i128 << 64;
                borrow = 1;
            }
            *slot = wide as u64;
        }
        (borrow == 0).then_some(U256(out))
    }

    fn greater_or_equal(&self, other: &U256) -> bool {
        for i in (0..4).rev() {
            if self.0[i] != other.0[i] {
                return self.0[i] > other.0[i];
            }
        }
        true
    }

    fn from_u128(value: u128) -> Self {
        U256([value as u64, (value >> 64) as u64, 0, 0])
    }

    fn checked_mul_u64(self, factor: u64) -> Option<Self> {
        let mut out = [0u64; 4];
        let mut carry = 0u128;
        for (limb, slot) in self.0.iter().zip(out.iter_mut()) {
            let wide = u128::from(*limb) * u128::from(factor) + carry;
            *slot = wide as u64;
            carry = wide >> 64;
        }
        (carry == 0).then_some(U256(out))
    }

    /// Quotient and whether the remainder was non-zero.
    fn div_u64(self, divisor: u64) -> (Self, bool) {
        let (quotient, remainder) = self.div_rem_u64(divisor);
        (quotient, remainder != 0)
    }

    /// Quotient and remainder.
    fn div_rem_u64(self, divisor: u64) -> (Self, u64) {
        let mut out = [0u64; 4];
        let mut remainder = 0u128;
        for i in (0..4).rev() {
            let current = (remainder << 64) | u128::from(self.0[i]);
            out[i] = (current / u128::from(divisor)) as u64;
            remainder = current % u128::from(divisor);
        }
        (U256(out), remainder as u64)
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Decimal digits, most significant first ("0" for zero).
    fn to_decimal(self) -> String {
        const CHUNK: u64 = 10_000_000_000_000_000_000; // 10^19
        let mut chunks = Vec::new();
        let mut rest = self;
        while !rest.is_zero() {
            let (quotient, remainder) = rest.div_rem_u64(CHUNK);
            chunks.push(remainder);
            rest = quotient;
        }
        let Some((last, lower)) = chunks.split_last() else {
            return "0".to_owned();
        };
        let mut text = last.to_string();
        for chunk in lower.iter().rev() {
            text.push_str(&format!("{chunk:019}"));
        }
        text
    }

    fn from_decimal(digits: &str) -> Option<Self> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.bytes().try_fold(U256::default(), |value, digit| {
            value
                .checked_mul_u64(10)?
                .checked_add(U256::from_u128(u128::from(digit - b'0')))
        })
    }

    fn to_u128(self) -> Option<u128> {
        (self.0[2] == 0 && self.0[3] == 0)
            .then(|| u128::from(self.0[0]) | (u128::from(self.0[1]) << 64))
    }
}

/// An exact signed integer sum (of products of scaled integers), safe from overflow for
/// any realistic book: terms are `i128`, the running total 256-bit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactSum {
    positive: U256,
    negative: U256,
    overflow: bool,
}

impl ExactSum {
    pub fn add(&mut self, term: i128) {
        let magnitude = U256::from_u128(term.unsigned_abs());
        let side = if term < 0 {
            &mut self.negative
        } else {
            &mut self.positive
        };
        match side.checked_add(magnitude) {
            Some(total) => *side = total,
            None => self.overflow = true,
        }
    }

    /// The sum as a signed decimal integer, or `None` if it passed 256 bits.
    pub fn to_decimal_string(&self) -> Option<String> {
        if self.overflow {
            return None;
        }
        Some(if self.positive.greater_or_equal(&self.negative) {
            self.positive.checked_sub(self.negative)?.to_decimal()
        } else {
            format!(
                "-{}",
                self.negative.checked_sub(self.positive)?.to_decimal()
            )
        })
    }

    /// Reads a signed decimal integer (as [`ExactSum::to_decimal_string`] writes it);
    /// `None` if it is not one or does not fit 256 bits.
    pub fn from_decimal_str(text: &str) -> Option<ExactSum> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(digits) => (true, digits),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let magnitude = U256::from_decimal(digits)?;
        let mut sum = ExactSum::default();
        if negative {
            sum.negative = magnitude;
        } else {
            sum.positive = magnitude;
        }
        Some(sum)
    }

    pub fn merge(mut self, other: ExactSum) -> ExactSum {
        for (mine, theirs) in [
            (&mut self.positive, other.positive),
            (&mut self.negative, other.negative),
        ] {
            match mine.checked_add(theirs) {
                Some(total) => *mine = total,
                None => self.overflow = true,
            }
        }
        self.overflow |= other.overflow;
        self
    }
}

/// An exact rational amount `sign · Π numerators · 10^shift / Π denominators`, built from
/// scaled decimal inputs, to be floored to an integer. Factors may come in any order: the
/// division happens once, in [`ExactAmount::floor`].
#[derive(Debug, Clone, Copy)]
pub struct ExactAmount {
    negative: bool,
    numerator: U256,
    /// Power of ten to apply: positive multiplies, negative divides.
    shift: i32,
    denominators: [u64; 4],
    n_denominators: usize,
    overflow: bool,
}

impl ExactAmount {
    /// The integer 1.
    pub fn one() -> Self {
        ExactAmount {
            negative: false,
            numerator: U256::from_u128(1),
            shift: 0,
            denominators: [1; 4],
            n_denominators: 0,
            overflow: false,
        }
    }

    fn multiply(&mut self, factor: u64) {
        match self.numerator.checked_mul_u64(factor) {
            Some(m) => self.numerator = m,
            None => self.overflow = true,
        }
    }

    fn divide(&mut self, divisor: u64) {
        if divisor == 0 || self.n_denominators == self.denominators.len() {
            self.overflow = true;
        } else {
            self.denominators[self.n_denominators] = divisor;
            self.n_denominators += 1;
        }
    }

    /// The integer value of an exact sum.
    pub fn from_sum(sum: ExactSum) -> Self {
        let mut amount = ExactAmount::one();
        amount.overflow = sum.overflow;
        if sum.positive.greater_or_equal(&sum.negative) {
            amount.numerator = sum.positive.checked_sub(sum.negative).unwrap_or_default();
        } else {
            amount.negative = true;
            amount.numerator = sum.negative.checked_sub(sum.positive).unwrap_or_default();
        }
        amount
    }

    /// Multiplies by `10^k` for any sign of `k`.
    pub fn times_pow10_signed(mut self, k: i32) -> Self {
        self.shift += k;
        self
    }

    /// Multiplies by the decimal `x` (its shortest round-trip representation).
    pub fn times(mut self, x: f64) -> Self {
        match to_decimal(x) {
            None => self.overflow = true,
            Some((negative, mantissa, exponent)) => {
                self.negative ^= negative;
                self.multiply(mantissa);
                self.shift += exponent;
            }
        }
        self
    }

    /// Multiplies by an exact integer.
    pub fn times_integer(mut self, n: i64) -> Self {
        self.negative ^= n < 0;
        self.multiply(n.unsigned_abs());
        self
    }

    /// Multiplies by an exact 128-bit integer.
    pub fn times_i128(mut self, n: i128) -> Self {
        self.negative ^= n < 0;
        let magnitude = n.unsigned_abs();
        let (low, high) = (magnitude as u64, (magnitude >> 64) as u64);
        if high == 0 {
            self.multiply(low);
        } else {
            // Both halves times the numerator, recombined: (h·2^64 + l)·m.
            match (
                self.numerator.checked_mul_u64(high),
                self.numerator.checked_mul_u64(low),
            ) {
                (Some(h), Some(l)) if h.0[3] == 0 => {
                    let shifted = U256([0, h.0[0], h.0[1], h.0[2]]);
                    match shifted.checked_add(l) {
                        Some(total) => self.numerator = total,
                        None => self.overflow = true,
                    }
                }
                _ => self.overflow = true,
            }
        }
        self
    }

    /// Multiplies by `10^k` (e.g. to express an amount in minor units).
    pub fn times_pow10(mut self, k: u32) -> Self {
        self.shift += k as i32;
        self
    }

    /// Divides by the decimal `x > 0` (its shortest round-trip representation).
    pub fn divided_by(mut self, x: f64) -> Self {
        match to_decimal(x) {
            Some((false, mantissa, exponent)) if mantissa > 0 => {
                // x = mantissa · 10^exponent.
                self.shift -= exponent;
                self.divide(mantissa);
            }
            _ => self.overflow = true,
        }
        self
    }

    /// Divides by an exact positive integer (a day-count basis, say).
    pub fn divided_by_integer(mut self, n: u64) -> Self {
        self.divide(n);
        self
    }

    /// The amount rounded toward −∞ (against the account it is credited to).
    pub fn floor(self) -> Result<i64> {
        let overflow = || Error::Overflow {
            what: "amount in minor units",
        };
        if self.overflow {
            return Err(overflow());
        }
        let mut magnitude = self.numerator;
        let mut shift = self.shift;
        while shift > 0 {
            let step = shift.min(19) as usize;
            magnitude = magnitude
                .checked_mul_u64(POW10[step])
                .ok_or_else(overflow)?;
            shift -= step as i32;
        }
        // floor(floor(a / b) / c) = floor(a / (b·c)) for positive integers, and the
        // quotient is exact only if every step left no remainder.
        let mut inexact = false;
        let mut divide = |by: u64| {
            let (q, r) = magnitude.div_u64(by);
            magnitude = q;
            inexact |= r;
        };
        while shift < 0 {
            let step = (-shift).min(19) as usize;
            divide(POW10[step]);
            shift += step as i32;
        }
        for &d in &self.denominators[..self.n_denominators] {
            divide(d);
        }
        let value =
            i128::try_from(magnitude.to_u128().ok_or_else(overflow)?).map_err(|_| overflow())?;
        let signed = if self.negative {
            -value - i128::from(inexact)
        } else {
            value
        };
        i64::try_from(signed).map_err(|_| overflow())
    }
}

/// Floors an amount whose `f64` estimate is `estimate` (in minor units): directly when no
/// representation error can reach the nearest integer, else through `exact()`.
#[inline]
pub fn floor_amount(estimate: f64, exact: impl FnOnce() -> ExactAmount) -> Result<i64> {
    let nearest = estimate.round();
    // Each input is within half an ulp of its decimal and a handful of operations add a
    // few more: 64 ulps of the estimate is a generous bound on the total error.
    let margin = estimate.abs() * (64.0 * f64::EPSILON) + f64::MIN_POSITIVE;
    if estimate.is_finite() && estimate.abs() < 4.0e15 && (estimate - nearest).abs() > margin {
        return Ok(estimate.floor() as i64);
    }
    exact().floor()
}

/// The non-zero sums of [`sum_by_account`], one entry per (account, key), in account
/// then key order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountSums {
    pub account: Vec<u32>,
    pub key: Vec<u32>,
    pub amount: Vec<i64>,
}

/// [`AccountSums`] as made: one part per consecutive block of accounts, in block order.
/// [`AccountSumBlocks::write_into`] lays them out in caller-given columns in parallel,
/// mapping each account row to its label on the way; [`AccountSumBlocks::concatenate`]
/// joins them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountSumBlocks {
    pub blocks: Vec<AccountSums>,
}

impl AccountSumBlocks {
    /// How many sums there are.
    pub fn len(&self) -> usize {
        self.blocks.iter().map(|block| block.amount.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sums as one [`AccountSums`].
    pub fn concatenate(self) -> AccountSums {
        let total = self.len();
        let mut all = AccountSums {
            account: Vec::with_capacity(total),
            key: Vec::with_capacity(total),
            amount: Vec::with_capacity(total),
        };
        for block in self.blocks {
            all.account.extend(block.account);
            all.key.extend(block.key);
            all.amount.extend(block.amount);
        }
        all
    }

    /// Every sum, in order, into `account` (each account row `r` as `label(r)`), `key`
    /// and `amount`, which are [`AccountSumBlocks::len`] long (an error otherwise). The
    /// blocks are copied in parallel.
    pub fn write_into<L: Send>(
        &self,
        label: impl Fn(u32) -> L + Sync,
        account: &mut [L],
        key: &mut [u32],
        amount: &mut [i64],
    ) -> Result<()> {
        let total = self.len();
        for (column, len) in [
            ("account", account.len()),
            ("key", key.len()),
            ("amount", amount.len()),
        ] {
            if len != total {
                return Err(Error::LengthMismatch {
                    column,
                    expected: total,
                    actual: len,
                });
            }
        }
        // Each block's share of the three columns, split off in order.
        let mut shares = Vec::with_capacity(self.blocks.len());
        let (mut account, mut key, mut amount) = (account, key, amount);
        for block in &self.blocks {
            let n = block.amount.len();
            let (a, rest_a) = account.split_at_mut(n);
            let (k, rest_k) = key.split_at_mut(n);
            let (m, rest_m) = amount.split_at_mut(n);
            shares.push((block, a, k, m));
            (account, key, amount) = (rest_a, rest_k, rest_m);
        }
        shares.into_par_iter().for_each(|(block, a, k, m)| {
            for (slot, &row) in a.iter_mut().zip(&block.account) {
                *slot = label(row);
            }
            k.copy_from_slice(&block.key);
            m.copy_from_slice(&block.amount);
        });
        Ok(())
    }
}

/// One account's sums per key at a time, for a block of accounts: [`CellSums::add`] each
/// of an account's amounts, then [`CellSums::close`] the account to keep its non-zero
/// sums, in key order.
///
/// With at most 64 keys, `touched` marks the cells the open account added to, so closing
/// an account visits only those (an account holds a few of the keys); with more, closing
/// visits every cell.
pub(crate) struct CellSums {
    cells: Vec<i64>,
    touched: u64,
    sums: AccountSums,
}

impl CellSums {
    /// For the accounts with the row `offsets` given (as [`Grouping::offsets`], plus the
    /// end): room for every sum they can have, at most one per row and per key.
    pub(crate) fn new(n_keys: usize, offsets: &[usize]) -> Self {
        let room = Self::room(n_keys, offsets);
        CellSums {
            cells: vec![0; n_keys],
            touched: 0,
            sums: AccountSums {
                account: Vec::with_capacity(room),
                key: Vec::with_capacity(room),
                amount: Vec::with_capacity(room),
            },
        }
    }

    /// Room for the sums of the accounts with the row `offsets` given: at most one per
    /// row, and `n_keys` per account. A bound, not a count (a count is a pass over every
    /// account); capacity past what is written is never touched.
    pub(crate) fn room(n_keys: usize, offsets: &[usize]) -> usize {
        let n_accounts = offsets.len().saturating_sub(1);
        let rows = offsets.last().map_or(0, |end| end - offsets[0]);
        rows.min(n_accounts.saturating_mul(n_keys))
    }

    /// Adds `amount` to the open account's sum under `key`; `None` on overflow.
    #[inline(always)]
    pub(crate) fn add(&mut self, key: usize, amount: i64) -> Option<()> {
        let cell = &mut self.cells[key];
        *cell = cell.checked_add(amount)?;
        // Past 64 keys the mask is not read (`close` visits every cell).
        self.touched |= 1u64 << (key % 64);
        Some(())
    }

    /// Keeps the open account's non-zero sums under `account` and starts the next.
    #[inline(always)]
    pub(crate) fn close(&mut self, account: usize) {
        if self.cells.len() <= 64 {
            let mut touched = std::mem::take(&mut self.touched);
            while touched != 0 {
                let key = touched.trailing_zeros() as usize;
                touched &= touched - 1;
                self.keep(account, key);
            }
        } else {
            for key in 0..self.cells.len() {
                self.keep(account, key);
            }
        }
    }

    /// Keeps cell `key` of the open account if it is not 0, and empties it.
    #[inline(always)]
    fn keep(&mut self, account: usize, key: usize) {
        let amount = std::mem::take(&mut self.cells[key]);
        if amount != 0 {
            // Accounts and keys are below u32::MAX (checked when indexed).
            self.sums.account.push(account as u32);
            self.sums.key.push(key as u32);
            self.sums.amount.push(amount);
        }
    }

    pub(crate) fn into_sums(self) -> AccountSums {
        self.sums
    }
}

/// Slots of [`sum_sorted_runs`]'s buffer: runs summed between two copies to the output.
const RUN_BUFFER: usize = 64;

/// What [`sum_sorted_runs`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum SortedRuns {
    /// Every (account, key)'s sum, non-zero ones, in account then key order.
    Sums(AccountSums),
    /// A sum overflowed.
    Overflow,
    /// Within an account a key came after a larger one: its sums are not runs.
    NotSorted,
}

/// The sum of each run of consecutive rows with the same (account, key), keeping the
/// non-zero ones in row order: each (account, key)'s sum when rows are in account order
/// and, within an account, in key order (checked: [`SortedRuns::NotSorted`] otherwise).
/// Account `first_account + a` holds rows `starts[a] − starts[0]..starts[a + 1] −
/// starts[0]` of `amounts` (as [`Grouping::row_starts`] gives them, from the block's
/// first account to past its last); row `r` counts under `key_of(r)`, below `n_keys`.
///
/// No branch depends on the data: each row adds to the open run (or opens the next,
/// where an account starts or the key changes) and writes it to a small buffer, whose
/// full runs go to the output every [`RUN_BUFFER`] runs, zeros dropped by moving the end
/// past the others. Against closing each account (a loop per account, of as many rows as
/// it has, then one per key it holds) this leaves nothing for the branch predictor to
/// miss.
pub(crate) fn sum_sorted_runs(
    first_account: usize,
    starts: &[usize],
    n_keys: usize,
    key_of: impl Fn(usize) -> u32,
    amounts: &[i64],
) -> SortedRuns {
    // How many accounts start at each row (more than one where accounts with no rows
    // start), plus the end.
    let first_row = starts[0];
    let mut opened = vec![0u32; starts[starts.len() - 1] - first_row + 1];
    for &start in &starts[..starts.len() - 1] {
        opened[start - first_row] += 1;
    }
    let room = CellSums::room(n_keys, starts);
    let mut sums = AccountSums {
        account: Vec::with_capacity(room),
        key: Vec::with_capacity(room),
        amount: Vec::with_capacity(room),
    };
    let mut buffer = RunBuffer {
        account: [0; RUN_BUFFER],
        key: [0; RUN_BUFFER],
        amount: [0; RUN_BUFFER],
    };
    // The open run's slot, account, key and sum (before the first row, none: the first
    // row opens slot 0 and, at least, account `first_account`). Account rows are below
    // u32::MAX (checked when indexed).
    let mut open = usize::MAX;
    let mut account = (first_account as u32).wrapping_sub(1);
    let mut open_key = 0u32;
    let mut sum = 0i64;
    let (mut overflowed, mut unsorted) = (false, false);
    for (row, (&accounts_opened, &amount)) in opened.iter().zip(amounts).enumerate() {
        let key = key_of(row);
        account = account.wrapping_add(accounts_opened);
        let same_account = accounts_opened == 0;
        unsorted |= same_account & (key < open_key);
        let opens = !same_account | (key != open_key);
        open_key = key;
        open = open.wrapping_add(usize::from(opens));
        let (added, overflow) = (if opens { 0 } else { sum }).overflowing_add(amount);
        sum = added;
        overflowed |= overflow;
        buffer.account[open] = account;
        buffer.key[open] = key;
        buffer.amount[open] = sum;
        if open == RUN_BUFFER - 1 {
            // The full runs go out; the open one moves to the front.
            buffer.keep_non_zero(RUN_BUFFER - 1, &mut sums);
            buffer.account[0] = account;
            buffer.key[0] = key;
            buffer.amount[0] = sum;
            open = 0;
        }
    }
    buffer.keep_non_zero(open.wrapping_add(1), &mut sums);
    if unsorted {
        SortedRuns::NotSorted
    } else if overflowed {
        SortedRuns::Overflow
    } else {
        SortedRuns::Sums(sums)
    }
}

/// [`sum_sorted_runs`]'s runs between two copies to the output.
struct RunBuffer {
    account: [u32; RUN_BUFFER],
    key: [u32; RUN_BUFFER],
    amount: [i64; RUN_BUFFER],
}

impl RunBuffer {
    /// Appends the first `n` runs' non-zero sums to `sums`: compacted in place first, one
    /// step per run and no branch on its sum.
    #[inline(always)]
    fn keep_non_zero(&mut self, n: usize, sums: &mut AccountSums) {
        let mut kept = 0;
        for run in 0..n {
            let amount = self.amount[run];
            self.account[kept] = self.account[run];
            self.key[kept] = self.key[run];
            self.amount[kept] = amount;
            kept += usize::from(amount != 0);
        }
        sums.account.extend_from_slice(&self.account[..kept]);
        sums.key.extend_from_slice(&self.key[..kept]);
        sums.amount.extend_from_slice(&self.amount[..kept]);
    }
}

/// Accounts whose rows [`sum_by_account`] reads together before summing them.
const SUM_GATHER: usize = 16;

/// Accounts per parallel block of [`sum_by_account`].
const SUM_BLOCK: usize = 4096;

/// Every id's key below `n_keys` and every row's id below `key_of.len()`: what summing by
/// key reads; the first id or row outside names its column.
pub(crate) fn check_keys(ids: &[u32], key_of: &[u32], n_keys: usize) -> Result<()> {
    if let Some(id) = key_of.iter().position(|&k| k as usize >= n_keys) {
        return Err(Error::IdOutOfRange {
            column: "key_of",
            row: id,
            id: u64::from(key_of[id]),
            len: n_keys,
        });
    }
    if let Some(row) = crate::scan::first_id_out_of_range(ids, key_of.len()) {
        return Err(Error::IdOutOfRange {
            column: "ids",
            row,
            id: u64::from(ids[row]),
            len: key_of.len(),
        });
    }
    Ok(())
}

/// Per account and key (an asset, usually): the sum of `amounts` over the account's rows,
/// where row `r` counts under key `key_of[ids[r]]` (a row's instrument and the
/// instrument's settle asset, say). Only non-zero sums are returned, so the result is
/// as long as the answer, not `n_accounts × n_keys`. Overflow is an error.
pub fn sum_by_account(
    groups: &Grouping,
    ids: &[u32],
    key_of: &[u32],
    amounts: &[i64],
    n_keys: usize,
) -> Result<AccountSumBlocks> {
    if ids.len() != amounts.len() || groups.n_rows() != amounts.len() {
        return Err(Error::LengthMismatch {
            column: "amounts",
            expected: groups.n_rows(),
            actual: amounts.len(),
        });
    }
    check_keys(ids, key_of, n_keys)?;
    // `None` from a block: an account's total overflowed.
    let blocks: Vec<AccountSums> = (0..groups.n_accounts().div_ceil(SUM_BLOCK))
        .into_par_iter()
        .map(|block| {
            let first = block * SUM_BLOCK;
            let end = (first + SUM_BLOCK).min(groups.n_accounts());
            let offsets = &groups.offsets()[first..=end];
            let mut sums = CellSums::new(n_keys, offsets);
            let mut gathered = Vec::new();
            for group in (first..end).step_by(SUM_GATHER) {
                let accounts = group..(group + SUM_GATHER).min(end);
                // The group's rows first, in one tight loop: through a permutation they lie
                // anywhere in the table, and loads that wait on nothing overlap their misses.
                gathered.clear();
                for account in accounts.clone() {
                    gathered.extend(groups.rows_of(account).map(|row| (ids[row], amounts[row])));
                }
                let mut rows = gathered.iter();
                for account in accounts {
                    let n = offsets[account + 1 - first] - offsets[account - first];
                    for &(id, amount) in rows.by_ref().take(n) {
                        sums.add(key_of[id as usize] as usize, amount)?;
                    }
                    sums.close(account);
                }
            }
            Some(sums.into_sums())
        })
        .collect::<Option<_>>()
        .ok_or(Error::Overflow {
            what: "an account's total",
        })?;
    Ok(AccountSumBlocks { blocks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    #[test]
    fn decimal_products_floor_exactly() {
        // 500 contracts × 0.001 BTC × 96 450.5 × 0.0001 = 4.822525 USDT = 4 822 525 µUSDT,
        // although the f64 product is 4.8225249999999995.
        let exact = ExactAmount::one()
            .times(500.0)
            .times(0.001)
            .times(96_450.5)
            .times(0.0001)
            .times_pow10(6);
        assert_eq!(exact.floor(), Ok(4_822_525));
        assert_eq!(exact.times_integer(-1).floor(), Ok(-4_822_525));
    }

    #[test]
    fn payers_pay_the_ceiling() {
        // A third of a dollar is 33.33… cents: the payer pays 34, the receiver gets 33.
        let owed = ExactAmount::one()
            .times(-1.0)
            .divided_by_integer(3)
            .times_pow10(2);
        assert_eq!(owed.floor(), Ok(-34));
        let received = ExactAmount::one().divided_by_integer(3).times_pow10(2);
        assert_eq!(received.floor(), Ok(33));
        // Factor order does not matter: the division happens last.
        let reordered = ExactAmount::one()
            .divided_by_integer(3)
            .times(-1.0)
            .times_pow10(2);
        assert_eq!(reordered.floor(), Ok(-34));
    }

    #[test]
    fn interest_on_decimal_inputs_is_exact() {
        // 10 000 × 0.08906 × 7 / 365 = 17.08 exactly: 1 708 cents, charged as −1 708.
        let interest = ExactAmount::one()
            .times(-10_000.0)
            .times(0.08906)
            .times_integer(7)
            .divided_by_integer(365)
            .times_pow10(2);
        assert_eq!(interest.floor(), Ok(-1_708));
    }

    #[test]
    fn division_by_a_price_rounds_against_the_account() {
        // Inverse funding: 1 000 USD × 0.0001 / 30 000 = 3.333… e-6 BTC = 333.33 sat.
        let received = ExactAmount::one()
            .times(1_000.0)
            .times(0.0001)
            .divided_by(30_000.0)
            .times_pow10(8);
        assert_eq!(received.floor(), Ok(333));
        assert_eq!(received.times_integer(-1).floor(), Ok(-334));
    }

    #[test]
    fn inputs_are_read_as_the_decimals_written() {
        assert_eq!(to_decimal(96_450.5), Some((false, 964_505, -1)));
        assert_eq!(to_decimal(-0.0001), Some((true, 1, -4)));
        assert_eq!(to_decimal(3.3e-9), Some((false, 33, -10)));
        // Neither of these survives scaling by a power of ten in f64.
        assert_eq!(to_decimal(0.000040034), Some((false, 40_034, -9)));
        assert_eq!(to_decimal(8_272.267459), Some((false, 8_272_267_459, -6)));
        // 2 000 contracts × 3.3e-9 BTC of index = 6.6e-6 BTC = 660 sat.
        let payment = ExactAmount::one()
            .times(2_000.0)
            .times(3.3e-9)
            .times_pow10(8);
        assert_eq!(payment.floor(), Ok(660));
    }

    #[test]
    fn exact_sums_cancel_exactly() {
        let mut sum = ExactSum::default();
        sum.add(i128::MAX);
        sum.add(-i128::MAX);
        sum.add(-7);
        let mut other = ExactSum::default();
        other.add(2);
        assert_eq!(ExactAmount::from_sum(sum.merge(other)).floor(), Ok(-5));
    }

    #[test]
    fn exact_sums_read_and_write_as_decimal_integers() {
        let mut sum = ExactSum::default();
        sum.add(i128::MAX);
        sum.add(i128::MAX);
        sum.add(-5);
        // 2·(2^127 − 1) − 5 = 2^128 − 7.
        let text = sum.to_decimal_string().unwrap();
        assert_eq!(text, "340282366920938463463374607431768211449");
        assert_eq!(
            ExactSum::from_decimal_str(&text)
                .unwrap()
                .to_decimal_string(),
            Some(text)
        );
        let mut negative = ExactSum::default();
        negative.add(-10_000_000_000_000_000_000);
        assert_eq!(
            negative.to_decimal_string().unwrap(),
            "-10000000000000000000"
        );
        assert_eq!(ExactSum::default().to_decimal_string().unwrap(), "0");
        assert_eq!(
            ExactSum::from_decimal_str("-0")
                .unwrap()
                .to_decimal_string()
                .unwrap(),
            "0"
        );
        for bad in ["", "-", "1e5", "12a", " 1"] {
            assert!(ExactSum::from_decimal_str(bad).is_none(), "{bad}");
        }
        // 2^256 does not fit.
        let two_256 =
            "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert!(ExactSum::from_decimal_str(two_256).is_none());
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let huge = ExactAmount::one().times(9e6).times(9e6).times_pow10(8);
        assert!(matches!(huge.floor(), Err(Error::Overflow { .. })));
    }

    #[test]
    fn fast_path_agrees_with_the_exact_path() {
        let exact = || ExactAmount::one().times(3.0).times(0.1).times_pow10(2);
        // 3 × 0.1 = 0.30000000000000004 in f64: the fast path must defer to exact.
        assert_eq!(floor_amount(3.0 * 0.1 * 100.0, exact), Ok(30));
        let exact = || {
            ExactAmount::one()
                .times(1.0)
                .divided_by_integer(3)
                .times_pow10(2)
        };
        assert_eq!(floor_amount(100.0 / 3.0, exact), Ok(33));
    }

    #[test]
    fn sums_by_account_and_asset_check_overflow() {
        // Rows 0 and 2 (account 1) are of instrument 0, settling in key 0; row 1 (account
        // 0) of instrument 1, settling in key 1. Instrument 2 settles in key 0 too.
        let groups = Grouping::build(&[1, 0, 1, 1], None, 3, "account").unwrap();
        let key_of = [0, 1, 0];
        assert_eq!(
            sum_by_account(&groups, &[0, 1, 0, 2], &key_of, &[5, -3, 7, 0], 2)
                .map(AccountSumBlocks::concatenate),
            Ok(AccountSums {
                account: vec![0, 1],
                key: vec![1, 0],
                amount: vec![-3, 12],
            })
        );
        // Sums that cancel are left out; accounts across blocks keep their order.
        let n = 2 * SUM_BLOCK + 3;
        let accounts: Vec<u32> = (0..n as u32).flat_map(|a| [a, a]).collect();
        let groups = Grouping::build(&accounts, None, n, "account").unwrap();
        let amounts: Vec<i64> = (0..n as i64).flat_map(|a| [a % 3, -(a % 2)]).collect();
        let blocks = sum_by_account(&groups, &vec![0; 2 * n], &[0], &amounts, 1).unwrap();
        assert_eq!(blocks.blocks.len(), 3);
        let got = blocks.clone().concatenate();
        // Laid out in columns, in parallel: the same sums, each account row labelled.
        let mut label = vec![0i64; blocks.len()];
        let (mut key, mut amount) = (vec![9u32; blocks.len()], vec![0i64; blocks.len()]);
        blocks
            .write_into(|row| -i64::from(row), &mut label, &mut key, &mut amount)
            .unwrap();
        let negated: Vec<i64> = got.account.iter().map(|&a| -i64::from(a)).collect();
        assert_eq!((label, &key, &amount), (negated, &got.key, &got.amount));
        let short = blocks.write_into(|row| row, &mut [0; 1], &mut key, &mut amount);
        assert!(matches!(
            short,
            Err(Error::LengthMismatch {
                column: "account",
                ..
            })
        ));
        let want: Vec<(u32, i64)> = (0..n as i64)
            .map(|a| (a as u32, a % 3 - a % 2))
            .filter(|&(_, sum)| sum != 0)
            .collect();
        assert_eq!(got.account, want.iter().map(|w| w.0).collect::<Vec<_>>());
        assert_eq!(got.amount, want.iter().map(|w| w.1).collect::<Vec<_>>());
        assert!(got.key.iter().all(|&k| k == 0));
        let groups = Grouping::build(&[1, 0, 1], None, 2, "account").unwrap();
        let err = sum_by_account(&groups, &[0, 0, 0], &[0], &[i64::MAX, 0, 1], 1);
        assert!(matches!(err, Err(Error::Overflow { .. })));
        let err = sum_by_account(&groups, &[0, 3, 0], &[0], &[1, 2, 3], 1);
        assert!(matches!(err, Err(Error::IdOutOfRange { row: 1, .. })));
        let err = sum_by_account(&groups, &[0, 0, 0], &[2], &[1, 2, 3], 1);
        assert!(matches!(err, Err(Error::IdOutOfRange { row: 0, .. })));
    }

    #[test]
    fn sums_keep_key_order_with_more_keys_than_the_mask() {
        // 70 keys: closing visits every cell, and keys 0 and 64 share a bit of the mask
        // that 64 keys or fewer use. Account 0's rows: keys 69, 64, 0, 64; account 1's:
        // key 3, twice, cancelling.
        let groups = Grouping::build(&[0, 0, 0, 0, 1, 1], None, 2, "account").unwrap();
        let key_of = [69, 64, 0, 3];
        let got = sum_by_account(
            &groups,
            &[0, 1, 2, 1, 3, 3],
            &key_of,
            &[5, 2, 7, 4, 9, -9],
            70,
        )
        .unwrap()
        .concatenate();
        assert_eq!(
            got,
            AccountSums {
                account: vec![0, 0, 0],
                key: vec![0, 64, 69],
                amount: vec![7, 6, 5],
            }
        );
        let got = sum_by_account(&groups, &[0, 1, 2, 1], &[63, 40, 0, 3], &[5, 2, 7, 4], 64);
        assert!(got.is_err(), "rows and amounts of different lengths");
        // Within 64 keys the mask orders them too.
        let got = sum_by_account(
            &groups,
            &[0, 1, 2, 1, 3, 3],
            &[63, 40, 0, 3],
            &[5, 2, 7, 4, 9, -9],
            64,
        )
        .unwrap()
        .concatenate();
        assert_eq!((got.key, got.amount), (vec![0, 40, 63], vec![7, 6, 5]));
    }

    #[test]
    fn coefficients_floor_products_beyond_64_bits_in_i128() {
        // 1e-10: multiplier 1, divisor 1e10. A product past i64 takes the i128 division.
        let k = Coefficient::new(false, &[1.0], None, -10).unwrap();
        assert_eq!(
            k.floor_times(30_000_000_000_000_000_000),
            Some(3_000_000_000)
        );
        assert_eq!(
            k.floor_times(-30_000_000_000_000_000_001),
            Some(-3_000_000_001)
        );
        assert_eq!(k.floor_times(-1), Some(-1));
        // A divisor past i128: every quotient is 0 or −1.
        let tiny = Coefficient::new(false, &[1.0], None, -40).unwrap();
        assert_eq!(tiny.floor_times(i128::from(i64::MAX)), Some(0));
        assert_eq!(tiny.floor_times(-1), Some(-1));
    }

    #[test]
    fn coefficients_floor_exactly_in_i128() {
        // 0.001 × 96 450.5 × 0.0001 per contract, in µUSDT per 1e-9 contract:
        // 9.64505e-3 USDT = 9 645.05 µUSDT per contract.
        let k = Coefficient::new(true, &[0.001, 96_450.5, 0.0001], None, 6 - 9).unwrap();
        assert_eq!(k.floor_times(3_000_000_000), Some(-28_936));
        assert_eq!(k.floor_times(-2_000_000_000), Some(19_290));
        // Divided by a price: 100 USD × 0.0001 / 50 000 per contract in sat.
        let k = Coefficient::new(true, &[100.0, 0.0001], Some(50_000.0), 8 - 9).unwrap();
        assert_eq!(k.floor_times(10_000_000_000), Some(-200));
        assert_eq!(k.floor_times(1_000_000_000), Some(-20));
    }

    /// A deterministic stream of 64-bit values (xorshift64*), for sweeps without a
    /// random-number crate.
    fn stream(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[test]
    fn estimated_quotients_are_the_exact_floor() {
        // Coefficients of realistic funding (decimal rates, marks and contract sizes at
        // minor units from 0 to 18 places) and of extreme ones: divisors from 1 to past
        // 2^64, multipliers of every size that fits i64.
        let mut coefficients = vec![
            Coefficient::new(true, &[0.001, 96_450.5, 0.0001], None, 6 - 9).unwrap(),
            Coefficient::new(true, &[100.0, 0.0001], Some(50_000.0), 8 - 9).unwrap(),
            Coefficient::new(false, &[0.01, 3_187.25, -0.000_375], None, 2 - 9).unwrap(),
            Coefficient::new(true, &[0.001, 96_450.37, 0.000_123_456_78], None, 6 - 9).unwrap(),
            Coefficient::new(true, &[1.0, 0.000_1], Some(96_450.37), 18 - 9).unwrap(),
            Coefficient::new(false, &[1.0], None, 0).unwrap(),
            Coefficient::new(false, &[7.0], None, -1).unwrap(),
            Coefficient::new(false, &[3.0], Some(7.0), -25).unwrap(),
            Coefficient::new(false, &[9.223e18], None, -20).unwrap(),
            Coefficient::new(true, &[123_456_789.0, 987_654.321], Some(0.017), -3).unwrap(),
        ];
        let mut next = stream(0x9E37_79B9_7F4A_7C15);
        for _ in 0..64 {
            let factor = (next() % 1_000_000_007) as f64 / 1e4;
            let divisor = (next() % 99_991 + 1) as f64 / 100.0;
            let shift = (next() % 30) as i32 - 20;
            coefficients.push(Coefficient::new(false, &[factor], Some(divisor), shift).unwrap());
        }
        let mut estimated = 0;
        for k in &coefficients {
            let check = |n: i64| {
                let exact = k.floor_times_exact(i128::from(n));
                assert_eq!(k.floor_times(i128::from(n)), exact, "{n} × {k:?}");
            };
            for n in [0, 1, -1, i64::MAX, i64::MIN, 1_000_000_000, -1_000_000_000] {
                check(n);
            }
            // Quantities whose product is a multiple of the divisor give or take one,
            // where the estimate lands on either side of an integer.
            if let (Ok(m), Some(d)) = (i64::try_from(k.multiplier), k.divisor) {
                if m != 0 && d < 1 << 60 {
                    let step = (d / i128::from(m.unsigned_abs().min(1 << 62) as i64)).max(1);
                    for j in 1..2_000i128 {
                        for offset in [-1, 0, 1] {
                            if let Ok(n) = i64::try_from(j * step + offset) {
                                check(n);
                                check(-n);
                            }
                        }
                    }
                }
            }
            for _ in 0..100_000 {
                // Up to 9e6 contracts in 1e-9 units, scaled down at random.
                let n = (next() % 18_000_000_000_000_001) as i64 - 9_000_000_000_000_000;
                let n = n >> (next() % 50);
                check(n);
                estimated += usize::from(k.estimate.is_some());
            }
        }
        assert!(estimated > 0);
    }

    #[test]
    fn divisors_from_two_to_the_61_take_the_exact_division() {
        // 10^19 > 2^61 > 10^18.
        let k = Coefficient::new(false, &[3.0], None, -19).unwrap();
        assert!(k.estimate.is_none());
        assert_eq!(k.floor_times(-1), Some(-1));
        let k = Coefficient::new(false, &[3.0], None, -18).unwrap();
        assert!(k.estimate.is_some());
        // 3 × (2^63 − 1) / 10^18 = 27.67…
        assert_eq!(k.floor_times(i128::from(i64::MIN)), Some(-28));
        assert_eq!(k.floor_times(i128::from(i64::MAX)), Some(27));
    }

    #[test]
    fn minor_units_must_be_powers_of_ten() {
        assert_eq!(minor_unit_decimals(0.01), Some(2));
        assert_eq!(minor_unit_decimals(1e-8), Some(8));
        assert_eq!(minor_unit_decimals(1.0), Some(0));
        assert_eq!(minor_unit_decimals(0.05), None);
    }

    /// Where each account's rows start, plus the end, for accounts with `rows` rows each
    /// from book row `first_row` on.
    fn starts_of(first_row: usize, rows: &[usize]) -> Vec<usize> {
        let mut starts = vec![first_row];
        for &n in rows {
            starts.push(starts[starts.len() - 1] + n);
        }
        starts
    }

    #[test]
    fn sorted_runs_sum_each_account_and_key() {
        // Accounts 10 (3 rows), 11 (none), 12 (2), 13 (1): 10's key 0 sums 5 − 2 = 3 and
        // key 2 is 7; 12's key 1 sums 4 − 4 = 0 and is dropped; 13's key 1 is 9: the same
        // key as 12's last row, but a run of its own.
        // The block starts at book row 40.
        let starts = starts_of(40, &[3, 0, 2, 1]);
        assert_eq!(starts, [40, 43, 43, 45, 46]);
        let keys = [0u32, 0, 2, 1, 1, 1];
        let amounts = [5i64, -2, 7, 4, -4, 9];
        let summed = sum_sorted_runs(10, &starts, 3, |row| keys[row], &amounts);
        let expected = AccountSums {
            account: vec![10, 10, 13],
            key: vec![0, 2, 1],
            amount: vec![3, 7, 9],
        };
        assert_eq!(summed, SortedRuns::Sums(expected));
    }

    #[test]
    fn sorted_runs_refuse_keys_out_of_order_and_overflow() {
        let starts = starts_of(0, &[3, 1]);
        // Within account 0, key 1 after key 2: the sums would not be runs.
        let out_of_order = sum_sorted_runs(0, &starts, 3, |row| [2, 2, 1, 0][row], &[1, 1, 1, 1]);
        assert_eq!(out_of_order, SortedRuns::NotSorted);
        // A smaller key in the next account is in order.
        let in_order = sum_sorted_runs(0, &starts, 3, |row| [1, 2, 2, 0][row], &[1, 1, 1, 1]);
        assert!(matches!(in_order, SortedRuns::Sums(_)));
        // i64::MAX + 1 in one run overflows; in two runs it does not.
        let big = [i64::MAX, 1, 0, 0];
        let one_run = sum_sorted_runs(0, &starts, 2, |_| 0, &big);
        assert_eq!(one_run, SortedRuns::Overflow);
        let two_runs = sum_sorted_runs(0, &starts, 2, |row| [0, 1, 1, 0][row], &big);
        let SortedRuns::Sums(sums) = two_runs else {
            panic!("{two_runs:?}")
        };
        assert_eq!(sums.amount, [i64::MAX, 1]);
    }

    #[test]
    fn sorted_runs_are_the_cell_sums_of_sorted_rows() {
        // Random books laid out by account then key: up to 9 rows and 5 keys an account,
        // a fifth of the accounts empty, amounts that often cancel; sizes from nothing to
        // far past the run buffer. Every result is that of closing each account with
        // `CellSums`.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| rng.below(n);
        for case in 0..300 {
            let n_accounts = [0, 1, 7, 40, 300][case % 5] + next(5) as usize;
            let n_keys = 1 + next(5) as usize;
            let first = next(1_000) as usize;
            let mut rows = Vec::new();
            let (mut keys, mut amounts) = (Vec::new(), Vec::new());
            for _ in 0..n_accounts {
                let n = if next(5) == 0 {
                    0
                } else {
                    1 + next(9) as usize
                };
                let mut account_keys: Vec<u32> =
                    (0..n).map(|_| next(n_keys as u64) as u32).collect();
                account_keys.sort_unstable();
                keys.extend(account_keys);
                amounts.extend((0..n).map(|_| next(7) as i64 - 3));
                rows.push(n);
            }
            // The block's first row is somewhere in the book.
            let first_row = next(100) as usize;
            let starts = starts_of(first_row, &rows);
            let mut cells = CellSums::new(n_keys, &starts);
            for (account, bounds) in starts.windows(2).enumerate() {
                for row in bounds[0] - first_row..bounds[1] - first_row {
                    cells.add(keys[row] as usize, amounts[row]).unwrap();
                }
                cells.close(first + account);
            }
            let summed = sum_sorted_runs(first, &starts, n_keys, |row| keys[row], &amounts);
            assert_eq!(
                summed,
                SortedRuns::Sums(cells.into_sums()),
                "case {case}: {n_accounts} accounts, {n_keys} keys"
            );
        }
    }
}
