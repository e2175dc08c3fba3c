//! Trust in a shared store: records signed by a trusted key are used, anything else is run
//! here (or, with `--require-signed`, stops the run); two teams with different keys share one
//! bucket; the signatures are DSSE envelopes an independent implementation verifies.

use serde_json::Value;

use crate::remote::Shared;
use crate::util::{Applied, Project};

const WORKFLOW: &str = "version: 1\nname: trusted\nstages:\n  data:\n    kind: command\n    run: 'seq 1 100 > $FLOW_OUT/rows.txt'\n  model:\n    kind: command\n    needs: {data: data}\n    run: 'wc -l < $FLOW_IN_data/rows.txt > $FLOW_OUT/weights'\n";

/// A new key pair: the secret key's file in `p`, and the public key.
fn key(p: &Project, name: &str) -> (String, String) {
    let file = format!("keys/{name}.secret");
    let out = p.flow(&["key", "generate", name, "--out", &file]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(public.starts_with(&format!("{name}:")), "{public}");
    (p.path().join(file).display().to_string(), public)
}

fn apply(s: &Shared, p: &Project, env: &[(&str, &str)], extra: &[&str]) -> (Applied, Vec<Value>) {
    let mut args = vec!["apply", "wf.yaml", "--json"];
    args.extend_from_slice(extra);
    let mut cmd = s.command(p, &args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (crate::util::parse_applied(out), events)
}

fn notices(events: &[Value]) -> Vec<String> {
    events.iter().filter(|e| e["type"] == "notice").map(|e| e["message"].as_str().unwrap().to_owned()).collect()
}

fn machine() -> Project {
    let p = Project::new();
    p.write("wf.yaml", WORKFLOW);
    p
}

/// Signed by a trusted key: downloaded. Trusting only another key, or finding it unsigned: run
/// here, each with a notice naming the record and why.
#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn only_records_signed_by_a_trusted_key_are_used() {
    let s = Shared::new("trust");
    let keys = Project::new();
    let (a_secret, a_public) = key(&keys, "team-a");
    let (_, b_public) = key(&keys, "team-b");

    let publisher = machine();
    let (r, _) = apply(&s, &publisher, &[("FLOW_SIGNING_KEY", &a_secret)], &["--push"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fp = |stage: &str| r.stage(stage)["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(s.keys("att").len(), 2, "a signature beside each record: {:?}", s.keys("att"));

    let (trusting_a, _) = apply(&s, &machine(), &[("FLOW_TRUSTED_KEYS", &a_public)], &[]);
    assert_eq!(trusting_a.with_status("downloaded"), ["data", "model"], "{}", trusting_a.stderr);

    let (trusting_b, events) = apply(&s, &machine(), &[("FLOW_TRUSTED_KEYS", &b_public)], &[]);
    assert_eq!(trusting_b.with_status("ran"), ["data", "model"], "{}", trusting_b.stderr);
    let n = notices(&events);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(
        n[0].contains(&format!("ac/{}.json", fp("data")))
            && n[0].contains("signed only by keys not trusted here (team-a-"),
        "{}",
        n[0]
    );

    // An unsigned record (published without a key) is not used where keys are trusted.
    let unsigned = Shared::new("trust-unsigned");
    let (r, _) = apply(&unsigned, &machine(), &[], &["--push"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (strict, events) = apply(&unsigned, &machine(), &[("FLOW_TRUSTED_KEYS", &a_public)], &[]);
    assert_eq!(strict.with_status("ran"), ["data", "model"]);
    assert!(notices(&events).iter().all(|m| m.contains("it is not signed")), "{:?}", notices(&events));

    // `flow verify --remote` says the same of every record.
    let verify = |remote: &Shared| {
        let out = remote.command(&machine(), &["verify", "--remote", "--trusted-key", &a_public]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = verify(&s);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("signed ac/{}.json (key team-a)", fp("model")))
            && text.contains("2 signed by a trusted key, 0 not"),
        "{text}"
    );
    let (code, text) = verify(&unsigned);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("UNTRUSTED ac/")
            && text.contains("it is not signed")
            && text.contains("0 signed by a trusted key, 2 not"),
        "{text}"
    );
}

/// `flow key generate` writes a secret key only its owner can read, never over another, and
/// prints the public key that `flow key public` prints again; a key others can read is refused;
/// a bad trusted key is an error naming where it came from.
#[test]
fn keys_are_private_never_overwritten_and_bad_ones_refused() {
    use std::os::unix::fs::PermissionsExt;
    let p = machine();
    let (secret, public) = key(&p, "ci");
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let again = p.flow(&["key", "generate", "ci", "--out", "keys/ci.secret"]);
    assert_eq!(again.status.code(), Some(2), "an existing key is never overwritten");
    let shown = p.flow(&["key", "public", &secret]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), public);
    // By name, from the config directory.
    let at_home = |args: &[&str]| p.command(args).env("HOME", p.path()).env_remove("XDG_CONFIG_HOME").output().unwrap();
    let home = at_home(&["key", "generate", "laptop"]);
    assert!(home.status.success() && p.path().join(".config/flow/keys/laptop.secret").is_file(), "{home:?}");
    let named = at_home(&["key", "public", "laptop"]);
    assert_eq!(String::from_utf8_lossy(&named.stdout).trim(), String::from_utf8_lossy(&home.stdout).trim());

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = p.flow(&["key", "public", &secret]);
    assert_eq!(open.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&open.stderr).contains("others can read it (mode 644)"));

    p.write("bad.yaml", &WORKFLOW.replace("name: trusted\n", "name: trusted\nstore:\n  trusted_keys: [ci:AAAA]\n"));
    let bad = p.flow(&["plan", "bad.yaml"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("`store.trusted_keys` of `bad.yaml`: public key `ci` must be 32 bytes"), "{stderr}");
    let unkeyed = p.flow(&["apply", "wf.yaml", "--require-signed"]);
    assert_eq!(unkeyed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unkeyed.stderr).contains("`--require-signed` needs trusted keys"));
}

/// What an attacker with write access to the bucket can do to a signed record — point it at
/// another artifact, change the recipe inside the signed statement, copy a valid signature from
/// another record — is caught: the record is not used and the notice names it and says why.
/// `--require-signed` makes it an error (exit 3) that records nothing; `flow plan` says so.
#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn tampered_records_and_moved_signatures_are_not_used() {
    let s = Shared::new("trust-tamper");
    let keys = Project::new();
    let (secret, public) = key(&keys, "ci");
    let (r, _) = apply(&s, &machine(), &[("FLOW_SIGNING_KEY", &secret)], &["--push"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (data, model) =
        (r.stage("data")["fingerprint"].as_str().unwrap(), r.stage("model")["fingerprint"].as_str().unwrap());
    let att = |fp: &str| s.keys(&format!("att/{fp}")).pop().unwrap();
    let trusting = [("FLOW_TRUSTED_KEYS", public.as_str())];

    // The record of `model` pointed at `data`'s artifact.
    let record_key = format!("ac/{model}.json");
    let original_record = s.get(&record_key);
    let mut record: Value = serde_json::from_slice(&original_record).unwrap();
    record["artifact"] = r.stage("data")["artifact"].clone();
    s.put(&record_key, serde_json::to_vec_pretty(&record).unwrap());
    let (ran, events) = apply(&s, &machine(), &trusting, &[]);
    assert_eq!((ran.status("data"), ran.status("model")), ("downloaded".into(), "ran".into()), "{}", ran.stderr);
    let n = notices(&events);
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(n[0].contains(&record_key) && n[0].contains("is about another artifact"), "{}", n[0]);

    // --require-signed: an error, and nothing of `model` is recorded.
    let strict = machine();
    let (failed, _) = apply(&s, &strict, &trusting, &["--require-signed"]);
    assert_eq!(failed.code, 3, "{}", failed.stderr);
    assert_eq!(failed.status("model"), "failed");
    assert!(
        failed.stage("model")["reason"].as_str().unwrap().contains("is not trusted"),
        "{:?}",
        failed.stage("model")
    );
    assert_eq!(strict.records(), 1, "only `data`, which verified, is recorded");
    let plan = s.command(&machine(), &["plan", "wf.yaml"]).env("FLOW_TRUSTED_KEYS", &public).output().unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("will run model: ") && plan.contains("the remote's record is not used"), "{plan}");
    s.put(&record_key, original_record);

    // The recipe inside the signed statement changed, signature kept.
    let sig_key = att(model);
    let original_sig = s.get(&sig_key);
    let mut envelope: Value = serde_json::from_slice(&original_sig).unwrap();
    let payload = base64_decode(envelope["payload"].as_str().unwrap());
    let mut statement: Value = serde_json::from_slice(&payload).unwrap();
    statement["predicate"]["buildDefinition"]["internalParameters"]["recipe"]["command"] = "rm -rf /".into();
    envelope["payload"] = base64_encode(&serde_json::to_vec(&statement).unwrap()).into();
    s.put(&sig_key, serde_json::to_vec(&envelope).unwrap());
    let (ran, events) = apply(&s, &machine(), &trusting, &[]);
    assert_eq!(ran.status("model"), "ran");
    assert!(notices(&events)[0].contains("does not verify"), "{:?}", notices(&events));

    // `data`'s valid signature copied beside `model`'s record.
    s.put(&sig_key, s.get(&att(data)));
    let (ran, events) = apply(&s, &machine(), &trusting, &[]);
    assert_eq!(ran.status("model"), "ran");
    assert!(notices(&events)[0].contains("is about another"), "{:?}", notices(&events));
    s.put(&sig_key, original_sig);
    let (trusted, _) = apply(&s, &machine(), &trusting, &[]);
    assert_eq!(trusted.with_status("downloaded"), ["data", "model"], "restored, it verifies again");
}

/// Two teams with their own keys share one bucket: each signs what it publishes and uses only
/// what its own key signed; a stage both ran to the same artifact carries both signatures.
#[test]
#[ignore = "needs the S3-compatible server scripts/test.sh starts"]
fn two_teams_sharing_a_bucket_each_use_only_what_they_trust() {
    let s = Shared::new("trust-teams");
    let keys = Project::new();
    let (a_secret, a_public) = key(&keys, "team-a");
    let (b_secret, b_public) = key(&keys, "team-b");
    let a_env = [("FLOW_SIGNING_KEY", a_secret.as_str()), ("FLOW_TRUSTED_KEYS", a_public.as_str())];
    let b_env = [("FLOW_SIGNING_KEY", b_secret.as_str()), ("FLOW_TRUSTED_KEYS", b_public.as_str())];

    let (a1, _) = apply(&s, &machine(), &a_env, &["--push"]);
    assert_eq!(a1.with_status("ran"), ["data", "model"], "{}", a1.stderr);
    let (a2, _) = apply(&s, &machine(), &a_env, &["--push"]);
    assert_eq!(a2.with_status("downloaded"), ["data", "model"], "team a's second machine uses team a's work");
    let (b1, _) = apply(&s, &machine(), &b_env, &["--push"]);
    assert_eq!(b1.with_status("ran"), ["data", "model"], "team b does not use team a's work: {}", b1.stderr);
    // Team b reproduced the same artifacts, so it signed the records too.
    let fp = a1.stage("model")["fingerprint"].as_str().unwrap();
    let signers: Vec<String> = s.keys(&format!("att/{fp}"));
    assert_eq!(signers.len(), 2, "{signers:?}");
    let (b2, _) = apply(&s, &machine(), &b_env, &[]);
    assert_eq!(b2.with_status("downloaded"), ["data", "model"], "{}", b2.stderr);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

const VERIFY_DSSE: &str = r#"
import base64, json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
name, b64 = sys.argv[1].split(":", 1)
keyid = json.load(open(sys.argv[2]))["signatures"][0]["keyid"]
key = SSlibKey(keyid, "ed25519", "ed25519", {"public": base64.b64decode(b64).hex()})
envelope = Envelope.from_dict(json.load(open(sys.argv[2])))
try:
    envelope.verify([key], 1)
except Exception as e:
    print(json.dumps({"verified": False, "why": type(e).__name__}))
    sys.exit(0)
statement = json.loads(envelope.payload)
print(json.dumps({"verified": True, "type": statement["_type"], "predicate": statement["predicateType"], "subject": statement["subject"]}))
"#;

/// The signatures are standard: securesystemslib (in-toto's and TUF's library) verifies the
/// DSSE envelope flow wrote and reads an in-toto Statement of SLSA provenance whose subject
/// carries the artifact's SHA-256 beside its BLAKE3; a tampered envelope fails there too.
#[test]
#[ignore = "needs the S3-compatible server and the Python with securesystemslib that scripts/test.sh provides"]
fn an_independent_dsse_implementation_verifies_the_signatures() {
    let python = std::env::var("FLOW_TEST_PYTHON").expect("FLOW_TEST_PYTHON: run the tests with scripts/test.sh");
    let s = Shared::new("trust-dsse");
    let keys = Project::new();
    let (secret, public) = key(&keys, "release");
    let (r, _) = apply(&s, &machine(), &[("FLOW_SIGNING_KEY", &secret)], &["--push"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fp = r.stage("model")["fingerprint"].as_str().unwrap();
    let envelope = s.get(&s.keys(&format!("att/{fp}")).pop().unwrap());
    let verify = |bytes: &[u8]| -> Value {
        keys.write_bytes("envelope.json", bytes);
        let out = std::process::Command::new(&python)
            .args(["-c", VERIFY_DSSE, &public])
            .arg(keys.path().join("envelope.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ok = verify(&envelope);
    assert_eq!(ok["verified"], true, "{ok}");
    assert_eq!(
        (ok["type"].as_str(), ok["predicate"].as_str()),
        (Some("https://in-toto.io/Statement/v1"), Some("https://slsa.dev/provenance/v1"))
    );
    let digest = &ok["subject"][0]["digest"];
    assert_eq!(digest["blake3"].as_str(), Some(r.artifact("model").as_str()));
    let manifest = s.get(&format!("cas/{}/{}", &r.artifact("model")[..2], r.artifact("model")));
    use sha2::Digest as _;
    let sha: String = sha2::Sha256::digest(&manifest).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest["sha256"].as_str(), Some(sha.as_str()), "the manifest's SHA-256");

    let mut tampered: Value = serde_json::from_slice(&envelope).unwrap();
    let mut statement: Value = serde_json::from_slice(&base64_decode(tampered["payload"].as_str().unwrap())).unwrap();
    statement["subject"][0]["digest"]["blake3"] = "0".repeat(64).into();
    tampered["payload"] = base64_encode(&serde_json::to_vec(&statement).unwrap()).into();
    let bad = verify(&serde_json::to_vec(&tampered).unwrap());
    assert_eq!(bad["verified"], false, "{bad}");
}
