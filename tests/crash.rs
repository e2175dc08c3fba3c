//! Crash safety: `flow apply` killed with SIGKILL at random moments — while hashing, running
//! stages, writing blobs, manifests, records and the lock file, uploading — together with every
//! process it started. After each kill the store verifies clean, and the next apply completes
//! with the artifacts of an uninterrupted run. The moments come from a seeded generator whose
//! seed each failure names; `FLOW_CRASH_TRIALS` sets the number of trials (default 10).

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{Project, parse_applied};

/// Command stages with many files, a large one and links, feeding a tiny training chain.
const WORKFLOW: &str = r#"version: 1
defaults: {seed: 3}
stages:
  many:
    kind: command
    run: 'for i in $(seq 1 200); do echo "file $i" > $FLOW_OUT/f$i.txt; done; mkdir $FLOW_OUT/sub; ln -s ../f1.txt $FLOW_OUT/sub/link'
  big:
    kind: command
    run: 'head -c 24000000 /dev/zero | tr "\0" "x" > $FLOW_OUT/big.bin; echo tail >> $FLOW_OUT/big.bin'
  joined:
    kind: command
    needs: {a: many, b: big}
    run: 'cat $FLOW_IN_a/f*.txt | sort > $FLOW_OUT/all.txt; wc -c < $FLOW_IN_b/big.bin > $FLOW_OUT/size'
  text: {kind: corpus, with: {documents: 200}}
  data: {kind: data, needs: {sources: [text]}, with: {vocab_size: 300, val_fraction: 0.1}}
  model: {kind: init, needs: {tokenizer: data}, with: {layers: 1, hidden: 32, heads: 4, ffn: 64}}
  pre:
    kind: pretrain
    needs: {model: model, data: data}
    with: {steps: 24, batch: 2, seq_len: 32, lr: 3.0e-3, warmup: 2, eval_every: 12, checkpoint_every: 4}
"#;

fn trials() -> u64 {
    std::env::var("FLOW_CRASH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// `flow apply wf.yaml --json ARGS` in `p` with `env`.
fn apply(p: &Project, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = p.command(&[&["apply", "wf.yaml", "--json"], args].concat());
    command.envs(env.iter().copied());
    command
}

/// Every stage's artifact digest after a complete apply.
fn artifacts(p: &Project, args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let r = parse_applied(apply(p, args, env).output().unwrap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stages.iter().map(|s| (s["stage"].as_str().unwrap().to_owned(), s["artifact"].as_str().unwrap().to_owned())).collect()
}

/// The processes descending from `root`, found through their parents in /proc.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name may hold spaces and parentheses: the parent is the second field
            // after the last `)`.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|&&(_, ppid)| ppid == parent).map(|&(pid, _)| pid));
        i += 1;
    }
    found
}

/// SIGKILLs `child` and everything it started, as a power cut would: stopped first, so that
/// it starts nothing new while its descendants are collected.
fn kill_all(child: &mut Child) {
    let pid = Pid::from_raw(child.id() as i32);
    if kill(pid, Signal::SIGSTOP).is_err() {
        return; // already exited
    }
    for pid in descendants(child.id()).into_iter().rev() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    child.wait().unwrap();
}

/// Runs `args` in `p`, kills it after `delay` (if still running), and says whether it was killed.
fn apply_killed_after(p: &Project, args: &[&str], env: &[(&str, &str)], delay: Duration) -> bool {
    let mut child = apply(p, args, env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    kill_all(&mut child);
    true
}

fn assert_verifies(p: &Project, cache: &str, seed: u64) {
    let out = p.flow(&["verify", "--cache", cache]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: verify after the kill ({}):\n{stderr}", out.status);
    assert!(stderr.contains(", 0 problems"), "seed {seed}: {stderr}");
}

/// Kills applies of [`WORKFLOW`] in `p` at `trials()` moments spread over an uninterrupted
/// run's duration; `extra` gives each trial's arguments besides its own cache.
fn crash_trials(p: &Project, name: &str, env: &[(&str, &str)], extra: impl Fn(u64) -> Vec<String>) -> BTreeMap<String, String> {
    p.write("wf.yaml", WORKFLOW);
    let started = Instant::now();
    let reference = artifacts(p, &["--cache", "reference"], env);
    let span = started.elapsed();
    let mut killed = 0;
    for trial in 0..trials() {
        let seed = trial;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let delay = span.mul_f64(rng.random_range(0.0..1.0));
        let cache = format!("c{trial}");
        let args = extra(trial);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--cache", &cache]);
        eprintln!("{name}: trial {trial}, seed {seed}: kill after {delay:?} of {span:?}");
        killed += usize::from(apply_killed_after(p, &args, env, delay));
        if let Err(e) = flow::exec::lockfile::LockFile::read(&p.path().join("wf.lock")) {
            panic!("seed {seed}: the lock file after the kill: {e}");
        }
        assert_verifies(p, &cache, seed);
        assert_eq!(artifacts(p, &args, env), reference, "seed {seed}: the apply after the kill");
        assert_verifies(p, &cache, seed);
    }
    eprintln!("{name}: {killed} of {} applies killed before they finished; every store verified and completed", trials());
    // A few draws may land after the end of a run; most must have interrupted one.
    assert!(killed as u64 * 2 >= trials(), "{name}: only {killed} of {} applies were killed", trials());
    reference
}

#[test]
fn an_apply_killed_at_any_moment_leaves_a_store_that_verifies_and_completes_identically() {
    crash_trials(&Project::new(), "local", &[], |_| vec![]);
}

#[test]
fn a_pushing_apply_killed_at_any_moment_leaves_a_remote_others_can_pull_from() {
    let p = Project::new();
    let remote = |trial| format!("file://{}/remote{trial}", p.path().display());
    // The killed apply's lease stays behind: it expires after a second without renewal.
    let reference = crash_trials(&p, "remote", &[("FLOW_LEASE_SECONDS", "1")], |trial| vec!["--push".into(), "--remote".into(), remote(trial)]);
    // Each remote, completed by the apply after its kill, gives a fresh machine every artifact.
    for trial in 0..trials() {
        let fresh = format!("fresh{trial}");
        let out = p.flow(&["pull", "wf.yaml", "--cache", &fresh, "--remote", &remote(trial)]);
        assert_eq!(out.status.code(), Some(0), "trial {trial}: {}", String::from_utf8_lossy(&out.stderr));
        assert_verifies(&p, &fresh, trial);
        let r = parse_applied(p.flow(&["apply", "wf.yaml", "--json", "--cache", &fresh, "--offline"]));
        assert_eq!(r.with_status("cached").len(), reference.len(), "trial {trial}: {}", r.stderr);
    }
}
