//! Learning-rate schedules as pure functions of the step, so a resumed run gets exactly the
//! learning rates it would have had uninterrupted (docs/stages.md#pretrain).
//!
//! Every schedule shares nanoGPT's linear warmup; after it, a schedule either holds the peak or
//! decays to its final learning rate, reaching it exactly when the run ends — at step `total`,
//! the step a continuation would take next — so every step of the run trains at a rate above
//! it, even when that rate is 0.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// How the learning rate moves after warmup. With `n = total − warmup` post-warmup steps and
/// `q = (step − warmup) / n` (clamped to `[0, 1]`; `q = 1` when `n = 0`):
///
/// - `constant`: `peak`.
/// - `cosine`: `min_lr + 0.5·(1 + cos(π·q))·(peak − min_lr)` (nanoGPT, decaying over the whole run).
/// - `linear`: `peak + (final_lr − peak)·q`.
/// - `wsd` (warmup–stable–decay; Hägele et al. 2024): `peak` until the decay phase, which is the
///   last `floor(decay·total)` steps but never starts before warmup ends; inside it, with
///   `p = (step − start) / (total − start)`,
///   `final_lr + (peak − final_lr)·g(p)` with `g` given by [`DecayShape`]. The stable phase does
///   not depend on `total`, so a decay can be branched off any stable checkpoint.
///
/// The formulas are evaluated so that the first post-warmup (or first decay) step is exactly
/// `peak`, step `total` exactly the final learning rate, and the decay strictly above it on
/// every step of the run and monotone despite rounding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant,
    Cosine {
        #[serde(default)]
        min_lr: f64,
    },
    Linear {
        #[serde(default)]
        final_lr: f64,
    },
    Wsd {
        /// Fraction of all steps spent decaying.
        #[serde(default = "default_decay")]
        decay: f64,
        #[serde(default)]
        shape: DecayShape,
        #[serde(default)]
        final_lr: f64,
    },
}

/// 20%: Hägele et al.'s example setting; MiniCPM reports ~10% suffices and 2.5% does not.
fn default_decay() -> f64 {
    0.2
}

/// The shape `g(p)` of a WSD decay, `p` going from 0 to 1 across the decay phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    /// `g = 1 − p`.
    #[default]
    Linear,
    /// `g = 0.5·(1 + cos(π·p))`.
    Cosine,
    /// `g = 1 − sqrt(p)`: the "(1−sqrt)" cooldown, which Hägele et al. found better than linear.
    Sqrt,
}

impl DecayShape {
    /// The fraction of the way from the final learning rate back up to the peak.
    fn remaining(self, p: f64) -> f64 {
        match self {
            Self::Linear => 1.0 - p,
            Self::Cosine => 0.5 * (1.0 + (PI * p).cos()),
            Self::Sqrt => 1.0 - p.sqrt(),
        }
    }
}

/// A schedule that does not fit its run's peak learning rate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("peak learning rate must be finite and positive, got {0}")]
    Peak(f64),
    #[error("`{field}` must be in [0, peak = {peak}], got {value}")]
    End { field: &'static str, peak: f64, value: f64 },
    #[error("`decay` must be a fraction in [0, 1], got {0}")]
    Decay(f64),
}

impl Schedule {
    /// Checks the schedule against the run's peak learning rate: everything finite, the
    /// final/minimum learning rate in `[0, peak]`, and the WSD decay fraction in `[0, 1]`.
    pub fn validate(&self, peak: f64) -> Result<(), ScheduleError> {
        if !(peak.is_finite() && peak > 0.0) {
            return Err(ScheduleError::Peak(peak));
        }
        let end = |field: &'static str, value: f64| {
            if (0.0..=peak).contains(&value) { Ok(()) } else { Err(ScheduleError::End { field, peak, value }) }
        };
        match *self {
            Self::Constant => Ok(()),
            Self::Cosine { min_lr } => end("min_lr", min_lr),
            Self::Linear { final_lr } => end("final_lr", final_lr),
            Self::Wsd { decay, final_lr, .. } => {
                if !(0.0..=1.0).contains(&decay) {
                    return Err(ScheduleError::Decay(decay));
                }
                end("final_lr", final_lr)
            }
        }
    }
}

/// The learning rate at `step` (0-based) of a run of `total` steps that warms up linearly over
/// `warmup` steps to `peak`: `peak·(step + 1)/(warmup + 1)` while `step < warmup` (nanoGPT), then
/// as described on [`Schedule`]. Steps at or past `total` are the end of the run, where a decay
/// has reached its final learning rate: the rate a continuation of the run starts from.
pub fn lr(schedule: &Schedule, peak: f64, warmup: u64, total: u64, step: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / (warmup + 1) as f64;
    }
    match *schedule {
        Schedule::Constant => peak,
        Schedule::Cosine { min_lr } => {
            decayed(peak, min_lr, DecayShape::Cosine.remaining(progress(step - warmup, total.saturating_sub(warmup))))
        }
        Schedule::Linear { final_lr } => {
            decayed(peak, final_lr, DecayShape::Linear.remaining(progress(step - warmup, total.saturating_sub(warmup))))
        }
        Schedule::Wsd { decay, shape, final_lr } => {
            // `as` saturates, and truncation is the reference's `int(fract_decay * total)`.
            let n_decay = (decay * total as f64) as u64;
            let start = total.saturating_sub(n_decay).max(warmup);
            if step < start || start >= total {
                peak
            } else {
                decayed(peak, final_lr, shape.remaining(progress(step - start, total - start)))
            }
        }
    }
}

/// `done / len` clamped to 1: 0 on a phase's first step, `(len − 1)/len` on its last, and 1 on
/// the step after it, so no step of the phase trains at the final rate.
fn progress(done: u64, len: u64) -> f64 {
    if len == 0 { 1.0 } else { (done as f64 / len as f64).min(1.0) }
}

/// `end + (peak − end)·remaining`, except that `remaining = 1` gives `peak` exactly (the
/// expression can land an ulp above or below it). Capping the rest at `peak` makes the decay
/// provably monotone: rounding is monotone, so only the exact first value could break it.
fn decayed(peak: f64, end: f64, remaining: f64) -> f64 {
    if remaining >= 1.0 { peak } else { (end + (peak - end) * remaining).min(peak) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEAK: f64 = 3e-4;

    fn all_decaying() -> Vec<(Schedule, f64)> {
        let mut out = vec![
            (Schedule::Cosine { min_lr: 3e-5 }, 3e-5),
            (Schedule::Cosine { min_lr: 0.0 }, 0.0),
            (Schedule::Linear { final_lr: 0.0 }, 0.0),
            (Schedule::Linear { final_lr: 1.7e-5 }, 1.7e-5),
            // Ends for which `end + (peak − end)` is an ulp above or below `peak`.
            (Schedule::Linear { final_lr: 1.23e-5 }, 1.23e-5),
            (Schedule::Cosine { min_lr: PEAK / 10.0 }, PEAK / 10.0),
        ];
        for shape in [DecayShape::Linear, DecayShape::Cosine, DecayShape::Sqrt] {
            out.push((Schedule::Wsd { decay: 0.2, shape, final_lr: 0.0 }, 0.0));
            out.push((Schedule::Wsd { decay: 0.1, shape, final_lr: 3e-6 }, 3e-6));
        }
        out
    }

    fn all() -> Vec<Schedule> {
        let mut out: Vec<Schedule> = all_decaying().into_iter().map(|(s, _)| s).collect();
        out.push(Schedule::Constant);
        out.push(Schedule::Wsd { decay: 0.0, shape: DecayShape::Sqrt, final_lr: 0.0 });
        // Decay longer than the post-warmup part: it starts when warmup ends.
        out.push(Schedule::Wsd { decay: 1.0, shape: DecayShape::Cosine, final_lr: 1e-5 });
        out
    }

    /// (warmup, total) pairs, including the degenerate ones.
    const RUNS: [(u64, u64); 7] = [(10, 100), (0, 50), (7, 333), (100, 1000), (5, 6), (5, 5), (0, 1)];

    fn curve(s: &Schedule, warmup: u64, total: u64) -> Vec<f64> {
        (0..total).map(|step| lr(s, PEAK, warmup, total, step)).collect()
    }

    #[test]
    fn warmup_rises_linearly_to_peak() {
        for s in all() {
            let (warmup, total) = (10, 100);
            let c = curve(&s, warmup, total);
            assert_eq!(c[0], PEAK / 11.0);
            assert!(c[..10].windows(2).all(|w| w[0] < w[1]), "{s:?}");
            assert!(c[9] < PEAK);
            assert_eq!(c[10], PEAK, "{s:?}: first post-warmup step");
        }
    }

    #[test]
    fn decays_monotonically_to_exactly_the_final_lr() {
        for (s, end) in all_decaying() {
            for (warmup, total) in RUNS {
                let c = curve(&s, warmup, total);
                let post = &c[(warmup as usize).min(c.len())..];
                if matches!(s, Schedule::Wsd { decay, .. } if (decay * total as f64) as u64 == 0) {
                    assert!(post.iter().all(|&x| x == PEAK), "{s:?} {warmup}/{total}: too short to decay");
                    continue;
                }
                assert!(post.windows(2).all(|w| w[1] <= w[0]), "{s:?} {warmup}/{total}: not monotone");
                let Some(&first) = post.first() else { continue };
                assert_eq!(first, PEAK, "{s:?} {warmup}/{total}: first post-warmup step");
                assert!(post.iter().all(|&x| x > end && x <= PEAK), "{s:?} {warmup}/{total}: a step at the end rate");
                assert_eq!(lr(&s, PEAK, warmup, total, total), end, "{s:?} {warmup}/{total}: where the run ends");
                assert_eq!(lr(&s, PEAK, warmup, total, total + 5), end, "{s:?}: past the end");
            }
        }
    }

    /// In a billion-step cosine the first few decay factors round to exactly 1, and for this
    /// `end`, `end + (peak − end)` rounds to just above `peak`.
    #[test]
    fn rounding_never_lifts_a_decay_above_peak() {
        let s = Schedule::Cosine { min_lr: 1.23e-5 };
        let c: Vec<f64> = (0..100).map(|step| lr(&s, PEAK, 0, 1_000_000_000, step)).collect();
        assert_eq!(c[0], PEAK);
        assert!(c.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn constant_and_decayless_wsd_hold_the_peak() {
        for s in [Schedule::Constant, Schedule::Wsd { decay: 0.0, shape: DecayShape::Linear, final_lr: 0.0 }] {
            assert!(curve(&s, 10, 100)[10..].iter().all(|&x| x == PEAK), "{s:?}");
        }
    }

    #[test]
    fn wsd_decays_over_exactly_the_last_fraction() {
        let s = Schedule::Wsd { decay: 0.2, shape: DecayShape::Linear, final_lr: 0.0 };
        let c = curve(&s, 10, 1000);
        // Steps 800..1000 decay; the first of them is still at peak, as in the reference.
        assert!(c[10..=800].iter().all(|&x| x == PEAK));
        assert!(c[801] < PEAK);
        assert!(c[999] > 0.0, "the last step still trains");
        assert_eq!(lr(&s, PEAK, 10, 1000, 1000), 0.0);
        // A decay that would start inside warmup starts right after it instead.
        let long = Schedule::Wsd { decay: 0.95, shape: DecayShape::Linear, final_lr: 0.0 };
        let c = curve(&long, 10, 100);
        assert_eq!(c[10], PEAK);
        assert!(c[11] < PEAK);
    }

    #[test]
    fn wsd_is_prefix_invariant_and_cosine_is_not() {
        let (warmup, short, long) = (10, 500, 2000);
        for shape in [DecayShape::Linear, DecayShape::Cosine, DecayShape::Sqrt] {
            let s = Schedule::Wsd { decay: 0.2, shape, final_lr: 0.0 };
            let decay_start = 400;
            for step in 0..decay_start {
                assert_eq!(lr(&s, PEAK, warmup, short, step), lr(&s, PEAK, warmup, long, step), "{shape:?} @ {step}");
            }
            assert_ne!(lr(&s, PEAK, warmup, short, decay_start + 1), lr(&s, PEAK, warmup, long, decay_start + 1));
        }
        let cosine = Schedule::Cosine { min_lr: 0.0 };
        let differ = (warmup + 1..short)
            .filter(|&step| lr(&cosine, PEAK, warmup, short, step) != lr(&cosine, PEAK, warmup, long, step));
        assert_eq!(
            differ.count() as u64,
            short - warmup - 1,
            "cosine depends on the total at every step but the first"
        );
    }

    /// At each phase boundary `b`, the change from `b − 1` to `b` is no larger than the largest
    /// step-to-step change within the phases on either side.
    #[test]
    fn no_jumps_at_phase_boundaries() {
        fn max_change(c: &[f64]) -> f64 {
            c.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0, f64::max)
        }
        for s in all() {
            for (warmup, total) in [(10, 100), (100, 1000), (7, 333), (3, 40)] {
                let c = curve(&s, warmup, total);
                let mut starts = vec![0, warmup as usize];
                if let Schedule::Wsd { decay, .. } = s {
                    starts.push((total - (decay * total as f64) as u64).max(warmup) as usize);
                }
                starts.push(total as usize);
                starts.dedup();
                for phases in starts.windows(3) {
                    let (before, b, after) = (phases[0], phases[1], phases[2]);
                    let neighbours = max_change(&c[before..b]).max(max_change(&c[b..after]));
                    let jump = (c[b] - c[b - 1]).abs();
                    assert!(jump <= neighbours + 1e-12, "{s:?} {warmup}/{total}: jump {jump} at {b} > {neighbours}");
                }
            }
        }
    }

    #[test]
    fn sqrt_cooldown_is_halfway_at_a_quarter() {
        let final_lr = 2e-5;
        let s = Schedule::Wsd { decay: 0.25, shape: DecayShape::Sqrt, final_lr };
        // 200 decay steps (600..800), so p = 50/200 = 0.25 at step 650.
        let (warmup, total) = (10, 800);
        assert_eq!(lr(&s, PEAK, warmup, total, 599), PEAK);
        assert_eq!(lr(&s, PEAK, warmup, total, 600), PEAK);
        assert_eq!(lr(&s, PEAK, warmup, total, 650), 0.5 * (PEAK - final_lr) + final_lr);
        assert!(lr(&s, PEAK, warmup, total, 799) > final_lr);
        assert_eq!(lr(&s, PEAK, warmup, total, 800), final_lr);
    }

    #[test]
    fn serde_forms() {
        let cases = [
            (r#""constant""#, Schedule::Constant),
            (r#"{"cosine":{"min_lr":1e-4}}"#, Schedule::Cosine { min_lr: 1e-4 }),
            (r#"{"cosine":{}}"#, Schedule::Cosine { min_lr: 0.0 }),
            (r#"{"linear":{"final_lr":0.0}}"#, Schedule::Linear { final_lr: 0.0 }),
            (
                r#"{"wsd":{"decay":0.1,"shape":"sqrt"}}"#,
                Schedule::Wsd { decay: 0.1, shape: DecayShape::Sqrt, final_lr: 0.0 },
            ),
            (r#"{"wsd":{}}"#, Schedule::Wsd { decay: 0.2, shape: DecayShape::Linear, final_lr: 0.0 }),
        ];
        for (json, expected) in cases {
            let parsed: Schedule = serde_json::from_str(json).unwrap();
            assert_eq!(parsed, expected, "{json}");
            let again: Schedule = serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
            assert_eq!(again, expected);
        }
        assert_eq!(serde_json::to_string(&Schedule::Constant).unwrap(), r#""constant""#);
        for bad in [
            r#"{"cosine":{"min_lr":1e-4,"final_lr":0}}"#,
            r#"{"wsd":{"shape":"exp"}}"#,
            r#""cosine_decay""#,
            r#"{"wsd":{"decay":0.1},"cosine":{}}"#,
        ] {
            assert!(serde_json::from_str::<Schedule>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_checks_ranges() {
        for s in all() {
            assert_eq!(s.validate(PEAK), Ok(()), "{s:?}");
        }
        let bad = [
            Schedule::Cosine { min_lr: -1e-5 },
            Schedule::Cosine { min_lr: 2.0 * PEAK },
            Schedule::Linear { final_lr: f64::NAN },
            Schedule::Wsd { decay: 1.5, shape: DecayShape::Linear, final_lr: 0.0 },
            Schedule::Wsd { decay: -0.1, shape: DecayShape::Linear, final_lr: 0.0 },
            Schedule::Wsd { decay: f64::NAN, shape: DecayShape::Linear, final_lr: 0.0 },
            Schedule::Wsd { decay: 0.2, shape: DecayShape::Linear, final_lr: f64::INFINITY },
        ];
        for s in bad {
            assert!(s.validate(PEAK).is_err(), "{s:?}");
        }
        for peak in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Schedule::Constant.validate(peak).is_err(), "{peak}");
        }
    }
}
