//! Model prices and context windows; cost of a call in integer nano-dollars.
//!
//! Prices are USD per million tokens as published by the vendors (list prices, without
//! batch or volume discounts). Internally a price is kept in nano-dollars per token
//! (USD per million × 1000), so every cost is an exact integer and sums never drift.
//! `AI_PRICES` overrides or adds entries: a JSON object
//! `{"provider/model" or "model": {"input": 2.5, "output": 10, "cached_input": 1.25,
//! "cache_write": 0, "reasoning": 10, "context_window": 128000}}` (USD per million tokens).
//! Reasoning tokens are part of the output tokens; they cost the reasoning price, which
//! is the output price unless a vendor bills them apart.

use std::collections::HashMap;

/// USD per million tokens, as configured in `AI_PRICES`; defined in `config`, which parses it.
pub use crate::config::PriceSpec;

use super::types::Usage;

/// Prices of one model, nano-dollars per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub output: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    /// Output tokens the vendor reports as reasoning.
    pub reasoning: i64,
    pub context_window: u64,
}

impl Price {
    /// Cost of `usage` in nano-dollars.
    pub fn cost(&self, u: &Usage) -> i64 {
        let cached = u.cached_input_tokens.min(u.input_tokens);
        let written = u.cache_write_tokens.min(u.input_tokens - cached);
        let plain = u.input_tokens - cached - written;
        let reasoning = u.reasoning_tokens.min(u.output_tokens);
        let n = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        n(plain)
            .saturating_mul(self.input)
            .saturating_add(n(cached).saturating_mul(self.cached_input))
            .saturating_add(n(written).saturating_mul(self.cache_write))
            .saturating_add(n(u.output_tokens - reasoning).saturating_mul(self.output))
            .saturating_add(n(reasoning).saturating_mul(self.reasoning))
    }

    /// The dearer of the output and reasoning prices: what one output token can cost.
    pub fn max_output(&self) -> i64 {
        self.output.max(self.reasoning)
    }
}

fn nanos(usd_per_million: f64) -> i64 {
    (usd_per_million * 1000.0).round() as i64
}

impl From<PriceSpec> for Price {
    fn from(s: PriceSpec) -> Self {
        Price {
            input: nanos(s.input),
            output: nanos(s.output),
            cached_input: nanos(s.cached_input.unwrap_or(s.input)),
            cache_write: nanos(s.cache_write.unwrap_or(s.input)),
            reasoning: nanos(s.reasoning.unwrap_or(s.output)),
            context_window: s.context_window.unwrap_or(128_000),
        }
    }
}

/// (model, input, cached input, cache write, output, context window) — USD per million.
const BUILT_IN: &[(&str, f64, f64, f64, f64, u64)] = &[
    ("gpt-5", 1.25, 0.125, 1.25, 10.0, 400_000),
    ("gpt-5-mini", 0.25, 0.025, 0.25, 2.0, 400_000),
    ("gpt-5-nano", 0.05, 0.005, 0.05, 0.40, 400_000),
    ("gpt-4.1", 2.0, 0.50, 2.0, 8.0, 1_047_576),
    ("gpt-4.1-mini", 0.40, 0.10, 0.40, 1.60, 1_047_576),
    ("gpt-4.1-nano", 0.10, 0.025, 0.10, 0.40, 1_047_576),
    ("gpt-4o", 2.50, 1.25, 2.50, 10.0, 128_000),
    ("gpt-4o-mini", 0.15, 0.075, 0.15, 0.60, 128_000),
    ("o3", 2.0, 0.50, 2.0, 8.0, 200_000),
    ("o4-mini", 1.10, 0.275, 1.10, 4.40, 200_000),
    ("claude-opus-4", 15.0, 1.50, 18.75, 75.0, 200_000),
    ("claude-sonnet-4", 3.0, 0.30, 3.75, 15.0, 200_000),
    ("claude-3-7-sonnet", 3.0, 0.30, 3.75, 15.0, 200_000),
    ("claude-haiku-4", 1.0, 0.10, 1.25, 5.0, 200_000),
    ("claude-3-5-haiku", 0.80, 0.08, 1.0, 4.0, 200_000),
    // Embedding models bill input tokens only.
    ("text-embedding-3-small", 0.02, 0.02, 0.02, 0.0, 8_191),
    ("text-embedding-3-large", 0.13, 0.13, 0.13, 0.0, 8_191),
    ("text-embedding-ada-002", 0.10, 0.10, 0.10, 0.0, 8_191),
    // The sandbox bills fictional, round prices so accounting is visible and testable.
    ("sandbox-1", 1.0, 0.5, 1.0, 2.0, 32_000),
    ("sandbox-large", 1.0, 0.5, 1.0, 2.0, 1_000_000),
    ("sandbox-reasoning", 1.0, 0.5, 1.0, 2.0, 200_000),
    ("sandbox-embed", 0.1, 0.1, 0.1, 0.0, 8_191),
];

/// Models whose reasoning tokens cost other than their output tokens — USD per million.
/// Vendors bill reasoning as output today; the sandbox's reasoning model does not, so
/// that pricing them apart is visible and testable.
const REASONING: &[(&str, f64)] = &[("sandbox-reasoning", 3.0)];

#[derive(Clone, Debug)]
pub struct PriceTable {
    entries: HashMap<String, Price>,
    /// The entries named `provider/model`, by provider then model: looked up per call
    /// without building the `provider/model` string.
    qualified: HashMap<String, HashMap<String, Price>>,
}

impl Default for PriceTable {
    fn default() -> Self {
        let entries = BUILT_IN
            .iter()
            .map(|&(m, i, c, w, o, ctx)| {
                (
                    m.to_string(),
                    Price {
                        input: nanos(i),
                        output: nanos(o),
                        cached_input: nanos(c),
                        cache_write: nanos(w),
                        reasoning: nanos(
                            REASONING
                                .iter()
                                .find(|(r, _)| *r == m)
                                .map_or(o, |&(_, r)| r),
                        ),
                        context_window: ctx,
                    },
                )
            })
            .collect();
        Self {
            entries,
            qualified: HashMap::new(),
        }
    }
}

impl PriceTable {
    /// The built-in table with `overrides` (parsed `AI_PRICES`) applied.
    pub fn with_overrides(overrides: HashMap<String, PriceSpec>) -> Self {
        let mut t = Self::default();
        for (k, v) in overrides {
            let price: Price = v.into();
            if let Some((provider, model)) = k.split_once('/') {
                t.qualified
                    .entry(provider.to_string())
                    .or_default()
                    .insert(model.to_string(), price);
            }
            t.entries.insert(k, price);
        }
        t
    }

    /// The entry named `provider/model` exactly.
    fn qualified(&self, provider: &str, model: &str) -> Option<&Price> {
        self.qualified.get(provider)?.get(model)
    }

    /// The price of `provider/model`: exact `provider/model`, exact model, then the
    /// longest known model name that prefixes it (dated snapshots such as
    /// `gpt-4o-2024-08-06` or `claude-sonnet-4-20250514` price as their family).
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        if let Some(p) = self.qualified(provider, model) {
            return Some(*p);
        }
        if let Some(p) = self.entries.get(model) {
            return Some(*p);
        }
        self.entries
            .iter()
            .filter(|(k, _)| !k.contains('/') && model.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
    }

    /// Whether the table names this model itself (`provider/model` or `model`), not by
    /// prefix: the test for a model name fit to be a metric label.
    pub fn names(&self, provider: &str, model: &str) -> bool {
        self.entries.contains_key(model) || self.qualified(provider, model).is_some()
    }

    /// Every name the table holds (`model` or `provider/model`), sorted.
    pub fn model_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Cost in nano-dollars; 0 for an unknown model (and the caller is told by `None`).
    pub fn cost(&self, provider: &str, model: &str, usage: &Usage) -> Option<i64> {
        self.lookup(provider, model).map(|p| p.cost(usage))
    }

    pub fn context_window(&self, provider: &str, model: &str) -> Option<u64> {
        self.lookup(provider, model).map(|p| p.context_window)
    }
}

/// Nano-dollars → dollars, for display.
pub fn usd(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

/// Nano-dollars as exact dollars with nine decimals (`1500` → `0.000001500`), from the
/// integer: no floating point, so exact at any size.
pub fn usd_text(nanos: i64) -> String {
    const NANOS_PER_USD: u64 = 1_000_000_000;
    let n = nanos.unsigned_abs();
    // Written digit by digit (it is on every gateway answer): sign, whole dollars (at
    // most 11 digits), the point, nine decimals.
    let mut text = [0u8; 22];
    let mut at = text.len();
    let mut rest = n % NANOS_PER_USD;
    for _ in 0..9 {
        at -= 1;
        text[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    at -= 1;
    text[at] = b'.';
    let mut whole = n / NANOS_PER_USD;
    loop {
        at -= 1;
        text[at] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    if nanos < 0 {
        at -= 1;
        text[at] = b'-';
    }
    String::from_utf8_lossy(&text[at..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_integers() {
        let t = PriceTable::default();
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(t.cost("openai", "gpt-4o-mini", &u), Some(750_000_000)); // $0.75
        let cached = Usage {
            input_tokens: 1000,
            output_tokens: 10,
            cached_input_tokens: 600,
            cache_write_tokens: 100,
            reasoning_tokens: 0,
        };
        // 300 plain × 3000 + 600 × 300 + 100 × 3750 + 10 × 15000 (claude-sonnet-4)
        assert_eq!(
            t.cost("anthropic", "claude-sonnet-4-20250514", &cached),
            Some(300 * 3000 + 600 * 300 + 100 * 3750 + 10 * 15000)
        );
        assert_eq!(t.cost("x", "unknown-model", &u), None);
    }

    #[test]
    fn reasoning_tokens_are_output_tokens_at_the_reasoning_price() {
        let t = PriceTable::default();
        let u = Usage {
            input_tokens: 100,
            output_tokens: 50,
            reasoning_tokens: 30,
            ..Usage::default()
        };
        // sandbox-reasoning: input 1000, output 2000, reasoning 3000 nano-dollars a token.
        assert_eq!(
            t.cost("sandbox", "sandbox-reasoning", &u),
            Some(100 * 1000 + 20 * 2000 + 30 * 3000)
        );
        // Where reasoning costs as output, the split changes nothing.
        let plain = Usage {
            reasoning_tokens: 0,
            ..u
        };
        assert_eq!(t.cost("openai", "o3", &u), t.cost("openai", "o3", &plain));
        // A vendor claiming more reasoning than output is capped at the output.
        let odd = Usage {
            reasoning_tokens: 500,
            ..u
        };
        assert_eq!(
            t.cost("sandbox", "sandbox-reasoning", &odd),
            Some(100 * 1000 + 50 * 3000)
        );
        let over = PriceTable::with_overrides(HashMap::from([(
            "gpt-5".to_string(),
            serde_json::from_value::<PriceSpec>(
                serde_json::json!({"input": 1.0, "output": 2.0, "reasoning": 5.0}),
            )
            .unwrap(),
        )]));
        let p = over.lookup("openai", "gpt-5").unwrap();
        assert_eq!((p.output, p.reasoning, p.max_output()), (2000, 5000, 5000));
    }

    #[test]
    fn longest_prefix_wins_and_overrides_apply() {
        let t = PriceTable::default();
        assert_eq!(
            t.lookup("openai", "gpt-4o-mini-2024-07-18").unwrap().input,
            150
        );
        assert_eq!(t.lookup("openai", "gpt-4o-2024-08-06").unwrap().input, 2500);
        let o = PriceTable::with_overrides(HashMap::from([(
            "local/llama3".to_string(),
            PriceSpec {
                input: 0.0,
                output: 0.0,
                cached_input: None,
                cache_write: None,
                reasoning: None,
                context_window: Some(8192),
            },
        )]));
        assert_eq!(o.context_window("local", "llama3"), Some(8192));
        assert_eq!(o.lookup("other", "llama3"), None);
        assert!(o.names("local", "llama3"));
        assert!(!o.names("other", "llama3"));
    }

    #[test]
    fn dollars_are_exact() {
        assert_eq!(usd_text(0), "0.000000000");
        assert_eq!(usd_text(1_500), "0.000001500");
        assert_eq!(usd_text(750_000_000), "0.750000000");
        assert_eq!(usd_text(1_000_000_001), "1.000000001");
        assert_eq!(usd_text(12_345_678_901), "12.345678901");
        assert_eq!(usd_text(-5), "-0.000000005");
        assert_eq!(usd_text(-2_000_000_001), "-2.000000001");
        assert_eq!(usd_text(i64::MAX), "9223372036.854775807");
        assert_eq!(usd_text(i64::MIN), "-9223372036.854775808");
        // What float formatting gives, where a float holds the amount exactly enough.
        for n in [1_i64, 999, 123_456_789, 1_000_000_000, 987_654_321_012] {
            assert_eq!(usd_text(n), format!("{:.9}", usd(n)), "{n}");
        }
    }

    #[test]
    fn a_qualified_entry_may_name_a_model_with_slashes() {
        let spec = |input| PriceSpec {
            input,
            output: 0.0,
            cached_input: None,
            cache_write: None,
            reasoning: None,
            context_window: None,
        };
        let t = PriceTable::with_overrides(HashMap::from([
            ("together/meta-llama/Llama-3".to_string(), spec(1.0)),
            ("meta-llama/Llama-3-8B".to_string(), spec(2.0)),
        ]));
        assert_eq!(
            t.lookup("together", "meta-llama/Llama-3").unwrap().input,
            1000
        );
        assert_eq!(t.lookup("other", "meta-llama/Llama-3"), None);
        // Named by model alone, it prices on every provider; by `provider/model` too.
        assert_eq!(
            t.lookup("groq", "meta-llama/Llama-3-8B").unwrap().input,
            2000
        );
        assert_eq!(t.lookup("meta-llama", "Llama-3-8B").unwrap().input, 2000);
        assert!(t.names("together", "meta-llama/Llama-3"));
    }
}
