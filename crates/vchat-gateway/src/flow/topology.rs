//! A Flow's shape: its executors ([`Node`]s, each with its replicas), the order
//! their `needs` give, how a request picks a replica, and how the outputs of
//! several executors merge.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vchat_core::{Document, DocumentArray, Executor};

/// Where an executor takes its input from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The request itself.
    Gateway,
    /// The output of the node at this index.
    Node(usize),
}

/// One executor of a running Flow, with its replicas.
pub struct Node {
    pub(crate) name: String,
    pub(crate) replicas: Vec<Arc<dyn Executor>>,
    /// Endpoints bound, `None` for executors in other processes (they apply the
    /// endpoint rules themselves).
    pub(crate) endpoints: Option<Vec<String>>,
    pub(crate) route_by: Option<String>,
    pub(crate) needs: Vec<Source>,
    next: AtomicUsize,
    /// An external executor's replicas, found by name (then `replicas` is empty).
    pub(crate) discovery: Option<Arc<super::discovery::Replicas>>,
}

impl Node {
    /// A node named `name` running `executor`, taking the previous node's output.
    pub fn new(name: impl Into<String>, executor: Arc<dyn Executor>) -> Self {
        let endpoints = Some(executor.endpoints());
        let route_by = executor.route_by().map(str::to_string);
        Node::with_replicas(name, vec![executor], endpoints, route_by)
    }

    /// A node of several copies of one executor.
    pub(crate) fn with_replicas(
        name: impl Into<String>,
        replicas: Vec<Arc<dyn Executor>>,
        endpoints: Option<Vec<String>>,
        route_by: Option<String>,
    ) -> Self {
        Node {
            name: name.into(),
            replicas,
            endpoints,
            route_by,
            needs: Vec::new(),
            next: AtomicUsize::new(0),
            discovery: None,
        }
    }

    /// The executor's name in the Flow.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every replica now in use.
    pub(crate) fn members(&self) -> Vec<Arc<dyn Executor>> {
        match &self.discovery {
            Some(d) => d.all(),
            None => self.replicas.clone(),
        }
    }

    /// Users present per room over every replica (see
    /// [`Executor::users_per_room`]).
    pub fn users_per_room(&self) -> Vec<(String, usize)> {
        self.members()
            .iter()
            .flat_map(|r| r.users_per_room())
            .collect()
    }

    /// Whether every replica answers (see [`Executor::ready`]).
    pub async fn ready(&self) -> Result<(), String> {
        if self.discovery.as_ref().is_some_and(|d| d.is_empty()) {
            return self.pick(&DocumentArray::new()).ready().await;
        }
        for r in &self.members() {
            r.ready().await?;
        }
        Ok(())
    }

    /// The replica that serves `docs`.
    pub(crate) fn pick(&self, docs: &DocumentArray) -> Arc<dyn Executor> {
        if let Some(d) = &self.discovery {
            let key = self
                .route_by
                .as_ref()
                .map(|tag| docs.first().and_then(|d| d.tag_str(tag)).unwrap_or(""));
            return d.pick(key);
        }
        let n = self.replicas.len();
        if n == 1 {
            return self.replicas[0].clone();
        }
        let i = match &self.route_by {
            Some(tag) => {
                let key = docs.first().and_then(|d| d.tag_str(tag)).unwrap_or("");
                rendezvous(key, n)
            }
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        self.replicas[i].clone()
    }
}

/// The replica with the highest hash of (key, replica): stable for a key, and a
/// new replica takes over only the keys it now wins.
pub(crate) fn rendezvous(key: &str, n: usize) -> usize {
    (0..n)
        .max_by_key(|&i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            i.hash(&mut h);
            h.finish()
        })
        .unwrap_or(0)
}

/// The order in which a Flow's nodes run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Node indexes grouped so that every node's needs are in earlier groups.
    pub levels: Vec<Vec<usize>>,
    /// Nodes whose output nobody takes: the response.
    pub sinks: Vec<usize>,
    /// How many nodes take each node's output.
    pub consumers: Vec<usize>,
}

impl Plan {
    /// Plans `nodes`; a node without `needs` takes the previous node's output
    /// (the first takes the request). Refuses a cycle.
    pub fn of(nodes: &mut [Node]) -> Result<Plan, String> {
        for (i, node) in nodes.iter_mut().enumerate() {
            if node.needs.is_empty() {
                node.needs = vec![if i == 0 {
                    Source::Gateway
                } else {
                    Source::Node(i - 1)
                }];
            }
        }
        let n = nodes.len();
        let mut consumers = vec![0; n];
        for node in nodes.iter() {
            for s in &node.needs {
                if let Source::Node(j) = s {
                    consumers[*j] += 1;
                }
            }
        }
        let mut level_of: Vec<Option<usize>> = vec![None; n];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        let mut placed = 0;
        while placed < n {
            let ready: Vec<usize> = (0..n)
                .filter(|&i| level_of[i].is_none())
                .filter(|&i| {
                    nodes[i].needs.iter().all(|s| match s {
                        Source::Gateway => true,
                        Source::Node(j) => level_of[*j].is_some_and(|l| l < levels.len()),
                    })
                })
                .collect();
            if ready.is_empty() {
                let stuck: Vec<&str> = (0..n)
                    .filter(|&i| level_of[i].is_none())
                    .map(|i| nodes[i].name.as_str())
                    .collect();
                return Err(format!("the `needs` of {} form a cycle", stuck.join(", ")));
            }
            for &i in &ready {
                level_of[i] = Some(levels.len());
            }
            placed += ready.len();
            levels.push(ready);
        }
        let sinks = (0..n).filter(|&i| consumers[i] == 0).collect();
        Ok(Plan {
            levels,
            sinks,
            consumers,
        })
    }
}

/// Merges the outputs of several executors by document id (see the module docs
/// of [`crate::flow`]).
pub fn merge(mut parts: Vec<DocumentArray>) -> DocumentArray {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut out: Vec<Document> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for part in parts {
        for doc in part {
            match index.get(&doc.id) {
                Some(&pos) => {
                    let into = &mut out[pos];
                    if doc.content.is_some() {
                        into.content = doc.content;
                    }
                    if !doc.mime_type.is_empty() {
                        into.mime_type = doc.mime_type;
                    }
                    into.tags.extend(doc.tags);
                }
                None => {
                    index.insert(doc.id.clone(), out.len());
                    out.push(doc);
                }
            }
        }
    }
    DocumentArray(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_is_stable_and_spreads() {
        let rooms: Vec<String> = (0..200).map(|i| format!("room{i}")).collect();
        let on2: Vec<usize> = rooms.iter().map(|r| rendezvous(r, 2)).collect();
        assert_eq!(
            on2,
            rooms.iter().map(|r| rendezvous(r, 2)).collect::<Vec<_>>()
        );
        let ones = on2.iter().filter(|&&i| i == 1).count();
        assert!((50..150).contains(&ones), "{ones}");
        // Going from 2 to 3 replicas moves only rooms to the new replica.
        for (r, &old) in rooms.iter().zip(&on2) {
            let new = rendezvous(r, 3);
            assert!(new == old || new == 2);
        }
    }
}
