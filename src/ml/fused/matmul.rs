//! The one matrix multiplication of the fused path: gemm (the crate candle's CPU backend
//! calls) over strided views, with the reduction dimension cut into fixed chunks.
//!
//! Why the chunks: gemm sums each output element sequentially (one FMA accumulator per
//! element, whatever the SIMD width), but above 512 it splits the reduction into blocks whose
//! size it derives from the L1 cache it detects at run time, and a different split rounds
//! differently. Calls of at most [`K_CHUNK`] never split, so the summation order, and so the
//! bits, are the same on every x86-64 CPU with FMA (every one since 2013) and every thread
//! count: gemm divides the work between threads by output blocks, never along the reduction.
//!
//! gemm's packed microkernel is not its only path: small products (at most 16 × 16 outputs),
//! matrix-vector products and reductions of one or two take horizontal kernels whose lane count
//! follows the SIMD width (8 with AVX2, 16 with AVX-512). Those shapes are cheap, so they are
//! computed here with the microkernel's order written out instead of being handed to gemm.

use gemm::Parallelism;

use super::Real;

/// The longest reduction gemm is handed in one call (gemm keeps reductions up to 512 whole).
pub(super) const K_CHUNK: usize = 512;

/// A read-only `rows × cols` matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(super) struct View<'a, T> {
    pub(super) data: &'a [T],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major `rows × cols` matrix.
    pub(super) fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major `rows × cols` matrix, as a `cols × rows` view.
    pub(super) fn t(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows: cols, cols: rows, rs: 1, cs: cols }
    }

    /// With an explicit row stride (a head's columns inside a wider row, say).
    pub(super) fn strided(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        Self { data, rows, cols, rs, cs }
    }

    /// The same matrix, transposed.
    pub(super) fn transposed(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn end(&self) -> usize {
        if self.rows == 0 || self.cols == 0 { 0 } else { (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1 }
    }
}

/// Whether gemm may use the thread pool for one call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Threads {
    /// Inside a task that is already one of many parallel ones.
    One,
    /// Every thread of the current rayon pool.
    Pool,
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` being `a.rows × b.cols` with row
/// stride `dst_rs`.
pub(super) fn matmul<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
    threads: Threads,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(a.data.len() >= a.end() && b.data.len() >= b.end(), "a matmul operand is out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n, "the matmul output is out of bounds");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(T::zero());
            }
        }
        return;
    }
    if !packed_kernel(m, n, k) {
        sequential(dst, dst_rs, a, b, accumulate);
        return;
    }
    let parallelism = match threads {
        Threads::One => Parallelism::None,
        Threads::Pool => Parallelism::Rayon(rayon::current_num_threads()),
    };
    let mut start = 0;
    while start < k {
        let len = K_CHUNK.min(k - start);
        let read = accumulate || start > 0;
        // SAFETY: the asserts above keep every index of both operands and of `dst` in bounds,
        // and `dst` is borrowed mutably, so it aliases neither operand.
        unsafe {
            gemm::gemm(
                m,
                n,
                len,
                dst.as_mut_ptr(),
                1,
                dst_rs as isize,
                read,
                a.data.as_ptr().add(start * a.cs),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr().add(start * b.rs),
                b.cs as isize,
                b.rs as isize,
                if read { T::one() } else { T::zero() },
                T::one(),
                false,
                false,
                false,
                parallelism,
            );
        }
        start += len;
    }
}

/// Whether gemm takes its packed microkernel for an `m × k · k × n` product, in either
/// orientation (gemm transposes the problem when that suits its layout, swapping m and n).
fn packed_kernel(m: usize, n: usize, k: usize) -> bool {
    m * n > 16 * 16 && m > 1 && n > 1 && k > 2
}

/// The packed microkernel's order, written out: per output element one fused multiply-add
/// accumulator over each chunk of the reduction, added to what is already there.
fn sequential<T: Real>(dst: &mut [T], dst_rs: usize, a: View<'_, T>, b: View<'_, T>, accumulate: bool) {
    let k = a.cols;
    for i in 0..a.rows {
        for j in 0..b.cols {
            let out = &mut dst[i * dst_rs + j];
            let mut start = 0;
            while start < k {
                let end = (start + K_CHUNK).min(k);
                let sum = (start..end)
                    .fold(T::zero(), |acc, l| a.data[i * a.rs + l * a.cs].mul_add(b.data[l * b.rs + j * b.cs], acc));
                *out = if accumulate || start > 0 { *out + sum } else { sum };
                start = end;
            }
        }
    }
}
