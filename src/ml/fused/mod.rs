//! The fused CPU training path: the decoder's forward and backward pass written as a few large
//! operations over preallocated activations (the llm.c approach), for f32 training on the CPU.
//!
//! candle's op-by-op tape spends most of a small model's step outside the matrix
//! multiplications — every elementwise op allocates, zero-fills and hops through the thread
//! pool (docs/benchmarks.md). Here each layer is nine gemms each way (the kernels candle's CPU
//! backend uses, through [`matmul`]) with one fused kernel between them, and every reduction has
//! an order fixed independently of threads and CPU, so artifacts stay bit-identical across
//! thread counts and x86-64 machines. The op-by-op [`Model`](crate::ml::model::Model) stays the
//! reference: the tests hold this path to it, and it runs wherever this one does not (a GPU,
//! half precision).

mod attention;
mod kernels;
mod matmul;
mod net;
mod trainer;

pub use trainer::{Forward, Fused};

/// The float types the fused path computes in: f32 for training, f64 for gradient checks.
pub trait Real:
    num_traits::Float + std::ops::AddAssign + std::ops::MulAssign + Send + Sync + std::fmt::Debug + 'static
{
    /// `e^x`, the same bits on every CPU.
    fn fast_exp(self) -> Self;
    fn of(x: f64) -> Self;
    fn f64(self) -> f64;
}

impl Real for f32 {
    fn fast_exp(self) -> Self {
        kernels::exp_f32(self)
    }
    fn of(x: f64) -> Self {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn fast_exp(self) -> Self {
        libm::exp(self)
    }
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
}

#[cfg(test)]
mod tests;
