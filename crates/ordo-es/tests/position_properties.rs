//! Properties of positions (the consistency tokens clients hand back) and checkpoints.

use proptest::prelude::*;

use ordo_es::{Checkpoint, Cursor, Position};

fn position() -> impl Strategy<Value = Position> {
    (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(p, a, b)| Position::new(p, a, b))
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Cursor::new(a, b))
}

/// A checkpoint holding exactly `cursors` (advanced from the origin).
fn checkpoint_of(cursors: &[Cursor]) -> Checkpoint {
    let mut checkpoint = Checkpoint::origin(cursors.len() as u32);
    for (partition, c) in cursors.iter().enumerate() {
        checkpoint.advance(&Position::new(partition as u32, c.major, c.minor));
    }
    checkpoint
}

proptest! {
    // Failures print their smallest case; nothing is written beside the sources.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_position_displays_and_parses_back(p in position()) {
        let token = p.to_string();
        prop_assert_eq!(token.parse::<Position>(), Ok(p));
        prop_assert!(token.len() <= 64);
    }

    #[test]
    fn leading_zeros_parse_to_the_canonical_position(p in position(), pad in 0usize..4) {
        let zeros = "0".repeat(pad);
        let padded = format!(
            "{zeros}{}.{zeros}{}.{zeros}{}",
            p.partition, p.cursor.major, p.cursor.minor
        );
        prop_assert_eq!(padded.parse::<Position>(), Ok(p));
    }

    #[test]
    fn a_position_with_anything_extra_is_refused(p in position(), extra in "[^0-9]{1,3}") {
        let token = p.to_string();
        for text in [format!("{token}{extra}"), format!("{extra}{token}")] {
            prop_assert!(text.parse::<Position>().is_err(), "{:?} parsed", text);
        }
    }

    #[test]
    fn a_checkpoint_encodes_and_decodes_back(cursors in prop::collection::vec(cursor(), 1..20)) {
        let checkpoint = checkpoint_of(&cursors);
        prop_assert_eq!(checkpoint.cursors(), &cursors[..]);
        let encoded = checkpoint.encode();
        prop_assert_eq!(Checkpoint::decode(&encoded), Ok(checkpoint.clone()));
        prop_assert_eq!(encoded.split(',').count(), cursors.len());
    }

    #[test]
    fn advancing_covers_the_position_and_never_goes_back(
        cursors in prop::collection::vec(cursor(), 1..8),
        partition in 0u32..8,
        c in cursor(),
    ) {
        let before = checkpoint_of(&cursors);
        let mut after = before.clone();
        let p = Position::new(partition, c.major, c.minor);
        after.advance(&p);
        prop_assert!(after.covers(&p));
        prop_assert!(after.is_at_or_past(&before));
        prop_assert_eq!(after.cursor(partition), before.cursor(partition).max(c));
        prop_assert_eq!(Checkpoint::decode(&after.encode()), Ok(after));
    }
}
