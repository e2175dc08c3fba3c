//! The `corpus` kind: writes a deterministic synthetic corpus (`documents.jsonl`, one
//! `{"text": …}` per line) with learnable structure — English-like prose from a small grammar,
//! facts about a consistent invented world, and arithmetic — so examples and tests need no
//! downloads. Point a `data` stage at real text instead to train on it.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{About, Kind, ParamError, Progress, Roles, StageError, Task, invalid, typed};
use crate::synth::{self, Family};

pub struct Corpus;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "families")]
    pub families: Vec<Family>,
    #[serde(default = "documents")]
    pub documents: usize,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

fn families() -> Vec<Family> {
    vec![Family::Prose, Family::Facts, Family::Arithmetic]
}
fn documents() -> usize {
    2000
}

impl Kind for Corpus {
    fn about(&self) -> &'static About {
        &About {
            name: "corpus",
            version: 1,
            roles: Roles::Fixed(&[]),
            device: false,
            defaults: &["seed"],
            outputs: &["documents.jsonl"],
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        if p.families.is_empty() {
            return Err(invalid("families", "name at least one family"));
        }
        if p.documents == 0 || p.documents > 10_000_000 {
            return Err(invalid("documents", "must be between 1 and 10,000,000"));
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let docs = synth::documents(&p.families, p.documents, p.seed);
        let mut out = std::io::BufWriter::new(fs_err::File::create(task.out.join("documents.jsonl"))?);
        for (i, text) in docs.iter().enumerate() {
            serde_json::to_writer(&mut out, &serde_json::json!({ "text": text })).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
            if (i + 1) % 10_000 == 0 {
                progress(&Progress { step: i as u64 + 1, total: docs.len() as u64, ..Default::default() });
            }
        }
        out.flush()?;
        Ok(())
    }
}
