//! The command line's types: what `flow` accepts, with the help text users read (clap
//! derive). Nothing here runs anything; [`super::commands`] does.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::spec::Device;

/// Declarative, content-addressed workflows for multi-stage model training.
///
/// A workflow YAML declares stages; `flow apply` runs them as a DAG and keeps every output in a
/// content-addressed store, so the next apply re-runs only what changed.
#[derive(Debug, Parser)]
#[command(name = "flow", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    /// The local store directory (default: `cache/` at the project root, the nearest ancestor
    /// of the workflow holding `.git` or `cache/`).
    #[arg(long, global = true, env = "FLOW_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Log what flow does internally (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the stages whose inputs changed; restore the rest from the store.
    Apply(ApplyArgs),
    /// Show, per stage, whether it is cached or will run, and why.
    Plan(PlanArgs),
    /// Write one self-contained HTML page of the workflow's state: the DAG coloured by state,
    /// and per stage its parameters, fingerprint, artifact, why it ran or will run, files, log
    /// tail, curves and eval tables (docs/report.md).
    Report(ReportArgs),
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
        /// The stage to show (a member of a matrix stage by its full name, `STAGE@KEY=VALUE,...`).
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
        /// Collect on the remote instead of the local store: `--remote-url`/FLOW_REMOTE, else the
        /// first workflow's `store.remote`. Blobs are deleted only while no lease is live, and
        /// never if uploaded within the kept days.
        #[arg(long)]
        remote: bool,
        /// The remote to collect on with `--remote` (default: the first workflow's
        /// `store.remote`).
        #[arg(long, env = "FLOW_REMOTE", value_name = "URL")]
        remote_url: Option<String>,
    },
    /// Run one built-in stage from a task file (what `flow apply` starts; not for direct use).
    #[command(hide = true)]
    RunStage {
        /// The task file written by `flow apply`.
        task: PathBuf,
    },
    /// Print the blake3 digest of files, as flow computes them (like `b3sum`).
    Hash {
        /// Files to hash.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Signing keys for a shared store: generate one, or print the public half of one.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Re-hash every blob and check every record; exit 3 on any corruption.
    Verify {
        /// Use this workflow's store (its `store.local`, or `cache/` at its project root).
        workflow: Option<PathBuf>,
        /// Delete corrupt blobs and the records that need them, so the next apply re-runs them.
        #[arg(long, conflicts_with = "remote")]
        repair: bool,
        /// Check the signature of every record on the remote against the trusted keys instead,
        /// and report what is unsigned or untrusted (exit 3 if anything is).
        #[arg(long)]
        remote: bool,
        /// The remote to check with `--remote` (default: the workflow's `store.remote`).
        #[arg(long, env = "FLOW_REMOTE", value_name = "URL")]
        remote_url: Option<String>,
        /// A public key (`NAME:BASE64`) to trust, beside the workflow's `store.trusted_keys`
        /// (repeatable; FLOW_TRUSTED_KEYS holds a comma-separated list).
        #[arg(long = "trusted-key", env = "FLOW_TRUSTED_KEYS", value_name = "KEY", value_delimiter = ',')]
        trusted_keys: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create an Ed25519 key pair: the secret key in a file only you can read, the public key
    /// (`NAME:BASE64`, for `store.trusted_keys`) printed.
    Generate {
        /// The key's name: letters, digits and `. _ -` (a team, a CI pipeline, a year).
        name: String,
        /// Where to write the secret key (default: `flow/keys/NAME.secret` in your config
        /// directory, `~/.config` on Linux).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the public key of a secret key: a file, or the NAME of one `flow key generate` made.
    Public {
        /// The secret key.
        key: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct Selection {
    /// The workflow file.
    pub file: PathBuf,
    /// Only these stages and what they need (repeatable). A matrix stage's name selects all
    /// its members; `STAGE@KEY=VALUE,...` one member.
    #[arg(long = "target", value_name = "STAGE")]
    pub targets: Vec<String>,
    /// Re-run these stages even if cached (repeatable; a matrix stage's name selects all its
    /// members); their dependents follow by content.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Override a parameter: `STAGE.with.KEY=VALUE`, the values a matrix stage sweeps:
    /// `STAGE.matrix.KEY=[VALUES]`, or `defaults.KEY=VALUE` (YAML values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print one JSON object per line on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Stages to run at once here (default: the number of cores): a stage's place is free
    /// once its process ends, while its output is stored. Stages with a Slurm `executor:` do
    /// not count: every ready one is submitted (docs/cluster.md).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Run every built-in stage on DEVICE (`cpu`, `cuda`, `cuda:N` or `auto`), whatever the
    /// workflow says. Not part of any fingerprint (docs/gpu.md).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<Device>,
    /// After a failure, keep running the stages that do not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Never draw a live progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Publish every artifact to the remote as it is produced or found (`store.push: true`
    /// does the same).
    #[arg(long, conflicts_with = "offline")]
    pub push: bool,
    /// Run a stage even while another machine holds its lease on the remote.
    #[arg(long)]
    pub no_wait: bool,
    /// Write every stage's metrics as TensorBoard event files under DIR, one run per stage
    /// and fingerprint, as the stages report them (`export.tensorboard` does the same;
    /// docs/exporters.md).
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
    /// Log every stage as an MLflow run on the tracking server at URI, in the experiment named
    /// after the workflow (`export.mlflow` does the same). A server that is down or slow is a
    /// warning, never a failed stage.
    #[arg(long, value_name = "URI")]
    pub mlflow: Option<String>,
    /// At the end, write the HTML report of the workflow (`flow report`) to FILE, with what
    /// this apply did: which stages ran, were cached or downloaded, failed or were skipped.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// Where to write the page.
    #[arg(short, long, value_name = "FILE.html", default_value = "report.html")]
    pub output: PathBuf,
    /// Only these stages and what they need (repeatable).
    #[arg(long = "target", value_name = "STAGE")]
    pub targets: Vec<String>,
    /// The same overrides as the apply being reported (`STAGE.with.KEY=VALUE`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RemoteArgs {
    /// The shared store: `s3://bucket/prefix` or `file:///dir` (default: the workflow's
    /// `store.remote`). S3 credentials, region and endpoint come from the AWS variables
    /// (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...) and `~/.aws/config`.
    #[arg(long, env = "FLOW_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
    /// Never touch the remote, even if one is configured.
    #[arg(long)]
    pub offline: bool,
    /// Use a remote record only if this public key (`NAME:BASE64`) signed it (repeatable;
    /// added to the workflow's `store.trusted_keys`). FLOW_TRUSTED_KEYS holds a
    /// comma-separated list (docs/remote.md#trust).
    #[arg(long = "trusted-key", env = "FLOW_TRUSTED_KEYS", value_name = "KEY", value_delimiter = ',')]
    pub trusted_keys: Vec<String>,
    /// A remote record that no trusted key signed is an error (exit 3) rather than a stage run
    /// here (`store.require_signed: true` does the same).
    #[arg(long)]
    pub require_signed: bool,
    /// Sign every record published to the remote with this secret key: a file, or the NAME of
    /// one `flow key generate` made.
    #[arg(long, env = "FLOW_SIGNING_KEY", value_name = "NAME|FILE")]
    pub signing_key: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    /// One line per stage with what it needs.
    Text,
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}
