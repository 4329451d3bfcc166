//! Splitting sets of output columns into disjoint chunks for rayon, safely.
//!
//! A kernel writes several output columns row by row. Bundling their `&mut` slices in one
//! struct that can split itself at a row lets `rayon::join` hand each task its own rows of
//! every column: no locks, no unsafe, and the same result for any number of threads.

/// A bundle of equally long mutable columns that can be cut at a row.
pub(crate) trait SplitRows: Sized + Send {
    fn rows(&self) -> usize;
    fn split_at_row(self, mid: usize) -> (Self, Self);
}

/// One column splits as itself.
impl<T: Send> SplitRows for &mut [T] {
    fn rows(&self) -> usize {
        self.len()
    }

    fn split_at_row(self, mid: usize) -> (Self, Self) {
        self.split_at_mut(mid)
    }
}

/// Two bundles of the same length split at the same row.
impl<A: SplitRows, B: SplitRows> SplitRows for (A, B) {
    fn rows(&self) -> usize {
        self.0.rows()
    }

    fn split_at_row(self, mid: usize) -> (Self, Self) {
        let (a_left, a_right) = self.0.split_at_row(mid);
        let (b_left, b_right) = self.1.split_at_row(mid);
        ((a_left, b_left), (a_right, b_right))
    }
}

/// Runs `work(first_row, chunk)` over chunks of at most about `min_rows` rows, in parallel.
pub(crate) fn for_each_chunk<T, F>(columns: T, min_rows: usize, work: &F)
where
    T: SplitRows,
    F: Fn(usize, T) + Sync,
{
    // A `Vec<()>` holds no memory: the results are only counted.
    map_chunks(columns, min_rows, work);
}

/// Runs `work(first_row, chunk)` over chunks of at most about `min_rows` rows, in
/// parallel, and returns what it gave for each chunk, in row order (so the first error
/// among them is the one of the lowest rows, and sums over them can be added in an
/// order that does not depend on the thread count).
pub(crate) fn map_chunks<T, R, F>(columns: T, min_rows: usize, work: &F) -> Vec<R>
where
    T: SplitRows,
    R: Send,
    F: Fn(usize, T) -> R + Sync,
{
    fn recurse<T: SplitRows, R: Send, F: Fn(usize, T) -> R + Sync>(
        columns: T,
        first: usize,
        min_rows: usize,
        work: &F,
    ) -> Vec<R> {
        let rows = columns.rows();
        if rows <= min_rows {
            vec![work(first, columns)]
        } else {
            let mid = rows / 2;
            let (left, right) = columns.split_at_row(mid);
            let (mut left, right) = rayon::join(
                || recurse(left, first, min_rows, work),
                || recurse(right, first + mid, min_rows, work),
            );
            left.extend(right);
            left
        }
    }
    recurse(columns, 0, min_rows.max(1), work)
}

/// Declares a bundle of mutable output columns and its [`SplitRows`] impl.
macro_rules! column_bundle {
    ($(#[$meta:meta])* $name:ident { $first:ident : $first_ty:ty $(, $field:ident : $ty:ty)* $(,)? }) => {
        $(#[$meta])*
        pub(crate) struct $name<'a> {
            pub $first: &'a mut [$first_ty],
            $(pub $field: &'a mut [$ty],)*
        }

        impl $crate::parallel::SplitRows for $name<'_> {
            fn rows(&self) -> usize {
                self.$first.len()
            }

            fn split_at_row(self, mid: usize) -> (Self, Self) {
                let ($first, right_first) = self.$first.split_at_mut(mid);
                $(let ($field, right_rest) = self.$field.split_at_mut(mid);
                  let $field = ($field, right_rest);)*
                (
                    $name { $first, $($field: $field.0,)* },
                    $name { $first: right_first, $($field: $field.1,)* },
                )
            }
        }
    };
}
pub(crate) use column_bundle;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_results_come_back_in_row_order() {
        let mut column = vec![0u32; 10_007];
        let chunks = map_chunks(column.as_mut_slice(), 64, &|first, chunk: &mut [u32]| {
            chunk.fill(1);
            (first, chunk.len())
        });
        // Consecutive chunks, each at most 64 rows, covering every row once.
        let mut next = 0;
        for &(first, len) in &chunks {
            assert_eq!(first, next);
            assert!((1..=64).contains(&len));
            next += len;
        }
        assert_eq!(next, column.len());
        assert!(column.iter().all(|&x| x == 1));
        // Rows of 0 give one empty chunk.
        assert_eq!(
            map_chunks(&mut [0u32][..0], 64, &|first, c: &mut [u32]| (
                first,
                c.len()
            )),
            vec![(0, 0)]
        );
    }
}
