//! Exact money: an integer number of hundredths. Never a binary float.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount in hundredths of the currency unit (cents). Wide enough that sums over any
/// realistic number of orders cannot overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i128);

/// The largest unit price docs/domain.md allows: 1,000,000.00.
pub const MAX_UNIT_PRICE: Money = Money(100_000_000);

/// Why a JSON number is not a valid amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a number")]
    NotANumber,
    #[error("must not be negative")]
    Negative,
    #[error("must have at most 2 fraction digits")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_cents(cents: i128) -> Self {
        Money(cents)
    }

    pub const fn cents(self) -> i128 {
        self.0
    }

    /// Parses the exact text of a JSON number (`19.99`, `1.990`, `2e1`, `0`), keeping
    /// it exact: trailing zeros are fine, a third significant fraction digit is not.
    pub fn parse_json_number(text: &str) -> Result<Self, MoneyError> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.first() {
            Some(b'-') => (true, &text[1..]),
            _ => (false, text),
        };
        let (mantissa_text, exponent) = match rest.find(['e', 'E']) {
            Some(i) => {
                let exp_text = &rest[i + 1..];
                let (exp_negative, exp_digits) = match exp_text.as_bytes().first() {
                    Some(b'-') => (true, &exp_text[1..]),
                    Some(b'+') => (false, &exp_text[1..]),
                    _ => (false, exp_text),
                };
                if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(MoneyError::NotANumber);
                }
                // JSON allows leading zeros in an exponent (`1e-02`): they count for nothing.
                let significant = exp_digits.trim_start_matches('0');
                let magnitude: i64 = if significant.len() > 6 {
                    // An exponent this long is out of range either way.
                    1_000_000
                } else if significant.is_empty() {
                    0
                } else {
                    significant.parse().map_err(|_| MoneyError::NotANumber)?
                };
                (
                    &rest[..i],
                    if exp_negative { -magnitude } else { magnitude },
                )
            }
            None => (rest, 0),
        };
        let (int_part, frac_part) = mantissa_text.split_once('.').unwrap_or((mantissa_text, ""));
        if int_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(MoneyError::NotANumber);
        }
        // All significant digits, and the power of ten of the last one.
        let mut digits: String = format!("{int_part}{frac_part}");
        let mut scale = exponent - frac_part.len() as i64 + 2; // in cents
        while digits.len() > 1 && digits.ends_with('0') {
            digits.pop();
            scale += 1;
        }
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(Money::ZERO);
        }
        if negative {
            return Err(MoneyError::Negative);
        }
        if scale < 0 {
            return Err(MoneyError::TooPrecise);
        }
        if digits.len() as i64 + scale > 30 {
            return Err(MoneyError::TooLarge);
        }
        let mut cents: i128 = digits.parse().map_err(|_| MoneyError::TooLarge)?;
        for _ in 0..scale {
            cents = cents.checked_mul(10).ok_or(MoneyError::TooLarge)?;
        }
        Ok(Money(cents))
    }

    pub fn checked_mul(self, factor: i128) -> Option<Money> {
        self.0.checked_mul(factor).map(Money)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `self / count`, rounded to the cent, half away from zero. Zero when `count` is 0.
    pub fn average(self, count: u64) -> Money {
        if count == 0 {
            return Money::ZERO;
        }
        let count = i128::from(count);
        let quotient = self.0 / count;
        let remainder = self.0 % count;
        if remainder.abs() * 2 >= count {
            Money(quotient + self.0.signum())
        } else {
            Money(quotient)
        }
    }
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// Written as a JSON number with exactly two fraction digits (`19.90`).
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        // The number's own text (arbitrary_precision keeps it): no float on the way.
        let text = number.as_str();
        // Stored amounts may be negative only as deltas; parse the magnitude.
        match text.strip_prefix('-') {
            Some(abs) => Money::parse_json_number(abs).map(|m| Money(-m.0)),
            None => Money::parse_json_number(text),
        }
        .map_err(|e| D::Error::custom(format!("invalid amount {text}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<i128, MoneyError> {
        Money::parse_json_number(s).map(Money::cents)
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse("19.99"), Ok(1999));
        assert_eq!(parse("1.990"), Ok(199));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("0.00000"), Ok(0));
        assert_eq!(parse("-0"), Ok(0));
        assert_eq!(parse("2e1"), Ok(2000));
        assert_eq!(parse("1999E-2"), Ok(1999));
        assert_eq!(parse("1000000.00"), Ok(100_000_000));
        assert_eq!(parse("0.1"), Ok(10));
    }

    #[test]
    fn leading_zeros_of_an_exponent_count_for_nothing() {
        // Found by the money fuzz target (fuzz/regressions/money/exponent-leading-zeros).
        assert_eq!(parse("1e-00000002"), Ok(1));
        assert_eq!(parse("1E+0000000002"), Ok(10_000));
        assert_eq!(parse("1e0000001"), Ok(1_000));
        assert_eq!(parse("1.5e-0000000000000000000001"), Ok(15));
        assert_eq!(
            parse("1e-00000000000000000000003"),
            Err(MoneyError::TooPrecise)
        );
    }

    #[test]
    fn an_exponent_has_one_sign_and_digits() {
        for bad in [
            "1e",
            "1e+",
            "1e-",
            "1e+-5",
            "1e--5",
            "1e5x",
            "1e 5",
            "1e-abcdefgh",
        ] {
            assert_eq!(parse(bad), Err(MoneyError::NotANumber), "{bad}");
        }
    }

    #[test]
    fn a_third_fraction_digit_is_rejected() {
        assert_eq!(parse("1.999"), Err(MoneyError::TooPrecise));
        assert_eq!(parse("1e-3"), Err(MoneyError::TooPrecise));
        assert_eq!(parse("0.001"), Err(MoneyError::TooPrecise));
    }

    #[test]
    fn negative_and_huge_amounts_are_rejected() {
        assert_eq!(parse("-1"), Err(MoneyError::Negative));
        assert_eq!(parse("1e400"), Err(MoneyError::TooLarge));
        assert_eq!(parse("1e99999999999"), Err(MoneyError::TooLarge));
        assert_eq!(
            parse("123456789012345678901234567890"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(parse("1e-99999999999"), Err(MoneyError::TooPrecise));
    }

    #[test]
    fn amounts_print_with_two_fraction_digits() {
        assert_eq!(Money::from_cents(1990).to_string(), "19.90");
        assert_eq!(Money::from_cents(5).to_string(), "0.05");
        assert_eq!(
            serde_json::to_string(&Money::from_cents(100)).expect("json"),
            "1.00"
        );
        let back: Money = serde_json::from_str("19.90").expect("parse");
        assert_eq!(back, Money::from_cents(1990));
    }

    #[test]
    fn averages_round_half_away_from_zero() {
        assert_eq!(Money::from_cents(1001).average(2), Money::from_cents(501));
        assert_eq!(Money::from_cents(1000).average(3), Money::from_cents(333));
        assert_eq!(Money::from_cents(2000).average(3), Money::from_cents(667));
        assert_eq!(Money::from_cents(5).average(0), Money::ZERO);
    }
}
