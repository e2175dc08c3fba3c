//! What running stages hold here: the cores built-in stages compute on ([`Cpus`]) and the
//! GPUs, or shares of them, GPU stages hold ([`GpuSlots`]). The scheduler admits a stage only
//! when what it needs is free.

use super::Prepared;
use crate::spec::{Device, GpuShare};

/// The GPU share stage `i` needs on this machine, or `None` when it takes no GPU slot.
pub(super) fn gpu_wanted(p: &Prepared, i: usize) -> Option<Want> {
    let stage = &p.workflow.stages[i];
    if !p.checked[i].uses_device || crate::ml::device::gpu_count() == 0 {
        return None;
    }
    let gpu = match stage.device {
        Device::Cuda(None) | Device::Auto => None,
        Device::Cuda(Some(n)) => Some(n),
        Device::Cpu => return None,
    };
    Some(Want { gpu, share: stage.gpu_share.thousandths() })
}

/// A GPU stage's claim: a given GPU or any, and how much of it (thousandths).
#[derive(Clone, Copy)]
pub(super) struct Want {
    gpu: Option<usize>,
    share: u16,
}

/// What is left of each GPU while stages run on it: a whole one per stage unless the stages
/// say they need less (`gpu_share:`), so that trainings never compete for one device's memory.
pub(super) struct GpuSlots {
    /// Thousandths of each GPU not held by a running stage.
    free: Vec<u16>,
}

impl GpuSlots {
    pub(super) fn new(count: usize) -> Self {
        Self { free: vec![GpuShare::WHOLE.thousandths(); count] }
    }

    /// Whether a stage wanting `want` can start now. A GPU this machine does not have never
    /// frees up: the stage starts and fails saying so.
    pub(super) fn fits(&self, want: Option<Want>) -> bool {
        match want {
            None => true,
            Some(Want { gpu: None, share }) => self.free.iter().any(|&f| f >= share),
            Some(Want { gpu: Some(n), share }) => self.free.get(n).is_none_or(|&f| f >= share),
        }
    }

    /// Claims `want`, on the GPU with the most left when any will do (so that sharing stages
    /// spread out before they pile up), and says which GPU it got.
    pub(super) fn take(&mut self, want: Option<Want>) -> Option<usize> {
        let Want { gpu, share } = want?;
        let n = match gpu {
            Some(n) => n,
            None => (0..self.free.len())
                .filter(|&n| self.free[n] >= share)
                .min_by_key(|&n| (std::cmp::Reverse(self.free[n]), n))?,
        };
        let free = self.free.get_mut(n).filter(|f| **f >= share)?;
        *free -= share;
        Some(n)
    }

    pub(super) fn give(&mut self, n: usize, share: u16) {
        self.free[n] += share;
    }
}

/// The cores built-in stages compute on. Each stage process uses a fixed number of threads
/// (`RAYON_NUM_THREADS`, which candle and rayon read), set when it starts to its share of the
/// cores no running stage holds: two trainings that each spread over every core fight over
/// them (docs/benchmarks.md#stages-side-by-side).
/// A `RAYON_NUM_THREADS` set by the user is left to rule.
pub(super) struct Cpus {
    total: usize,
    held: usize,
    user_set: bool,
}

impl Cpus {
    pub(super) fn new() -> Self {
        let total = std::thread::available_parallelism().map_or(1, usize::from);
        Self { total, held: 0, user_set: std::env::var_os("RAYON_NUM_THREADS").is_some() }
    }

    /// Threads for a stage starting now with `starting - 1` others about to start beside it:
    /// an equal part of the free cores, and at least one.
    pub(super) fn take(&mut self, starting: usize) -> Option<usize> {
        if self.user_set {
            return None;
        }
        let threads = (self.total.saturating_sub(self.held) / starting.max(1)).max(1);
        self.held += threads;
        Some(threads)
    }

    pub(super) fn give(&mut self, threads: usize) {
        self.held -= threads;
    }
}

#[cfg(test)]
mod tests {
    use super::{Cpus, GpuSlots, Want};
    use crate::spec::GpuShare;

    const WHOLE_GPU: u16 = GpuShare::WHOLE.thousandths();

    #[test]
    fn built_in_stages_split_the_free_cores() {
        let mut cpus = Cpus { total: 4, held: 0, user_set: false };
        assert_eq!(cpus.take(1), Some(4), "a stage alone gets every core");
        assert_eq!(cpus.take(1), Some(1), "one more, however busy the cores, gets one");
        cpus.give(4);
        assert_eq!((cpus.take(2), cpus.take(1)), (Some(1), Some(2)), "three cores free, two stages starting");
        assert_eq!(cpus.held, 4);
        assert_eq!(Cpus { total: 4, held: 0, user_set: true }.take(1), None, "the user's RAYON_NUM_THREADS rules");
    }

    #[test]
    fn gpu_slots_hold_one_stage_per_gpu() {
        let whole = |gpu| Some(Want { gpu, share: WHOLE_GPU });
        let mut gpus = GpuSlots::new(2);
        assert!(gpus.fits(None) && gpus.fits(whole(None)) && gpus.fits(whole(Some(1))));
        assert_eq!(gpus.take(whole(Some(1))), Some(1));
        assert!(!gpus.fits(whole(Some(1))), "cuda:1 is held");
        assert_eq!(gpus.take(whole(None)), Some(0));
        assert!(!gpus.fits(whole(None)), "both are held");
        assert!(gpus.fits(None), "CPU stages never wait for a GPU");
        assert!(gpus.fits(whole(Some(5))), "a GPU the machine lacks does not block: the stage fails saying so");
        assert_eq!(gpus.take(whole(Some(5))), None);
        gpus.give(1, WHOLE_GPU);
        assert_eq!(gpus.take(whole(None)), Some(1));
        assert_eq!(GpuSlots::new(0).take(whole(None)), None);
    }

    #[test]
    fn stages_share_a_gpu_while_their_shares_fit() {
        let share = |gpu, share| Some(Want { gpu, share });
        let mut gpus = GpuSlots::new(2);
        // Sharing stages spread over the GPUs before they double up.
        assert_eq!(gpus.take(share(None, 500)), Some(0));
        assert_eq!(gpus.take(share(None, 500)), Some(1));
        assert_eq!(gpus.take(share(None, 300)), Some(0));
        assert!(!gpus.fits(share(None, WHOLE_GPU)), "no GPU is whole");
        assert!(!gpus.fits(share(Some(0), 250)), "cuda:0 has 200 left");
        assert_eq!(gpus.take(share(Some(0), 200)), Some(0));
        assert_eq!(gpus.take(share(None, 500)), Some(1));
        assert!(!gpus.fits(share(None, 1)), "both are full");
        gpus.give(0, 500);
        gpus.give(0, 300);
        gpus.give(0, 200);
        assert_eq!(gpus.take(share(None, WHOLE_GPU)), Some(0));
    }
}
