//! The store under attack: flipped bytes, hostile manifests, a full disk, gc.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use flow::hash::Digest;
use flow::store::{Entry, Manifest};

use crate::util::Project;

fn one_stage(p: &Project) -> crate::util::Applied {
    p.fixture("payload");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r
}

fn blob_path(p: &Project, digest: &str) -> std::path::PathBuf {
    p.cache().join("cas").join(&digest[..2]).join(digest)
}

#[test]
fn verify_detects_a_flipped_byte_and_repair_makes_the_stage_rerun() {
    let p = Project::new();
    one_stage(&p);
    let out = p.flow(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let blob = blob_path(&p, &Digest::of(b"payload\n").hex());
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&blob, bytes).unwrap();

    let out = p.flow(&["verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "blob `cas/{}/{}` is corrupt",
            &Digest::of(b"payload\n").hex()[..2],
            Digest::of(b"payload\n")
        )),
        "{stderr}"
    );

    let out = p.flow(&["verify", "--repair"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(p.flow(&["verify"]).status.code(), Some(0));
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.status("s"), "ran");
    assert_eq!(p.read(&format!("cache/artifacts/{}/data.txt", r.artifact("s"))), "payload\n");
}

/// Replaces the record of stage `s` with one pointing at `manifest`, as a hostile shared
/// cache could.
fn plant(p: &Project, manifest_bytes: &[u8]) {
    let lock: serde_json::Value = serde_json::from_str(&p.read("wf.lock")).unwrap();
    let fp = lock["stages"]["s"]["fingerprint"].as_str().unwrap().to_owned();
    let digest = Digest::of(manifest_bytes);
    let blob = blob_path(p, &digest.hex());
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, manifest_bytes).unwrap();
    let record_path = p.cache().join("ac").join(format!("{fp}.json"));
    let mut record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    record["artifact"] = digest.hex().into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
}

#[test]
fn hostile_manifests_in_the_store_are_rejected() {
    let payload = Digest::of(b"payload\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            Manifest { version: 1, entries: vec![Entry::File { path: "../escape".into(), size: 8, executable: false, digest: payload }] }.bytes(),
            "contains `..`",
        ),
        (
            Manifest { version: 1, entries: vec![Entry::File { path: "/etc/owned".into(), size: 8, executable: false, digest: payload }] }.bytes(),
            "absolute path",
        ),
        (
            Manifest { version: 1, entries: vec![Entry::Link { path: "l".into(), target: "../../../root".into() }] }.bytes(),
            "link escapes",
        ),
        (br#"{"version":1,"entries":[{"type":"file","path":"a","size":1}]}"#.to_vec(), "not valid JSON of the expected shape"),
        (
            Manifest { version: 1, entries: vec![Entry::Link { path: "l".into(), target: "/etc/passwd".into() }] }.bytes(),
            "link target is absolute",
        ),
        (
            Manifest { version: 1, entries: vec![Entry::File { path: "big".into(), size: u64::MAX, executable: false, digest: payload }] }.bytes(),
            "absurd size",
        ),
        (
            Manifest {
                version: 1,
                entries: vec![
                    Entry::File { path: "a".into(), size: 8, executable: false, digest: payload },
                    Entry::File { path: "a".into(), size: 8, executable: false, digest: payload },
                ],
            }
            .bytes(),
            "not sorted and unique",
        ),
        (
            Manifest {
                version: 1,
                entries: vec![
                    Entry::File { path: "a".into(), size: 8, executable: false, digest: payload },
                    Entry::File { path: "a/b".into(), size: 8, executable: false, digest: payload },
                ],
            }
            .bytes(),
            "nested under another entry",
        ),
        (Manifest { version: 2, entries: vec![] }.bytes(), "manifest version 2 is not supported"),
        (br#"{"version":1,"entries":[{"type":"file","path":"a","size":8,"executable":false,"digest":"00","extra":1}]}"#.to_vec(), "not valid JSON"),
        (b"{\"version\":1,\"entries\":[".to_vec(), "not valid JSON"),
    ];
    for (bytes, why) in cases {
        let p = Project::new();
        one_stage(&p);
        plant(&p, &bytes);
        let r = p.apply("wf.yaml", &[]);
        assert_eq!(r.code, 3, "{why}: {}", r.stderr);
        let reason = r.stage("s")["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{why}: {reason}");
        assert!(!p.path().join("escape").exists() && !p.cache().join("escape").exists());
        let out = p.flow(&["verify"]);
        assert_eq!(out.status.code(), Some(3), "verify must flag the planted record");
    }
}

/// Damaged or forged run records: each fails the stage with the record's key and the reason,
/// `flow verify` flags it, and `--repair` drops it so that the stage runs again.
#[test]
fn hostile_records_in_the_store_are_rejected() {
    type Forge = fn(serde_json::Value) -> Vec<u8>;
    let cases: [(&str, Forge, &str); 5] = [
        ("garbage", |_| b"not json".to_vec(), "expected ident"),
        ("truncated", |r| serde_json::to_vec(&r).unwrap()[..40].to_vec(), "EOF while parsing"),
        (
            "another fingerprint",
            |mut r| {
                r["fingerprint"] = "0".repeat(64).into();
                serde_json::to_vec(&r).unwrap()
            },
            "record claims fingerprint 0000",
        ),
        (
            "an unknown field",
            |mut r| {
                r["trusted"] = true.into();
                serde_json::to_vec(&r).unwrap()
            },
            "unknown field `trusted`",
        ),
        (
            "a negative duration",
            |mut r| {
                r["seconds"] = (-1.0).into();
                serde_json::to_vec(&r).unwrap()
            },
            "invalid duration",
        ),
    ];
    for (name, forge, why) in cases {
        let p = Project::new();
        one_stage(&p);
        let lock: serde_json::Value = serde_json::from_str(&p.read("wf.lock")).unwrap();
        let fp = lock["stages"]["s"]["fingerprint"].as_str().unwrap().to_owned();
        let path = p.cache().join("ac").join(format!("{fp}.json"));
        let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, forge(record)).unwrap();
        let r = p.apply("wf.yaml", &[]);
        assert_eq!(r.code, 3, "{name}: {}", r.stderr);
        let reason = r.stage("s")["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("run record `ac/{fp}.json` is invalid")) && reason.contains(why),
            "{name}: {reason}"
        );
        assert_eq!(p.flow(&["verify"]).status.code(), Some(3), "{name}");
        assert_eq!(p.flow(&["verify", "--repair"]).status.code(), Some(0), "{name}");
        assert_eq!(p.apply("wf.yaml", &[]).status("s"), "ran", "{name}");
    }
}

#[test]
fn a_record_pointing_at_a_missing_manifest_is_reported() {
    let p = Project::new();
    let r = one_stage(&p);
    let manifest = blob_path(&p, &r.artifact("s"));
    std::fs::remove_file(manifest).unwrap();
    std::fs::remove_dir_all(p.cache().join("artifacts")).ok();
    let out = p.flow(&["verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr.contains("missing or corrupt manifest"), "{stderr}");
}

#[test]
fn gc_keeps_what_the_lock_file_names_and_drops_the_rest() {
    let p = Project::new();
    p.fixture("gc_param");
    assert_eq!(p.apply("wf.yaml", &[]).code, 0);
    assert_eq!(p.apply("wf.yaml", &["--set", "s.with.v=2"]).code, 0);
    assert_eq!(p.records(), 2);
    let out = p.flow(&["gc", "wf.yaml", "--keep-days", "0", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("would remove 1 records"), "{stderr}");
    assert_eq!(p.records(), 2);
    let out = p.flow(&["gc", "wf.yaml", "--keep-days", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr.contains("removed 1 records, 2 blobs"), "{stderr}");
    assert_eq!(p.records(), 1);
    assert_eq!(p.flow(&["verify"]).status.code(), Some(0));
    let r = p.apply("wf.yaml", &["--set", "s.with.v=2"]);
    assert_eq!(r.status("s"), "cached");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.status("s"), "ran");
}

/// An input file `flow` may not read: the apply stops before running anything, names the file
/// and the OS's reason, exits 2 and records nothing; once the file is readable it runs. Root
/// reads any file, so as root `flow` runs without the capabilities that let it (`setpriv`).
#[test]
fn an_unreadable_input_is_reported_with_its_path_and_nothing_runs() {
    let p = Project::new();
    p.fixture("unreadable_input");
    let secret = p.path().join("secret.txt");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-dac_override,-dac_read_search", "--"]).arg(crate::util::flow_bin());
        c
    } else {
        Command::new(crate::util::flow_bin())
    };
    let out = cmd
        .args(["apply", "wf.yaml"])
        .current_dir(p.path())
        .env("CI", "1")
        .env_remove("FLOW_CACHE")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot hash the inputs of stage `s`"), "{stderr}");
    assert!(stderr.contains(&format!("`{}`: Permission denied", secret.display())), "{stderr}");
    assert!(p.runs().is_empty());
    assert_eq!(p.records(), 0);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = p.apply("wf.yaml", &[]);
    assert_eq!((r.code, r.status("s")), (0, "ran".to_owned()), "{}", r.stderr);
    assert_eq!(p.runs(), ["ran"]);
}

/// A store on a full filesystem: a 1 MiB tmpfs, and a stage whose output comes ever closer to
/// filling it, so that the disk fills up while the stage writes, while its blobs are stored, or
/// while its record is written. Each failure is reported with the OS's reason, records nothing,
/// and leaves a store that verifies clean; once there is room, the stage runs. Needs root (to
/// mount the tmpfs); elsewhere it says it is skipped.
#[test]
fn a_full_disk_fails_the_stage_clearly_and_leaves_the_store_consistent() {
    let uid = Command::new("id").arg("-u").output().unwrap().stdout;
    if uid != b"0\n" {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let p = Project::new();
    let fs = p.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    let mount =
        |options: &str| Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(&fs).status().unwrap();
    assert!(mount("size=1m").success(), "mounting a tmpfs failed");
    let _mounted = Mount(fs.clone());
    let mut outcomes = std::collections::BTreeMap::new();
    for kib in (900..=1000).step_by(2) {
        p.write("wf.yaml", &format!("version: 1\nstages:\n  s:\n    kind: command\n    run: 'head -c {kib}000 /dev/zero > $FLOW_OUT/a; for i in $(seq 1 20); do echo $i > $FLOW_OUT/f$i; done'\n"));
        let _ = std::fs::remove_dir_all(fs.join("c"));
        let r = p.apply("wf.yaml", &["--cache", "fs/c"]);
        *outcomes.entry(r.code).or_insert(0) += 1;
        let records = std::fs::read_dir(fs.join("c/ac")).map(|d| d.count()).unwrap_or(0);
        match r.code {
            0 => assert_eq!(records, 1),
            1 => assert_eq!(r.stage("s")["reason"], "exited with code 1", "{kib} KiB"),
            3 => {
                let reason = r.stage("s")["reason"].as_str().unwrap().to_owned();
                assert!(
                    reason.contains("No space left on device") && reason.matches("os error 28").count() == 1,
                    "{kib} KiB: {reason}"
                );
            }
            other => panic!("{kib} KiB: exit {other}: {}", r.stderr),
        }
        if r.code != 0 {
            assert_eq!(records, 0, "{kib} KiB: a failed stage left a record");
        }
        let verify = p.flow(&["verify", "--cache", "fs/c"]);
        let stderr = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success() && stderr.contains(", 0 problems"), "{kib} KiB: {stderr}");
    }
    // The range is chosen so that the disk fills in each of the three places.
    assert!(outcomes.contains_key(&3), "no apply failed while storing: {outcomes:?}");
    assert!(outcomes.contains_key(&0) && outcomes.contains_key(&1), "{outcomes:?}");
    assert!(Command::new("mount").args(["-o", "remount,size=4m"]).arg(&fs).status().unwrap().success());
    let r = p.apply("wf.yaml", &["--cache", "fs/c"]);
    assert_eq!((r.code, r.status("s").as_str()), (0, "ran"), "{}", r.stderr);
}

/// A user without root's privileges builds, seals and reuses artifacts: a directory that is
/// not writable cannot move to another parent, which root never notices (the suite runs as
/// root, so the apply runs as `nobody` here).
#[test]
fn an_unprivileged_user_builds_seals_and_reuses_artifacts() {
    use std::os::unix::process::CommandExt;
    let p = Project::new();
    p.write(
        "wf.yaml",
        "version: 1\nstages:\n  a:\n    kind: command\n    run: mkdir -p \"$FLOW_OUT/d/e\" && echo deep > \"$FLOW_OUT/d/e/x\" && echo top > \"$FLOW_OUT/y\"\n  b:\n    kind: command\n    needs: {a: a}\n    run: cat \"$FLOW_IN_a/d/e/x\" \"$FLOW_IN_a/y\" > \"$FLOW_OUT/z\"\n",
    );
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the process's effective user.
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if root {
        let status = Command::new("chown").args(["-R", "65534:65534"]).arg(p.path()).status().unwrap();
        assert!(status.success());
    }
    let apply = || {
        let mut cmd = p.command(&["apply", "wf.yaml", "--json"]);
        if root {
            cmd.uid(65534).gid(65534);
        }
        crate::util::parse_applied(cmd.output().unwrap())
    };
    let first = apply();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.with_status("ran"), ["a", "b"]);
    let a = p.cache().join("artifacts").join(first.artifact("a"));
    assert_eq!(p.read(&format!("cache/artifacts/{}/z", first.artifact("b"))), "deep\ntop\n");
    for dir in [a.clone(), a.join("d"), a.join("d/e")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o555, "{} is not sealed", dir.display());
    }
    let second = apply();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.with_status("cached"), ["a", "b"]);
    assert_eq!(second.artifact("b"), first.artifact("b"));
}
