//! Value types that cannot hold an invalid value: each is made by `parse`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// An order's status. `cancelled` is reached only through `CancelOrder`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Confirmed,
    Processing,
    Shipped,
    Delivered,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Confirmed,
        Status::Processing,
        Status::Shipped,
        Status::Delivered,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Processing => "processing",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The one forward step `UpdateOrderStatus` may take from here.
    pub fn next(self) -> Option<Status> {
        match self {
            Status::Pending => Some(Status::Confirmed),
            Status::Confirmed => Some(Status::Processing),
            Status::Processing => Some(Status::Shipped),
            Status::Shipped => Some(Status::Delivered),
            Status::Delivered | Status::Cancelled => None,
        }
    }

    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            Status::Pending | Status::Confirmed | Status::Processing
        )
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text field is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong { max: usize },
    ControlCharacter,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => f.write_str("must not be empty"),
            TextError::TooLong { max } => write!(f, "must be at most {max} characters"),
            TextError::ControlCharacter => f.write_str("must not contain control characters"),
        }
    }
}

/// Length in characters (Unicode scalar values) within `1..=max`, no control characters.
/// Trimmed first when `trim` is set.
pub fn bounded_text(raw: &str, max: usize, trim: bool) -> Result<String, TextError> {
    let s = if trim { raw.trim() } else { raw };
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    if s.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    if s.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    Ok(s.to_string())
}

/// A customer e-mail address: `local@domain` with a dot in the domain, at most 254
/// characters, stored lower-cased (as its [`EmailKey`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomerEmail(String);

impl CustomerEmail {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        // The limits hold for the stored, lower-cased text: lower-casing can lengthen it
        // (`İ` becomes two characters).
        let EmailKey(lower) = EmailKey::new(raw);
        let s = lower.as_str();
        if s.is_empty() {
            return Err("must not be empty");
        }
        if s.chars().count() > 254 {
            return Err("must be at most 254 characters");
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("must not contain spaces or control characters");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err("must be an e-mail address (local@domain)");
        };
        if local.is_empty() || local.contains('@') || local.chars().count() > 64 {
            return Err("must be an e-mail address (local@domain)");
        }
        if !domain.contains('.')
            || domain.split('.').any(str::is_empty)
            || domain.chars().any(|c| {
                matches!(
                    c,
                    '(' | ')' | ',' | ';' | ':' | '<' | '>' | '[' | ']' | '\\' | '"'
                )
            })
        {
            return Err("must be an e-mail address with a dotted domain (local@example.com)");
        }
        Ok(CustomerEmail(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key the read models know this customer by.
    pub fn key(&self) -> EmailKey {
        // Already in the key's form: `parse` and `deserialize` made it so.
        EmailKey(self.0.clone())
    }
}

/// A stored address is brought to the form `parse` gives it but not validated again
/// (the rules may have tightened since it was stored): one stored with capitals reads
/// lower-cased, like the addresses `parse` stores, and the read models built from it
/// agree with them.
impl<'de> Deserialize<'de> for CustomerEmail {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(CustomerEmail(EmailKey::new(&raw).0))
    }
}

/// An e-mail address as customers are looked up by it: trimmed and lower-cased the way
/// [`CustomerEmail::parse`] stores an address (Unicode lower case, as `str::to_lowercase`
/// does it), but not validated, so that any text a query names is a key (one that
/// matches no customer when it is no address). The read models key customers by it and
/// queries filter on it: `Ada@Example.com` finds the orders of `ada@example.com`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailKey(String);

impl EmailKey {
    pub fn new(raw: &str) -> Self {
        EmailKey(raw.trim().to_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// [`EmailKey::new`].
impl From<&str> for EmailKey {
    fn from(raw: &str) -> Self {
        EmailKey::new(raw)
    }
}

impl fmt::Display for EmailKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// ISO 4217 style: three upper-case ASCII letters. The list of codes in use is not
/// enforced here: it changes over time, and the format is what the contract names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn usd() -> Self {
        Currency("USD".into())
    }

    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(raw.to_string()))
        } else {
            Err("must be an ISO 4217 code: three upper-case letters such as EUR")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A line of an order, as the event records it (lineTotal computed once, by the decision).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineItem {
    pub product_id: String,
    pub product_name: String,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

/// A structured shipping address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShippingAddress {
    pub line1: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub line2: Option<String>,
    pub city: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper-case.
    pub country: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(raw: &str) -> CustomerEmail {
        serde_json::from_value(serde_json::Value::from(raw)).expect("any text decodes")
    }

    #[test]
    fn parse_decode_and_key_give_one_form_of_an_address() {
        for raw in [
            "ada@example.com",
            " Ada@Example.COM ",
            "ÆBLE@Ørsted.DK",
            "\u{130}stanbul@example.com",
            "ΟΔΥΣΣΕΥΣ@example.gr",
        ] {
            let parsed = CustomerEmail::parse(raw).expect("valid");
            assert_eq!(decoded(raw), parsed, "{raw}");
            assert_eq!(parsed.key(), EmailKey::new(raw), "{raw}");
            assert_eq!(decoded(raw).key(), parsed.key(), "{raw}");
            assert_eq!(parsed.key().as_str(), parsed.as_str(), "{raw}");
            // What is stored reads back as itself.
            let stored = serde_json::to_value(&parsed).expect("serializes");
            assert_eq!(stored, serde_json::Value::from(parsed.as_str()));
            assert_eq!(decoded(parsed.as_str()), parsed, "{raw}");
        }
        assert_eq!(
            CustomerEmail::parse(" Ada@Example.COM ")
                .expect("valid")
                .as_str(),
            "ada@example.com"
        );
        // Unicode lower case, as parse has always applied it: `İ` is `i` and a combining
        // dot, `Ø` is `ø`.
        assert_eq!(
            EmailKey::new("\u{130}stanbul@Ørsted.dk").as_str(),
            "i\u{307}stanbul@ørsted.dk"
        );
    }

    #[test]
    fn a_stored_address_decodes_without_being_validated_again() {
        assert!(CustomerEmail::parse("Not An Address").is_err());
        assert_eq!(decoded("Not An Address").as_str(), "not an address");
        let long = format!("{}@example.com", "A".repeat(300));
        assert!(CustomerEmail::parse(&long).is_err());
        assert_eq!(decoded(&long).as_str(), long.to_lowercase());
    }

    #[test]
    fn a_key_is_any_text_lower_cased_and_the_same_when_made_again() {
        assert_eq!(EmailKey::new(" Not An Address ").as_str(), "not an address");
        assert_eq!(
            EmailKey::from("Ada@Example.com"),
            EmailKey::new("ada@example.com")
        );
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let key = EmailKey::new(&format!("a{c}b"));
            assert_eq!(EmailKey::new(key.as_str()), key, "{c:?}");
        }
    }
}
