//! The command line, and the only module that prints: argument types ([`args`]), one file per
//! subcommand ([`commands`]), the reporters that render a run's events ([`report`]), failures
//! ([`failure`]) rendered once through [`output`], and the exit codes ([`exit`]).

mod args;
mod commands;
pub mod exit;
mod exports;
mod failure;
mod output;
mod plot;
mod report;
mod root;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use commands::gc::Gc;
use commands::share::Share;
use failure::Failure;

pub fn main() -> ExitCode {
    // `flow launch`, which `flow apply` starts with its first local stage, skips clap and the
    // runtime: it forks a supervisor per stage, which is safe only while no other thread exists.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 2 && args[1] == "launch" {
        return finish(commands::launch::launch());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::INVALID } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let Cli { cache, verbose, command } = cli;
    init_tracing(verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    finish(runtime.block_on(run(cache, command)))
}

/// The exit code of a command, its failure rendered first.
fn finish(result: Result<u8, Failure>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            output::render(&f);
            ExitCode::from(f.code)
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "flow=debug",
        _ => "flow=trace",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(output::log_writer)
        .try_init();
}

async fn run(cache: Option<PathBuf>, command: Command) -> Result<u8, Failure> {
    match command {
        Command::Apply(args) => commands::apply::apply(cache, args).await,
        Command::Plan(args) => commands::plan::plan(cache, args).await,
        Command::Report(args) => commands::report::report(cache, args).await,
        Command::Graph { file, format } => commands::graph::graph(&file, format),
        Command::Show { file, stage, json, plot, sets } => {
            commands::show::show(cache, &file, &stage, &sets, json, plot.as_deref()).await
        }
        Command::Checkout { file, stage, to, sets } => {
            commands::checkout::checkout(cache, &file, &stage, &sets, &to).await
        }
        Command::Gc { workflows, keep_days, dry_run, remote, remote_url } => {
            let gc = Gc { workflows: &workflows, keep_days, dry_run };
            if remote { gc.remote(remote_url).await } else { gc.local(cache).await }
        }
        Command::Push { file, remote, json } => commands::share::share(cache, &file, &remote, json, Share::Push).await,
        Command::Pull { file, stages, remote, json } => {
            commands::share::share(cache, &file, &remote, json, Share::Pull(stages)).await
        }
        Command::Verify { workflow, repair, remote: false, .. } => {
            commands::verify::verify(cache, workflow.as_deref(), repair).await
        }
        Command::Verify { workflow, remote: true, remote_url, trusted_keys, .. } => {
            commands::verify::remote(workflow.as_deref(), remote_url, &trusted_keys).await
        }
        Command::Hash { files } => commands::hash::hash(&files),
        Command::Key(command) => commands::key::key(command),
        Command::RunStage { task } => commands::run_stage::run_stage(&task),
    }
}
