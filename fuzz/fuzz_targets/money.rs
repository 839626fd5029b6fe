//! Money: `Money::parse_json_number` and JSON decoding on any text, and the arithmetic on
//! amounts made from the input's bytes.
//!
//! Properties: parsing never panics; a parsed amount is not negative, prints as a
//! number that parses to the same amount, lies within a rounding error of the text's
//! value read as a float, and no JSON number is called "not a number"; an amount
//! decoded from JSON (negative deltas too) is written and read back unchanged; addition
//! and subtraction are inverse, sums do not depend on order, `checked_add` agrees with
//! `+`, and averages are rounded half away from zero as an integer reference says.

#![no_main]

use libfuzzer_sys::fuzz_target;

use ordo_domain::Money;
use ordo_domain::money::MoneyError;

/// The largest amount `parse_json_number` accepts is below 10^30 cents.
const LIMIT: i128 = 1_000_000_000_000_000_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_text(text);
    }
    check_arithmetic(data);
});

fn check_text(text: &str) {
    // The whole text is one JSON number (serde_json also skips white space around it).
    let is_json_number =
        text.trim() == text && serde_json::from_str::<serde_json::Number>(text).is_ok();
    match Money::parse_json_number(text) {
        Ok(m) => {
            assert!(m >= Money::ZERO && m.cents() < LIMIT, "{text} -> {m}");
            let shown = m.to_string();
            assert_eq!(Money::parse_json_number(&shown), Ok(m), "{text} -> {shown}");
            if is_json_number && let Ok(f) = text.trim_start_matches('-').parse::<f64>() {
                let cents = m.cents() as f64 / 100.0;
                assert!(
                    (f - cents).abs() <= f.abs() * 1e-12,
                    "{text} is about {f}, parsed as {m}"
                );
            }
        }
        Err(MoneyError::NotANumber) => assert!(!is_json_number, "{text} is a JSON number"),
        Err(MoneyError::TooLarge) => {
            // Too large means at least 10^30 cents.
            if is_json_number && let Ok(f) = text.parse::<f64>() {
                assert!(
                    f >= 1e28 * (1.0 - 1e-12),
                    "{text} is about {f}: not too large"
                );
            }
        }
        Err(_) => {}
    }
    if is_json_number {
        // Leading zeros of an exponent do not change a number.
        if let Some(at) = text.find(['e', 'E']) {
            let (mantissa, exponent) = text.split_at(at + 1);
            let (sign, digits) = match exponent.as_bytes().first() {
                Some(b'+' | b'-') => exponent.split_at(1),
                _ => ("", exponent),
            };
            let padded = format!("{mantissa}{sign}0000000{digits}");
            assert_eq!(
                Money::parse_json_number(&padded),
                Money::parse_json_number(text),
                "{padded} and {text}"
            );
        }
    }
    if let Ok(m) = serde_json::from_str::<Money>(text) {
        let written = serde_json::to_string(&m).expect("an amount serialises");
        assert_eq!(written, m.to_string());
        assert_eq!(
            serde_json::from_str::<Money>(&written).ok(),
            Some(m),
            "{text}"
        );
    }
}

/// Amounts in the range parsing produces, each made from 16 bytes of the input.
fn amounts(data: &[u8]) -> Vec<Money> {
    data.chunks(16)
        .map(|chunk| {
            let mut bytes = [0u8; 16];
            bytes[..chunk.len()].copy_from_slice(chunk);
            Money::from_cents(i128::from_le_bytes(bytes) % LIMIT)
        })
        .collect()
}

/// `cents / count` rounded half away from zero, with unsigned integers only.
fn reference_average(cents: i128, count: u64) -> i128 {
    let magnitude = cents.unsigned_abs();
    let count = u128::from(count);
    let rounded = (magnitude * 2 + count) / (count * 2);
    let rounded = i128::try_from(rounded).expect("at most the magnitude");
    if cents < 0 { -rounded } else { rounded }
}

fn check_arithmetic(data: &[u8]) {
    let values = amounts(data);
    let [a, b, ..] = values[..] else {
        return;
    };
    assert_eq!((a + b) - b, a);
    assert_eq!((a - b) + b, a);
    assert_eq!(a + b, b + a);
    assert_eq!(a.checked_add(b), Some(a + b));
    assert_eq!(a.checked_mul(1), Some(a));

    let forward: Money = values.iter().copied().sum();
    let backward: Money = values.iter().rev().copied().sum();
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(forward, backward);
    assert_eq!(forward, sorted.into_iter().sum());

    let count = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    for count in [count, count % 1000, 1, 2, 3] {
        let expected = if count == 0 {
            0
        } else {
            reference_average(a.cents(), count)
        };
        assert_eq!(a.average(count).cents(), expected, "{a} / {count}");
    }
}
