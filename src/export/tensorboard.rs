//! The TensorBoard exporter: one run per stage and fingerprint, `DIR/<stage>/<fingerprint, 12
//! hex>/`, holding a standard event file with every scalar the stage reports, step by step,
//! written and flushed as the stage reports it (TensorBoard shows a training while it runs).
//! A finished run gets a marker file beside its events; a cached stage whose run directory has
//! one is not written again.

mod record;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use self::record::{Event, Summary, Value, frame};
use super::{End, ExportError, Exporter, Run};
use crate::stages::Progress;
use crate::store::Record;

/// Beside a finished run's events (TensorBoard reads only files named `*tfevents*`).
const MARK: &str = "flow-run.json";

pub struct TensorBoard {
    dir: PathBuf,
    host: String,
    /// Open event files, by stage.
    open: HashMap<String, (PathBuf, std::fs::File)>,
}

impl TensorBoard {
    pub fn new(dir: PathBuf) -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Self { dir, host, open: HashMap::new() }
    }

    /// The run directory of `run`.
    pub fn run_dir(&self, run: &Run) -> PathBuf {
        self.dir.join(&run.stage).join(&run.fingerprint.to_string()[..12])
    }

    fn write(&mut self, stage: &str, event: &Event) -> Result<(), ExportError> {
        let Some((path, file)) = self.open.get_mut(stage) else { return Ok(()) };
        // One write per event, unbuffered: a reader tailing the file never sees half a record
        // for long, and nothing is lost if the apply is killed.
        file.write_all(&frame(event)).map_err(|source| ExportError::Io { path: path.clone(), source })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.to_path_buf(), source }
}

fn seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Exporter for TensorBoard {
    fn name(&self) -> &'static str {
        "TensorBoard"
    }

    fn exported(&mut self, run: &Run) -> Result<bool, ExportError> {
        Ok(self.run_dir(run).join(MARK).is_file())
    }

    fn start(&mut self, run: &Run, at: SystemTime) -> Result<(), ExportError> {
        let dir = self.run_dir(run);
        fs_err::create_dir_all(&dir).map_err(io(&dir))?;
        // What an earlier attempt of this fingerprint wrote would draw its steps twice.
        for entry in fs_err::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.contains("tfevents") || name == MARK {
                fs_err::remove_file(&path).map_err(io(&path))?;
            }
        }
        let name = format!("events.out.tfevents.{}.{}.{}.flow", seconds(at) as u64, self.host, std::process::id());
        let path = dir.join(name);
        let file = fs_err::File::create(&path).map_err(io(&path))?.into_parts().0;
        self.open.insert(run.stage.clone(), (path, file));
        let version =
            Event { wall_time: seconds(at), step: 0, file_version: Some("brain.Event:2".into()), summary: None };
        self.write(&run.stage, &version)
    }

    fn progress(&mut self, run: &Run, p: &Progress, at: SystemTime) -> Result<(), ExportError> {
        if p.scalars.is_empty() {
            return Ok(());
        }
        let value =
            p.scalars.iter().map(|(tag, v)| Value { tag: tag.clone(), simple_value: Some(*v as f32) }).collect();
        let event = Event {
            wall_time: seconds(at),
            step: p.step.try_into().unwrap_or(i64::MAX),
            file_version: None,
            summary: Some(Summary { value }),
        };
        self.write(&run.stage, &event)
    }

    fn finish(&mut self, run: &Run, end: End, record: Option<&Record>, _: SystemTime) -> Result<(), ExportError> {
        let Some((path, file)) = self.open.remove(&run.stage) else { return Ok(()) };
        file.sync_all().map_err(io(&path))?;
        let Some(record) = record else { return Ok(()) };
        let mark = self.run_dir(run).join(MARK);
        let about = serde_json::json!({
            "stage": run.stage,
            "fingerprint": run.fingerprint,
            "artifact": record.artifact,
            "state": end.as_str(),
        });
        fs_err::write(&mark, format!("{about}\n")).map_err(io(&mark))
    }
}
