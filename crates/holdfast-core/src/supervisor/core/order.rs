//! The order in which several services start: dependencies first.

use std::collections::{BTreeSet, HashMap};

use crate::model::ServiceName;

/// `pending` in start order: each time, the first of those left (in `pending`'s order)
/// none of whose `after` dependencies is still left. Kahn's algorithm over positions, so
/// that booting N services costs O(N log N) and not the O(N^2) of picking by a scan.
pub(super) fn dependencies_first<'a>(
    pending: Vec<ServiceName>,
    after: impl Fn(&ServiceName) -> &'a [ServiceName],
) -> Vec<ServiceName> {
    let mut positions: HashMap<&ServiceName, Vec<usize>> = HashMap::new();
    for (i, name) in pending.iter().enumerate() {
        positions.entry(name).or_default().push(i);
    }
    // For each entry, how many entries it waits for, and whom it holds up.
    let mut waits = vec![0_usize; pending.len()];
    let mut holds: Vec<Vec<usize>> = vec![Vec::new(); pending.len()];
    for (i, name) in pending.iter().enumerate() {
        for dep in after(name) {
            for &j in positions.get(dep).into_iter().flatten() {
                waits[i] += 1;
                holds[j].push(i);
            }
        }
    }
    let mut free: BTreeSet<usize> = (0..pending.len()).filter(|i| waits[*i] == 0).collect();
    let mut order = Vec::with_capacity(pending.len());
    while let Some(j) = free.pop_first() {
        order.push(j);
        for &i in &holds[j] {
            waits[i] -= 1;
            if waits[i] == 0 {
                free.insert(i);
            }
        }
    }
    assert_eq!(
        order.len(),
        pending.len(),
        "validation rules out `after` cycles"
    );
    let mut slots: Vec<Option<ServiceName>> = pending.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().expect("each position once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The scan it replaced: the first entry with no dependency among those left.
    fn by_scan(
        mut pending: Vec<ServiceName>,
        after: &BTreeMap<ServiceName, Vec<ServiceName>>,
    ) -> Vec<ServiceName> {
        let mut order = Vec::new();
        while !pending.is_empty() {
            let next = pending
                .iter()
                .position(|n| !after[n].iter().any(|d| pending.contains(d)))
                .expect("no cycles");
            order.push(pending.remove(next));
        }
        order
    }

    #[test]
    fn dependencies_first_picks_what_a_scan_for_the_first_free_one_picks() {
        for seed in 0..500 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let names: Vec<ServiceName> = (0..rng.usize(0..12))
                .map(|i| ServiceName::new(format!("s{i}")).expect("valid"))
                .collect();
            // Only earlier names as dependencies, some not pending, some twice.
            let after: BTreeMap<ServiceName, Vec<ServiceName>> = (names.iter().enumerate())
                .map(|(i, n)| {
                    let deps = (0..rng.usize(0..4))
                        .filter(|_| i > 0)
                        .map(|_| names[rng.usize(..i)].clone())
                        .collect();
                    (n.clone(), deps)
                })
                .collect();
            let mut pending: Vec<ServiceName> = names
                .iter()
                .filter(|_| rng.u8(0..4) != 0)
                .cloned()
                .collect();
            rng.shuffle(&mut pending);
            let expected = by_scan(pending.clone(), &after);
            let order = dependencies_first(pending, |n| &after[n]);
            assert_eq!(order, expected, "seed {seed}");
        }
    }
}
