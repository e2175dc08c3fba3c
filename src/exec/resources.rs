//! What running stages hold here: the cores built-in stages compute on ([`Cpus`]) and the
//! GPUs, or shares of them, GPU stages hold ([`GpuSlots`]). The scheduler admits a stage only
//! when what it needs is free.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// The cores stages compute on. Every local stage counts as one core while it runs; the
/// built-in ones split what the running commands leave, equally and at least one each, because
/// two trainings that each spread over every core fight over them
/// (docs/benchmarks.md#stages-side-by-side). A built-in stage starts with its share as
/// `RAYON_NUM_THREADS`, and shares change while stages run: each built-in stage's current share
/// is a small file the scheduler rewrites whenever a stage starts or ends and the training loop
/// re-reads before every step ([`crate::ml::cores`]). So a training that started beside a data
/// stage grows onto its core when that finishes, and gives a core back within one step when
/// another stage starts. A `RAYON_NUM_THREADS` set by the user is left to rule.
pub(super) struct Cpus {
    total: usize,
    user_set: bool,
    /// Local command stages running.
    commands: usize,
    /// Running built-in stages (by index, so in a fixed order) and their current shares.
    builtins: BTreeMap<usize, usize>,
    /// Where the share files are, made at the first built-in stage.
    dir: Option<tempfile::TempDir>,
}

impl Cpus {
    pub(super) fn new() -> Self {
        let total = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with(total, std::env::var_os("RAYON_NUM_THREADS").is_some())
    }

    fn with(total: usize, user_set: bool) -> Self {
        Self { total, user_set, commands: 0, builtins: BTreeMap::new(), dir: None }
    }

    /// A local command stage starts.
    pub(super) fn start_command(&mut self) {
        self.commands += 1;
    }

    pub(super) fn end_command(&mut self) {
        self.commands -= 1;
    }

    /// Built-in stage `i` starts. Its share is set by the next [`Cpus::rebalance`].
    pub(super) fn start_builtin(&mut self, i: usize) {
        self.builtins.insert(i, 0);
    }

    pub(super) fn end_builtin(&mut self, i: usize) {
        self.builtins.remove(&i);
        if let Some(dir) = &self.dir {
            let _ = fs_err::remove_file(share_file(dir.path(), i));
        }
    }

    /// Splits the cores again and writes every changed share to its file (nothing while the
    /// user's `RAYON_NUM_THREADS` rules).
    pub(super) fn rebalance(&mut self) -> std::io::Result<()> {
        if self.user_set || self.builtins.is_empty() {
            return Ok(());
        }
        let shares = split(self.total, self.commands, self.builtins.len());
        let mut changed = Vec::new();
        for ((&i, share), new) in self.builtins.iter_mut().zip(shares) {
            if *share != new {
                *share = new;
                changed.push((i, new));
            }
        }
        if self.dir.is_none() {
            self.dir = Some(tempfile::Builder::new().prefix("flow-cores-").tempdir()?);
        }
        let dir = self.dir.as_ref().expect("made above").path();
        for (i, share) in changed {
            // Renamed into place, so that a training never reads a half-written number.
            let file = share_file(dir, i);
            let tmp = file.with_extension("new");
            fs_err::write(&tmp, share.to_string())?;
            fs_err::rename(&tmp, &file)?;
        }
        Ok(())
    }

    /// Built-in stage `i`'s share now and, once written, the file that holds it; `None` while
    /// the user's `RAYON_NUM_THREADS` rules.
    pub(super) fn share(&self, i: usize) -> Option<(usize, Option<PathBuf>)> {
        let share = *self.builtins.get(&i).filter(|&&s| s > 0 && !self.user_set)?;
        Some((share, self.dir.as_ref().map(|d| share_file(d.path(), i))))
    }
}

fn share_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(i.to_string())
}

/// `total` cores split between `builtins` stages beside `commands` one-core commands: equal
/// parts of what the commands leave, the remainder to the first stages, at least one each.
fn split(total: usize, commands: usize, builtins: usize) -> Vec<usize> {
    let free = total.saturating_sub(commands);
    let (part, extra) = (free / builtins.max(1), free % builtins.max(1));
    (0..builtins).map(|k| (part + usize::from(k < extra)).max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::{Cpus, GpuSlots, Want, split};
    use crate::spec::GpuShare;

    const WHOLE_GPU: u16 = GpuShare::WHOLE.thousandths();

    #[test]
    fn built_in_stages_split_what_the_commands_leave() {
        assert_eq!(split(4, 0, 1), [4], "a stage alone gets every core");
        assert_eq!(split(4, 0, 3), [2, 1, 1], "the remainder goes to the first");
        assert_eq!(split(4, 1, 2), [2, 1], "a command holds one core");
        assert_eq!(split(2, 3, 2), [1, 1], "however busy the cores, one each");
        assert_eq!(split(16, 0, 5).iter().sum::<usize>(), 16);
    }

    /// The files a training re-reads: rewritten as stages come and go, gone when their stage
    /// ends, and never written while the user's RAYON_NUM_THREADS rules.
    #[test]
    fn shares_follow_the_stages_that_run() {
        let read = |cpus: &Cpus, i| {
            let (share, file) = cpus.share(i).expect("a built-in stage has a share");
            let file = file.expect("shares are written");
            let written: usize = fs_err::read_to_string(&file).unwrap().parse().unwrap();
            assert_eq!(share, written, "stage {i}'s file holds its share");
            (share, file)
        };
        let mut cpus = Cpus::with(2, false);
        cpus.start_builtin(7);
        cpus.start_command();
        cpus.rebalance().unwrap();
        assert_eq!(read(&cpus, 7).0, 1, "beside a running command");
        cpus.end_command();
        cpus.rebalance().unwrap();
        assert_eq!(read(&cpus, 7).0, 2, "grows onto the core the command left");
        cpus.start_builtin(3);
        cpus.rebalance().unwrap();
        assert_eq!((read(&cpus, 3).0, read(&cpus, 7).0), (1, 1), "gives one back to a new stage");
        let (_, file) = read(&cpus, 3);
        cpus.end_builtin(3);
        cpus.rebalance().unwrap();
        assert!(!file.exists(), "an ended stage's file is removed");
        assert_eq!(read(&cpus, 7).0, 2);

        let mut user = Cpus::with(2, true);
        user.start_builtin(1);
        user.rebalance().unwrap();
        assert!(user.share(1).is_none() && user.dir.is_none(), "the user's RAYON_NUM_THREADS rules");
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
