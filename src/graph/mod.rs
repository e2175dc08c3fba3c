//! The stage DAG ([`Dag`]) on petgraph: built from a validated [`Workflow`], checked for cycles
//! (the error names the cycle), ordered topologically, narrowed to targets, and drawn as text,
//! Graphviz dot or Mermaid.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::spec::{SpecError, SpecErrors, Workflow};

/// Stages as nodes (by their index in `Workflow::stages`), edges from a dependency to its
/// dependent, labelled with the role.
#[derive(Debug)]
pub struct Dag {
    graph: DiGraph<usize, String>,
    order: Vec<usize>,
}

impl Dag {
    /// Builds the DAG, rejecting cycles and self-loops.
    pub fn build(workflow: &Workflow) -> Result<Self, SpecErrors> {
        let mut graph = DiGraph::with_capacity(workflow.stages.len(), workflow.stages.len() * 2);
        let index: HashMap<&str, NodeIndex> =
            workflow.stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), graph.add_node(i))).collect();
        for (i, stage) in workflow.stages.iter().enumerate() {
            for (role, need) in &stage.needs {
                for (dep, _) in &need.stages {
                    graph.add_edge(index[dep.as_str()], NodeIndex::new(i), role.clone());
                }
            }
        }
        let mut errors = Vec::new();
        for scc in tarjan_scc(&graph) {
            let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
            if !cyclic {
                continue;
            }
            let cycle = find_cycle(&graph, &scc);
            let names: Vec<&str> = cycle.iter().map(|n| workflow.stages[graph[*n]].name.as_str()).collect();
            let first = &workflow.stages[graph[cycle[0]]];
            let next = names.get(1).copied().unwrap_or(names[0]);
            let span = first
                .needs
                .values()
                .flat_map(|n| &n.stages)
                .find(|(d, _)| d == next)
                .map(|(_, s)| *s)
                .unwrap_or(first.span);
            let message = if names.len() == 1 {
                format!("stage `{}` needs itself", names[0])
            } else {
                format!("the stages form a cycle: {} -> {}", names.join(" -> "), names[0])
            };
            errors.push(workflow.error_at_span(span, message, "closes the cycle"));
        }
        if !errors.is_empty() {
            return Err(SpecErrors { file: workflow.path.display().to_string(), errors });
        }
        let order = petgraph::algo::toposort(&graph, None)
            .map_err(|_| SpecErrors {
                file: workflow.path.display().to_string(),
                errors: vec![SpecError::whole("the stages form a cycle")],
            })?
            .into_iter()
            .map(|n| graph[n])
            .collect();
        Ok(Self { graph, order })
    }

    /// Stage indices in a topological order (dependencies first).
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The stages `stage` needs directly, deduplicated.
    pub fn dependencies(&self, stage: usize) -> Vec<usize> {
        let set: BTreeSet<usize> = self
            .graph
            .edges_directed(NodeIndex::new(stage), petgraph::Direction::Incoming)
            .map(|e| self.graph[e.source()])
            .collect();
        set.into_iter().collect()
    }

    /// The stages that need `stage` directly, deduplicated.
    pub fn dependents(&self, stage: usize) -> Vec<usize> {
        let set: BTreeSet<usize> = self
            .graph
            .edges_directed(NodeIndex::new(stage), petgraph::Direction::Outgoing)
            .map(|e| self.graph[e.target()])
            .collect();
        set.into_iter().collect()
    }

    /// `targets` and everything they depend on, transitively.
    pub fn closure(&self, targets: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = targets.to_vec();
        while let Some(s) = stack.pop() {
            if seen.insert(s) {
                stack.extend(self.dependencies(s));
            }
        }
        seen
    }

    /// A plain-text listing: one stage per line in topological order with what it needs.
    pub fn to_text(&self, workflow: &Workflow) -> String {
        let mut out = String::new();
        for &i in &self.order {
            let stage = &workflow.stages[i];
            let _ = write!(out, "{} ({})", stage.name, stage.kind);
            let needs: Vec<String> = stage
                .needs
                .iter()
                .map(|(role, n)| {
                    let names: Vec<&str> = n.stages.iter().map(|(s, _)| s.as_str()).collect();
                    format!("{role}: {}", names.join(", "))
                })
                .collect();
            if !needs.is_empty() {
                let _ = write!(out, " <- {}", needs.join("; "));
            }
            out.push('\n');
        }
        out
    }

    pub fn to_dot(&self, workflow: &Workflow) -> String {
        let mut out = String::from("digraph workflow {\n  rankdir=LR;\n");
        for &i in &self.order {
            let s = &workflow.stages[i];
            let _ = writeln!(out, "  \"{}\" [label=\"{}\\n({})\"];", s.name, s.name, s.kind);
        }
        for e in self.sorted_edges() {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                workflow.stages[e.0].name, workflow.stages[e.1].name, e.2
            );
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self, workflow: &Workflow) -> String {
        let mut out = String::from("flowchart LR\n");
        for &i in &self.order {
            let s = &workflow.stages[i];
            let _ = writeln!(out, "  s{i}[\"{} ({})\"]", s.name, s.kind);
        }
        for (from, to, role) in self.sorted_edges() {
            let _ = writeln!(out, "  s{from} -->|{role}| s{to}");
        }
        out
    }

    fn sorted_edges(&self) -> Vec<(usize, usize, String)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| (self.graph[e.source()], self.graph[e.target()], e.weight().clone()))
            .collect();
        edges.sort();
        edges
    }
}

/// A concrete cycle inside a strongly connected component, as a node sequence.
fn find_cycle(graph: &DiGraph<usize, String>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let start = *scc.iter().min_by_key(|n| graph[**n]).expect("non-empty component");
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    loop {
        let here = *path.last().expect("path is non-empty");
        let mut next: Vec<NodeIndex> = graph.neighbors(here).filter(|n| members.contains(n)).collect();
        next.sort_by_key(|n| graph[*n]);
        if next.contains(&start) {
            return path;
        }
        match next.into_iter().find(|n| !seen.contains(n)) {
            Some(n) => {
                seen.insert(n);
                path.push(n);
            }
            // Dead end within the component: back off; a cycle through `start` must exist.
            None => {
                path.pop();
                if path.is_empty() {
                    return vec![start];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn workflow(text: &str) -> Workflow {
        crate::spec::parse(Path::new("wf.yaml"), text.as_bytes().to_vec(), &[]).expect("a valid workflow")
    }

    /// A diamond `a → b, c → d` declared out of order, and a lone `e`.
    const DIAMOND: &str = "version: 1\nstages:\n  d: {kind: command, needs: {x: b, y: c}, run: 'true'}\n  b: {kind: command, needs: {in: a}, run: 'true'}\n  c: {kind: command, needs: {in: a}, run: 'true'}\n  a: {kind: command, run: 'true'}\n  e: {kind: command, run: 'true'}\n";

    #[test]
    fn the_order_puts_every_stage_after_what_it_needs() {
        let w = workflow(DIAMOND);
        let dag = Dag::build(&w).unwrap();
        let names: Vec<&str> = dag.order().iter().map(|&i| w.stages[i].name.as_str()).collect();
        assert_eq!(names, ["e", "a", "c", "b", "d"]);
        let pos = |n: &str| names.iter().position(|m| *m == n).unwrap();
        assert!(pos("a") < pos("b") && pos("a") < pos("c") && pos("b") < pos("d") && pos("c") < pos("d"), "{names:?}");
        let i = |n: &str| w.index(n).unwrap();
        assert_eq!(dag.dependencies(i("d")).len(), 2);
        let mut dependents = dag.dependents(i("a"));
        dependents.sort();
        assert_eq!(dependents, [i("b"), i("c")]);
        let closure: Vec<usize> = dag.closure(&[i("b")]).into_iter().collect();
        let mut expected = vec![i("a"), i("b")];
        expected.sort();
        assert_eq!(closure, expected, "a target brings what it needs, nothing else");
    }

    #[test]
    fn a_cycle_is_named_and_located() {
        let w = workflow(
            "version: 1\nstages:\n  a: {kind: command, needs: {x: c}, run: 'true'}\n  b: {kind: command, needs: {x: a}, run: 'true'}\n  c: {kind: command, needs: {x: b}, run: 'true'}\n",
        );
        let e = Dag::build(&w).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].message, "the stages form a cycle: a -> b -> c -> a");
        assert!(e.errors[0].location.is_some());
    }

    #[test]
    fn drawings_name_every_stage_and_edge() {
        let w = workflow(DIAMOND);
        let dag = Dag::build(&w).unwrap();
        let text = dag.to_text(&w);
        assert_eq!(
            text,
            "e (command)\na (command)\nc (command) <- in: a\nb (command) <- in: a\nd (command) <- x: b; y: c\n"
        );
        assert_eq!(dag.to_dot(&w).matches(" -> ").count(), 4);
        assert_eq!(dag.to_mermaid(&w).matches("-->").count(), 4);
    }
}
