//! Two `flow apply` processes on one cache never run the same stage twice.

use crate::util::{Project, parse_applied};

#[test]
fn two_applies_started_together_run_each_stage_once() {
    let p = Project::new();
    let mut yaml = String::from("version: 1\nstages:\n");
    for i in 0..6 {
        let needs = if i >= 2 { format!("    needs: {{in: s{}}}\n", i - 2) } else { String::new() };
        yaml.push_str(&format!(
            "  s{i}:\n    kind: command\n{needs}    run: 'echo s{i} >> runs.log; sleep 0.2; echo {i} > $FLOW_OUT/v'\n"
        ));
    }
    p.write("wf.yaml", &yaml);
    let a = p.command(&["apply", "wf.yaml", "--json", "--jobs", "2"]).spawn_output();
    let b = p.command(&["apply", "wf.yaml", "--json", "--jobs", "2"]).spawn_output();
    let (a, b) = (parse_applied(a.join().unwrap()), parse_applied(b.join().unwrap()));
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    let expected: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    assert_eq!(p.runs(), expected, "every stage exactly once across both processes");
    let ran = a.with_status("ran").len() + b.with_status("ran").len();
    assert_eq!(ran, 6);
    for i in 0..6 {
        let s = format!("s{i}");
        assert_eq!(a.artifact(&s), b.artifact(&s));
    }
}

trait SpawnOutput {
    fn spawn_output(self) -> std::thread::JoinHandle<std::process::Output>;
}

impl SpawnOutput for std::process::Command {
    fn spawn_output(mut self) -> std::thread::JoinHandle<std::process::Output> {
        let child = self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}
