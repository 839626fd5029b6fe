//! How ordo's events evolved, as upcasters.
//!
//! ## OrderCreated
//!
//! - **v1** (the original design): `shippingAddress` was one free-text string (or null),
//!   `currency` could be missing (meaning USD), and items carried only `quantity` and
//!   `unitPrice`: readers computed totals.
//! - **v2**: `shippingAddress` is structured (`line1`, `line2`, `city`, `region`,
//!   `postalCode`, `country`), `currency` is always present, and the decision records
//!   each `lineTotal` and the `totalAmount`, so no reader recomputes them.
//! - **v3** (current): the personal fields (`customerName`, `customerEmail`,
//!   `shippingAddress`) are stored sealed under the customer's key, in `personalData`
//!   (`privacy::sealed`), and read back opened; a customer whose key is gone reads as
//!   `null` fields with `personalDataErased: true`. The opened v3 is v2 with those fields
//!   allowed to be null, so v2 → v3 changes nothing; stored v1 and v2 events are sealed
//!   by the one-time migration (`ordo_app::privacy::seal_stored_events`).
//!
//! v1 → v2 computes the totals exactly (integer cents) and splits the address text
//! `"line1[, line2], city, postalCode, country"` when its last part is a two-letter
//! country code; otherwise the whole text becomes `line1` and the parts it cannot tell
//! are left empty, which the read model shows as they are (a fact is never invented).

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use ordo_es::UpcasterChain;

use crate::event::OrderEvent;
use crate::money::Money;

/// The chain of every order event's upcasters.
pub fn chain() -> &'static UpcasterChain {
    static CHAIN: OnceLock<UpcasterChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        UpcasterChain::new()
            .register(OrderEvent::CREATED, 1, order_created_v1_to_v2)
            .register(OrderEvent::CREATED, 2, Ok)
    })
}

fn amount(value: &Value, field: &str) -> Result<Money, String> {
    match value {
        Value::Number(n) => {
            Money::parse_json_number(&n.to_string()).map_err(|e| format!("{field} {e}"))
        }
        _ => Err(format!("{field} is not a number")),
    }
}

fn order_created_v1_to_v2(mut data: Value) -> Result<Value, String> {
    let object = data
        .as_object_mut()
        .ok_or("OrderCreated v1 is not an object")?;
    if !object.contains_key("currency") || object["currency"].is_null() {
        object.insert("currency".into(), json!("USD"));
    }
    let mut total = Money::ZERO;
    let items = object
        .get_mut("items")
        .and_then(Value::as_array_mut)
        .ok_or("OrderCreated v1 has no items")?;
    for (i, item) in items.iter_mut().enumerate() {
        let item = item
            .as_object_mut()
            .ok_or_else(|| format!("items[{i}] is not an object"))?;
        let quantity = item
            .get("quantity")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("items[{i}].quantity is not a whole number"))?;
        let unit_price = amount(item.get("unitPrice").unwrap_or(&Value::Null), "unitPrice")?;
        let line_total = unit_price
            .checked_mul(i128::from(quantity))
            .ok_or_else(|| format!("items[{i}] total overflows"))?;
        total = total.checked_add(line_total).ok_or("total overflows")?;
        item.insert(
            "lineTotal".into(),
            serde_json::to_value(line_total).map_err(|e| e.to_string())?,
        );
    }
    object.insert(
        "totalAmount".into(),
        serde_json::to_value(total).map_err(|e| e.to_string())?,
    );
    let address = match object.get("shippingAddress") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(text)) => structured_address(text),
        Some(other) => return Err(format!("shippingAddress v1 must be text, found {other}")),
    };
    object.insert("shippingAddress".into(), address);
    Ok(data)
}

fn structured_address(text: &str) -> Value {
    let parts: Vec<&str> = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let is_country = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase());
    let mut address = Map::new();
    if parts.len() >= 4 && is_country(parts[parts.len() - 1]) {
        let n = parts.len();
        address.insert("line1".into(), json!(parts[0]));
        let line2 = parts[1..n - 3].join(", ");
        address.insert(
            "line2".into(),
            if line2.is_empty() {
                Value::Null
            } else {
                json!(line2)
            },
        );
        address.insert("city".into(), json!(parts[n - 3]));
        address.insert("region".into(), Value::Null);
        address.insert("postalCode".into(), json!(parts[n - 2]));
        address.insert("country".into(), json!(parts[n - 1]));
    } else {
        address.insert("line1".into(), json!(text.trim()));
        address.insert("line2".into(), Value::Null);
        address.insert("city".into(), json!(""));
        address.insert("region".into(), Value::Null);
        address.insert("postalCode".into(), json!(""));
        address.insert("country".into(), json!(""));
    }
    Value::Object(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_order_gains_exact_totals_and_a_structured_address() {
        let v1: Value = serde_json::from_str(
            r#"{"customerName": "Ada", "customerEmail": "ada@example.com",
                "items": [{"productId": "p", "productName": "Gear", "quantity": 3, "unitPrice": 0.1}],
                "shippingAddress": "12 Analytical Row, Flat 2, London, NW1 6XE, GB"}"#,
        )
        .expect("json");
        let v2 = chain()
            .upcast(OrderEvent::CREATED, 1, 2, &v1)
            .expect("upcast");
        assert_eq!(v2["currency"], "USD");
        assert_eq!(v2["items"][0]["lineTotal"].to_string(), "0.30");
        assert_eq!(v2["totalAmount"].to_string(), "0.30");
        assert_eq!(
            v2["shippingAddress"],
            json!({"line1": "12 Analytical Row", "line2": "Flat 2", "city": "London", "region": null, "postalCode": "NW1 6XE", "country": "GB"})
        );
    }

    #[test]
    fn an_address_that_cannot_be_split_is_kept_whole() {
        let address = structured_address("somewhere near the river");
        assert_eq!(address["line1"], "somewhere near the river");
        assert_eq!(address["country"], "");
    }
}
