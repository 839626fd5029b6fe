//! Event decoding and upcasting: `OrderEvent::decode` on any stored payload, of every
//! event type (and an unknown one) and schema versions 0 to 3.
//!
//! Input: the first byte picks the event type, the second the schema version, the rest
//! is the payload text. Properties: decoding never panics; what decodes has the type it
//! was stored as, and encodes to a current-version payload that decodes to the same
//! event; an OrderCreated read through the v1 upcaster carries exact totals (each line
//! is quantity × unit price, the total their sum); an unknown type never decodes.

#![no_main]

use libfuzzer_sys::fuzz_target;

use ordo_domain::{Money, OrderEvent};
use ordo_es::{DomainEvent, Payload};

const TYPES: [&str; 5] = [
    OrderEvent::CREATED,
    OrderEvent::STATUS_CHANGED,
    OrderEvent::CANCELLED,
    OrderEvent::DELETED,
    "OrderShipped",
];

fuzz_target!(|data: &[u8]| {
    let [kind, version, rest @ ..] = data else {
        return;
    };
    let event_type = TYPES[usize::from(*kind) % TYPES.len()];
    let schema_version = u32::from(*version % 4);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(payload) = Payload::from_json(text.to_string()) else {
        return;
    };
    let Ok(event) = OrderEvent::decode(event_type, schema_version, &payload) else {
        return;
    };
    assert!(
        TYPES[..4].contains(&event_type),
        "unknown type {event_type} decoded"
    );
    assert_eq!(event.event_type(), event_type);
    assert_eq!(
        event.schema_version(),
        OrderEvent::current_version(event_type)
    );

    let encoded = event.encode();
    let again = OrderEvent::decode(event_type, event.schema_version(), &encoded)
        .unwrap_or_else(|e| panic!("re-encoded {event_type} does not decode: {e}\n{encoded}"));
    assert_eq!(again, event);

    if let OrderEvent::Created(created) = &event
        && schema_version == 1
    {
        let mut total = Money::ZERO;
        for item in &created.items {
            assert_eq!(
                item.line_total.cents(),
                item.unit_price.cents() * i128::from(item.quantity),
                "upcast line total"
            );
            total = total + item.line_total;
        }
        assert_eq!(created.total_amount, total, "upcast total");
    }
});
