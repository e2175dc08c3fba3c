//! Where each stage sits in the report's drawing of the DAG: a layered layout (Sugiyama's, in
//! its simplest form). A stage's column is the length of the longest path to it; within a
//! column, stages are ordered by the mean position of the stages they need (a few sweeps), so
//! edges cross less. A column taller than [`MAX_ROWS`] wraps into several, so that a workflow of
//! thousands of parallel stages stays a page wide enough to scroll rather than a line
//! thousands of nodes long.

use serde::Serialize;

use crate::graph::Dag;

/// Rows of one column before it wraps.
pub const MAX_ROWS: usize = 40;

/// A stage's place: its column (after wrapping) and row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Place {
    pub col: usize,
    pub row: usize,
}

/// The places of `stages` (indices into the workflow, in topological order), in that order.
pub fn layout(dag: &Dag, stages: &[usize]) -> Vec<Place> {
    let at: std::collections::HashMap<usize, usize> = stages.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let parents: Vec<Vec<usize>> =
        stages.iter().map(|&i| dag.dependencies(i).iter().filter_map(|d| at.get(d).copied()).collect()).collect();
    let mut depth = vec![0usize; stages.len()];
    for k in 0..stages.len() {
        depth[k] = parents[k].iter().map(|&p| depth[p] + 1).max().unwrap_or(0);
    }
    let columns = depth.iter().max().map_or(0, |d| d + 1);
    let mut column: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (k, d) in depth.iter().enumerate() {
        column[*d].push(k);
    }
    // Barycentre sweeps: order each column by the mean row of the stages it needs.
    let mut row = vec![0f64; stages.len()];
    for col in &column {
        for (r, &k) in col.iter().enumerate() {
            row[k] = r as f64;
        }
    }
    for _ in 0..4 {
        for col in column.iter_mut().skip(1) {
            let key = |k: &usize| {
                let p = &parents[*k];
                if p.is_empty() { row[*k] } else { p.iter().map(|&q| row[q]).sum::<f64>() / p.len() as f64 }
            };
            let mut keyed: Vec<(f64, usize)> = col.iter().map(|k| (key(k), *k)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *col = keyed.into_iter().map(|(_, k)| k).collect();
            for (r, &k) in col.iter().enumerate() {
                row[k] = r as f64;
            }
        }
    }
    let mut places = vec![Place { col: 0, row: 0 }; stages.len()];
    let mut first = 0;
    for col in &column {
        let wraps = col.len().div_ceil(MAX_ROWS).max(1);
        for (r, &k) in col.iter().enumerate() {
            places[k] = Place { col: first + r / MAX_ROWS, row: r % MAX_ROWS };
        }
        first += wraps;
    }
    places
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(yaml: &str) -> Vec<(String, Place)> {
        let wf = crate::spec::parse(std::path::Path::new("wf.yaml"), yaml.as_bytes().to_vec(), &[]).unwrap();
        let dag = Dag::build(&wf).unwrap();
        let order = dag.order().to_vec();
        let places = layout(&dag, &order);
        order.iter().map(|&i| wf.stages[i].name.clone()).zip(places).collect()
    }

    #[test]
    fn columns_follow_the_longest_path_and_rows_the_stages_needed() {
        let got = places(
            "version: 1\nstages:\n  a: {kind: command, run: 'true'}\n  b: {kind: command, run: 'true'}\n  c: {kind: command, run: 'true', needs: {x: b}}\n  \
             d: {kind: command, run: 'true', needs: {x: a}}\n  e: {kind: command, run: 'true', needs: {x: [c, d]}}\n",
        );
        let col = |n: &str| got.iter().find(|(s, _)| s == n).unwrap().1;
        assert_eq!((col("a").col, col("b").col, col("c").col, col("d").col, col("e").col), (0, 0, 1, 1, 2));
        // c needs b and d needs a: in column 1 they follow their parents' rows.
        assert_eq!((col("a").row < col("b").row), (col("d").row < col("c").row));
    }

    #[test]
    fn a_tall_column_wraps() {
        let mut yaml = String::from("version: 1\nstages:\n  root: {kind: command, run: 'true'}\n");
        for k in 0..(MAX_ROWS + 5) {
            yaml.push_str(&format!("  s{k}: {{kind: command, run: 'true', needs: {{x: root}}}}\n"));
        }
        yaml.push_str("  tail: {kind: command, run: 'true', needs: {x: s0}}\n");
        let got = places(&yaml);
        let cols: std::collections::BTreeSet<usize> = got.iter().map(|(_, p)| p.col).collect();
        assert_eq!(cols.into_iter().collect::<Vec<_>>(), [0, 1, 2, 3], "one column, two for the wrapped one, one more");
        assert_eq!(got.iter().filter(|(_, p)| p.col == 2).count(), 5);
        assert_eq!(got.iter().find(|(s, _)| s == "tail").unwrap().1.col, 3);
        assert!(got.iter().all(|(_, p)| p.row < MAX_ROWS));
    }
}
