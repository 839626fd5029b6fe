//! Properties of the tokens clients send back: the consistency token as the headers
//! carry it, and the event stream's resume token.

use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use ordo_es::{Checkpoint, Position};
use ordo_http::fuzzing::{TokenError, header_text, parse_resume_token, resume_token};

fn position() -> impl Strategy<Value = Position> {
    (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(p, a, b)| Position::new(p, a, b))
}

proptest! {
    // Failures print their smallest case; nothing is written beside the sources.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_consistency_token_survives_the_header(p in position(), space in "[ \t]{0,2}") {
        // A command answers with the position's text; queries read the header trimmed.
        let token = p.to_string();
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("{space}{token}{space}")).expect("visible ASCII");
        headers.insert("x-consistency-token", value);
        let text = header_text(&headers, "x-consistency-token").expect("text").expect("present");
        prop_assert_eq!(text.trim().parse::<Position>(), Ok(p));
    }

    #[test]
    fn a_resume_token_reads_back_as_its_checkpoint(
        partitions in 1u32..16,
        majors in prop::collection::vec(any::<u64>(), 16),
        last in any::<u32>(),
    ) {
        // The stream writes the token of the event it just sent, with the checkpoint
        // just past it.
        let partition = last % partitions;
        let mut checkpoint = Checkpoint::origin(partitions);
        for p in 0..partitions {
            checkpoint.advance(&Position::new(p, majors[p as usize], 0));
        }
        let position = Position::new(partition, majors[partition as usize], 0);
        let token = resume_token(&position, &checkpoint);
        prop_assert_eq!(parse_resume_token(&token, partitions), Ok(checkpoint));
        // A token from a log with another partition count is not taken for this one.
        let other = partitions + 1;
        prop_assert!(matches!(
            parse_resume_token(&token, other),
            Err(TokenError::Foreign | TokenError::Ambiguous)
        ));
    }
}
