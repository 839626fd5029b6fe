//! The operation mix: which request a client sends next.

use std::fmt;

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// POST /api/v1/orders/order
    Create,
    /// PUT .../status to the order's next status, with If-Match.
    Status,
    /// PUT .../cancel of a cancellable order, with If-Match.
    Cancel,
    /// GET /api/v1/orders/order/{id}
    Get,
    /// GET /api/v1/orders?status=...
    List,
    /// GET /api/v1/orders/summary
    Summary,
    /// GET /api/v1/orders/customer/{email}
    Customer,
    /// GET /api/v1/orders/search?q=...
    Search,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::Create,
        Op::Status,
        Op::Cancel,
        Op::Get,
        Op::List,
        Op::Summary,
        Op::Customer,
        Op::Search,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Status => "status",
            Op::Cancel => "cancel",
            Op::Get => "get",
            Op::List => "list",
            Op::Summary => "summary",
            Op::Customer => "customer",
            Op::Search => "search",
        }
    }

    pub fn is_command(self) -> bool {
        matches!(self, Op::Create | Op::Status | Op::Cancel)
    }
}

/// Weighted operations, e.g. `create=30,status=25,cancel=5,get=20,list=10,summary=5,customer=5`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

/// The default: 60% commands (half of them creates), 40% queries.
pub const DEFAULT_MIX: &str = "create=30,status=25,cancel=5,get=20,list=10,summary=5,customer=5";
/// Creates only: the throughput that is compared with the floors.
pub const CREATE_ONLY: &str = "create=100";

impl Mix {
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut weights: Vec<(Op, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected NAME=WEIGHT"))?;
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
                    format!("unknown operation {name:?}; one of {}", names.join(", "))
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the weight is not a whole number"))?;
            if weights.iter().any(|(o, _)| *o == op) {
                return Err(format!("{name} is given twice"));
            }
            if weight > 0 {
                weights.push((op, weight));
            }
        }
        let total = weights
            .iter()
            .try_fold(0u32, |acc, (_, w)| acc.checked_add(*w));
        match total {
            Some(0) | None => Err("the mix needs at least one operation with a weight above 0, and weights that fit in u32".into()),
            Some(total) => Ok(Mix { weights, total }),
        }
    }

    /// The operation for a uniform random number `r` (any u64).
    pub fn pick(&self, r: u64) -> Op {
        let mut x = (r % u64::from(self.total)) as u32;
        for (op, w) in &self.weights {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        // Unreachable: x < total = sum of weights.
        self.weights[self.weights.len() - 1].0
    }

    /// The share of commands among all operations, 0..=1.
    #[cfg(test)]
    pub fn command_share(&self) -> f64 {
        let commands: u32 = self
            .weights
            .iter()
            .filter(|(op, _)| op.is_command())
            .map(|(_, w)| w)
            .sum();
        f64::from(commands) / f64::from(self.total)
    }

    pub fn is_create_only(&self) -> bool {
        self.weights.iter().all(|(op, _)| *op == Op::Create)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(op, w)| format!("{}={w}", op.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A small, fast, seedable generator (xorshift64*); the load needs no cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Never zero: xorshift would stay at zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_parses_and_round_trips() {
        let mix = Mix::parse(DEFAULT_MIX).expect("valid");
        assert_eq!(mix.to_string(), DEFAULT_MIX);
        assert!((mix.command_share() - 0.6).abs() < 1e-9);
        assert!(!mix.is_create_only());
        assert!(Mix::parse(CREATE_ONLY).expect("valid").is_create_only());
    }

    #[test]
    fn picks_follow_the_weights_exactly_over_one_cycle() {
        let mix = Mix::parse("create=3,get=1,summary=0").expect("valid");
        let picks: Vec<Op> = (0..4).map(|r| mix.pick(r)).collect();
        assert_eq!(picks, vec![Op::Create, Op::Create, Op::Create, Op::Get]);
        assert_eq!(mix.pick(4), Op::Create);
        assert_eq!(mix.pick(u64::MAX), mix.pick(u64::MAX % 4));
    }

    #[test]
    fn random_picks_approach_the_weights() {
        let mix = Mix::parse(DEFAULT_MIX).expect("valid");
        let mut rng = Rng::new(42);
        let n = 100_000;
        let creates = (0..n)
            .filter(|_| mix.pick(rng.next_u64()) == Op::Create)
            .count();
        let share = creates as f64 / n as f64;
        assert!((share - 0.30).abs() < 0.01, "create share {share}");
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        assert!(Mix::parse("").is_err());
        assert!(Mix::parse("create=0").is_err());
        assert!(Mix::parse("create").is_err());
        assert!(Mix::parse("create=x").is_err());
        assert!(
            Mix::parse("buy=3")
                .expect_err("unknown")
                .contains("unknown")
        );
        assert!(Mix::parse("create=1,create=2").is_err());
    }
}
