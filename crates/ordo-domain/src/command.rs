//! Commands, and parsing them from untrusted JSON with field-level errors.
//!
//! Parsing walks a `serde_json::Value` by hand instead of deriving `Deserialize`, so that
//! every problem in a body is reported at once, each under its own field path
//! (`items[0].quantity`), and unknown fields are named too.

use serde_json::{Map, Value};

use crate::money::{MAX_UNIT_PRICE, Money};
use crate::values::{Currency, CustomerEmail, LineItem, ShippingAddress, Status, bounded_text};

/// One validation problem.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in one body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid request body ({} problem(s))", .0.len())]
pub struct ValidationErrors(pub Vec<FieldError>);

/// A valid request to create an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOrder {
    pub customer_name: String,
    pub customer_email: CustomerEmail,
    pub currency: Currency,
    pub items: Vec<NewLineItem>,
    pub shipping_address: Option<ShippingAddress>,
}

/// A requested line, before totals are computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLineItem {
    pub product_id: String,
    pub product_name: String,
    pub quantity: u32,
    pub unit_price: Money,
}

impl NewLineItem {
    pub fn priced(&self) -> LineItem {
        LineItem {
            product_id: self.product_id.clone(),
            product_name: self.product_name.clone(),
            quantity: self.quantity,
            unit_price: self.unit_price,
            // quantity <= 10_000 and price <= 1e8 cents: cannot overflow i128.
            line_total: Money::from_cents(self.unit_price.cents() * i128::from(self.quantity)),
        }
    }
}

/// The body of the cancel endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

/// Collects errors while reading one JSON object.
struct Fields<'a> {
    path: String,
    object: &'a Map<String, Value>,
    known: &'static [&'static str],
    errors: &'a mut Vec<FieldError>,
}

fn join(path: &str, key: &str) -> String {
    // A key that would not read as one path segment (empty, or holding the path's own
    // punctuation) is written as a quoted JSON string in brackets: `[""]`, `items[0]["a.b"]`.
    let plain = !key.is_empty()
        && !key
            .chars()
            .any(|c| matches!(c, '.' | '[' | ']' | '"') || c.is_control());
    if !plain {
        format!("{path}[{}]", Value::String(key.to_string()))
    } else if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Fields<'a> {
    /// Reads `value` as an object with the given known keys; reports anything else.
    fn open(
        path: &str,
        value: &'a Value,
        known: &'static [&'static str],
        errors: &'a mut Vec<FieldError>,
    ) -> Option<Self> {
        let Some(object) = value.as_object() else {
            let name = if path.is_empty() { "body" } else { path };
            errors.push(FieldError::new(name, "must be a JSON object"));
            return None;
        };
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                errors.push(FieldError::new(join(path, key), "unknown field"));
            }
        }
        Some(Self {
            path: path.to_string(),
            object,
            known,
            errors,
        })
    }

    fn path(&self, key: &str) -> String {
        debug_assert!(self.known.contains(&key));
        join(&self.path, key)
    }

    fn fail(&mut self, key: &str, message: impl Into<String>) {
        let field = self.path(key);
        self.errors.push(FieldError::new(field, message));
    }

    /// A present, non-null value, or an error "is required".
    fn required(&mut self, key: &str) -> Option<&'a Value> {
        match self.object.get(key) {
            None | Some(Value::Null) => {
                self.fail(key, "is required");
                None
            }
            Some(v) => Some(v),
        }
    }

    /// A present, non-null value, or None.
    fn optional(&self, key: &str) -> Option<&'a Value> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, key: &str, value: &'a Value) -> Option<&'a str> {
        match value.as_str() {
            Some(s) => Some(s),
            None => {
                self.fail(key, "must be a string");
                None
            }
        }
    }

    fn text(&mut self, key: &str, value: &'a Value, max: usize, trim: bool) -> Option<String> {
        let s = self.string(key, value)?;
        match bounded_text(s, max, trim) {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail(key, e.to_string());
                None
            }
        }
    }

    fn required_text(&mut self, key: &str, max: usize, trim: bool) -> Option<String> {
        let value = self.required(key)?;
        self.text(key, value, max, trim)
    }

    fn optional_text(&mut self, key: &str, max: usize) -> Option<String> {
        let value = self.optional(key)?;
        self.text(key, value, max, true)
    }
}

impl CreateOrder {
    /// Parses a CreateOrder body.
    pub fn parse(body: &Value) -> Result<CreateOrder, ValidationErrors> {
        let mut errors = Vec::new();
        let parsed = Self::parse_into(body, &mut errors);
        match parsed {
            Some(order) if errors.is_empty() => Ok(order),
            _ => Err(ValidationErrors(errors)),
        }
    }

    fn parse_into(body: &Value, errors: &mut Vec<FieldError>) -> Option<CreateOrder> {
        const KNOWN: &[&str] = &[
            "customerName",
            "customerEmail",
            "currency",
            "items",
            "shippingAddress",
        ];
        let mut f = Fields::open("", body, KNOWN, errors)?;
        let customer_name = f.required_text("customerName", 200, true);
        let customer_email = f.required("customerEmail").and_then(|v| {
            let s = f.string("customerEmail", v)?;
            CustomerEmail::parse(s)
                .map_err(|m| f.fail("customerEmail", m))
                .ok()
        });
        let currency = match f.optional("currency") {
            None => Some(Currency::usd()),
            Some(v) => f
                .string("currency", v)
                .and_then(|s| Currency::parse(s).map_err(|m| f.fail("currency", m)).ok()),
        };
        let items = f.required("items").and_then(|v| parse_items(v, f.errors));
        let shipping_address = match f.optional("shippingAddress") {
            None => Some(None),
            Some(v) => parse_address("shippingAddress", v, f.errors).map(Some),
        };
        Some(CreateOrder {
            customer_name: customer_name?,
            customer_email: customer_email?,
            currency: currency?,
            items: items?,
            shipping_address: shipping_address?,
        })
    }
}

fn parse_items(value: &Value, errors: &mut Vec<FieldError>) -> Option<Vec<NewLineItem>> {
    let Some(list) = value.as_array() else {
        errors.push(FieldError::new("items", "must be an array"));
        return None;
    };
    if list.is_empty() || list.len() > 100 {
        errors.push(FieldError::new("items", "must have 1 to 100 entries"));
        return None;
    }
    let mut items = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, item) in list.iter().enumerate() {
        match parse_item(&format!("items[{i}]"), item, errors) {
            Some(parsed) => items.push(parsed),
            None => ok = false,
        }
    }
    ok.then_some(items)
}

fn parse_item(path: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<NewLineItem> {
    const KNOWN: &[&str] = &["productId", "productName", "quantity", "unitPrice"];
    let mut f = Fields::open(path, value, KNOWN, errors)?;
    let product_id = f.required_text("productId", 64, false);
    let product_name = f.required_text("productName", 200, true);
    let quantity = f.required("quantity").and_then(|v| {
        let parsed = match v {
            Value::Number(n) => match n.as_u64() {
                Some(q) if (1..=10_000).contains(&q) => Ok(q as u32),
                Some(_) => Err("must be between 1 and 10000"),
                None if n.as_i64().is_some() => Err("must be between 1 and 10000"),
                None => Err("must be a whole number"),
            },
            _ => Err("must be a whole number"),
        };
        parsed.map_err(|m| f.fail("quantity", m)).ok()
    });
    let unit_price = f.required("unitPrice").and_then(|v| {
        let parsed = match v {
            Value::Number(n) => Money::parse_json_number(&n.to_string()).map_err(|e| e.to_string()),
            _ => Err("must be a number".to_string()),
        };
        match parsed {
            Ok(p) if p > MAX_UNIT_PRICE => {
                f.fail("unitPrice", "must be at most 1000000.00");
                None
            }
            Ok(p) => Some(p),
            Err(m) => {
                f.fail("unitPrice", m);
                None
            }
        }
    });
    Some(NewLineItem {
        product_id: product_id?,
        product_name: product_name?,
        quantity: quantity?,
        unit_price: unit_price?,
    })
}

fn parse_address(
    path: &str,
    value: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<ShippingAddress> {
    const KNOWN: &[&str] = &["line1", "line2", "city", "region", "postalCode", "country"];
    let mut f = Fields::open(path, value, KNOWN, errors)?;
    let line1 = f.required_text("line1", 200, true);
    let line2 = f.optional_text("line2", 200);
    let city = f.required_text("city", 200, true);
    let region = f.optional_text("region", 200);
    let postal_code = f.required_text("postalCode", 20, true);
    let country = f.required("country").and_then(|v| {
        let s = f.string("country", v)?;
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Some(s.to_string())
        } else {
            f.fail(
                "country",
                "must be an ISO 3166-1 alpha-2 code: two upper-case letters such as DE",
            );
            None
        }
    });
    Some(ShippingAddress {
        line1: line1?,
        line2,
        city: city?,
        region,
        postal_code: postal_code?,
        country: country?,
    })
}

/// Parses `{"status": "..."}`.
pub fn parse_status_request(body: &Value) -> Result<Status, ValidationErrors> {
    let mut errors = Vec::new();
    let status = Fields::open("", body, &["status"], &mut errors).and_then(|mut f| {
        let v = f.required("status")?;
        let s = f.string("status", v)?;
        match Status::parse(s) {
            Some(st) => Some(st),
            None => {
                f.fail(
                    "status",
                    "must be one of pending, confirmed, processing, shipped, delivered, cancelled",
                );
                None
            }
        }
    });
    match status {
        Some(s) if errors.is_empty() => Ok(s),
        _ => Err(ValidationErrors(errors)),
    }
}

/// Parses the optional cancel body `{"reason": "..."}`. `None` (no body) is no reason.
/// A blank reason is no reason.
pub fn parse_cancel_request(body: Option<&Value>) -> Result<CancelRequest, ValidationErrors> {
    let Some(body) = body else {
        return Ok(CancelRequest::default());
    };
    let mut errors = Vec::new();
    let reason = Fields::open("", body, &["reason"], &mut errors).and_then(|mut f| {
        let v = f.optional("reason")?;
        let s = f.string("reason", v)?;
        if s.trim().is_empty() {
            return None;
        }
        f.text("reason", v, 1_000, true)
    });
    if errors.is_empty() {
        Ok(CancelRequest { reason })
    } else {
        Err(ValidationErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(s: &str) -> Value {
        serde_json::from_str(s).expect("test json")
    }

    fn valid() -> Value {
        json!({"customerName": "  Ada Lovelace ", "customerEmail": "Ada@Example.COM", "currency": "EUR",
               "items": [{"productId": "p-1", "productName": "Difference Engine", "quantity": 2, "unitPrice": 19.99}]})
    }

    fn fields(result: Result<CreateOrder, ValidationErrors>) -> Vec<String> {
        result
            .expect_err("should be invalid")
            .0
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_valid_order_is_parsed_trimmed_and_lower_cased() {
        let order = CreateOrder::parse(&valid()).expect("valid");
        assert_eq!(order.customer_name, "Ada Lovelace");
        assert_eq!(order.customer_email.as_str(), "ada@example.com");
        assert_eq!(order.items[0].priced().line_total, Money::from_cents(3998));
        assert_eq!(order.shipping_address, None);
    }

    #[test]
    fn currency_defaults_to_usd() {
        let mut v = valid();
        v.as_object_mut().expect("object").remove("currency");
        assert_eq!(
            CreateOrder::parse(&v).expect("valid").currency,
            Currency::usd()
        );
    }

    #[test]
    fn every_bad_field_is_named_with_its_path() {
        let v = body(
            r#"{"customerName": "", "customerEmail": "nope", "currency": "eur", "colour": 1,
                "items": [{"productId": "", "productName": "x", "quantity": 0, "unitPrice": 1.999},
                          {"productId": "p", "productName": "y", "quantity": 2.5, "unitPrice": "1", "extra": true}]}"#,
        );
        let mut got = fields(CreateOrder::parse(&v));
        got.sort();
        assert_eq!(
            got,
            vec![
                "colour",
                "currency",
                "customerEmail",
                "customerName",
                "items[0].productId",
                "items[0].quantity",
                "items[0].unitPrice",
                "items[1].extra",
                "items[1].quantity",
                "items[1].unitPrice"
            ]
        );
    }

    #[test]
    fn an_unknown_key_that_is_not_a_plain_name_is_quoted_in_its_path() {
        // Found by the command_parse fuzz target (fuzz/regressions/command_parse/empty-key).
        let v = body(r#"{"": " to&o ", "a.b": 1, "items": [{"[0]": 2, "q\"": 3}]}"#);
        let mut got = fields(CreateOrder::parse(&v));
        got.sort();
        assert_eq!(
            got,
            vec![
                r#"[""]"#,
                r#"["a.b"]"#,
                "customerEmail",
                "customerName",
                "items[0].productId",
                "items[0].productName",
                "items[0].quantity",
                "items[0].unitPrice",
                r#"items[0]["[0]"]"#,
                r#"items[0]["q\""]"#,
            ]
        );
    }

    #[test]
    fn missing_fields_and_wrong_shapes_are_reported() {
        assert_eq!(
            fields(CreateOrder::parse(&json!({}))),
            vec!["customerName", "customerEmail", "items"]
        );
        assert_eq!(fields(CreateOrder::parse(&json!([1]))), vec!["body"]);
        let mut v = valid();
        v["items"] = json!([]);
        assert_eq!(fields(CreateOrder::parse(&v)), vec!["items"]);
        v["items"] = json!("p-1");
        assert_eq!(fields(CreateOrder::parse(&v)), vec!["items"]);
    }

    #[test]
    fn limits_are_inclusive() {
        let mut v = valid();
        v["customerName"] = json!("n".repeat(200));
        v["items"][0]["quantity"] = json!(10_000);
        v["items"][0]["unitPrice"] = body("1000000.00");
        v["items"][0]["productId"] = json!("i".repeat(64));
        assert!(CreateOrder::parse(&v).is_ok());
        v["customerName"] = json!("n".repeat(201));
        v["items"][0]["quantity"] = json!(10_001);
        v["items"][0]["unitPrice"] = body("1000000.01");
        v["items"][0]["productId"] = json!("i".repeat(65));
        assert_eq!(
            fields(CreateOrder::parse(&v)),
            vec![
                "customerName",
                "items[0].productId",
                "items[0].quantity",
                "items[0].unitPrice"
            ]
        );
    }

    #[test]
    fn names_count_characters_not_bytes() {
        let mut v = valid();
        v["customerName"] = json!("é".repeat(200));
        assert!(CreateOrder::parse(&v).is_ok());
        v["customerName"] = json!("a\u{0000}b");
        assert_eq!(fields(CreateOrder::parse(&v)), vec!["customerName"]);
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        for bad in [
            "a@b",
            "@b.com",
            "a@.com",
            "a@b..com",
            "a b@c.com",
            "a@b.com.",
            "a@@b.com",
        ] {
            assert!(CustomerEmail::parse(bad).is_err(), "{bad} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(CustomerEmail::parse(&long).is_err());
        assert!(CustomerEmail::parse("first.last+tag@sub.example.co.uk").is_ok());
    }

    #[test]
    fn e_mail_limits_hold_for_the_lower_cased_address() {
        // Found by the command_parse fuzz target's round trip
        // (fuzz/regressions/command_parse/email-lower-case-longer).
        let long_local = format!("{}@example.com", "\u{130}".repeat(64));
        assert!(CustomerEmail::parse(&long_local).is_err());
        let stored = CustomerEmail::parse(&format!("{}@example.com", "\u{130}".repeat(32)))
            .expect("64 characters once lower-cased");
        assert_eq!(CustomerEmail::parse(stored.as_str()), Ok(stored.clone()));
        assert_eq!(stored.as_str().chars().count(), 64 + "@example.com".len());
    }

    #[test]
    fn a_shipping_address_needs_its_required_parts() {
        let mut v = valid();
        v["shippingAddress"] =
            json!({"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "de"});
        assert_eq!(
            fields(CreateOrder::parse(&v)),
            vec!["shippingAddress.country"]
        );
        v["shippingAddress"] = json!({"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE", "line2": null});
        let order = CreateOrder::parse(&v).expect("valid");
        assert_eq!(order.shipping_address.expect("address").line2, None);
        v["shippingAddress"] = json!({"zip": 1});
        let mut got = fields(CreateOrder::parse(&v));
        got.sort();
        assert_eq!(
            got,
            vec![
                "shippingAddress.city",
                "shippingAddress.country",
                "shippingAddress.line1",
                "shippingAddress.postalCode",
                "shippingAddress.zip"
            ]
        );
    }

    #[test]
    fn status_and_cancel_bodies_are_parsed_strictly() {
        assert_eq!(
            parse_status_request(&json!({"status": "confirmed"})),
            Ok(Status::Confirmed)
        );
        assert!(parse_status_request(&json!({"status": "CONFIRMED"})).is_err());
        assert!(parse_status_request(&json!({"status": "confirmed", "x": 1})).is_err());
        assert!(parse_status_request(&json!({})).is_err());
        assert_eq!(parse_cancel_request(None), Ok(CancelRequest::default()));
        assert_eq!(
            parse_cancel_request(Some(&json!({"reason": null}))),
            Ok(CancelRequest::default())
        );
        assert_eq!(
            parse_cancel_request(Some(&json!({"reason": " too slow "}))),
            Ok(CancelRequest {
                reason: Some("too slow".into())
            })
        );
        assert!(parse_cancel_request(Some(&json!({"reason": 5}))).is_err());
        assert!(parse_cancel_request(Some(&json!({"why": "x"}))).is_err());
    }
}
