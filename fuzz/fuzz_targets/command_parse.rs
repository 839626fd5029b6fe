//! Command parsing: `CreateOrder::parse`, `parse_status_request` and
//! `parse_cancel_request` on any JSON document.
//!
//! Properties: a parse either succeeds with a command that holds only valid values, or
//! fails naming at least one field; a parsed order written back as a body parses to the
//! same order (parsing is idempotent on its own output).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

use ordo_domain::command::{parse_cancel_request, parse_status_request};
use ordo_domain::money::MAX_UNIT_PRICE;
use ordo_domain::values::ShippingAddress;
use ordo_domain::{CreateOrder, Money, Status};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_create(&body);
    check_status(&body);
    check_cancel(&body);
});

/// Text as `bounded_text` leaves it: trimmed when asked, 1..=max characters, no control
/// characters.
fn assert_text(what: &str, s: &str, max: usize, trimmed: bool) {
    assert!(!s.is_empty(), "{what} is empty");
    assert!(s.chars().count() <= max, "{what} is longer than {max}");
    assert!(
        !s.chars().any(char::is_control),
        "{what} holds a control character"
    );
    if trimmed {
        assert_eq!(s, s.trim(), "{what} is not trimmed");
    }
}

fn money_json(m: Money) -> Value {
    serde_json::from_str(&m.to_string()).expect("a displayed amount is a JSON number")
}

fn address_json(a: &ShippingAddress) -> Value {
    json!({"line1": a.line1, "line2": a.line2, "city": a.city, "region": a.region,
           "postalCode": a.postal_code, "country": a.country})
}

fn check_create(body: &Value) {
    match CreateOrder::parse(body) {
        Ok(order) => {
            assert_text("customerName", &order.customer_name, 200, true);
            let email = order.customer_email.as_str();
            assert_eq!(email, email.to_lowercase(), "the e-mail is not lower-cased");
            assert!(email.contains('@'));
            let currency = order.currency.as_str();
            assert!(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()));
            assert!((1..=100).contains(&order.items.len()));
            for item in &order.items {
                assert_text("productId", &item.product_id, 64, false);
                assert_text("productName", &item.product_name, 200, true);
                assert!((1..=10_000).contains(&item.quantity));
                assert!(item.unit_price >= Money::ZERO && item.unit_price <= MAX_UNIT_PRICE);
                let priced = item.priced();
                assert_eq!(
                    priced.line_total.cents(),
                    item.unit_price.cents() * i128::from(item.quantity)
                );
            }
            if let Some(a) = &order.shipping_address {
                assert_text("line1", &a.line1, 200, true);
                assert_text("city", &a.city, 200, true);
                assert_text("postalCode", &a.postal_code, 20, true);
                for optional in [&a.line2, &a.region].into_iter().flatten() {
                    assert_text("line2/region", optional, 200, true);
                }
                assert!(a.country.len() == 2 && a.country.bytes().all(|b| b.is_ascii_uppercase()));
            }

            // The order written back as a body is read as the same order.
            let items: Vec<Value> = order
                .items
                .iter()
                .map(|i| {
                    json!({"productId": i.product_id, "productName": i.product_name,
                           "quantity": i.quantity, "unitPrice": money_json(i.unit_price)})
                })
                .collect();
            let mut again = Map::new();
            again.insert("customerName".into(), json!(order.customer_name));
            again.insert("customerEmail".into(), json!(email));
            again.insert("currency".into(), json!(currency));
            again.insert("items".into(), Value::Array(items));
            if let Some(a) = &order.shipping_address {
                again.insert("shippingAddress".into(), address_json(a));
            }
            let reparsed = CreateOrder::parse(&Value::Object(again))
                .expect("a parsed order written back must parse");
            assert_eq!(reparsed, order);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a rejected body names no problem");
            for e in &errors.0 {
                assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            }
        }
    }
}

fn check_status(body: &Value) {
    match parse_status_request(body) {
        Ok(status) => {
            assert_eq!(body, &json!({"status": status.as_str()}));
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        Err(errors) => assert!(!errors.0.is_empty()),
    }
}

fn check_cancel(body: &Value) {
    match parse_cancel_request(Some(body)) {
        Ok(request) => {
            let object = body
                .as_object()
                .expect("an accepted cancel body is an object");
            assert!(object.keys().all(|k| k == "reason"));
            match &request.reason {
                Some(reason) => {
                    assert_text("reason", reason, 1_000, true);
                    assert_eq!(
                        object["reason"].as_str().map(str::trim),
                        Some(reason.as_str())
                    );
                }
                None => assert!(match object.get("reason") {
                    None | Some(Value::Null) => true,
                    Some(Value::String(s)) => s.trim().is_empty(),
                    Some(_) => false,
                }),
            }
        }
        Err(errors) => assert!(!errors.0.is_empty()),
    }
}
