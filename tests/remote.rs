//! The S3 remote, against the real S3-compatible server scripts/test.sh starts: teams sharing
//! checkpoints, concurrent applies, leases, hostile remote objects, interrupted uploads, pull.
//!
//! Each test works under a prefix of its own in the test bucket, so they run in parallel.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use flow::hash::Digest;
use flow::store::remote::Remote;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use crate::proxy::FaultyProxy;
use crate::util::{Applied, Project, parse_applied};

/// A prefix of the test bucket, and a client to look at (and tamper with) what flow put there.
pub(crate) struct Shared {
    url: String,
    endpoint: String,
    objects: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
}

impl Shared {
    pub(crate) fn new(test: &str) -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: run the tests through scripts/test.sh"))
        };
        let (endpoint, bucket) = (var("FLOW_TEST_S3_ENDPOINT"), var("FLOW_TEST_S3_BUCKET"));
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let prefix = format!("{test}-{}-{nanos}", std::process::id());
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&bucket)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        let url = format!("s3://{bucket}/{prefix}");
        let objects = Arc::clone(Remote::with_objects(&url, Arc::new(s3), &prefix).objects());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self { url, endpoint, objects, rt }
    }

    /// `flow ARGS` in `p`, pointed at this remote through the standard AWS variables.
    pub(crate) fn command(&self, p: &Project, args: &[&str]) -> Command {
        let mut cmd = p.command(args);
        cmd.env("FLOW_REMOTE", &self.url)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("HOME", p.path());
        cmd
    }

    pub(crate) fn apply(&self, p: &Project, file: &str, extra: &[&str]) -> Applied {
        let mut args = vec!["apply", file, "--json"];
        args.extend_from_slice(extra);
        parse_applied(self.command(p, &args).output().unwrap())
    }

    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = ObjectPath::from(prefix);
        let mut keys: Vec<String> = self
            .rt
            .block_on(self.objects.list(Some(&prefix)).try_collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        keys.sort();
        keys
    }

    pub(crate) fn put(&self, key: &str, bytes: Vec<u8>) {
        self.rt.block_on(self.objects.put(&ObjectPath::from(key), PutPayload::from(Bytes::from(bytes)))).unwrap();
    }

    pub(crate) fn get(&self, key: &str) -> Vec<u8> {
        let r = self.rt.block_on(self.objects.get(&ObjectPath::from(key))).unwrap();
        self.rt.block_on(r.bytes()).unwrap().to_vec()
    }
}

/// Starts `command`, which prints JSON events, and returns it with the events as they come.
fn spawn_json(command: &mut Command) -> (Child, impl Iterator<Item = Value> + use<>) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()))
}

fn blob_key(digest: &Digest) -> String {
    format!("cas/{}/{}", digest.shard(), digest)
}

fn fingerprint(p: &Project, lock: &str, stage: &str) -> String {
    let lock: Value = serde_json::from_str(&p.read(lock)).unwrap();
    lock["stages"][stage]["fingerprint"].as_str().unwrap().to_owned()
}

/// Stages `data` → `model` → `report` under the given names, so two teams can spell the same
/// pipeline differently; `last` makes the final stage differ. (Stage names are not part of a
/// fingerprint: a stage logs its name from `FLOW_STAGE`, which is not either.)
fn pipeline(names: [&str; 3], last: &str) -> String {
    let [data, model, report] = names;
    format!(
        "version: 1\nname: {report}\nstages:\n  {data}:\n    kind: command\n    run: 'echo $FLOW_STAGE >> runs.log; seq 1 5000 > $FLOW_OUT/rows.txt'\n  {model}:\n    kind: command\n    needs: {{data: {data}}}\n    run: 'echo $FLOW_STAGE >> runs.log; mkdir $FLOW_OUT/ckpt; wc -l < $FLOW_IN_data/rows.txt > $FLOW_OUT/ckpt/weights; head -c 3000000 /dev/zero > $FLOW_OUT/ckpt/big'\n  {report}:\n    kind: command\n    needs: {{model: {model}}}\n    run: 'echo $FLOW_STAGE >> runs.log; echo {last} > $FLOW_OUT/report.txt'\n"
    )
}

#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn a_second_team_downloads_every_shared_stage_instead_of_running_it() {
    let s = Shared::new("teams");
    let a = Project::new();
    a.write("team-a.yaml", &pipeline(["prep", "train", "eval-a"], "team a"));
    let b = Project::new();
    b.write("team-b.yaml", &pipeline(["corpus", "pretrain", "eval-b"], "team b"));

    let ra = s.apply(&a, "team-a.yaml", &["--push"]);
    assert_eq!(ra.code, 0, "{}", ra.stderr);
    assert_eq!(ra.with_status("ran"), ["eval-a", "prep", "train"]);
    assert!(ra.stages.iter().all(|st| st["pushed"].as_u64().is_some()), "{:?}", ra.stages);
    assert_eq!(s.keys("ac").len(), 3);
    assert!(s.keys("leases").is_empty(), "leases are released: {:?}", s.keys("leases"));

    // The plan already knows what the remote holds.
    let plan = s.command(&b, &["plan", "team-b.yaml", "--json"]).output().unwrap();
    let plan: Vec<Value> =
        String::from_utf8_lossy(&plan.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let states: Vec<(&str, &str)> =
        plan.iter().map(|p| (p["stage"].as_str().unwrap(), p["status"].as_str().unwrap())).collect();
    assert_eq!(states, [("corpus", "will_download"), ("pretrain", "will_download"), ("eval-b", "will_run")]);
    let rb = s.apply(&b, "team-b.yaml", &[]);
    assert_eq!(rb.code, 0, "{}", rb.stderr);
    assert_eq!(rb.with_status("downloaded"), ["corpus", "pretrain"]);
    assert_eq!(rb.with_status("ran"), ["eval-b"]);
    assert_eq!(b.runs(), ["eval-b"], "team B ran none of the shared stages");
    assert_eq!(rb.summary["downloaded"], 2);
    assert_eq!(rb.artifact("corpus"), ra.artifact("prep"));
    assert_eq!(rb.artifact("pretrain"), ra.artifact("train"));
    assert_eq!(b.read(&format!("cache/artifacts/{}/ckpt/weights", rb.artifact("pretrain"))), "5000\n");
    // Downloaded blobs verify, and a second apply needs nothing from the remote.
    assert_eq!(s.command(&b, &["verify"]).output().unwrap().status.code(), Some(0));
    let again = s.apply(&b, "team-b.yaml", &[]);
    assert_eq!(again.with_status("cached").len(), 3);
}

#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn two_machines_applying_together_run_each_fingerprint_once() {
    let s = Shared::new("concurrent");
    let shared_log = tempfile::tempdir().unwrap();
    let log = shared_log.path().join("runs.log");
    let mut yaml = String::from("version: 1\nstages:\n");
    for i in 0..6 {
        let needs = if i >= 2 { format!("    needs: {{in: s{}}}\n", i - 2) } else { String::new() };
        yaml.push_str(&format!(
            "  s{i}:\n    kind: command\n{needs}    run: 'echo s{i} >> {}; sleep 0.3; echo {i} > $FLOW_OUT/v'\n",
            log.display()
        ));
    }
    let (m1, m2) = (Project::new(), Project::new());
    m1.write("wf.yaml", &yaml);
    m2.write("wf.yaml", &yaml);
    let spawn = |p: &Project| {
        let child = s
            .command(p, &["apply", "wf.yaml", "--json", "--push", "--jobs", "2"])
            .env("FLOW_LEASE_SECONDS", "5")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    };
    let (h1, h2) = (spawn(&m1), spawn(&m2));
    let (r1, r2) = (parse_applied(h1.join().unwrap()), parse_applied(h2.join().unwrap()));
    assert_eq!((r1.code, r2.code), (0, 0), "{}\n{}", r1.stderr, r2.stderr);
    let mut runs: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    runs.sort();
    let expected: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    assert_eq!(runs, expected, "each fingerprint ran exactly once across both machines");
    assert_eq!(r1.with_status("ran").len() + r2.with_status("ran").len(), 6);
    assert_eq!(r1.with_status("downloaded").len() + r2.with_status("downloaded").len(), 6);
    assert_eq!(m1.read("wf.lock"), m2.read("wf.lock"), "identical lock files");
    assert!(s.keys("leases").is_empty(), "{:?}", s.keys("leases"));
}

#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn a_lease_left_by_a_killed_process_expires_and_is_taken_over() {
    let s = Shared::new("lease");
    let p = Project::new();
    // The first run blocks until `release` exists; the test kills it while it holds the lease.
    p.fixture("lease_slow");
    let mut command = s.command(&p, &["apply", "wf.yaml", "--json", "--push", "--cache", "c1"]);
    let (mut first, mut events) = spawn_json(command.env("FLOW_LEASE_SECONDS", "2"));
    // `stage_started` comes after the lease is taken.
    events.find(|e| e["type"] == "stage_started").expect("the first apply reports its stage starting");
    assert_eq!(s.keys("leases").len(), 1);
    while !p.read("pid").ends_with('\n') {
        std::thread::yield_now();
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The stage's shell dies with its apply, or it would finish the work once released.
    crate::util::assert_all_end_within_a_second(&[], p.path(), "the killed apply's stage");
    p.write("release", "");

    let out = s
        .command(&p, &["apply", "wf.yaml", "--json", "--push", "--cache", "c2"])
        .env("FLOW_LEASE_SECONDS", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let r = parse_applied(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("slow"), "ran");
    let waiting: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "stage_waiting")
        .collect();
    assert_eq!(waiting.len(), 1, "{stdout}");
    assert!(waiting[0]["holder"].as_str().unwrap().contains("stage `slow`"), "{stdout}");
    assert!(stdout.contains("took over the lease"), "{stdout}");
    assert_eq!(p.runs(), ["slow"]);
    assert_eq!(s.keys("ac").len(), 1);
    assert!(s.keys("leases").is_empty());
}

#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn a_corrupt_remote_blob_is_never_used_and_the_stage_runs_here() {
    let s = Shared::new("corrupt");
    let a = Project::new();
    a.fixture("logged_payload");
    assert_eq!(s.apply(&a, "wf.yaml", &["--push"]).code, 0);
    let key = blob_key(&Digest::of(b"payload\n"));
    assert_eq!(s.get(&key), b"payload\n");
    s.put(&key, b"poison!\n".to_vec());

    let b = Project::new();
    b.write("wf.yaml", &a.read("wf.yaml"));
    let out = s.command(&b, &["apply", "wf.yaml", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let r = parse_applied(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("s"), "ran");
    assert_eq!(b.runs(), ["s"]);
    let notice = stdout.lines().find(|l| l.contains("\"notice\"")).unwrap_or_else(|| panic!("no notice in {stdout}"));
    assert!(notice.contains(&format!("{}/{key}", s.url)) && notice.contains("corrupt"), "{notice}");
    assert_eq!(b.read(&format!("cache/artifacts/{}/data.txt", r.artifact("s"))), "payload\n");
    assert_eq!(s.command(&b, &["verify"]).output().unwrap().status.code(), Some(0));
    // The poisoned bytes never reached the local store.
    let poisoned = std::fs::read_dir(b.cache().join("tmp")).unwrap().count();
    assert_eq!(poisoned, 0);
}

#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn a_hostile_remote_manifest_is_rejected_with_its_key() {
    let s = Shared::new("hostile");
    let a = Project::new();
    a.fixture("logged_payload");
    // Learn the fingerprint without touching the remote, then plant a record for it whose
    // manifest climbs out of the artifact.
    assert_eq!(a.apply("wf.yaml", &[]).code, 0);
    let fp = fingerprint(&a, "wf.lock", "s");
    let evil = Digest::of(b"evil\n");
    s.put(&blob_key(&evil), b"evil\n".to_vec());
    let manifest = format!(
        r#"{{"version":1,"entries":[{{"type":"file","path":"../../escaped.txt","size":5,"executable":false,"digest":"{evil}"}}]}}"#
    );
    let manifest_digest = Digest::of(manifest.as_bytes());
    s.put(&blob_key(&manifest_digest), manifest.into_bytes());
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(a.cache().join(format!("ac/{fp}.json"))).unwrap()).unwrap();
    record["artifact"] = manifest_digest.hex().into();
    s.put(&format!("ac/{fp}.json"), serde_json::to_vec(&record).unwrap());

    let b = Project::new();
    b.write("wf.yaml", &a.read("wf.yaml"));
    let out = s.command(&b, &["apply", "wf.yaml", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let r = parse_applied(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("s"), "ran");
    let notice = stdout.lines().find(|l| l.contains("\"notice\"")).unwrap_or_else(|| panic!("no notice in {stdout}"));
    assert!(notice.contains(&format!("{}/cas/{}/{}", s.url, manifest_digest.shard(), manifest_digest)), "{notice}");
    assert!(notice.contains("unsafe"), "{notice}");
    assert!(!b.path().join("escaped.txt").exists() && !b.path().parent().unwrap().join("escaped.txt").exists());
    assert!(
        !b.cache().join("cas").join(evil.shard()).join(evil.hex()).exists(),
        "no blob of a rejected manifest was fetched"
    );
}

#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn an_upload_killed_midway_leaves_no_record_and_push_then_pull_completes_it() {
    let s = Shared::new("interrupted");
    let a = Project::new();
    // 96 MiB in 24 files: the upload takes long enough to be caught in the middle.
    a.fixture("big_upload");
    let (mut child, mut events) = spawn_json(&mut s.command(&a, &["apply", "wf.yaml", "--json", "--push"]));
    let upload = events
        .find(|e| e["type"] == "stage_transfer" && e["stage"] == "big" && e["direction"] == "upload")
        .expect("the apply reports the upload");
    assert!(upload["done"].as_u64().unwrap() < upload["total"].as_u64().unwrap());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(a.records(), 2, "both stages were committed locally before the kill");
    // The killed apply wrote no lock file; an offline apply does, from the local store.
    let r = s.apply(&a, "wf.yaml", &["--offline"]);
    assert_eq!(r.with_status("cached").len(), 2);
    let small = fingerprint(&a, "wf.lock", "small");
    assert_eq!(s.keys("ac"), [format!("ac/{small}.json")], "only `small` was published");

    let out = s.command(&a, &["push", "wf.yaml", "--json"]).output().unwrap();
    let pushed = parse_applied(out);
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    // The push resumes: blobs that made it before the kill are not sent again.
    let resent = pushed.stage("big")["pushed"].as_u64().unwrap();
    assert!(resent > 0 && resent < 24 << 22, "{resent}");
    assert_eq!(pushed.stage("small")["pushed"], 0);
    assert_eq!(s.keys("ac").len(), 2);

    // A fresh machine pulls exactly the lock file's artifacts.
    let fresh = Project::new();
    fresh.write("wf.yaml", &a.read("wf.yaml"));
    fresh.write("wf.lock", &a.read("wf.lock"));
    let pulled = parse_applied(s.command(&fresh, &["pull", "wf.yaml", "--json"]).output().unwrap());
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert_eq!(pulled.with_status("downloaded"), ["big", "small"]);
    assert_eq!(fresh.records(), 2);
    assert_eq!(std::fs::read_dir(fresh.cache().join("artifacts")).unwrap().count(), 2);
    for stage in ["big", "small"] {
        assert_eq!(pulled.artifact(stage), r.artifact(stage));
    }
    let part = format!("cache/artifacts/{}/part-7", r.artifact("big"));
    assert_eq!(std::fs::read(fresh.path().join(&part)).unwrap(), std::fs::read(a.path().join(&part)).unwrap());
    let offline = s.apply(&fresh, "wf.yaml", &["--offline"]);
    assert_eq!(offline.with_status("cached").len(), 2, "{}", offline.stderr);
}

/// Push and pull through a proxy that closes, cuts and stalls one connection in three: both
/// complete through retries, the remote never shows a record before its data, and what is
/// pulled verifies and equals what was pushed.
#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn push_and_pull_through_a_faulty_network_complete_and_use_nothing_corrupt() {
    let s = Shared::new("faults");
    // `FLOW_FAULT_SEED` replays another pattern of faults.
    let seed = std::env::var("FLOW_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let proxy = FaultyProxy::start(&s.endpoint, 3, seed);
    let faulty = |p: &Project, args: &[&str]| {
        let mut command = s.command(p, args);
        parse_applied(command.env("AWS_ENDPOINT_URL", &proxy.url).output().unwrap())
    };
    let a = Project::new();
    a.fixture("faulty_transfer");
    let pushed = faulty(&a, &["apply", "wf.yaml", "--json", "--push"]);
    assert_eq!(pushed.code, 0, "seed {seed}: {}{:?}", pushed.stderr, pushed.stages);
    assert_eq!(s.keys("ac").len(), 3, "seed {seed}");

    let b = Project::new();
    b.write("wf.yaml", &a.read("wf.yaml"));
    b.write("wf.lock", &a.read("wf.lock"));
    let pulled = faulty(&b, &["pull", "wf.yaml", "--json"]);
    assert_eq!(pulled.code, 0, "seed {seed}: {}{:?}", pulled.stderr, pulled.stages);
    assert_eq!(pulled.with_status("downloaded"), ["big", "many", "small"], "seed {seed}");
    let verify = b.flow(&["verify"]);
    assert!(String::from_utf8_lossy(&verify.stderr).contains(", 0 problems"), "seed {seed}");
    for stage in ["big", "many", "small"] {
        assert_eq!(pulled.artifact(stage), pushed.artifact(stage), "seed {seed}");
    }
    eprintln!("seed {seed}: {} connections given a fault", proxy.faults());
    assert!(proxy.faults() >= 5, "seed {seed}: only {} faults were injected", proxy.faults());
}

#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn pulling_named_stages_fetches_only_those() {
    let s = Shared::new("pull-some");
    let a = Project::new();
    a.write("team-a.yaml", &pipeline(["prep", "train", "eval"], "x"));
    assert_eq!(s.apply(&a, "team-a.yaml", &["--push"]).code, 0);
    let fresh = Project::new();
    fresh.write("team-a.yaml", &a.read("team-a.yaml"));
    fresh.write("team-a.lock", &a.read("team-a.lock"));
    let pulled = parse_applied(s.command(&fresh, &["pull", "team-a.yaml", "train", "--json"]).output().unwrap());
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert_eq!(pulled.with_status("downloaded"), ["train"]);
    assert_eq!(fresh.records(), 1);
    let out = s.command(&fresh, &["pull", "team-a.yaml", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nope` is not a stage of"));
}

#[test]
fn with_everything_local_an_apply_never_contacts_the_remote() {
    let p = Project::new();
    p.fixture("unreachable_remote");
    // A remote that cannot be reached: a closed port.
    let unreachable = |cmd: &mut Command| {
        cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1");
    };
    let first = parse_applied(p.command(&["apply", "wf.yaml", "--json", "--offline"]).output().unwrap());
    assert_eq!(first.status("s"), "ran", "{}", first.stderr);
    let mut cmd = p.command(&["apply", "wf.yaml", "--json"]);
    unreachable(&mut cmd);
    let second = parse_applied(cmd.output().unwrap());
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.status("s"), "cached");
    assert_eq!(p.runs(), ["s"]);
}

#[test]
fn push_without_a_remote_is_a_usage_error() {
    let p = Project::new();
    p.fixture("no_remote");
    let out = p.command(&["apply", "wf.yaml", "--push"]).env_remove("FLOW_REMOTE").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pushing needs a remote"));
    let out = p.command(&["apply", "wf.yaml", "--remote", "gs://b/p"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`gs://` is not supported by this build"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.records(), 0, "nothing ran");
}
