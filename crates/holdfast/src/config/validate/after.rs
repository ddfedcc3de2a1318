//! `after`: start order between services, and the cycles that would stop it.

use std::collections::{BTreeMap, BTreeSet};

use serde_spanned::Spanned;

use super::Validator;
use crate::config::diagnostic::{Problem, closest};
use crate::config::raw::RawService;
use crate::model::ServiceName;

/// An `after` edge: `from` starts after `to`; `span` is the entry in `from`'s list.
pub(super) struct Edge {
    from: String,
    to: String,
    span: std::ops::Range<usize>,
}

impl Validator<'_> {
    pub(super) fn after(
        &mut self,
        raw_name: &Spanned<String>,
        raw: &RawService,
        declared: &BTreeSet<&str>,
        edges: &mut Vec<Edge>,
    ) -> Vec<ServiceName> {
        let svc = raw_name.get_ref().as_str();
        let mut after: Vec<ServiceName> = Vec::new();
        for target in raw.after.iter().flatten() {
            let t = target.get_ref().as_str();
            if t == svc {
                self.push(
                    Problem::new(
                        format!("service `{svc}` lists itself in `after`"),
                        target.span(),
                        "self-reference",
                    )
                    .with_help(format!("remove \"{svc}\" from `after`")),
                );
            } else if !declared.contains(t) {
                let help = match closest(t, declared.iter().copied().filter(|d| *d != svc)) {
                    Some(best) => {
                        format!("did you mean \"{best}\"? `after` names other [service.*] tables")
                    }
                    None => format!(
                        "`after` names other [service.*] tables; declared: {}",
                        declared.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                };
                self.push(
                    Problem::new(
                        format!("unknown service `{t}` in `service.{svc}.after`"),
                        target.span(),
                        "no such service",
                    )
                    .with_help(help),
                );
            } else {
                edges.push(Edge {
                    from: svc.to_owned(),
                    to: t.to_owned(),
                    span: target.span(),
                });
                // The target exists, so its name is checked where it is declared.
                if let Ok(name) = ServiceName::new(t) {
                    if !after.contains(&name) {
                        after.push(name);
                    }
                }
            }
        }
        after
    }

    /// Reports each `after` cycle once, at the entry that closes it.
    pub(super) fn cycles(&mut self, edges: &[Edge]) {
        let mut graph: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
        for edge in edges {
            graph.entry(edge.from.as_str()).or_default().push(edge);
        }
        let mut state: BTreeMap<&str, Visit> = BTreeMap::new();
        let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
        let starts: Vec<&str> = graph.keys().copied().collect();
        for start in starts {
            let mut stack = Vec::new();
            self.visit(start, &graph, &mut state, &mut stack, &mut reported);
        }
    }

    fn visit<'e>(
        &mut self,
        node: &'e str,
        graph: &BTreeMap<&'e str, Vec<&'e Edge>>,
        state: &mut BTreeMap<&'e str, Visit>,
        stack: &mut Vec<&'e str>,
        reported: &mut BTreeSet<Vec<&'e str>>,
    ) {
        if state.contains_key(node) {
            return;
        }
        state.insert(node, Visit::InProgress);
        stack.push(node);
        for edge in graph.get(node).into_iter().flatten() {
            match state.get(edge.to.as_str()) {
                None => self.visit(&edge.to, graph, state, stack, reported),
                Some(Visit::InProgress) => {
                    let at = stack
                        .iter()
                        .position(|n| *n == edge.to)
                        .expect("an in-progress node is on the stack");
                    let cycle = &stack[at..];
                    let mut key = cycle.to_vec();
                    key.sort_unstable();
                    if reported.insert(key) {
                        let path = cycle
                            .iter()
                            .chain([&edge.to.as_str()])
                            .copied()
                            .collect::<Vec<_>>()
                            .join(" -> ");
                        self.push(
                            Problem::new(format!("dependency cycle: {path}"), edge.span.clone(), "this closes the cycle")
                                .with_help("`after` orders starts, so services in a cycle can never start: remove one of these entries"),
                        );
                    }
                }
                Some(Visit::Done) => {}
            }
        }
        stack.pop();
        state.insert(node, Visit::Done);
    }
}

#[derive(Debug, Clone, Copy)]
enum Visit {
    InProgress,
    Done,
}
