//! An external executor's replicas, found by name: the addresses listed in the
//! Flow (`host: [a, b]`), or every address one DNS name resolves to
//! (`dns_replicas: true`, a Kubernetes headless Service), looked up again every
//! `resolve_interval_s`.
//!
//! A room is pinned to a replica by rendezvous hashing over each replica's
//! **identity**, not its position: the address as listed (a StatefulSet pod's
//! DNS name, `chat-0.chat:8080`, survives the pod's restart at a new IP), or the
//! resolved `ip:port` with `dns_replicas`. Every gateway computes the same map
//! from the same set, and when the set changes only the rooms whose winner
//! changed move: the rooms of a replica that left, and the rooms a new replica
//! wins. A listed name that stops resolving (a pod that is not ready leaves its
//! Service's DNS) leaves the set until it resolves again; when no name resolves
//! at all (DNS itself is down), the set is kept as it was.
//!
//! A moved room starts afresh on its new replica from its users' next frames:
//! the chat executor keeps a room's state in memory only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::future::join_all;
use vchat_core::config::DEFAULT_RESOLVE_INTERVAL_S;
use vchat_core::{DocumentArray, Error, Executor, RequestContext, async_trait};

use super::remote::{RemoteExecutor, RemoteOptions};

/// How long one name's lookup may take before it counts as not resolving.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where an executor's replicas come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// These `host:port` addresses, each one replica.
    Listed(Vec<String>),
    /// Every address this `host:port` resolves to.
    Dns(String),
}

/// The source of an executor the Flow lists by address: `addrs` as listed, or
/// with `dns` the addresses its one name resolves to.
pub fn source(addrs: &[String], dns: bool) -> Source {
    match addrs {
        [one] if dns => Source::Dns(one.clone()),
        _ => Source::Listed(addrs.to_vec()),
    }
}

/// The live replica set of one external executor.
pub struct Replicas {
    name: String,
    source: Source,
    options: RemoteOptions,
    interval: Duration,
    /// Sorted by identity; replaced whole on a change, so a request reads one
    /// consistent set without holding the lock across its call.
    members: RwLock<Arc<Vec<Member>>>,
    next: AtomicUsize,
    none: Arc<dyn Executor>,
}

#[derive(Clone)]
struct Member {
    id: String,
    executor: Arc<dyn Executor>,
}

impl Replicas {
    /// The replicas of executor `name` from `source`, resolved once before this
    /// returns; then again every `interval` (default
    /// [`DEFAULT_RESOLVE_INTERVAL_S`]) for as long as the set is in use.
    pub async fn start(
        name: &str,
        source: Source,
        options: RemoteOptions,
        interval: Option<Duration>,
    ) -> Result<Arc<Self>, String> {
        let listed = match &source {
            Source::Listed(addrs) => addrs.clone(),
            Source::Dns(_) => Vec::new(),
        };
        let replicas = Arc::new(Replicas {
            name: name.to_string(),
            none: Arc::new(NoReplica {
                name: name.to_string(),
                source: match &source {
                    Source::Listed(a) => a.join(", "),
                    Source::Dns(a) => a.clone(),
                },
            }),
            source,
            options,
            interval: interval.unwrap_or(Duration::from_secs_f64(DEFAULT_RESOLVE_INTERVAL_S)),
            members: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
        });
        // Until a lookup says otherwise, every listed address is a replica: a
        // Flow may start before its executors' names exist.
        replicas.apply(listed)?;
        replicas.refresh().await;
        let weak = Arc::downgrade(&replicas);
        let interval = replicas.interval;
        tokio::spawn(refresh_loop(weak, interval));
        Ok(replicas)
    }

    /// Identities of the replicas now in the set, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.snapshot().iter().map(|m| m.id.clone()).collect()
    }

    /// Number of replicas now in the set.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether no replica is in the set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every replica now in the set.
    pub fn all(&self) -> Vec<Arc<dyn Executor>> {
        self.snapshot().iter().map(|m| m.executor.clone()).collect()
    }

    /// The replica for `key` (rendezvous over identities), or the next one in
    /// turn without a key; with no replica, one that answers every call with an
    /// error naming the executor and where its replicas are looked for.
    pub fn pick(&self, key: Option<&str>) -> Arc<dyn Executor> {
        let members = self.snapshot();
        let i = match key {
            _ if members.is_empty() => return self.none.clone(),
            Some(key) => winner(key, members.iter().map(|m| m.id.as_str())),
            None => self.next.fetch_add(1, Ordering::Relaxed) % members.len(),
        };
        members[i].executor.clone()
    }

    fn snapshot(&self) -> Arc<Vec<Member>> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Looks the names up and applies the set they give.
    async fn refresh(&self) {
        let found = match &self.source {
            Source::Listed(addrs) => {
                let looked = join_all(addrs.iter().map(|a| resolves(a))).await;
                let up: Vec<String> = addrs
                    .iter()
                    .zip(looked)
                    .filter(|(_, ok)| !ok.is_empty())
                    .map(|(a, _)| a.clone())
                    .collect();
                // None at all: DNS is down rather than every replica gone.
                (!up.is_empty()).then_some(up)
            }
            Source::Dns(name) => {
                let addrs = resolves(name).await;
                (!addrs.is_empty()).then(|| addrs.iter().map(|a| a.to_string()).collect())
            }
        };
        match found {
            Some(ids) => {
                if let Err(e) = self.apply(ids) {
                    tracing::warn!(executor = %self.name, error = %e, "Cannot use a replica");
                }
            }
            None => tracing::debug!(executor = %self.name, "No replica resolves; keeping the set"),
        }
    }

    /// Makes `ids` the set: replicas already in it keep their connection.
    fn apply(&self, mut ids: Vec<String>) -> Result<(), String> {
        ids.sort();
        ids.dedup();
        let old = self.snapshot();
        if old.iter().map(|m| &m.id).eq(ids.iter()) {
            return Ok(());
        }
        let kept: BTreeMap<&str, &Member> = old.iter().map(|m| (m.id.as_str(), m)).collect();
        let mut members = Vec::with_capacity(ids.len());
        for id in &ids {
            members.push(match kept.get(id.as_str()) {
                Some(m) => (*m).clone(),
                None => Member {
                    id: id.clone(),
                    executor: Arc::new(RemoteExecutor::new(&self.name, id, self.options.clone())?),
                },
            });
        }
        let added: Vec<&str> = ids
            .iter()
            .filter(|i| !kept.contains_key(i.as_str()))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = old
            .iter()
            .filter(|m| !ids.contains(&m.id))
            .map(|m| m.id.as_str())
            .collect();
        if !old.is_empty() {
            tracing::info!(
                executor = %self.name,
                added = ?added,
                removed = ?removed,
                replicas = ids.len(),
                "Executor replicas changed"
            );
        }
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(members);
        Ok(())
    }
}

async fn refresh_loop(replicas: Weak<Replicas>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        // The Flow that held the set is gone: so is the loop.
        let Some(r) = replicas.upgrade() else { return };
        r.refresh().await;
    }
}

/// The addresses `addr` (`host:port`) resolves to; none when it does not
/// resolve within [`LOOKUP_TIMEOUT`].
async fn resolves(addr: &str) -> Vec<std::net::SocketAddr> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(addr)).await {
        Ok(Ok(found)) => {
            let mut v: Vec<_> = found.collect();
            v.sort();
            v.dedup();
            v
        }
        _ => Vec::new(),
    }
}

/// A 64-bit hash that every build and every gateway computes alike (FNV-1a,
/// then a finaliser that spreads nearby inputs): the room map must not depend on
/// which gateway, or which version of the standard library, computes it.
fn stable_hash(key: &str, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Index of the identity with the highest hash together with `key`: a replica
/// joining takes only the keys it now wins, and one leaving gives up only its
/// own. Ties (never in practice) go to the smaller identity.
pub fn winner<'a>(key: &str, ids: impl Iterator<Item = &'a str>) -> usize {
    let mut best: Option<(u64, &str, usize)> = None;
    for (i, id) in ids.enumerate() {
        let h = stable_hash(key, id);
        if best.is_none_or(|(bh, bid, _)| h > bh || (h == bh && id < bid)) {
            best = Some((h, id, i));
        }
    }
    best.map_or(0, |(_, _, i)| i)
}

/// Stands in for an executor none of whose replicas resolves.
struct NoReplica {
    name: String,
    source: String,
}

#[async_trait]
impl Executor for NoReplica {
    async fn process(&self, _: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        Err(Error::Failed {
            executor: self.name.clone(),
            message: format!("no replica is reachable: none of {} resolves", self.source),
        })
    }

    async fn ready(&self) -> Result<(), String> {
        Err(format!(
            "executor {}: no replica resolves ({})",
            self.name, self.source
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms() -> Vec<String> {
        (0..2000).map(|i| format!("room-{i}")).collect()
    }

    fn map(ids: &[&str]) -> Vec<String> {
        rooms()
            .iter()
            .map(|r| ids[winner(r, ids.iter().copied())].to_string())
            .collect()
    }

    #[test]
    fn the_map_depends_on_identities_not_their_order() {
        let a = map(&["chat-0.chat:8080", "chat-1.chat:8080", "chat-2.chat:8080"]);
        let b = map(&["chat-2.chat:8080", "chat-0.chat:8080", "chat-1.chat:8080"]);
        assert_eq!(a, b);
    }

    #[test]
    fn a_replica_leaving_moves_only_its_own_rooms() {
        let before = map(&["chat-0.chat:8080", "chat-1.chat:8080", "chat-2.chat:8080"]);
        let after = map(&["chat-0.chat:8080", "chat-2.chat:8080"]);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != "chat-1.chat:8080" {
                assert_eq!(b, a, "a room of a replica that stayed moved");
            } else {
                moved += 1;
            }
        }
        // Each replica holds a fair share (a third, give or take).
        assert!((500..=830).contains(&moved), "{moved} rooms on chat-1");
    }

    #[test]
    fn a_replica_joining_takes_only_the_rooms_it_wins() {
        let before = map(&["chat-0.chat:8080", "chat-1.chat:8080"]);
        let after = map(&["chat-0.chat:8080", "chat-1.chat:8080", "chat-2.chat:8080"]);
        for (b, a) in before.iter().zip(&after) {
            assert!(a == b || a == "chat-2.chat:8080", "{b} -> {a}");
        }
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Gateways of different versions side by side must agree: a change
        // here moves rooms between replicas on upgrade.
        let ids = ["chat-0.chat:8080", "chat-1.chat:8080"];
        let map: Vec<usize> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|r| winner(r, ids.iter().copied()))
            .collect();
        assert_eq!(map, FIXED_MAP);
    }

    const FIXED_MAP: [usize; 6] = [1, 0, 0, 1, 1, 0];

    #[tokio::test]
    async fn listed_names_that_stop_resolving_leave_the_set() {
        let r = Replicas::start(
            "chat",
            Source::Listed(vec![
                "127.0.0.1:1".into(),
                "vchat-no-such-host.invalid:1".into(),
            ]),
            RemoteOptions::default(),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        assert_eq!(r.ids(), vec!["127.0.0.1:1".to_string()]);
        // Every room goes to the one replica left.
        for room in rooms().iter().take(20) {
            let _ = r.pick(Some(room));
        }
        assert_eq!(r.len(), 1);
    }

    #[tokio::test]
    async fn nothing_resolving_keeps_the_listed_set() {
        let r = Replicas::start(
            "chat",
            Source::Listed(vec!["vchat-a.invalid:1".into(), "vchat-b.invalid:1".into()]),
            RemoteOptions::default(),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        assert_eq!(r.len(), 2);
    }

    #[tokio::test]
    async fn dns_names_give_one_replica_per_address() {
        let r = Replicas::start(
            "chat",
            Source::Dns("localhost:7".into()),
            RemoteOptions::default(),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        let ids = r.ids();
        assert!(!ids.is_empty());
        assert!(ids.iter().all(|i| i.ends_with(":7")), "{ids:?}");
        let none = Replicas::start(
            "chat",
            Source::Dns("vchat-none.invalid:7".into()),
            RemoteOptions::default(),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        assert!(none.is_empty());
        let e = none.pick(Some("room")).ready().await.unwrap_err();
        assert!(e.contains("no replica resolves"), "{e}");
    }
}
