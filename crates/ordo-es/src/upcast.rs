//! Events that evolve: a chain of upcasters turns stored payloads of old schema versions
//! into the current shape when they are read. Stored events are never rewritten.

use std::collections::HashMap;

use serde_json::Value;

use crate::event::DecodeError;

/// Turns a payload of one schema version into the next version's shape.
pub type UpcastFn = fn(Value) -> Result<Value, String>;

/// The upcasters of one aggregate's events, keyed by (event type, from version).
#[derive(Debug, Default, Clone)]
pub struct UpcasterChain {
    steps: HashMap<(&'static str, u32), UpcastFn>,
}

impl UpcasterChain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step from `from_version` to `from_version + 1` of `event_type`.
    pub fn register(mut self, event_type: &'static str, from_version: u32, step: UpcastFn) -> Self {
        self.steps.insert((event_type, from_version), step);
        self
    }

    /// Brings `data` from `version` up to `current`, one step at a time. A payload already
    /// at `current` is returned as it is; one from a newer version than `current` (written
    /// by newer code) is an error, never a guess.
    pub fn upcast(
        &self,
        event_type: &str,
        version: u32,
        current: u32,
        data: &Value,
    ) -> Result<Value, DecodeError> {
        if version > current || version == 0 {
            return Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_string(),
                schema_version: version,
            });
        }
        let mut data = data.clone();
        for from in version..current {
            let key = self
                .steps
                .keys()
                .find(|(t, v)| *t == event_type && *v == from)
                .copied()
                .ok_or_else(|| DecodeError::UnsupportedVersion {
                    event_type: event_type.to_string(),
                    schema_version: from,
                })?;
            data = (self.steps[&key])(data).map_err(|reason| DecodeError::Upcast {
                event_type: event_type.to_string(),
                from_version: from,
                reason,
            })?;
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn add_b(mut v: Value) -> Result<Value, String> {
        v["b"] = json!(v["a"].as_i64().ok_or("a missing")? * 2);
        Ok(v)
    }

    fn rename_a(mut v: Value) -> Result<Value, String> {
        let a = v
            .as_object_mut()
            .ok_or("not an object")?
            .remove("a")
            .ok_or("a missing")?;
        v["alpha"] = a;
        Ok(v)
    }

    #[test]
    fn steps_are_applied_in_order_up_to_the_current_version() {
        let chain = UpcasterChain::new()
            .register("E", 1, add_b)
            .register("E", 2, rename_a);
        assert_eq!(
            chain.upcast("E", 1, 3, &json!({"a": 2})).expect("upcast"),
            json!({"alpha": 2, "b": 4})
        );
        assert_eq!(
            chain.upcast("E", 2, 3, &json!({"a": 2})).expect("upcast"),
            json!({"alpha": 2})
        );
        assert_eq!(
            chain.upcast("E", 3, 3, &json!({"x": 1})).expect("current"),
            json!({"x": 1})
        );
    }

    #[test]
    fn missing_steps_newer_versions_and_failing_steps_are_errors() {
        let chain = UpcasterChain::new().register("E", 1, add_b);
        assert!(matches!(
            chain.upcast("E", 1, 3, &json!({"a": 1})),
            Err(DecodeError::UnsupportedVersion {
                schema_version: 2,
                ..
            })
        ));
        assert!(matches!(
            chain.upcast("E", 4, 3, &json!({})),
            Err(DecodeError::UnsupportedVersion {
                schema_version: 4,
                ..
            })
        ));
        assert!(matches!(
            chain.upcast("E", 1, 2, &json!({})),
            Err(DecodeError::Upcast {
                from_version: 1,
                ..
            })
        ));
    }
}
