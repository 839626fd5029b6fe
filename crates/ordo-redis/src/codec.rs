//! Events to stream entries and back.
//!
//! Both the aggregate stream and the partition log hold the full event as flat string
//! fields, so that either can be read alone. The client sends the fields it knows; the
//! append script adds `version` and `seq`, which only the server can decide.
//!
//! | field            | value                                              |
//! |------------------|----------------------------------------------------|
//! | `event_id`       | UUID, hyphenated                                   |
//! | `stream_id`      | the aggregate's stream id                          |
//! | `aggregate_type` | e.g. `Order`                                       |
//! | `event_type`     | e.g. `OrderCreated`                                |
//! | `schema_version` | decimal                                            |
//! | `occurred_at`    | RFC 3339 in UTC, sub-second digits as needed       |
//! | `data`           | JSON text exactly as serde_json wrote it           |
//! | `metadata`       | JSON text of [`Metadata`]                          |
//! | `version`        | decimal, equal to the entry id's first part in the stream |
//! | `seq`            | decimal, equal to the entry id's first part in the log    |

use ordo_es::{
    Metadata, NewEvent, Payload, Position, RecordedEvent, StoreError, StreamId, partition_of,
};
use redis::Value;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// How many arguments [`encode`] produces per event (name/value pairs).
pub(crate) const ARGS_PER_EVENT: usize = 16;

/// The script arguments of one event: 8 field names and values.
pub(crate) fn encode(stream: &StreamId, event: &NewEvent) -> Result<Vec<Vec<u8>>, StoreError> {
    let occurred_at = event
        .occurred_at
        .to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| StoreError::Invalid(format!("occurred_at cannot be stored: {e}")))?;
    let data = event.data.as_str().as_bytes().to_vec();
    let metadata = serde_json::to_vec(&event.metadata)
        .map_err(|e| StoreError::Invalid(format!("event metadata cannot be serialised: {e}")))?;
    let args: Vec<Vec<u8>> = vec![
        b"event_id".to_vec(),
        event.event_id.hyphenated().to_string().into_bytes(),
        b"stream_id".to_vec(),
        stream.as_str().as_bytes().to_vec(),
        b"aggregate_type".to_vec(),
        event.aggregate_type.as_bytes().to_vec(),
        b"event_type".to_vec(),
        event.event_type.as_bytes().to_vec(),
        b"schema_version".to_vec(),
        event.schema_version.to_string().into_bytes(),
        b"occurred_at".to_vec(),
        occurred_at.into_bytes(),
        b"data".to_vec(),
        data,
        b"metadata".to_vec(),
        metadata,
    ];
    debug_assert_eq!(args.len(), ARGS_PER_EVENT);
    Ok(args)
}

/// Which kind of key an entry was read from: it decides which part of the entry id is
/// checked against which field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// An aggregate stream: the entry id is `<version>-0`.
    Stream,
    /// A partition log: the entry id is `<seq>-0`.
    Log,
}

/// The entries of an XRANGE (or of one stream of an XREAD) reply.
pub(crate) fn decode_entries(
    reply: Value,
    source: Source,
    partitions: u32,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        other => return Err(corrupt(format!("expected stream entries, found {other:?}"))),
    };
    entries
        .into_iter()
        .map(|entry| decode_entry(entry, source, partitions))
        .collect()
}

fn decode_entry(
    entry: Value,
    source: Source,
    partitions: u32,
) -> Result<RecordedEvent, StoreError> {
    let Value::Array(mut parts) = entry else {
        return Err(corrupt("a stream entry is not an [id, fields] pair".into()));
    };
    if parts.len() != 2 {
        return Err(corrupt("a stream entry is not an [id, fields] pair".into()));
    }
    let fields = parts.pop().unwrap_or(Value::Nil);
    let id = text(parts.pop().unwrap_or(Value::Nil), "entry id")?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(corrupt(format!("entry {id} has an odd number of fields")));
            }
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        other => return Err(corrupt(format!("entry {id} has fields {other:?}"))),
    };

    let mut fields = Fields::default();
    for (name, value) in pairs {
        let name = text(name, "field name")?;
        let value = bytes(value, &name)?;
        let slot = match name.as_str() {
            "event_id" => &mut fields.event_id,
            "stream_id" => &mut fields.stream_id,
            "aggregate_type" => &mut fields.aggregate_type,
            "event_type" => &mut fields.event_type,
            "schema_version" => &mut fields.schema_version,
            "occurred_at" => &mut fields.occurred_at,
            "data" => &mut fields.data,
            "metadata" => &mut fields.metadata,
            "version" => &mut fields.version,
            "seq" => &mut fields.seq,
            // Fields added by a later version of this crate are not ours to judge.
            _ => continue,
        };
        *slot = Some(value);
    }
    fields.into_event(&id, source, partitions)
}

#[derive(Default)]
struct Fields {
    event_id: Option<Vec<u8>>,
    stream_id: Option<Vec<u8>>,
    aggregate_type: Option<Vec<u8>>,
    event_type: Option<Vec<u8>>,
    schema_version: Option<Vec<u8>>,
    occurred_at: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    metadata: Option<Vec<u8>>,
    version: Option<Vec<u8>>,
    seq: Option<Vec<u8>>,
}

impl Fields {
    fn into_event(
        self,
        id: &str,
        source: Source,
        partitions: u32,
    ) -> Result<RecordedEvent, StoreError> {
        let need = |value: Option<Vec<u8>>, name: &str| {
            value.ok_or_else(|| corrupt(format!("entry {id} has no {name} field")))
        };
        let utf8 = |value: Option<Vec<u8>>, name: &str| {
            String::from_utf8(need(value, name)?)
                .map_err(|_| corrupt(format!("entry {id}: {name} is not UTF-8")))
        };

        let event_id = utf8(self.event_id, "event_id")?;
        let event_id = Uuid::parse_str(&event_id)
            .map_err(|_| corrupt(format!("entry {id}: event_id {event_id:?} is not a UUID")))?;
        let stream_id = StreamId::new(utf8(self.stream_id, "stream_id")?);
        let aggregate_type = utf8(self.aggregate_type, "aggregate_type")?;
        let event_type = utf8(self.event_type, "event_type")?;
        let schema_version = number::<u32>(
            &utf8(self.schema_version, "schema_version")?,
            id,
            "schema_version",
        )?;
        let occurred_at_text = utf8(self.occurred_at, "occurred_at")?;
        let occurred_at = OffsetDateTime::parse(&occurred_at_text, &Rfc3339).map_err(|_| {
            corrupt(format!(
                "entry {id}: occurred_at {occurred_at_text:?} is not RFC 3339"
            ))
        })?;
        let data = Payload::from_json(utf8(self.data, "data")?)
            .map_err(|e| corrupt(format!("entry {id}: data is not JSON: {e}")))?;
        let metadata: Metadata = serde_json::from_slice(&need(self.metadata, "metadata")?)
            .map_err(|e| corrupt(format!("entry {id}: metadata is malformed: {e}")))?;
        let version = number::<u64>(&utf8(self.version, "version")?, id, "version")?;
        let seq = number::<u64>(&utf8(self.seq, "seq")?, id, "seq")?;

        // The entry id repeats one of the numbers: a cheap consistency check.
        let id_major = id
            .strip_suffix("-0")
            .and_then(|major| major.parse::<u64>().ok())
            .ok_or_else(|| corrupt(format!("entry id {id} is not <n>-0")))?;
        let expected_major = match source {
            Source::Stream => version,
            Source::Log => seq,
        };
        if id_major != expected_major {
            return Err(corrupt(format!(
                "entry id {id} does not match its {} field ({expected_major})",
                if source == Source::Stream {
                    "version"
                } else {
                    "seq"
                }
            )));
        }

        let partition = partition_of(stream_id.as_str(), partitions);
        Ok(RecordedEvent {
            event_id,
            stream_id,
            aggregate_type,
            version,
            position: Position::new(partition, seq, 0),
            event_type,
            schema_version,
            occurred_at,
            data,
            metadata,
        })
    }
}

fn number<T: std::str::FromStr>(text: &str, id: &str, name: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| corrupt(format!("entry {id}: {name} {text:?} is not a number")))
}

fn bytes(value: Value, what: &str) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(corrupt(format!("{what} is {other:?}, expected a string"))),
    }
}

fn text(value: Value, what: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes(value, what)?).map_err(|_| corrupt(format!("{what} is not UTF-8")))
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: Vec<Vec<u8>>) -> Value {
        Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(fields.into_iter().map(Value::BulkString).collect()),
        ])
    }

    fn sample() -> (StreamId, NewEvent) {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            aggregate_type: "Order".into(),
            event_type: "OrderCreated".into(),
            schema_version: 2,
            occurred_at: OffsetDateTime::now_utc()
                .replace_nanosecond(123_456_000)
                .expect("valid"),
            data: serde_json::from_str(r#"{"price": 19.90, "s": "a\u0000b"}"#).expect("json"),
            metadata: Metadata {
                correlation_id: Some("c".into()),
                ..Metadata::default()
            },
        };
        (StreamId::new("order-1"), event)
    }

    fn with_numbers(mut args: Vec<Vec<u8>>, version: u64, seq: u64) -> Vec<Vec<u8>> {
        args.extend([
            b"version".to_vec(),
            version.to_string().into_bytes(),
            b"seq".to_vec(),
            seq.to_string().into_bytes(),
        ]);
        args
    }

    #[test]
    fn an_encoded_event_decodes_to_the_same_event() {
        let (stream, event) = sample();
        let args = with_numbers(encode(&stream, &event).expect("encode"), 3, 41);
        let decoded = decode_entries(Value::Array(vec![entry("3-0", args)]), Source::Stream, 16)
            .expect("decode")
            .remove(0);
        assert_eq!(decoded.event_id, event.event_id);
        assert_eq!(decoded.stream_id, stream);
        assert_eq!(decoded.version, 3);
        assert_eq!(
            decoded.position,
            Position::new(partition_of("order-1", 16), 41, 0)
        );
        assert_eq!(decoded.occurred_at, event.occurred_at);
        assert_eq!(decoded.data, event.data);
        assert_eq!(
            decoded.data.to_value().expect("JSON")["price"].to_string(),
            "19.90"
        );
        assert_eq!(decoded.metadata, event.metadata);
        assert_eq!(decoded.schema_version, 2);
    }

    #[test]
    fn an_entry_whose_id_disagrees_with_its_fields_is_corrupt() {
        let (stream, event) = sample();
        let args = with_numbers(encode(&stream, &event).expect("encode"), 3, 41);
        let err = decode_entries(Value::Array(vec![entry("40-0", args)]), Source::Log, 16)
            .expect_err("seq 41 in entry 40-0");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn an_entry_missing_a_field_is_corrupt() {
        let args = vec![b"event_id".to_vec(), b"x".to_vec()];
        let err = decode_entries(Value::Array(vec![entry("1-0", args)]), Source::Stream, 16)
            .expect_err("missing fields");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn occurred_at_is_stored_in_utc_as_rfc3339() {
        let (stream, mut event) = sample();
        event.occurred_at = event
            .occurred_at
            .to_offset(UtcOffset::from_hms(2, 0, 0).expect("offset"));
        let args = encode(&stream, &event).expect("encode");
        let text = String::from_utf8(args[11].clone()).expect("utf8");
        assert!(text.ends_with('Z'), "{text}");
        assert!(text.contains(".123456"), "{text}");
    }
}
