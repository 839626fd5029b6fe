//! The check that the log has not gone backwards under the checkpoint (see [`LogWatch`]).

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::event::RecordedEvent;
use crate::position::{Checkpoint, Cursor, Position};
use crate::store::EventStore;

use super::ProjectionError;
use super::worker::Halt;

/// What the runner remembers of the log it has read, to notice the log going backwards.
///
/// A check asks the store for its [head](EventStore::head) (one call; on Redis one
/// XREVRANGE per partition, all in flight at once) and compares it with the checkpoint.
/// Then, in each partition whose checkpoint cursor or head moved since the previous check,
/// it reads the id of the one event at the checkpoint cursor, which must be the event
/// applied there, and of the one at the cursor the previous check confirmed, which must
/// not have changed either ([`EventStore::event_id_at`], point reads). Checks run when the
/// runner (re)loads its checkpoint, every time a read of the log comes back empty (the
/// runner has nothing else to do), and at least every [`RunnerConfig::log_check_every`]
/// while reads keep finding events. A quiet log costs one head call per idle wait; a busy
/// one a head call and at most two point reads per partition every few seconds. Batches
/// pay only for remembering the last event id of each partition they touch.
///
/// What it catches: a log whose head is below the checkpoint (it lost events the read
/// model holds, and nothing was written since, or not enough to get past the checkpoint
/// again), and a log that handed the position at the checkpoint, or at the cursor the
/// previous check confirmed, to another event.
///
/// What it cannot: the ids live in this runner's memory (the read stores keep only the
/// checkpoint text). A runner that starts on a log that went backwards and was then
/// written past the checkpoint again takes the events it finds at its checkpoint for the
/// ones it applied. And a log that, between two checks, lost only events applied since the
/// first and got enough new ones to pass the old checkpoint, looks consistent at the
/// second. A failover usually also breaks the store connection, and any failed read makes
/// the runner reload its checkpoint and check at once.
pub(super) struct LogWatch {
    /// Per partition: the cursor and id of the last event applied or parked there, or of
    /// the event a check found at the checkpoint.
    last: Vec<Option<(Cursor, Uuid)>>,
    /// Per partition: the cursor and event id the previous check confirmed.
    confirmed: Vec<Option<(Cursor, Uuid)>>,
    /// The head the previous check saw.
    head: Option<Checkpoint>,
    every: Duration,
    next_due: Instant,
}

impl LogWatch {
    pub(super) fn new(partitions: u32, every: Duration) -> Self {
        let partitions = partitions.max(1) as usize;
        Self {
            last: vec![None; partitions],
            confirmed: vec![None; partitions],
            head: None,
            every,
            next_due: Instant::now(),
        }
    }

    pub(super) fn is_due(&self) -> bool {
        Instant::now() >= self.next_due
    }

    /// Remembers the last event of each partition in `batch` (applied or parked).
    pub(super) fn applied(&mut self, batch: &[RecordedEvent]) {
        for event in batch {
            let index = event.position.partition as usize;
            if index >= self.last.len() {
                self.last.resize(index + 1, None);
                self.confirmed.resize(index + 1, None);
            }
            self.last[index] = Some((event.position.cursor, event.event_id));
        }
    }

    pub(super) async fn check(
        &mut self,
        store: &dyn EventStore,
        checkpoint: &Checkpoint,
    ) -> Result<(), Halt> {
        let unavailable =
            |e: crate::store::StoreError| Halt::Failed(ProjectionError::Unavailable(Box::new(e)));
        let head = store.head().await.map_err(unavailable)?;
        for partition in 0..checkpoint.partitions() {
            let cursor = checkpoint.cursor(partition);
            if cursor == Cursor::ORIGIN {
                continue; // nothing applied there: nothing to lose
            }
            let index = partition as usize;
            if index >= self.last.len() {
                self.last.resize(index + 1, None);
                self.confirmed.resize(index + 1, None);
            }
            let at = Position { partition, cursor };
            let end = head.cursor(partition);
            if end < cursor {
                return Err(Halt::Regressed(format!(
                    "the event log of partition {partition} went backwards: it ends at {}, \
                     but the read models already hold events up to {at} (events acknowledged \
                     earlier were lost, by a failover or a restore to an older copy); the \
                     projection stopped applying rather than skip the events that get those \
                     positions again; run `ordo replay` to rebuild the read models from the log",
                    Position {
                        partition,
                        cursor: end
                    }
                )));
            }
            let unchanged = self.confirmed[index].is_some_and(|(c, _)| c == cursor)
                && self
                    .head
                    .as_ref()
                    .is_some_and(|h| h.cursor(partition) == end);
            if unchanged {
                continue;
            }
            let applied = self.last[index]
                .filter(|(c, _)| *c == cursor)
                .map(|(_, id)| id);
            let found = store.event_id_at(&at).await.map_err(unavailable)?;
            let found = match (applied, found) {
                (Some(applied), Some(found)) if applied != found => {
                    return Err(reissued(at, applied, Some(found)));
                }
                (Some(applied), None) => return Err(reissued(at, applied, None)),
                (None, None) => {
                    return Err(Halt::Regressed(format!(
                        "the event log of partition {partition} went backwards: it holds no \
                         event at {at}, where the read models' checkpoint is; run `ordo replay` \
                         to rebuild the read models from the log"
                    )));
                }
                (_, Some(found)) => found,
            };
            if let Some((earlier, id)) = self.confirmed[index]
                && earlier != cursor
            {
                let earlier = Position {
                    partition,
                    cursor: earlier,
                };
                let now = store.event_id_at(&earlier).await.map_err(unavailable)?;
                if now != Some(id) {
                    return Err(reissued(earlier, id, now));
                }
            }
            self.last[index] = Some((cursor, found));
            self.confirmed[index] = Some((cursor, found));
        }
        self.head = Some(head);
        self.next_due = Instant::now() + self.every;
        Ok(())
    }
}

/// The log holds another event (or none) at `at`, where the projection applied `applied`.
pub(super) fn reissued(at: Position, applied: Uuid, found: Option<Uuid>) -> Halt {
    let now = match found {
        Some(found) => format!("event {found}"),
        None => "no event".to_string(),
    };
    Halt::Regressed(format!(
        "the event log of partition {} went backwards: position {at} now holds {now}, not \
         event {applied}, which the read models applied there (events acknowledged earlier \
         were lost, by a failover or a restore to an older copy, and their positions handed \
         out again); the projection stopped applying rather than skip events; run `ordo \
         replay` to rebuild the read models from the log",
        at.partition
    ))
}

impl From<ProjectionError> for Halt {
    fn from(error: ProjectionError) -> Self {
        Halt::Failed(error)
    }
}
