//! Given / when / then tests for aggregates, with no I/O.
//!
//! ```
//! # use ordo_es::testkit::AggregateTest;
//! # use ordo_es::{Aggregate, DomainEvent, DecodeError};
//! # #[derive(Debug, Default)] struct Counter(u32);
//! # #[derive(Debug, Clone, PartialEq)] struct Incremented;
//! # impl DomainEvent for Incremented {
//! #   fn event_type(&self) -> &'static str { "Incremented" }
//! #   fn schema_version(&self) -> u32 { 1 }
//! #   fn encode(&self) -> ordo_es::Payload { serde_json::json!({}).into() }
//! #   fn decode(_: &str, _: u32, _: &ordo_es::Payload) -> Result<Self, DecodeError> { Ok(Incremented) }
//! # }
//! # #[derive(Debug, thiserror::Error, PartialEq)] #[error("too many")] struct TooMany;
//! # impl Aggregate for Counter {
//! #   const TYPE: &'static str = "Counter";
//! #   type Command = (); type Event = Incremented; type Error = TooMany;
//! #   fn handle(&self, _: ()) -> Result<Vec<Incremented>, TooMany> {
//! #     if self.0 >= 2 { Err(TooMany) } else { Ok(vec![Incremented]) } }
//! #   fn apply(&mut self, _: &Incremented) { self.0 += 1 }
//! # }
//! AggregateTest::<Counter>::given(vec![Incremented]).when(()).then_expect_events(vec![Incremented]);
//! AggregateTest::<Counter>::given(vec![Incremented, Incremented]).when(()).then_expect_error(TooMany);
//! ```

use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// The "given" part: the events already in the stream.
#[derive(Debug)]
pub struct AggregateTest<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// A stream holding `events`. Each is checked to survive encode and decode, since a
    /// stored event is read back that way.
    pub fn given(events: Vec<A::Event>) -> Self {
        let mut state = A::default();
        for event in &events {
            state.apply(&roundtrip::<A>(event));
        }
        Self { state }
    }

    /// A stream with no events.
    pub fn given_no_previous_events() -> Self {
        Self::given(Vec::new())
    }

    /// The "when" part.
    pub fn when(self, command: A::Command) -> AggregateResult<A> {
        let result = self.state.handle(command);
        AggregateResult {
            state: self.state,
            result,
        }
    }
}

/// The "then" part.
#[derive(Debug)]
pub struct AggregateResult<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateResult<A>
where
    A::Event: PartialEq,
{
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<A::Event>) -> A {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "the command produced other events");
                let mut state = self.state;
                for event in &events {
                    state.apply(&roundtrip::<A>(event));
                }
                state
            }
            Err(error) => panic!("expected events {expected:?}, got error: {error:?}"),
        }
    }
}

impl<A: Aggregate> AggregateResult<A>
where
    A::Error: PartialEq,
{
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events: {events:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    }
}

impl<A: Aggregate> AggregateResult<A> {
    /// For assertions the two above cannot express.
    pub fn inspect_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}

#[track_caller]
fn roundtrip<A: Aggregate>(event: &A::Event) -> A::Event
where
    A::Event: Debug,
{
    use crate::event::DomainEvent;
    let data = event.encode();
    match A::Event::decode(event.event_type(), event.schema_version(), &data) {
        Ok(decoded) => decoded,
        Err(e) => panic!("{event:?} does not survive encode/decode: {e}"),
    }
}
