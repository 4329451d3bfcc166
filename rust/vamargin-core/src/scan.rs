//! Input checks over whole columns: the first row that breaks a rule, found by scanning
//! blocks of rows in parallel (the earliest block with a bad row wins, then that block
//! is scanned in order), so a 10M-row column is checked without temporary arrays.

use std::ops::Range;

use rayon::prelude::*;

/// Rows per block: large enough to amortise scheduling, small enough to stop early.
const BLOCK: usize = 64 * 1024;

/// The first of `0..n` for which `bad` holds. `any_bad(range)` says whether a block has
/// one: it runs over every row of the block without stopping early, so it can be a
/// branch-free fold the compiler vectorises (for the CPU found at run time); only the
/// block found is scanned row by row.
pub(crate) fn first_where(
    n: usize,
    any_bad: impl Fn(Range<usize>) -> bool + Sync,
    bad: impl Fn(usize) -> bool,
) -> Option<usize> {
    let rows = |b: usize| b * BLOCK..n.min((b + 1) * BLOCK);
    let arch = pulp::Arch::new();
    let block = (0..n.div_ceil(BLOCK)).into_par_iter().position_first(|b| {
        arch.dispatch(AnyBad {
            any_bad: &any_bad,
            rows: rows(b),
        })
    })?;
    rows(block).find(|&row| bad(row))
}

/// `any_bad(rows)` compiled for the CPU's vector features: a struct, not a closure, so
/// that the fold is in line in the function `pulp` compiles with them.
struct AnyBad<'a, F> {
    any_bad: &'a F,
    rows: Range<usize>,
}

impl<F: Fn(Range<usize>) -> bool> pulp::WithSimd for AnyBad<'_, F> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
        (self.any_bad)(self.rows)
    }
}

/// A rule every row of a float column must keep.
#[derive(Debug, Clone, Copy)]
pub enum Rule<'a> {
    /// No ±∞, and no NaN unless `allow_nan` (optional columns read null as NaN).
    Finite { values: &'a [f64], allow_nan: bool },
    /// No value below `min`, nor equal to it when `strict`; NaN passes when `allow_nan`
    /// (a missing value is not out of range) and fails otherwise. With `where_nonzero`,
    /// only rows where that column is not 0 count (a price is needed only where there is
    /// a position).
    AtLeast {
        values: &'a [f64],
        min: f64,
        strict: bool,
        allow_nan: bool,
        where_nonzero: Option<&'a [f64]>,
    },
}

/// Rows per sub-block of [`first_broken`]: every rule runs over a sub-block before the
/// next is read, so a table's columns come from memory once and from L1 for the rest.
const SUB_BLOCK: usize = 2048;

/// At most this many rules per [`first_broken`] call (one bit of a block's mask each).
pub const MAX_RULES: usize = 64;

impl Rule<'_> {
    /// Rows the rule reads: every column it names has this length (the caller checks).
    pub fn rows(&self) -> usize {
        match self {
            Rule::Finite { values, .. } | Rule::AtLeast { values, .. } => values.len(),
        }
    }

    /// The column checked, the optional mask, and what breaks the rule.
    fn parts(&self) -> (&[f64], Option<&[f64]>, Breaks) {
        match *self {
            Rule::Finite { values, allow_nan } => (values, None, Breaks::finite(allow_nan)),
            Rule::AtLeast {
                values,
                min,
                strict,
                allow_nan,
                where_nonzero,
            } => (
                values,
                where_nonzero,
                Breaks::at_least(min, strict, allow_nan),
            ),
        }
    }

    /// Whether row `row` breaks the rule.
    #[inline]
    fn broken_at(&self, row: usize) -> bool {
        let (values, mask, breaks) = self.parts();
        breaks.by(values[row]) & mask.is_none_or(|m| m[row] != 0.0)
    }

    /// Whether any row of `rows` breaks the rule: a branch-free fold over every row,
    /// which the compiler vectorises. Each kind of test gets its own fold, so the loop
    /// body is one comparison (and one more for a mask).
    #[inline(always)]
    fn broken_in(&self, rows: Range<usize>) -> bool {
        let (values, mask, breaks) = self.parts();
        let values = &values[rows.clone()];
        let mask = mask.map(|m| &m[rows]);
        match breaks {
            Breaks::Infinite => any_breaks(values, mask, |v| Breaks::Infinite.by(v)),
            Breaks::NotFinite => any_breaks(values, mask, |v| Breaks::NotFinite.by(v)),
            Breaks::Below(min) => any_breaks(values, mask, |v| Breaks::Below(min).by(v)),
            Breaks::NotAtLeast(min) => any_breaks(values, mask, |v| Breaks::NotAtLeast(min).by(v)),
            Breaks::AtMost(min) => any_breaks(values, mask, |v| Breaks::AtMost(min).by(v)),
            Breaks::NotAbove(min) => any_breaks(values, mask, |v| Breaks::NotAbove(min).by(v)),
        }
    }
}

/// What breaks a rule, as one comparison of the value: NaN fails every comparison, so
/// the `Not…` forms (written `!(v ≥ min)`) reject NaN and the others let it pass.
#[derive(Debug, Clone, Copy)]
enum Breaks {
    /// `|v| = ∞` (NaN passes).
    Infinite,
    /// `|v| = ∞` or NaN.
    NotFinite,
    /// `v < min` (NaN passes).
    Below(f64),
    /// `v < min` or NaN.
    NotAtLeast(f64),
    /// `v ≤ min` (NaN passes).
    AtMost(f64),
    /// `v ≤ min` or NaN.
    NotAbove(f64),
}

impl Breaks {
    fn finite(allow_nan: bool) -> Self {
        if allow_nan {
            Breaks::Infinite
        } else {
            Breaks::NotFinite
        }
    }

    /// Values below `min` (or equal to it when `strict`) break the rule; NaN does unless
    /// `allow_nan`.
    fn at_least(min: f64, strict: bool, allow_nan: bool) -> Self {
        match (strict, allow_nan) {
            (false, true) => Breaks::Below(min),
            (false, false) => Breaks::NotAtLeast(min),
            (true, true) => Breaks::AtMost(min),
            (true, false) => Breaks::NotAbove(min),
        }
    }

    /// Whether `v` breaks the rule.
    #[inline(always)]
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "a negated comparison is how NaN fails the rule"
    )]
    fn by(self, v: f64) -> bool {
        match self {
            Breaks::Infinite => v.abs() == f64::INFINITY,
            Breaks::NotFinite => !(v.abs() < f64::INFINITY),
            Breaks::Below(min) => v < min,
            Breaks::NotAtLeast(min) => !(v >= min),
            Breaks::AtMost(min) => v <= min,
            Breaks::NotAbove(min) => !(v > min),
        }
    }
}

/// Whether `bad` holds for some value (where `mask` is not 0, with a mask): an `|`-fold
/// over every value, no early exit, so it vectorises.
#[inline(always)]
fn any_breaks(values: &[f64], mask: Option<&[f64]>, bad: impl Fn(f64) -> bool) -> bool {
    match mask {
        None => values.iter().fold(false, |any, &v| any | bad(v)),
        Some(mask) => values
            .iter()
            .zip(mask)
            .fold(false, |any, (&v, &m)| any | (bad(v) & (m != 0.0))),
    }
}

/// The first rule of `rules` (in order) that some row breaks, and the first row that
/// breaks it: `(rule, row)`. So the answer is the one checking the rules one after the
/// other would give, but a table's columns are read once: blocks of rows are checked in
/// parallel, each against every rule a sub-block at a time (its columns stay in cache
/// between rules), and record which rules they saw broken. Every rule's columns must
/// have [`Rule::rows`] rows, at most [`MAX_RULES`] rules (panics otherwise: the
/// bindings check both).
pub fn first_broken(rules: &[Rule<'_>]) -> Option<(usize, usize)> {
    assert!(rules.len() <= MAX_RULES, "at most {MAX_RULES} rules");
    let n = rules.first().map_or(0, Rule::rows);
    let rows = |b: usize| b * BLOCK..n.min((b + 1) * BLOCK);
    let arch = pulp::Arch::new();
    let masks: Vec<u64> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            arch.dispatch(BlockRules {
                rules,
                block: rows(b),
            })
        })
        .collect();
    let all = masks.iter().fold(0, |all, &mask| all | mask);
    if all == 0 {
        return None;
    }
    let k = all.trailing_zeros() as usize;
    let block = masks.iter().position(|&mask| mask & (1 << k) != 0)?;
    let row = rows(block).find(|&row| rules[k].broken_at(row))?;
    Some((k, row))
}

/// Which of `rules` some row of `block` breaks (bit `k` for rule `k`), compiled for the
/// CPU's vector features: a struct, not a closure, so that the loop is in line in the
/// function `pulp` compiles with them.
struct BlockRules<'a, 'r> {
    rules: &'a [Rule<'r>],
    block: Range<usize>,
}

impl pulp::WithSimd for BlockRules<'_, '_> {
    type Output = u64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> u64 {
        let BlockRules { rules, block } = self;
        let mut broken = 0u64;
        for start in block.clone().step_by(SUB_BLOCK) {
            let sub = start..block.end.min(start + SUB_BLOCK);
            for (k, rule) in rules.iter().enumerate() {
                broken |= u64::from(rule.broken_in(sub.clone())) << k;
            }
        }
        broken
    }
}

/// First row whose id is not below `len` (ids indexing a table of `len` rows): each block
/// is one vectorised maximum.
pub fn first_id_out_of_range(ids: &[u32], len: usize) -> Option<usize> {
    first_where(
        ids.len(),
        |rows| ids[rows].iter().fold(0, |max, &id| max.max(id)) as usize >= len,
        |row| ids[row] as usize >= len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First row holding ±∞, or NaN unless `allow_nan`: one `Finite` rule.
    fn first_not_finite(values: &[f64], allow_nan: bool) -> Option<usize> {
        first_broken(&[Rule::Finite { values, allow_nan }]).map(|(_, row)| row)
    }

    #[test]
    fn finds_the_first_bad_row_across_blocks() {
        let mut values = vec![1.0; 3 * BLOCK + 17];
        assert_eq!(first_not_finite(&values, false), None);
        values[2 * BLOCK + 5] = f64::NAN;
        values[3 * BLOCK + 1] = f64::INFINITY;
        assert_eq!(first_not_finite(&values, false), Some(2 * BLOCK + 5));
        assert_eq!(first_not_finite(&values, true), Some(3 * BLOCK + 1));
        values[7] = f64::NEG_INFINITY;
        assert_eq!(first_not_finite(&values, true), Some(7));
    }

    fn at_least<'a>(
        values: &'a [f64],
        min: f64,
        strict: bool,
        mask: Option<&'a [f64]>,
    ) -> Rule<'a> {
        Rule::AtLeast {
            values,
            min,
            strict,
            allow_nan: true,
            where_nonzero: mask,
        }
    }

    /// `values` checked against `rule` (which says whether its column with its mask
    /// breaks the rule): each value alone, without a mask and with a mask of ones, then
    /// the first row that breaks it.
    fn check_kind(
        values: &[f64],
        reference: impl Fn(f64) -> bool,
        rule: impl Fn(&[f64], Option<&[f64]>) -> bool,
    ) {
        for &v in values {
            assert_eq!(rule(&[v], None), reference(v), "{v}");
            assert_eq!(rule(&[v], Some(&[1.0])), reference(v), "{v}");
        }
        let first = values.iter().position(|&v| reference(v));
        let found = (0..values.len()).find(|&row| rule(&values[row..=row], None));
        assert_eq!(found, first);
    }

    #[test]
    fn every_kind_of_rule_breaks_on_the_values_its_reference_rejects() {
        // The reference spells the NaN policy out; the folds get it from the direction
        // of one comparison.
        let values = [
            -2.0,
            -0.0,
            0.0,
            1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let agree = |rule: Rule<'_>| {
            let fold = rule.broken_in(0..rule.rows());
            let rows = (0..rule.rows()).any(|row| rule.broken_at(row));
            assert_eq!(fold, rows);
            assert_eq!(first_broken(&[rule]).is_some(), fold);
            fold
        };
        for allow_nan in [false, true] {
            check_kind(
                &values,
                |v| v.is_infinite() || (v.is_nan() && !allow_nan),
                |values, _| agree(Rule::Finite { values, allow_nan }),
            );
        }
        for (strict, allow_nan, min) in [
            (false, false, 0.0),
            (false, true, 0.0),
            (true, false, 0.0),
            (true, true, 1.0),
        ] {
            let reference = |v: f64| {
                if v.is_nan() {
                    !allow_nan
                } else {
                    v < min || (strict && v == min)
                }
            };
            let check = |values: &[f64], where_nonzero: Option<&[f64]>| {
                agree(Rule::AtLeast {
                    values,
                    min,
                    strict,
                    allow_nan,
                    where_nonzero,
                })
            };
            check_kind(&values, reference, check);
            // A zero in the mask excuses every value.
            for v in values {
                assert!(!check(&[v], Some(&[0.0])), "{v}");
            }
        }
    }

    #[test]
    fn at_least_passes_nan_and_rows_the_mask_excludes() {
        let values = [2.0, f64::NAN, 0.0, -1.0, 0.5];
        let first = |rule: Rule<'_>| first_broken(&[rule]).map(|(_, row)| row);
        assert_eq!(first(at_least(&values, 0.0, false, None)), Some(3));
        assert_eq!(first(at_least(&values, 0.0, true, None)), Some(2));
        let qty = [1.0, 1.0, 0.0, 0.0, 3.0];
        assert_eq!(first(at_least(&values, 0.0, true, Some(&qty))), None);
        assert_eq!(first(at_least(&values, 1.0, false, Some(&qty))), Some(4));
        assert_eq!(first(at_least(&[], 0.0, true, None)), None);
        assert_eq!(first_broken(&[]), None);
    }

    #[test]
    fn at_least_without_nan_fails_on_nan_in_the_fold_and_the_row_scan() {
        // A NaN past the first block (found by the block fold, then the row scan) and one
        // only the mask would exclude.
        let mut values = vec![1.0; BLOCK + 10];
        values[BLOCK + 3] = f64::NAN;
        fn number<'a>(values: &'a [f64], mask: Option<&'a [f64]>) -> Rule<'a> {
            Rule::AtLeast {
                values,
                min: 0.0,
                strict: false,
                allow_nan: false,
                where_nonzero: mask,
            }
        }
        assert_eq!(first_broken(&[number(&values, None)]), Some((0, BLOCK + 3)));
        assert_eq!(first_broken(&[at_least(&values, 0.0, false, None)]), None);
        let mut mask = vec![1.0; BLOCK + 10];
        mask[BLOCK + 3] = 0.0;
        assert_eq!(first_broken(&[number(&values, Some(&mask))]), None);
        values[2] = f64::INFINITY; // ∞ is at least 0: no limit
        assert_eq!(first_broken(&[number(&values, Some(&mask))]), None);
    }

    #[test]
    fn the_first_rule_broken_wins_wherever_its_row_is() {
        // Three columns over several blocks and a ragged last sub-block: rule 2 is broken
        // first (row 3), rule 1 later (two rows, in different blocks), rule 0 never.
        let n = 3 * BLOCK + SUB_BLOCK / 2 + 3;
        let qty = vec![1.0; n];
        let mut price = vec![10.0; n];
        let mut margin = vec![f64::NAN; n];
        price[2 * BLOCK + 7] = f64::INFINITY;
        price[3 * BLOCK + SUB_BLOCK / 2 + 1] = f64::NEG_INFINITY;
        margin[3] = -1.0;
        let rules = [
            Rule::Finite {
                values: &qty,
                allow_nan: false,
            },
            Rule::Finite {
                values: &price,
                allow_nan: false,
            },
            at_least(&margin, 0.0, false, None),
        ];
        assert_eq!(first_broken(&rules), Some((1, 2 * BLOCK + 7)));
        assert_eq!(first_broken(&rules[2..]), Some((0, 3)));
        // Without rule 1, rule 2 again; the last row of the table is checked too.
        margin[3] = 0.0;
        margin[n - 1] = -0.5;
        let finite_qty = Rule::Finite {
            values: &qty,
            allow_nan: false,
        };
        let rules = [finite_qty, at_least(&margin, 0.0, false, None)];
        assert_eq!(first_broken(&rules), Some((1, n - 1)));
        // NaN breaks `Finite` unless allowed.
        assert_eq!(first_not_finite(&margin, false), Some(0));
        assert_eq!(first_not_finite(&margin, true), None);
    }

    #[test]
    fn ids_out_of_range_are_found_from_the_first_block_that_has_one() {
        let mut ids = vec![3u32; 2 * BLOCK + 9];
        assert_eq!(first_id_out_of_range(&ids, 4), None);
        ids[BLOCK + 2] = 4;
        ids[2 * BLOCK] = 9;
        assert_eq!(first_id_out_of_range(&ids, 4), Some(BLOCK + 2));
        assert_eq!(first_id_out_of_range(&ids, 5), Some(2 * BLOCK));
        assert_eq!(first_id_out_of_range(&[], 0), None);
    }
}
