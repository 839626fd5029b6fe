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
/// characters, stored lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerEmail(String);

impl CustomerEmail {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        // The limits hold for the stored, lower-cased text: lower-casing can lengthen it
        // (`İ` becomes two characters).
        let lower = raw.trim().to_lowercase();
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
