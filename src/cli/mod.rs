//! The command line: clap definitions, one function per subcommand, reporters ([`report`]),
//! error rendering and exit codes ([`exit`]). The only module that prints.

pub mod exit;
pub mod plot;
pub mod report;

use std::collections::{BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};

use crate::exec::plan::State;
use crate::exec::{self, ExecError, apply, lockfile, share};
use crate::spec::{self, Override, SpecErrors, Workflow};
use crate::stages::Registry;
use crate::store::remote::Remote;
use crate::store::{Store, StoreError};
use report::Reporter;

/// Declarative, content-addressed workflows for multi-stage model training.
///
/// A workflow YAML declares stages; `flow apply` runs them as a DAG and keeps every output in a
/// content-addressed store, so the next apply re-runs only what changed.
#[derive(Debug, Parser)]
#[command(name = "flow", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The local store directory (default: `cache/` at the project root, the nearest ancestor
    /// of the workflow holding `.git` or `cache/`).
    #[arg(long, global = true, env = "FLOW_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Log what flow does internally (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stages whose inputs changed; restore the rest from the store.
    Apply(ApplyArgs),
    /// Show, per stage, whether it is cached or will run, and why.
    Plan(PlanArgs),
    /// Draw the stage DAG.
    Graph {
        /// The workflow file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Show a stage's fingerprint, artifact, files and provenance.
    Show {
        /// The workflow file.
        file: PathBuf,
        /// The stage to show.
        stage: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Draw the loss and learning-rate curves of a training artifact to this SVG file.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// The same overrides the artifact was built with (`STAGE.with.KEY=VALUE`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Copy a stage's artifact out of the store as an ordinary, writable directory.
    Checkout {
        /// The workflow file.
        file: PathBuf,
        /// The stage whose artifact to copy.
        stage: String,
        /// Destination directory (must not exist or be empty).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// The same overrides the artifact was built with (`STAGE.with.KEY=VALUE`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Publish the artifacts a workflow's lock file names to the remote.
    ///
    /// For what an apply without `--push` left in the local store. Each artifact goes blobs,
    /// then manifest, then record; what the remote already has is not sent again.
    Push {
        /// The workflow whose lock file (`<workflow>.lock`) names the artifacts.
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print one JSON object per line on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Download the artifacts a workflow's lock file names from the remote, verified.
    ///
    /// A teammate commits the lock file; `flow pull` fetches exactly its artifacts (or those
    /// of the named stages) into the local store without running anything.
    Pull {
        /// The workflow whose lock file (`<workflow>.lock`) names the artifacts.
        file: PathBuf,
        /// Only these stages (default: every stage in the lock file).
        stages: Vec<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print one JSON object per line on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Delete store objects no lock file and no recent run references.
    Gc {
        /// Workflows whose lock files name artifacts to keep.
        workflows: Vec<PathBuf>,
        /// Also keep everything recorded within this many days.
        #[arg(long, default_value_t = 7, value_name = "DAYS")]
        keep_days: u64,
        /// Report what would be deleted without deleting it.
        #[arg(long)]
        dry_run: bool,
        /// Collect on the remote instead of the local store: the first workflow's
        /// `store.remote`, else FLOW_REMOTE. Blobs are deleted only while no lease is live, and
        /// never if uploaded within the kept days.
        #[arg(long)]
        remote: bool,
    },
    /// Run one built-in stage from a task file (what `flow apply` starts; not for direct use).
    #[command(hide = true)]
    RunStage {
        /// The task file written by `flow apply`.
        task: PathBuf,
    },
    /// Run a local stage's process and end everything it starts with it, or when `flow apply`
    /// dies (what `flow apply` starts around each stage; not for direct use).
    #[command(hide = true)]
    Supervise {
        /// The stage's program and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the blake3 digest of files, as flow computes them (like `b3sum`).
    Hash {
        /// Files to hash.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Re-hash every blob and check every record; exit 3 on any corruption.
    Verify {
        /// Use this workflow's store (its `store.local`, or `cache/` at its project root).
        workflow: Option<PathBuf>,
        /// Delete corrupt blobs and the records that need them, so the next apply re-runs them.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Selection {
    /// The workflow file.
    file: PathBuf,
    /// Only these stages and what they need (repeatable).
    #[arg(long = "target", value_name = "STAGE")]
    targets: Vec<String>,
    /// Re-run these stages even if cached (repeatable); their dependents follow by content.
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Override a parameter: `STAGE.with.KEY=VALUE` or `defaults.KEY=VALUE` (YAML value).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Print one JSON object per line on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    #[command(flatten)]
    selection: Selection,
    /// Stages to run at once here (default: the number of cores). Stages with a Slurm
    /// `executor:` do not count: every ready one is submitted (docs/cluster.md).
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Run every built-in stage on DEVICE (`cpu`, `cuda`, `cuda:N` or `auto`), whatever the
    /// workflow says. Not part of any fingerprint (docs/gpu.md).
    #[arg(long, value_name = "DEVICE", value_parser = device_arg)]
    device: Option<String>,
    /// After a failure, keep running the stages that do not depend on it.
    #[arg(long)]
    keep_going: bool,
    /// Never draw a live progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Publish every artifact to the remote as it is produced or found (`store.push: true`
    /// does the same).
    #[arg(long, conflicts_with = "offline")]
    push: bool,
    /// Run a stage even while another machine holds its lease on the remote.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, clap::Args)]
struct RemoteArgs {
    /// The shared store: `s3://bucket/prefix` or `file:///dir` (default: the workflow's
    /// `store.remote`). S3 credentials, region and endpoint come from the AWS variables
    /// (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...) and `~/.aws/config`.
    #[arg(long, env = "FLOW_REMOTE", value_name = "URL")]
    remote: Option<String>,
    /// Never touch the remote, even if one is configured.
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// One line per stage with what it needs.
    Text,
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// An error with the exit code it maps to and an optional hint.
struct Failure {
    code: u8,
    error: Box<dyn std::error::Error>,
    hint: Option<String>,
}

impl Failure {
    fn new(code: u8, error: impl Into<Box<dyn std::error::Error>>) -> Self {
        Self { code, error: error.into(), hint: None }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<SpecErrors> for Failure {
    fn from(e: SpecErrors) -> Self {
        Failure::new(exit::INVALID, e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::BadRemote { .. }) {
            return Failure::new(exit::INVALID, e);
        }
        let hint =
            matches!(e, StoreError::Corrupt { .. } | StoreError::BadManifest { .. } | StoreError::BadRecord { .. })
                .then_some("run `flow verify --repair` to drop corrupt objects; the next apply re-runs what they held");
        Failure { code: exit::STORE, error: Box::new(e), hint: hint.map(Into::into) }
    }
}

impl From<ExecError> for Failure {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Spec(s) => s.into(),
            ExecError::Store(s) => s.into(),
            e @ (ExecError::Inputs { .. } | ExecError::Lock(_)) => Failure::new(exit::INVALID, e),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::INVALID } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let Cli { cache, verbose, command } = cli;
    let result = match command {
        // No runtime for the supervisor: it starts its stage before any other thread exists,
        // since the stage's parent-death signal follows the thread that started it.
        Command::Supervise { command } => supervise_cmd(&command),
        command => {
            init_tracing(verbose);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(run(cache, command))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            render(&f);
            ExitCode::from(f.code)
        }
    }
}

/// `flow supervise -- PROGRAM ARGS…`: runs a stage's process for `flow apply` and ends as it
/// ended.
fn supervise_cmd(command: &[std::ffi::OsString]) -> Result<u8, Failure> {
    let ended = crate::exec::supervisor::supervise(&command[0], &command[1..])
        .map_err(|e| Failure::new(exit::SUPERVISOR, e))?;
    ended.exit()
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "flow=debug",
        _ => "flow=trace",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cache: Option<PathBuf>, command: Command) -> Result<u8, Failure> {
    match command {
        Command::Apply(args) => apply_cmd(cache, args).await,
        Command::Plan(args) => plan_cmd(cache, args).await,
        Command::Graph { file, format } => {
            let workflow = spec::load(&file, &[])?;
            Registry::builtin().check(&workflow)?;
            let dag = crate::graph::Dag::build(&workflow)?;
            let text = match format {
                GraphFormat::Text => dag.to_text(&workflow),
                GraphFormat::Dot => dag.to_dot(&workflow),
                GraphFormat::Mermaid => dag.to_mermaid(&workflow),
            };
            print_stdout(&text);
            Ok(exit::OK)
        }
        Command::Show { file, stage, json, plot, sets } => {
            show_cmd(cache, &file, &stage, &sets, json, plot.as_deref()).await
        }
        Command::RunStage { task } => run_stage(&task),
        Command::Supervise { .. } => unreachable!("`main` runs the supervisor without a runtime"),
        Command::Checkout { file, stage, to, sets } => checkout_cmd(cache, &file, &stage, &sets, &to).await,
        Command::Gc { workflows, keep_days, dry_run, remote: false } => {
            gc_cmd(cache, &workflows, keep_days, dry_run).await
        }
        Command::Gc { workflows, keep_days, dry_run, remote: true } => {
            remote_gc_cmd(&workflows, keep_days, dry_run).await
        }
        Command::Push { file, remote, json } => share_cmd(cache, &file, &remote, json, Share::Push).await,
        Command::Pull { file, stages, remote, json } => {
            share_cmd(cache, &file, &remote, json, Share::Pull(stages)).await
        }
        Command::Verify { workflow, repair } => verify_cmd(cache, workflow.as_deref(), repair).await,
        Command::Hash { files } => {
            let mut out = String::new();
            for f in &files {
                let (digest, _) = crate::hash::file::hash_file(f).map_err(|e| Failure::new(exit::INVALID, e))?;
                out.push_str(&format!("{digest}  {}\n", f.display()));
            }
            print_stdout(&out);
            Ok(exit::OK)
        }
    }
}

/// The local store root: `--cache`/`FLOW_CACHE`, else the workflow's `store.local`, else
/// `cache/` at the project root of `near`.
fn cache_root(flag: Option<PathBuf>, workflow: Option<&Workflow>, near: &Path) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    if let Some(w) = workflow
        && let Some(local) = &w.store.local
    {
        return w.dir.join(local);
    }
    let start = std::path::absolute(near).unwrap_or_else(|_| near.to_path_buf());
    let mut dir = Some(start.as_path());
    while let Some(d) = dir {
        if d.join(".git").exists() || d.join("cache").is_dir() {
            return d.join("cache");
        }
        dir = d.parent();
    }
    start.join("cache")
}

fn open_store(root: &Path) -> Result<Store, Failure> {
    Store::open(root).map_err(|e| {
        Failure::from(e).hint(format!("the store is at `{}`; set --cache or FLOW_CACHE to use another", root.display()))
    })
}

fn overrides(sets: &[String]) -> Vec<Override> {
    sets.iter().map(|s| Override(s.clone())).collect()
}

struct Loaded {
    prepared: exec::Prepared,
    store: Store,
}

fn load(cache: Option<PathBuf>, sel: &Selection) -> Result<Loaded, Failure> {
    let workflow = spec::load(&sel.file, &overrides(&sel.sets))?;
    let registry = Registry::builtin();
    for (flag, names) in [("--force", &sel.force), ("--target", &sel.targets)] {
        if let Some(s) = names.iter().find(|s| workflow.stage(s).is_none()) {
            return Err(Failure::new(
                exit::INVALID,
                format!("`{flag} {s}` names no stage of `{}`", sel.file.display()),
            ));
        }
    }
    let root = cache_root(cache, Some(&workflow), &workflow.dir);
    // Check before touching the store, so an invalid workflow leaves it unchanged.
    registry.check(&workflow)?;
    crate::graph::Dag::build(&workflow)?;
    let store = open_store(&root)?;
    let prepared = exec::prepare(workflow, &registry, &store, &sel.targets)?;
    Ok(Loaded { prepared, store })
}

/// The remote to use: none when offline, else `--remote`/`FLOW_REMOTE`, else the workflow's
/// `store.remote`.
fn open_remote(args: &RemoteArgs, workflow: &Workflow) -> Result<Option<Arc<Remote>>, Failure> {
    if args.offline {
        return Ok(None);
    }
    let Some(url) = args.remote.as_ref().or(workflow.store.remote.as_ref()) else { return Ok(None) };
    Ok(Some(Arc::new(Remote::open(url)?)))
}

fn reporter_sink(json: bool, progress: bool) -> apply::Sink {
    let progress = !json && progress && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let reporter = if json { Reporter::Json } else { Reporter::human(progress) };
    Arc::new(move |e| reporter.event(e))
}

async fn apply_cmd(cache: Option<PathBuf>, args: ApplyArgs) -> Result<u8, Failure> {
    let Loaded { mut prepared, store } = load(cache, &args.selection)?;
    if let Some(device) = &args.device {
        prepared.checked.iter_mut().for_each(|c| c.device.clone_from(device));
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let remote = open_remote(&args.remote, &prepared.workflow)?;
    let push = !args.remote.offline && (args.push || prepared.workflow.store.push);
    if push && remote.is_none() {
        return Err(Failure::new(exit::INVALID, "pushing needs a remote")
            .hint("set `store.remote` in the workflow, or pass `--remote URL` or FLOW_REMOTE"));
    }
    let sink = reporter_sink(args.selection.json, !args.no_progress);
    let opts = apply::Options {
        jobs,
        keep_going: args.keep_going,
        force: args.selection.force.iter().cloned().collect(),
        remote,
        push,
        no_wait: args.no_wait,
    };
    let cancel = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        // A closed terminal or a lost SSH session: the run stops as for Ctrl-C.
        let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
    };
    let summary = apply::apply(Arc::new(prepared), Arc::new(store), opts, sink, cancel).await?;
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if summary.store_error {
        exit::STORE
    } else if summary.failed > 0 {
        exit::STAGE_FAILED
    } else {
        exit::OK
    })
}

enum Share {
    Push,
    Pull(Vec<String>),
}

async fn share_cmd(
    cache: Option<PathBuf>,
    file: &Path,
    args: &RemoteArgs,
    json: bool,
    what: Share,
) -> Result<u8, Failure> {
    let workflow = spec::load(file, &[])?;
    let remote = open_remote(args, &workflow)?.ok_or_else(|| {
        Failure::new(exit::INVALID, format!("`{}` names no remote", file.display()))
            .hint("set `store.remote` in the workflow, or pass `--remote URL` or FLOW_REMOTE")
    })?;
    let lock_path = lockfile::path_for(file);
    let lock = lockfile::LockFile::read(&lock_path).map_err(|e| Failure::new(exit::INVALID, e))?;
    if lock.stages.is_empty() {
        return Err(Failure::new(exit::INVALID, format!("`{}` is missing or empty", lock_path.display()))
            .hint(format!("run `flow apply {}` first (or commit its lock file)", file.display())));
    }
    let store = open_store(&cache_root(cache, Some(&workflow), &workflow.dir))?;
    let sink = reporter_sink(json, true);
    let summary = match what {
        Share::Push => share::push(&lock, &store, &remote, &sink).await?,
        Share::Pull(stages) => {
            if let Some(s) = stages.iter().find(|s| !lock.stages.contains_key(*s)) {
                return Err(Failure::new(exit::INVALID, format!("`{s}` is not a stage of `{}`", lock_path.display())));
            }
            share::pull(&lock, &stages, &store, &remote, &sink).await?
        }
    };
    Ok(if summary.failed > 0 { exit::STAGE_FAILED } else { exit::OK })
}

async fn plan_cmd(cache: Option<PathBuf>, args: PlanArgs) -> Result<u8, Failure> {
    let sel = &args.selection;
    let Loaded { prepared, store } = load(cache, sel)?;
    let force: BTreeSet<String> = sel.force.iter().cloned().collect();
    let remote = open_remote(&args.remote, &prepared.workflow)?;
    let planned = exec::plan::plan(&prepared, &store, remote.as_deref(), &force).await?;
    let mut out = String::new();
    let (mut cached, mut will_run, mut will_download) = (0, 0, 0);
    for p in &planned {
        if sel.json {
            out.push_str(&serde_json::to_string(p).expect("plans serialise"));
            out.push('\n');
            continue;
        }
        match &p.state {
            State::Cached { artifact, .. } => {
                cached += 1;
                out.push_str(&format!("{:>9} {} {}\n", "cached", p.stage, artifact.short()));
            }
            State::WillDownload { artifact, .. } => {
                will_download += 1;
                out.push_str(&format!("{:>9} {} {} (from the remote)\n", "download", p.stage, artifact.short()));
            }
            State::WillRun { reasons, .. } => {
                will_run += 1;
                let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
                out.push_str(&format!("{:>9} {}: {}\n", "will run", p.stage, why.join("; ")));
            }
        }
    }
    if !sel.json {
        let download = if will_download > 0 { format!(", {will_download} will download") } else { String::new() };
        out.push_str(&format!("{:>9} {will_run} will run{download}, {cached} cached\n", "Plan"));
    }
    print_stdout(&out);
    Ok(exit::OK)
}

/// The current artifact of `stage`, or a failure saying why there is none.
async fn current(
    cache: Option<PathBuf>,
    file: &Path,
    stage: &str,
    sets: &[String],
) -> Result<(Loaded, crate::store::Record), Failure> {
    let sel = Selection {
        file: file.to_owned(),
        targets: vec![stage.to_owned()],
        force: vec![],
        sets: sets.to_vec(),
        json: false,
    };
    let workflow = spec::load(file, &overrides(sets))?;
    if workflow.stage(stage).is_none() {
        return Err(Failure::new(exit::INVALID, format!("`{stage}` is not a stage of `{}`", file.display())));
    }
    let loaded = load(cache, &sel)?;
    let planned = exec::plan::plan(&loaded.prepared, &loaded.store, None, &BTreeSet::new()).await?;
    let entry = planned.into_iter().find(|p| p.stage == stage).expect("the target is planned");
    match entry.state {
        State::Cached { fingerprint, .. } => {
            let record = loaded.store.record(&fingerprint).await?.expect("planned as cached");
            Ok((loaded, record))
        }
        State::WillDownload { .. } => {
            Err(Failure::new(exit::STAGE_FAILED, format!("stage `{stage}` is only on the remote"))
                .hint(format!("run `flow pull {} {stage}`", file.display())))
        }
        State::WillRun { reasons, .. } => {
            let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
            Err(Failure::new(
                exit::STAGE_FAILED,
                format!("stage `{stage}` has no artifact for its current inputs ({})", why.join("; ")),
            )
            .hint(format!("run `flow apply {} --target {stage}`", file.display())))
        }
    }
}

async fn show_cmd(
    cache: Option<PathBuf>,
    file: &Path,
    stage: &str,
    sets: &[String],
    json: bool,
    plot_to: Option<&Path>,
) -> Result<u8, Failure> {
    let (loaded, record) = current(cache, file, stage, sets).await?;
    let store = &loaded.store;
    let manifest = store.manifest(&record.artifact).await?;
    let log = store.log_path(&record.fingerprint);
    let path = store.materialize(&record.artifact).await?;
    if let Some(to) = plot_to {
        plot::training_curves(&path.join("metrics.jsonl"), to).map_err(|e| Failure::new(exit::INVALID, e))?;
        print_stderr(&format!("wrote {}\n", to.display()));
    }
    if json {
        let value = serde_json::json!({
            "stage": stage,
            "record": record,
            "path": path,
            "log": log.exists().then_some(&log),
            "files": manifest.entries,
        });
        print_stdout(&format!("{value}\n"));
        return Ok(exit::OK);
    }
    let mut out = String::new();
    let row = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    row(&mut out, "stage", stage.to_owned());
    row(&mut out, "kind", record.kind.clone());
    row(&mut out, "fingerprint", record.fingerprint.to_string());
    row(&mut out, "artifact", record.artifact.to_string());
    row(&mut out, "path", path.display().to_string());
    row(
        &mut out,
        "created",
        format!(
            "{} on {} ({:.3}s, device {}, flow {})",
            record.created, record.host, record.seconds, record.device, record.flow_version
        ),
    );
    row(&mut out, "produced by", format!("stage `{}` of workflow `{}`", record.stage, record.workflow));
    row(&mut out, "log", if log.exists() { log.display().to_string() } else { "(none on this machine)".into() });
    row(&mut out, "files", format!("{} ({})", manifest.entries.len(), human_bytes(manifest.total_size())));
    for entry in &manifest.entries {
        match entry {
            crate::store::Entry::File { path, size, executable, .. } => out.push_str(&format!(
                "  {:>10}  {path}{}\n",
                human_bytes(*size),
                if *executable { " (executable)" } else { "" }
            )),
            crate::store::Entry::Link { path, target } => {
                out.push_str(&format!("  {:>10}  {path} -> {target}\n", "link"))
            }
        }
    }
    print_stdout(&out);
    Ok(exit::OK)
}

async fn checkout_cmd(
    cache: Option<PathBuf>,
    file: &Path,
    stage: &str,
    sets: &[String],
    to: &Path,
) -> Result<u8, Failure> {
    if to.exists() && fs_err::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Failure::new(exit::INVALID, format!("`{}` exists and is not an empty directory", to.display())));
    }
    let (loaded, record) = current(cache, file, stage, sets).await?;
    let n = loaded.store.checkout(&record.artifact, to).await?;
    print_stderr(&format!("checked out {n} entries of `{stage}` ({}) to {}\n", record.artifact.short(), to.display()));
    Ok(exit::OK)
}

async fn gc_cmd(cache: Option<PathBuf>, workflows: &[PathBuf], keep_days: u64, dry_run: bool) -> Result<u8, Failure> {
    let mut keep = HashSet::new();
    let mut root = cache.clone();
    for w in workflows {
        let workflow = spec::load(w, &[])?;
        let lock = lockfile::LockFile::read(&lockfile::path_for(w)).map_err(|e| Failure::new(exit::INVALID, e))?;
        keep.extend(lock.stages.values().map(|l| l.fingerprint));
        root.get_or_insert_with(|| cache_root(None, Some(&workflow), &workflow.dir));
    }
    let root = root.unwrap_or_else(|| cache_root(None, None, Path::new(".")));
    let store = open_store(&root)?;
    let cutoff = SystemTime::now() - Duration::from_secs(keep_days * 86_400);
    let r = store.gc(&keep, cutoff, dry_run).await?;
    let verb = if dry_run { "would remove" } else { "removed" };
    print_stderr(&format!(
        "gc: kept {} records; {verb} {} records, {} blobs ({}), {} materialised trees, {} scratch dirs\n",
        r.kept_records,
        r.removed_records,
        r.removed_blobs,
        human_bytes(r.freed_bytes),
        r.removed_trees,
        r.removed_scratch
    ));
    Ok(exit::OK)
}

async fn remote_gc_cmd(workflows: &[PathBuf], keep_days: u64, dry_run: bool) -> Result<u8, Failure> {
    let mut keep = HashSet::new();
    let mut configured = None;
    for w in workflows {
        let workflow = spec::load(w, &[])?;
        let lock = lockfile::LockFile::read(&lockfile::path_for(w)).map_err(|e| Failure::new(exit::INVALID, e))?;
        keep.extend(lock.stages.values().map(|l| l.fingerprint));
        configured = configured.or(workflow.store.remote);
    }
    let Some(url) = configured.or_else(|| std::env::var("FLOW_REMOTE").ok().filter(|u| !u.is_empty())) else {
        return Err(Failure::new(exit::INVALID, "`flow gc --remote` needs a remote")
            .hint("name a workflow with `store.remote`, or set FLOW_REMOTE"));
    };
    let remote = Remote::open(&url)?;
    let cutoff = SystemTime::now() - Duration::from_secs(keep_days * 86_400);
    let r = remote.gc(&keep, cutoff, dry_run).await?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "gc {}: kept {} records; {verb} {} records, {} blobs ({}), {} stale leases\n",
        remote.url(),
        r.kept_records,
        r.removed_records,
        r.removed_blobs,
        human_bytes(r.freed_bytes),
        r.removed_leases
    );
    if r.live_leases > 0 {
        text.push_str(&format!(
            "gc: {} live lease(s): no blob was removed, since their runs may be uploading\n",
            r.live_leases
        ));
    }
    print_stderr(&text);
    Ok(exit::OK)
}

async fn verify_cmd(cache: Option<PathBuf>, workflow: Option<&Path>, repair: bool) -> Result<u8, Failure> {
    let root = match workflow {
        Some(w) => {
            let workflow = spec::load(w, &[])?;
            cache_root(cache, Some(&workflow), &workflow.dir)
        }
        None => cache_root(cache, None, Path::new(".")),
    };
    let store = open_store(&root)?;
    let r = store.verify(repair).await?;
    let mut out = String::new();
    for p in &r.problems {
        out.push_str(&format!("error: {p}\n"));
    }
    out.push_str(&format!("verify: {} blobs, {} records, {} problems", r.blobs, r.records, r.problems.len()));
    if repair {
        out.push_str(&format!(", {} repaired", r.repaired));
    }
    out.push('\n');
    print_stderr(&out);
    Ok(if r.problems.is_empty() || repair { exit::OK } else { exit::STORE })
}

/// `flow run-stage TASK`: runs a built-in kind in this process. Progress goes to stdout in
/// the runner's protocol; errors go to stderr (the stage's log) and exit 1.
fn run_stage(task_file: &Path) -> Result<u8, Failure> {
    let bytes = fs_err::read(task_file).map_err(|e| Failure::new(exit::INVALID, e))?;
    let task: crate::stages::Task = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::new(exit::INVALID, format!("`{}`: {e}", task_file.display())))?;
    let registry = Registry::builtin();
    let kind = registry
        .kind(&task.kind)
        .ok_or_else(|| Failure::new(exit::INVALID, format!("unknown kind `{}`", task.kind)))?;
    let mut progress = |p: &crate::stages::Progress| {
        let line = serde_json::to_string(p).expect("progress serialises");
        print_stdout(&format!("{}{line}\n", crate::exec::runner::PROGRESS_PREFIX));
    };
    kind.run(&task, &mut progress).map_err(|e| Failure::new(exit::STAGE_FAILED, e))?;
    Ok(exit::OK)
}

fn device_arg(s: &str) -> Result<String, String> {
    if crate::stages::is_device(s) {
        Ok(s.to_owned())
    } else {
        Err("devices are `cpu`, `cuda`, `cuda:N` or `auto`".into())
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`flow plan | head`) is not an error.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn print_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Renders an error once: `error:`, each cause, and a hint; workflow errors with their source.
fn render(f: &Failure) {
    let mut out = String::new();
    if let Some(spec_errors) = f.error.downcast_ref::<SpecErrors>() {
        out.push_str(&format!("error: {spec_errors}\n"));
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
        let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
        for e in &spec_errors.errors {
            if let Some(loc) = &e.location {
                out.push_str(&format!("\n{loc}: {}\n", e.message));
            }
            let _ = handler.render_report(&mut out, e);
        }
    } else {
        out.push_str(&format!("error: {}\n", f.error));
        let mut cause = f.error.source();
        while let Some(c) = cause {
            out.push_str(&format!("  caused by: {c}\n"));
            cause = c.source();
        }
    }
    if let Some(h) = &f.hint {
        out.push_str(&format!("hint: {h}\n"));
    }
    print_stderr(&out);
}
