//! Leases on projection shards, with fencing tokens, and the assignment that spreads the
//! shards over the live projectors.
//!
//! A projection's work is divided into shards (the event log's partitions). A shard is
//! projected by the one process holding its [`Lease`]: taken when the shard is free or
//! its last lease lapsed, renewed within its time to live, given up when the assignment
//! moves the shard elsewhere. Each new lease of a shard carries a fencing token greater
//! than every token before it, and a read store fencing its writes
//! (`ReadModelWriter::commit_fenced` in ordo-domain) refuses any write whose token is not
//! the shard's current one: a process paused or cut off past its lease never writes over
//! its successor, whatever its clock says.
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
    /// another process holds it. A holder asking again while its lease is live gets it
    /// renewed (same token), so `owner` must name one process start: an id reused by a
    /// restarted process would inherit the token of the one before it.
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

    /// Whether `lease` is still its shard's current lease (same token, not released),
    /// lapsed or not: what a fenced commit checks, which a read store must do inside its
    /// commit's transaction (asking this first and committing after is check-then-act).
    async fn is_current(&self, lease: &Lease) -> Result<bool, LeaseError>;
}

/// The shards `0..shards` spread over `members`: for each member, the shards it should
/// hold. Every member gets `shards / n` or one more. A shard stays with its current
/// holder (`held`: shard and holder, from [`LeaseStore::leases`]) while that holder is a
/// member with room, the extra shards going to the members holding most; the other
/// shards go each to the member that ranks highest for it (a hash of both) among those
/// with room. So a member joining takes its share and moves nothing else, a member
/// leaving frees only its own, and every process computes the same plan from the same
/// inputs.
pub fn assign(shards: u32, members: &[String], held: &[(u32, String)]) -> Vec<(String, Vec<u32>)> {
    let mut members: Vec<&String> = members.iter().collect();
    members.sort();
    members.dedup();
    if members.is_empty() {
        return Vec::new();
    }
    let index_of = |name: &str| members.iter().position(|m| m.as_str() == name);
    let holder_of = |shard: u32| {
        held.iter()
            .find(|(s, _)| *s == shard)
            .and_then(|(_, owner)| index_of(owner))
    };
    let n = members.len();
    let base = shards as usize / n;
    let extra = shards as usize % n;
    // The extra shards go to the members that hold most now (then by name), so that
    // nobody gives up a shard only to make an even count come out another way.
    let holding = |i: usize| (0..shards).filter(|&s| holder_of(s) == Some(i)).count();
    let mut by_holding: Vec<usize> = (0..n).collect();
    by_holding.sort_by_key(|&i| (std::cmp::Reverse(holding(i)), i));
    let mut capacity = vec![base; n];
    for &i in by_holding.iter().take(extra) {
        capacity[i] += 1;
    }
    let mut plan: Vec<(String, Vec<u32>)> =
        members.iter().map(|m| ((*m).clone(), Vec::new())).collect();
    let mut unplaced = Vec::new();
    for shard in 0..shards {
        match holder_of(shard) {
            Some(i) if capacity[i] > 0 => {
                capacity[i] -= 1;
                plan[i].1.push(shard);
            }
            _ => unplaced.push(shard),
        }
    }
    for shard in unplaced {
        let chosen = (0..n)
            .filter(|&i| capacity[i] > 0)
            .max_by_key(|&i| (rank(members[i], shard), std::cmp::Reverse(i)));
        if let Some(i) = chosen {
            capacity[i] -= 1;
            plan[i].1.push(shard);
        }
    }
    for (_, shards) in &mut plan {
        shards.sort_unstable();
    }
    plan
}

/// The shards `member` should hold under [`assign`].
pub fn assigned_to(
    shards: u32,
    members: &[String],
    held: &[(u32, String)],
    member: &str,
) -> Vec<u32> {
    assign(shards, members, held)
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

    /// Runs `write` while `lease` is its shard's current lease, holding the leases so
    /// that no takeover happens meanwhile: a fenced write of a store in this process.
    /// `None` (and `write` not run) when the lease is not current.
    pub fn while_current<R>(&self, lease: &Lease, write: impl FnOnce() -> R) -> Option<R> {
        let state = self.state();
        let key = (lease.projection.clone(), lease.shard);
        let current = state
            .leases
            .get(&key)
            .is_some_and(|c| c.token == lease.token && !c.owner.is_empty());
        current.then(write)
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
            Some(current)
                if current.token == lease.token
                    && current.owner == lease.owner
                    && !current.owner.is_empty() =>
            {
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
            .is_some_and(|current| current.token == lease.token && !current.owner.is_empty()))
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

    /// The holders a plan leaves behind, as [`LeaseStore::leases`] would list them.
    fn holders(plan: &[(String, Vec<u32>)]) -> Vec<(u32, String)> {
        plan.iter()
            .flat_map(|(m, shards)| shards.iter().map(|s| (*s, m.clone())))
            .collect()
    }

    fn moved(before: &[(String, Vec<u32>)], after: &[(String, Vec<u32>)]) -> usize {
        before
            .iter()
            .map(|(m, _)| held(before, m).difference(&held(after, m)).count())
            .sum()
    }

    #[test]
    fn every_shard_goes_to_exactly_one_member_and_the_spread_is_even() {
        for shards in [1, 2, 7, 16, 64] {
            for n in 1..=5 {
                for previous in [Vec::new(), holders(&assign(shards, &members(n + 1), &[]))] {
                    let plan = assign(shards, &members(n), &previous);
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
        }
        assert!(assign(16, &[], &[]).is_empty());
    }

    #[test]
    fn the_plan_is_the_same_whatever_order_the_members_are_listed_in() {
        let mut listed = members(4);
        let plan = assign(16, &listed, &[]);
        listed.reverse();
        listed.push("projector-2".into());
        assert_eq!(assign(16, &listed, &[]), plan);
        assert_eq!(
            assigned_to(16, &listed, &[], "projector-1"),
            held(&plan, "projector-1").into_iter().collect::<Vec<_>>()
        );
        assert!(assigned_to(16, &listed, &[], "stranger").is_empty());
    }

    #[test]
    fn a_member_joining_takes_its_share_and_moves_nothing_else() {
        for (shards, n) in [(16, 3), (64, 3), (64, 8), (7, 2)] {
            let before = assign(shards, &members(n), &[]);
            let after = assign(shards, &members(n + 1), &holders(&before));
            let newcomer = held(&after, &format!("projector-{n}")).len();
            assert_eq!(
                moved(&before, &after),
                newcomer,
                "{shards} over {n} + 1: only the newcomer's share moves"
            );
            assert_eq!(newcomer, shards as usize / (n + 1));
        }
    }

    #[test]
    fn a_member_leaving_frees_only_its_own_shards() {
        for (shards, n) in [(16, 4), (64, 8), (64, 3), (7, 3)] {
            let before = assign(shards, &members(n), &[]);
            let gone = "projector-0";
            let survivors: Vec<String> = members(n).into_iter().filter(|m| m != gone).collect();
            let after = assign(shards, &survivors, &holders(&before));
            for m in &survivors {
                assert!(
                    held(&before, m).is_subset(&held(&after, m)),
                    "{shards} over {n} - 1: {m} lost a shard: {before:?} -> {after:?}"
                );
            }
        }
    }

    #[test]
    fn holders_that_are_not_members_count_for_nothing() {
        let stale = vec![(0, "gone".to_string()), (1, "gone".to_string())];
        assert_eq!(assign(4, &members(2), &stale), assign(4, &members(2), &[]));
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
