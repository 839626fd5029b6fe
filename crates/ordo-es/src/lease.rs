//! Leases on projection shards, with fencing tokens, and the assignment that spreads the
//! shards over the live projectors.
//!
//! A projection's work is divided into shards (the event log's partitions). A shard is
//! projected by the one process holding its [`Lease`]: taken when the shard is free or
//! its last lease lapsed, renewed within its time to live, given up when the assignment
//! moves the shard elsewhere. Each new lease of a shard carries a fencing token greater
//! than every token before it, and a read store that fences its commits refuses any
//! commit whose token is not the shard's current one, so a process that was paused or
//! cut off past its lease can never write over its successor, whatever its clock says.
//!
//! Time is the store's (the database's clock), never the processes': a lease lapses when
//! the store says so, so clock skew between projectors cannot make two of them owners.
//!
//! [`assign`] is the plan every projector computes from the same inputs (the shards and
//! the live projectors) and follows: it takes the shards assigned to it when they are
//! free and gives up the others, so the shards spread evenly and move as little as
//! possible when a projector joins or leaves.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::store::BoxError;

/// One shard's lease, as its holder last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub projection: String,
    pub shard: u32,
    /// The holding process (its projector id).
    pub owner: String,
    /// Greater than the token of every earlier lease of this shard.
    pub token: u64,
    /// When the lease lapses unless renewed (the store's clock).
    pub expires_at: OffsetDateTime,
}

/// Lease-store failures.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease store unavailable")]
    Unavailable(#[source] BoxError),
    #[error("lease store failure")]
    Other(#[source] BoxError),
}

/// Where the leases of a projection's shards live (beside the read models they guard).
/// Every operation is one atomic step in the store.
#[async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug + 'static {
    /// Records that `owner` is alive for `ttl` more and returns every projector of
    /// `projection` alive now (sorted): the members the shards are spread over.
    async fn heartbeat(
        &self,
        projection: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, LeaseError>;

    /// Takes `shard` for `owner` for `ttl` when it has no lease, its lease lapsed or was
    /// released; the new lease's token is greater than every earlier one. `None` when
    /// another process holds it. (A holder asking again gets its lease renewed.)
    async fn acquire(
        &self,
        projection: &str,
        shard: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError>;

    /// Extends `lease` by `ttl` from now while it is still the shard's current lease
    /// (same token), even when it lapsed and nobody took it since; `None` when it was
    /// taken over or released: the holder has lost the shard and must stop writing.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LeaseError>;

    /// Gives `lease` up so that another process may take the shard at once: from here
    /// on it is not current (a fenced commit with it fails, renewing it gives `None`).
    /// Does nothing when it is no longer the current lease.
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError>;

    /// The current lease of every shard of `projection` that ever had one, by shard;
    /// lapsed ones included (their `expires_at` says so), released ones with an empty
    /// `owner`.
    async fn leases(&self, projection: &str) -> Result<Vec<Lease>, LeaseError>;

    /// Whether `lease` is still its shard's current lease (same token), lapsed or not:
    /// what a fenced commit checks, in the read store's transaction.
    async fn is_current(&self, lease: &Lease) -> Result<bool, LeaseError>;
}

/// The shards `0..shards` spread over `members`: for each member, the shards it should
/// hold. Every member gets `shards / n` or one more; each shard goes to the member that
/// ranks highest for it (a hash of both) among those with room, so a member joining or
/// leaving moves few shards. Every process computes the same plan from the same inputs.
pub fn assign(shards: u32, members: &[String]) -> Vec<(String, Vec<u32>)> {
    let mut members: Vec<&String> = members.iter().collect();
    members.sort();
    members.dedup();
    if members.is_empty() {
        return Vec::new();
    }
    let n = members.len() as u32;
    // The first `shards % n` members by rank of their own id take one more.
    let base = shards / n;
    let extra = shards % n;
    let mut capacity: Vec<u32> = (0..n).map(|i| base + u32::from(i < extra)).collect();
    let mut plan: Vec<(String, Vec<u32>)> =
        members.iter().map(|m| ((*m).clone(), Vec::new())).collect();
    for shard in 0..shards {
        let mut ranked: Vec<usize> = (0..members.len()).collect();
        ranked.sort_by_key(|&i| std::cmp::Reverse((rank(members[i], shard), i)));
        if let Some(&chosen) = ranked.iter().find(|&&i| capacity[i] > 0) {
            capacity[chosen] -= 1;
            plan[chosen].1.push(shard);
        }
    }
    plan
}

/// The shards `member` should hold under [`assign`].
pub fn assigned_to(shards: u32, members: &[String], member: &str) -> Vec<u32> {
    assign(shards, members)
        .into_iter()
        .find(|(m, _)| m == member)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// A stable 64-bit FNV-1a hash of the member and the shard: the same in every process
/// and every build, which the plan needs (std's hasher promises neither).
fn rank(member: &str, shard: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain([0xff]).chain(shard.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Leases kept in memory, for one process's tests (the store's clock is this process's).
#[derive(Debug, Default)]
pub struct InMemoryLeases {
    state: std::sync::Mutex<Leases>,
}

#[derive(Debug, Default)]
struct Leases {
    /// By (projection, shard).
    leases: std::collections::BTreeMap<(String, u32), Lease>,
    /// By (projection, owner): when the member lapses.
    members: std::collections::BTreeMap<(String, String), OffsetDateTime>,
}

impl InMemoryLeases {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn after(ttl: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + ttl
}

#[async_trait]
impl LeaseStore for InMemoryLeases {
    async fn heartbeat(
        &self,
        projection: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, LeaseError> {
        let mut state = self.state();
        let now = OffsetDateTime::now_utc();
        state
            .members
            .insert((projection.to_owned(), owner.to_owned()), after(ttl));
        state.members.retain(|_, until| *until > now);
        Ok(state
            .members
            .keys()
            .filter(|(p, _)| p == projection)
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn acquire(
        &self,
        projection: &str,
        shard: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let mut state = self.state();
        let now = OffsetDateTime::now_utc();
        let key = (projection.to_owned(), shard);
        let lease = match state.leases.get(&key) {
            Some(held) if held.owner == owner && held.expires_at > now => Lease {
                expires_at: after(ttl),
                ..held.clone()
            },
            Some(held) if held.expires_at > now => return Ok(None),
            previous => Lease {
                projection: projection.to_owned(),
                shard,
                owner: owner.to_owned(),
                token: previous.map_or(1, |p| p.token + 1),
                expires_at: after(ttl),
            },
        };
        state.leases.insert(key, lease.clone());
        Ok(Some(lease))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LeaseError> {
        let mut state = self.state();
        let key = (lease.projection.clone(), lease.shard);
        match state.leases.get_mut(&key) {
            Some(current) if current.token == lease.token && current.owner == lease.owner => {
                current.expires_at = after(ttl);
                Ok(Some(current.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut state = self.state();
        let key = (lease.projection.clone(), lease.shard);
        if let Some(current) = state.leases.get_mut(&key)
            && current.token == lease.token
        {
            // Not current any more (what a fenced commit checks), and free to take.
            current.token += 1;
            current.owner.clear();
            current.expires_at = OffsetDateTime::UNIX_EPOCH;
        }
        Ok(())
    }

    async fn leases(&self, projection: &str) -> Result<Vec<Lease>, LeaseError> {
        Ok(self
            .state()
            .leases
            .values()
            .filter(|l| l.projection == projection)
            .cloned()
            .collect())
    }

    async fn is_current(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let key = (lease.projection.clone(), lease.shard);
        Ok(self
            .state()
            .leases
            .get(&key)
            .is_some_and(|current| current.token == lease.token))
    }
}

#[cfg(all(test, feature = "conformance"))]
mod conformance {
    crate::lease_store_conformance!(async { super::InMemoryLeases::new() });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("projector-{i}")).collect()
    }

    fn held(plan: &[(String, Vec<u32>)], member: &str) -> BTreeSet<u32> {
        plan.iter()
            .find(|(m, _)| m == member)
            .map(|(_, s)| s.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_shard_goes_to_exactly_one_member_and_the_spread_is_even() {
        for shards in [1, 2, 7, 16, 64] {
            for n in 1..=5 {
                let plan = assign(shards, &members(n));
                let mut all: Vec<u32> = plan.iter().flat_map(|(_, s)| s.clone()).collect();
                all.sort_unstable();
                assert_eq!(all, (0..shards).collect::<Vec<_>>(), "{shards} over {n}");
                let sizes: Vec<usize> = plan.iter().map(|(_, s)| s.len()).collect();
                let (min, max) = (sizes.iter().min(), sizes.iter().max());
                assert!(
                    max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                    "{shards} over {n}: {sizes:?}"
                );
            }
        }
        assert!(assign(16, &[]).is_empty());
    }

    #[test]
    fn the_plan_is_the_same_whatever_order_the_members_are_listed_in() {
        let mut listed = members(4);
        let plan = assign(16, &listed);
        listed.reverse();
        listed.push("projector-2".into());
        assert_eq!(assign(16, &listed), plan);
        assert_eq!(
            assigned_to(16, &listed, "projector-1"),
            held(&plan, "projector-1").into_iter().collect::<Vec<_>>()
        );
        assert!(assigned_to(16, &listed, "stranger").is_empty());
    }

    #[test]
    fn a_member_joining_or_leaving_moves_few_shards() {
        let before = assign(16, &members(3));
        let after = assign(16, &members(4));
        let moved: usize = members(3)
            .iter()
            .map(|m| held(&before, m).difference(&held(&after, m)).count())
            .sum();
        // The newcomer takes its four; a perfectly sticky plan would move exactly four.
        assert!(moved <= 8, "{moved} shards moved: {before:?} -> {after:?}");
        // Leaving: the survivors keep what they held, up to their new share.
        let gone = assign(16, &members(4)[1..]);
        for m in &members(4)[1..] {
            let kept = held(&after, m).intersection(&held(&gone, m)).count();
            assert!(
                kept + 2 >= held(&after, m).len(),
                "{m}: {after:?} -> {gone:?}"
            );
        }
    }

    #[test]
    fn ranks_are_stable_across_builds() {
        // Fixed values: a change of the hash would move every deployment's shards.
        assert_eq!(rank("a", 0), rank("a", 0));
        assert_ne!(rank("a", 0), rank("a", 1));
        assert_ne!(rank("ab", 0), rank("a", 0));
        assert_eq!(rank("projector-0", 3), 0x8a3f_6a96_68bb_bae6_u64);
    }
}
