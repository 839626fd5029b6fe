//! Consistency tokens, positions and checkpoints: `Position::from_str`,
//! `Checkpoint::decode` and the event stream's resume tokens on any text.
//!
//! Properties: parse errors never panic; a parsed position displays as the text it came
//! from up to leading zeros (the display is the canonical form) and parses back to
//! itself; a decoded checkpoint encodes to its canonical text (its revision, `;rN`,
//! without leading zeros and left out when 0) and decodes back to itself; a resume token that is accepted belongs to a log of the given partition
//! count, and the token written for it is accepted as the same checkpoint.

#![no_main]

use libfuzzer_sys::fuzz_target;

use ordo_es::{Checkpoint, Position, partition_of};
use ordo_http::fuzzing::{parse_resume_token, resume_token};

/// A checkpoint's text in canonical form: its cursors as [`canonical`] gives them, then
/// its revision without leading zeros, left out when it is 0 (as `encode` writes it).
fn canonical_checkpoint(s: &str) -> String {
    match s.split_once(";r") {
        Some((cursors, revision)) => {
            let revision = revision.trim_start_matches('0');
            if revision.is_empty() {
                canonical(cursors)
            } else {
                format!("{};r{revision}", canonical(cursors))
            }
        }
        None => canonical(s),
    }
}

/// Each dot- or comma-separated decimal without its leading zeros.
fn canonical(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut part = String::new();
    let flush = |part: &mut String, out: &mut String| {
        let trimmed = part.trim_start_matches('0');
        out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
        part.clear();
    };
    for c in s.chars() {
        if c == '.' || c == ',' {
            flush(&mut part, &mut out);
            out.push(c);
        } else {
            part.push(c);
        }
    }
    flush(&mut part, &mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(position) = text.parse::<Position>() {
        let shown = position.to_string();
        assert_eq!(shown, canonical(text));
        assert_eq!(shown.parse::<Position>(), Ok(position));
        // What a reader that reached this position says about it. A checkpoint grows to
        // the partition it is advanced in, so only positions in a small log are used here
        // (the HTTP layer refuses tokens of partitions the store does not have).
        let partitions = position.partition % 64 + 1;
        let local = Position {
            partition: position.partition % partitions,
            ..position
        };
        let mut checkpoint = Checkpoint::origin(partitions);
        let before = checkpoint.clone();
        assert_eq!(
            checkpoint.covers(&position),
            position.cursor == Default::default()
        );
        checkpoint.advance(&local);
        assert!(checkpoint.covers(&local));
        assert_eq!(checkpoint.partitions(), partitions);
        assert!(checkpoint.is_at_or_past(&before));
        assert_eq!(Checkpoint::decode(&checkpoint.encode()), Ok(checkpoint));
    }
    // The HTTP layer reads X-Consistency-Token trimmed.
    if let Ok(position) = text.trim().parse::<Position>() {
        assert_eq!(position.to_string(), canonical(text.trim()));
    }

    if let Ok(checkpoint) = Checkpoint::decode(text) {
        let encoded = checkpoint.encode();
        assert_eq!(encoded, canonical_checkpoint(text));
        assert!(checkpoint.partitions() >= 1);
        assert_eq!(Checkpoint::decode(&encoded), Ok(checkpoint.clone()));
        assert!(checkpoint.is_at_or_past(&checkpoint));
        assert!(checkpoint.is_at_or_past(&Checkpoint::origin(checkpoint.partitions())));
    }

    for partitions in [1, 3, 16] {
        assert!(partition_of(text, partitions) < partitions);
        if let Ok(checkpoint) = parse_resume_token(text, partitions) {
            assert_eq!(checkpoint.partitions(), partitions);
            let (position, _) = text.split_once('/').unwrap_or((text, ""));
            let position: Position = position.parse().expect("an accepted token's position");
            assert!(position.partition < partitions);
            assert!(checkpoint.covers(&position));
            let token = resume_token(&position, &checkpoint);
            assert_eq!(parse_resume_token(&token, partitions), Ok(checkpoint));
        }
    }
});
