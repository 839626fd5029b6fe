//! Properties of exact money: arithmetic, parsing and printing, averages.

use proptest::prelude::*;

use ordo_domain::Money;

/// `parse_json_number` accepts amounts below 10^30 cents.
const LIMIT: i128 = 1_000_000_000_000_000_000_000_000_000_000;

/// Any amount parsing can produce, and its negation (stored deltas).
fn amount() -> impl Strategy<Value = Money> {
    (-LIMIT + 1..LIMIT).prop_map(Money::from_cents)
}

/// Amounts as they usually are: up to a million units.
fn small_amount() -> impl Strategy<Value = Money> {
    (0i128..=100_000_000).prop_map(Money::from_cents)
}

/// `cents / count` rounded half away from zero, computed on magnitudes.
fn reference_average(cents: i128, count: u64) -> i128 {
    let magnitude = cents.unsigned_abs();
    let count = u128::from(count);
    let rounded = i128::try_from((magnitude * 2 + count) / (count * 2)).expect("fits");
    if cents < 0 { -rounded } else { rounded }
}

proptest! {
    // Failures print their smallest case; nothing is written beside the sources.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn subtraction_undoes_addition(a in amount(), b in amount()) {
        prop_assert_eq!((a + b) - b, a);
        prop_assert_eq!((a - b) + b, a);
        prop_assert_eq!(a + b, b + a);
        prop_assert_eq!(a.checked_add(b), Some(a + b));
    }

    #[test]
    fn a_sum_does_not_depend_on_the_order(
        (amounts, shuffled) in prop::collection::vec(amount(), 0..40)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let sum: Money = amounts.iter().copied().sum();
        prop_assert_eq!(sum, shuffled.iter().copied().sum::<Money>());
        let cents: i128 = amounts.iter().map(|m| m.cents()).sum();
        prop_assert_eq!(sum.cents(), cents);
    }

    #[test]
    fn a_displayed_amount_parses_to_itself(cents in 0..LIMIT) {
        let m = Money::from_cents(cents);
        let shown = m.to_string();
        prop_assert_eq!(Money::parse_json_number(&shown), Ok(m));
        prop_assert_eq!(serde_json::to_string(&m).expect("serialises"), shown.clone());
        prop_assert_eq!(serde_json::from_str::<Money>(&shown).expect("decodes"), m);
    }

    #[test]
    fn every_json_spelling_of_an_amount_parses_to_it(
        // Not 0: JSON allows no leading zero, so 0 has no spelling `00e-3`.
        cents in 1..LIMIT / 1000,
        zeros in 0usize..5,
        shift in 0i64..5,
    ) {
        let m = Money::from_cents(cents);
        // 1999 cents: 19.99, 19.9900, 1999e-2, 1999000E-5, 0.1999e2.
        let with_zeros = format!("{m}{}", "0".repeat(zeros));
        let scaled = format!("{}{}e-{}", cents, "0".repeat(zeros), 2 + zeros);
        let shifted = format!("{}E-{}", cents * 10i128.pow(shift as u32), 2 + shift);
        for text in [with_zeros, scaled, shifted] {
            prop_assert_eq!(Money::parse_json_number(&text), Ok(m), "{}", text);
            prop_assert!(serde_json::from_str::<serde_json::Number>(&text).is_ok(), "{}", text);
        }
    }

    #[test]
    fn negative_deltas_round_trip_through_json(m in amount()) {
        let written = serde_json::to_string(&m).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<Money>(&written).expect("decodes"), m);
    }

    #[test]
    fn averages_round_half_away_from_zero(total in amount(), count in 1u64..) {
        prop_assert_eq!(total.average(count).cents(), reference_average(total.cents(), count));
    }

    #[test]
    fn small_averages_match_the_definition(total in small_amount(), count in 1u64..1000) {
        // Twice the distance to the exact quotient is at most the count; an exact half
        // goes away from zero.
        let avg = total.average(count).cents();
        let twice_error = 2 * (avg * i128::from(count) - total.cents());
        prop_assert!(twice_error.abs() <= i128::from(count));
        prop_assert!(twice_error.abs() < i128::from(count) || twice_error > 0);
        prop_assert_eq!(Money::ZERO.average(count), Money::ZERO);
    }
}
