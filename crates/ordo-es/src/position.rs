//! Positions in the global log, and checkpoints of readers of it.
//!
//! A store's global log is split into a fixed number of partitions (one for the SQL
//! stores; several for Redis, so that each partition can live on its own shard). Within a
//! partition, events are totally ordered by a [`Cursor`]; across partitions there is no
//! order, and none is needed: every stream lives in exactly one partition, so per-stream
//! order holds.
//!
//! The cursor is a pair `(major, minor)` so that stores whose commit order is not a single
//! counter can still express it (PostgreSQL orders by transaction id, then sequence).

use std::fmt;
use std::str::FromStr;

/// A point in one partition's order: compared as the pair `(major, minor)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub major: u64,
    pub minor: u64,
}

impl Cursor {
    pub const ORIGIN: Cursor = Cursor { major: 0, minor: 0 };

    /// Past every event: a reader of some partitions only (a projection shard) pins the
    /// others here, and every store then reads, waits on and counts nothing in them (see
    /// [`Checkpoint::only`]). Never a position an append hands out.
    pub const END: Cursor = Cursor {
        major: u64::MAX,
        minor: u64::MAX,
    };

    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }
}

/// Where one event sits in the global log. Opaque to clients: they see it only as the
/// string its [`Display`](fmt::Display) gives, and hand that string back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub partition: u32,
    pub cursor: Cursor,
}

impl Position {
    pub const fn new(partition: u32, major: u64, minor: u64) -> Self {
        Self {
            partition,
            cursor: Cursor::new(major, minor),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.partition, self.cursor.major, self.cursor.minor
        )
    }
}

/// A position token that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed position token (expected the opaque string a command returned)")]
pub struct PositionParseError;

impl FromStr for Position {
    type Err = PositionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 64 {
            return Err(PositionParseError);
        }
        let mut parts = s.split('.');
        let mut next = || parts.next().ok_or(PositionParseError);
        let partition = parse_decimal::<u32>(next()?)?;
        let major = parse_decimal::<u64>(next()?)?;
        let minor = parse_decimal::<u64>(next()?)?;
        if parts.next().is_some() {
            return Err(PositionParseError);
        }
        Ok(Position::new(partition, major, minor))
    }
}

/// Strict decimal: no sign, no leading `+`, no white space, no empty string.
fn parse_decimal<T: FromStr>(s: &str) -> Result<T, PositionParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PositionParseError);
    }
    s.parse().map_err(|_| PositionParseError)
}

/// How far a reader of the global log has got: the cursor of the last event it processed
/// in each partition. A new reader starts at [`Checkpoint::origin`].
///
/// Its revision counts writes that changed the read model without moving the cursors (a
/// repair of some orders): a reader's write folded from the state before such a write
/// then fails its compare-and-set, as it would after another reader's batch, and is
/// folded again. Only equality sees it; coverage and order are the cursors'.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    cursors: Vec<Cursor>,
    revision: u64,
}

impl Checkpoint {
    /// Nothing read yet, in a log of `partitions` partitions.
    pub fn origin(partitions: u32) -> Self {
        Self {
            cursors: vec![Cursor::ORIGIN; partitions.max(1) as usize],
            revision: 0,
        }
    }

    /// The same cursors, at the next revision (see the type's docs).
    pub fn revised(&self) -> Self {
        Self {
            cursors: self.cursors.clone(),
            revision: self.revision.wrapping_add(1),
        }
    }

    /// How many writes moved this checkpoint without moving its cursors.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn partitions(&self) -> u32 {
        self.cursors.len() as u32
    }

    /// A checkpoint of a reader of `partition` alone, in a log of `partitions`: `cursor`
    /// there and [`Cursor::END`] in every other partition, so that `read_all`,
    /// `wait_for_events` and `count_after` look at that partition only.
    pub fn only(partition: u32, cursor: Cursor, partitions: u32) -> Self {
        let mut cursors = vec![Cursor::END; partitions.max(partition + 1) as usize];
        cursors[partition as usize] = cursor;
        Self {
            cursors,
            revision: 0,
        }
    }

    /// This checkpoint with every partition but `partition` pinned at [`Cursor::END`].
    pub fn pinned_to(&self, partition: u32) -> Self {
        Self::only(partition, self.cursor(partition), self.partitions())
    }

    /// Whether partition `partition` is pinned at [`Cursor::END`] (not read).
    pub fn is_pinned(&self, partition: u32) -> bool {
        self.cursor(partition) == Cursor::END
    }

    /// The cursor reached in one partition (origin for a partition this checkpoint does
    /// not know).
    pub fn cursor(&self, partition: u32) -> Cursor {
        self.cursors
            .get(partition as usize)
            .copied()
            .unwrap_or(Cursor::ORIGIN)
    }

    pub fn cursors(&self) -> &[Cursor] {
        &self.cursors
    }

    /// True when the event at `position` has been processed by the reader at this
    /// checkpoint.
    pub fn covers(&self, position: &Position) -> bool {
        self.cursor(position.partition) >= position.cursor
    }

    /// Moves past `position`. Never moves backwards.
    pub fn advance(&mut self, position: &Position) {
        let index = position.partition as usize;
        if index >= self.cursors.len() {
            self.cursors.resize(index + 1, Cursor::ORIGIN);
        }
        if self.cursors[index] < position.cursor {
            self.cursors[index] = position.cursor;
        }
    }

    /// Is every partition of `self` at or past `other`?
    pub fn is_at_or_past(&self, other: &Checkpoint) -> bool {
        other
            .cursors
            .iter()
            .enumerate()
            .all(|(p, c)| self.cursor(p as u32) >= *c)
    }

    /// A compact text form for storing beside a read model: `major.minor` per partition,
    /// comma-separated, then `;r` and the revision when it is not 0.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.cursors.len() * 8);
        for (i, c) in self.cursors.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&c.major.to_string());
            out.push('.');
            out.push_str(&c.minor.to_string());
        }
        if self.revision > 0 {
            out.push_str(";r");
            out.push_str(&self.revision.to_string());
        }
        out
    }

    /// Reads back what [`Checkpoint::encode`] wrote.
    pub fn decode(s: &str) -> Result<Self, PositionParseError> {
        let (s, revision) = match s.split_once(";r") {
            Some((cursors, revision)) => (cursors, parse_decimal(revision)?),
            None => (s, 0),
        };
        let mut cursors = Vec::new();
        for part in s.split(',') {
            let (major, minor) = part.split_once('.').ok_or(PositionParseError)?;
            cursors.push(Cursor::new(parse_decimal(major)?, parse_decimal(minor)?));
        }
        if cursors.is_empty() {
            return Err(PositionParseError);
        }
        Ok(Self { cursors, revision })
    }
}

/// The partition a stream belongs to: FNV-1a of its id, modulo the partition count.
/// Stable across processes, versions and platforms, because it decides where events live.
pub fn partition_of(stream_id: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_token_round_trips() {
        let p = Position::new(3, 1234, 7);
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "a.b.c",
            "-1.2.3",
            "+1.2.3",
            " 1.2.3",
            "1..3",
            "99999999999999999999.1.1",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn a_checkpoint_covers_positions_at_or_before_it_in_the_same_partition() {
        let mut cp = Checkpoint::origin(2);
        cp.advance(&Position::new(1, 5, 0));
        assert!(cp.covers(&Position::new(1, 5, 0)));
        assert!(cp.covers(&Position::new(1, 4, 9)));
        assert!(!cp.covers(&Position::new(1, 5, 1)));
        assert!(!cp.covers(&Position::new(0, 1, 0)));
    }

    #[test]
    fn a_checkpoint_never_moves_backwards() {
        let mut cp = Checkpoint::origin(1);
        cp.advance(&Position::new(0, 9, 0));
        cp.advance(&Position::new(0, 3, 0));
        assert_eq!(cp.cursor(0), Cursor::new(9, 0));
    }

    #[test]
    fn a_checkpoint_encoding_round_trips() {
        let mut cp = Checkpoint::origin(3);
        cp.advance(&Position::new(2, 77, 1));
        assert_eq!(Checkpoint::decode(&cp.encode()), Ok(cp.clone()));
        assert!(Checkpoint::decode("").is_err());
        assert!(Checkpoint::decode("1").is_err());
        // A revision is kept, and a checkpoint stored before revisions existed reads as 0.
        let revised = cp.revised();
        assert_eq!(revised.encode(), "0.0,0.0,77.1;r1");
        assert_eq!(Checkpoint::decode(&revised.encode()), Ok(revised.clone()));
        assert_ne!(revised, cp, "a repair must fail writes folded before it");
        assert!(revised.is_at_or_past(&cp) && cp.is_at_or_past(&revised));
        assert_eq!(
            Checkpoint::decode("0.0,0.0,77.1").map(|c| c.revision()),
            Ok(0)
        );
        for bad in ["0.0;r", "0.0;rx", "0.0;r-1", ";r1"] {
            assert!(Checkpoint::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitioning_is_stable_and_in_range() {
        // Fixed expectations: changing the hash would move existing streams.
        assert_eq!(partition_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as u32);
        for id in ["a", "order-1", "ü"] {
            assert!(partition_of(id, 16) < 16);
            assert_eq!(partition_of(id, 16), partition_of(id, 16));
        }
        assert_eq!(partition_of("anything", 1), 0);
    }
}
