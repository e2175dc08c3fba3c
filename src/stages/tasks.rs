//! The `tasks` kind: writes instruction tasks with exactly checkable answers (`synth::problems`
//! families: arithmetic, word reversal, letter sorting, spelling) as conversations —
//! `train.jsonl` for fine-tuning and `test.jsonl` for `eval`. Train and test never share a
//! problem: a problem's split is fixed by a hash of the problem itself.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{About, Kind, ParamError, Progress, Roles, StageError, Task, invalid, typed};
use crate::synth::{self, Difficulty, ProblemFamily, Split};

pub struct Tasks;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub families: Vec<ProblemFamily>,
    /// Training conversations per family.
    #[serde(default = "train")]
    pub train: usize,
    /// Held-out conversations per family.
    #[serde(default = "test")]
    pub test: usize,
    /// How hard the problems are (`digits`, `letters`); default: each family's full range.
    #[serde(default)]
    pub difficulty: Difficulty,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

fn train() -> usize {
    2000
}
fn test() -> usize {
    100
}

impl Kind for Tasks {
    fn about(&self) -> &'static About {
        &About { name: "tasks", version: 2, roles: Roles::Fixed(&[]), device: false, defaults: &["seed"], outputs: &[] }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        if p.families.is_empty() {
            return Err(invalid("families", "name at least one family"));
        }
        for (key, n, split) in [("train", p.train, Split::Train), ("test", p.test, Split::Test)] {
            if n > split.max_problems() {
                return Err(invalid(key, format!("at most {} per family", split.max_problems())));
            }
        }
        p.difficulty.check().map_err(|e| invalid("difficulty", e.to_string()))?;
        if p.train + p.test == 0 {
            return Err(invalid("train", "`train` and `test` are both 0"));
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        for (i, (file, split, n)) in
            [("train.jsonl", Split::Train, p.train), ("test.jsonl", Split::Test, p.test)].into_iter().enumerate()
        {
            write(&task.out.join(file), &p.families, split, n, p.seed, p.difficulty)?;
            progress(&Progress { step: i as u64 + 1, total: 2, ..Default::default() });
        }
        Ok(())
    }
}

fn write(
    path: &Path,
    families: &[ProblemFamily],
    split: Split,
    n: usize,
    seed: u64,
    difficulty: Difficulty,
) -> Result<(), StageError> {
    let mut out = std::io::BufWriter::new(fs_err::File::create(path)?);
    for &family in families {
        for t in synth::problems(family, split, n, seed, difficulty)? {
            let line = json!({
                "family": family,
                "messages": [{"role": "user", "content": t.prompt}, {"role": "assistant", "content": t.answer}],
            });
            serde_json::to_writer(&mut out, &line).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}
