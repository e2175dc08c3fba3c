//! The threads a training step computes on. Under `flow apply` a built-in stage's share of the
//! machine's cores changes while it runs (stages start and end beside it); the scheduler keeps
//! the current share in a file named by [`SHARE_VAR`], and [`Cores::run`] reads it before every
//! step and runs the step on a thread pool of that size. Results do not depend on it: every
//! reduction of the training path has an order fixed independently of the thread count.
//! Without the variable (a standalone `flow run-stage`, a Slurm job, a test) steps run on the
//! process's own rayon pool.

use std::path::PathBuf;

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The variable naming the file that holds a stage's current number of threads.
pub const SHARE_VAR: &str = "FLOW_CORES_FILE";

/// A training loop's threads: the share file, if any, and the pool of the last share that
/// differed from the process's own pool (one at a time: a share changes only when a stage
/// starts or ends, and a new pool costs a few thread starts).
pub struct Cores {
    file: Option<PathBuf>,
    most: usize,
    pool: Option<ThreadPool>,
}

impl Cores {
    /// The share file from [`SHARE_VAR`], if set.
    pub fn from_env() -> Self {
        let most = std::thread::available_parallelism().map_or(1, usize::from);
        Self { file: std::env::var_os(SHARE_VAR).map(PathBuf::from), most, pool: None }
    }

    /// The share the file holds now, between 1 and the machine's cores; `None` without a
    /// file, or while it cannot be read (the step then runs on the process's own pool).
    pub fn share(&self) -> Option<usize> {
        let text = fs_err::read_to_string(self.file.as_ref()?).ok()?;
        Some(text.trim().parse::<usize>().ok()?.clamp(1, self.most))
    }

    /// Runs `step` on as many threads as the stage's share is now.
    pub fn run<R: Send>(&mut self, step: impl FnOnce() -> R + Send) -> R {
        let Some(n) = self.share().filter(|&n| n != rayon::current_num_threads()) else {
            return step();
        };
        if self.pool.as_ref().is_none_or(|p| p.current_num_threads() != n) {
            match ThreadPoolBuilder::new().num_threads(n).thread_name(|k| format!("flow-step-{k}")).build() {
                Ok(pool) => self.pool = Some(pool),
                Err(_) => return step(),
            }
        }
        self.pool.as_ref().expect("made above").install(step)
    }
}

#[cfg(test)]
mod tests {
    use super::Cores;

    /// The step runs on as many threads as the file says, re-read every time.
    #[test]
    fn each_step_runs_on_the_share_the_file_holds_then() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("share");
        let mut cores = Cores { file: Some(file.clone()), most: 3, pool: None };
        let global = rayon::current_num_threads();
        assert_eq!(cores.run(rayon::current_num_threads), global, "no file yet: the process's pool");
        for (written, threads) in [("2", 2), ("1\n", 1), ("3", 3), ("9", 3), ("0", 1)] {
            fs_err::write(&file, written).unwrap();
            assert_eq!(cores.run(rayon::current_num_threads), threads, "the file holds {written:?}");
        }
        fs_err::write(&file, "two").unwrap();
        assert_eq!(cores.run(rayon::current_num_threads), global, "an unreadable share leaves the pool alone");
        assert_eq!(Cores { file: None, most: 3, pool: None }.share(), None);
    }
}
