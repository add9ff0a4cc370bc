//! Redaction of sensitive data: e-mail addresses, payment card numbers (Luhn-checked),
//! US social security numbers, credentials (our `de_…` keys, `sk-…` vendor keys,
//! `Bearer …` values, JWT-shaped strings), configured extra patterns and the literal
//! values of configured secrets.
//!
//! It imports nothing else of the crate, so `telemetry` may use it.
//!
//! Applied to every log line (see `telemetry::logging`) and, by the AI layer, to prompts
//! of employees with `redact_prompts`. The process-wide redactor is installed once at
//! start from the configuration; until then the built-in patterns apply.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Regex, RegexSet};

const EMAIL: &str = "[REDACTED_EMAIL]";
const CARD: &str = "[REDACTED_CARD]";
const SSN: &str = "[REDACTED_SSN]";
const SECRET: &str = "[REDACTED_SECRET]";
const EXTRA: &str = "[REDACTED]";

/// What a rule matches, which decides its replacement and any extra check.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Secret,
    Email,
    Ssn,
    Card,
    Extra,
}

/// A compiled set of redaction rules.
pub struct Redactor {
    /// In order: credentials first (a key may contain digit runs that would otherwise
    /// look like a card), then e-mail, SSN, card, extra patterns.
    rules: Vec<(Regex, Kind)>,
    /// All rule patterns in one automaton: one pass tells whether any rule can match,
    /// so clean text (nearly every log field) costs a single scan and no allocation.
    any: Option<RegexSet>,
    /// Exact secret values from the configuration (whitelist keys, JWT secret, …).
    literals: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.rules.len())
            .field("literal_secrets", &self.literals.len())
            .finish()
    }
}

static GLOBAL: OnceLock<Redactor> = OnceLock::new();

/// Installs the process-wide redactor (first call wins; later calls are ignored, as in
/// tests several apps share one process). Invalid extra patterns were already refused by
/// the configuration.
pub fn install(extra_patterns: &[String], literal_secrets: Vec<String>) {
    let _ = GLOBAL.set(Redactor::new(extra_patterns, literal_secrets));
}

/// The process-wide redactor.
pub fn global() -> &'static Redactor {
    GLOBAL.get_or_init(|| Redactor::new(&[], Vec::new()))
}

/// Redacts `text` with the process-wide redactor; returns the text and how many
/// redactions were made.
pub fn redact(text: &str) -> (String, usize) {
    global().redact(text)
}

const BUILT_IN: &[(&str, Kind)] = &[
    // Our stored keys.
    (r"\bde_[0-9a-fA-F]{12}_[A-Za-z0-9_-]+", Kind::Secret),
    // Vendor-style secret keys: sk-…, sk-ant-…, sk-proj-….
    (r"\bsk-[A-Za-z0-9_-]{8,}", Kind::Secret),
    // A bearer credential of any kind.
    (r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+", Kind::Secret),
    // JWT-shaped: a base64url JSON header (`eyJ`) and two more parts.
    (
        r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        Kind::Secret,
    ),
    (
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        Kind::Email,
    ),
    (r"\b\d{3}-\d{2}-\d{4}\b", Kind::Ssn),
    // 13–19 digits, single spaces or dashes allowed between them.
    (r"\b\d(?:[ -]?\d){12,18}\b", Kind::Card),
];

impl Redactor {
    pub fn new(extra_patterns: &[String], literal_secrets: Vec<String>) -> Redactor {
        // The built-in patterns are known to compile (unit tests); extra patterns were
        // validated by the configuration.
        let rules: Vec<(Regex, Kind)> = BUILT_IN
            .iter()
            .map(|(p, k)| (*p, *k))
            .chain(extra_patterns.iter().map(|p| (p.as_str(), Kind::Extra)))
            .filter_map(|(p, k)| Regex::new(p).ok().map(|r| (r, k)))
            .collect();
        let mut literals: Vec<String> = literal_secrets
            .into_iter()
            // Very short values would redact ordinary words; they are not real secrets.
            .filter(|s| s.len() >= 8)
            .collect();
        // Longest first so a secret that contains another is replaced whole.
        literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
        literals.dedup();
        let any = RegexSet::new(rules.iter().map(|(r, _)| r.as_str())).ok();
        Redactor {
            rules,
            any,
            literals,
        }
    }

    /// Returns the redacted text and the number of redactions.
    pub fn redact(&self, text: &str) -> (String, usize) {
        let (out, count) = self.redact_cow(text);
        (out.into_owned(), count)
    }

    /// Like [`Redactor::redact`], but borrows `text` back when nothing was redacted.
    pub fn redact_cow<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        let mut count = 0;
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        for lit in &self.literals {
            if out.contains(lit.as_str()) {
                count += out.matches(lit.as_str()).count();
                out = Cow::Owned(out.replace(lit.as_str(), SECRET));
            }
        }
        if let Some(any) = &self.any
            && !any.is_match(&out)
        {
            return (out, count);
        }
        for (re, kind) in &self.rules {
            out = replace_all(re, out, &mut count, |m| match kind {
                Kind::Secret => Some(SECRET),
                Kind::Email => Some(EMAIL),
                Kind::Ssn => valid_ssn(m).then_some(SSN),
                Kind::Card => luhn(m).then_some(CARD),
                Kind::Extra => Some(EXTRA),
            });
        }
        (out, count)
    }
}

/// Replaces each match for which `with` gives a replacement; counts replacements.
fn replace_all<'a>(
    re: &Regex,
    text: Cow<'a, str>,
    count: &mut usize,
    with: impl Fn(&str) -> Option<&'static str>,
) -> Cow<'a, str> {
    if !re.is_match(&text) {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut n = 0;
    for m in re.find_iter(&text) {
        if let Some(rep) = with(m.as_str()) {
            out.push_str(&text[last..m.start()]);
            out.push_str(rep);
            last = m.end();
            n += 1;
        }
    }
    if n == 0 {
        return text;
    }
    out.push_str(&text[last..]);
    *count += n;
    Cow::Owned(out)
}

/// Card numbers: 13–19 digits passing the Luhn check (order numbers and the like that
/// fail it are left alone).
fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// SSN area/group/serial rules: area not 000, 666 or 9xx; group and serial not zero.
fn valid_ssn(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [area, group, serial] => {
            *area != "000"
                && *area != "666"
                && !area.starts_with('9')
                && *group != "00"
                && *serial != "0000"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> (String, usize) {
        Redactor::new(
            &["ORD-[0-9]{4}-SECRET".to_string()],
            vec!["my-literal-secret".into()],
        )
        .redact(text)
    }

    #[test]
    fn emails_are_redacted() {
        let (t, n) = r("contact ada.lovelace+x@example.co.uk or bob@test.io now");
        assert_eq!(t, "contact [REDACTED_EMAIL] or [REDACTED_EMAIL] now");
        assert_eq!(n, 2);
    }

    #[test]
    fn card_numbers_pass_luhn_and_order_numbers_survive() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500 0000 0000 0004",
            "378282246310005",
            "6011000990139424",
        ] {
            let (t, n) = r(&format!("card {card} used"));
            assert_eq!(t, "card [REDACTED_CARD] used", "{card}");
            assert_eq!(n, 1);
        }
        // Luhn negatives: same length, wrong check digit; and an order number.
        for keep in [
            "4111111111111112",
            "order 1234567890123 shipped",
            "1234-5678-9012-3456",
            "tracking 9400111899223197428490 x",
            "phone 555 1234",
            "id 123456789012",
        ] {
            let (t, n) = r(keep);
            assert!(!t.contains("REDACTED_CARD"), "{keep} -> {t}");
            assert_eq!(n, 0, "{keep}");
        }
    }

    #[test]
    fn ssns_are_redacted_when_plausible() {
        assert_eq!(r("ssn 123-45-6789.").0, "ssn [REDACTED_SSN].");
        assert_eq!(r("ssn 000-45-6789").1, 0);
        assert_eq!(r("ssn 666-45-6789").1, 0);
        assert_eq!(r("ssn 923-45-6789").1, 0);
        assert_eq!(r("date 2024-01-15").1, 0);
    }

    #[test]
    fn credentials_are_redacted() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJl";
        for (text, gone) in [
            ("key de_0123456789ab_AbC-dEf_123 used", "de_0123456789ab"),
            ("openai sk-proj-abcdefghijklmnop", "sk-proj"),
            ("anthropic sk-ant-api03-abcdefgh", "sk-ant"),
            ("Authorization: Bearer abc.def-ghi", "abc.def"),
            (
                "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJl",
                jwt,
            ),
            ("literal my-literal-secret here", "my-literal-secret"),
            ("extra ORD-1234-SECRET here", "ORD-1234"),
        ] {
            let (t, n) = r(text);
            assert!(!t.contains(gone), "{text} -> {t}");
            assert!(n >= 1, "{text}");
        }
    }

    #[test]
    fn plain_text_is_untouched() {
        let text = "employee support-agent finished task 42 in 1.5s (version 3)";
        assert_eq!(r(text), (text.to_string(), 0));
    }

    #[test]
    fn clean_text_is_borrowed_and_dirty_text_still_caught() {
        let red = Redactor::new(
            &["ORD-[0-9]{4}-SECRET".to_string()],
            vec!["my-literal-secret".into()],
        );
        assert!(red.any.is_some(), "the combined pattern set must compile");
        let (out, n) = red.redact_cow("POST /v1/chat/completions 200");
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(n, 0);
        // Each rule still fires after the combined pre-check, alone or after a literal.
        for (text, gone) in [
            ("ref ORD-1234-SECRET", "ORD-1234"),
            ("my-literal-secret then ada@example.com", "ada@"),
            ("key sk-abcdefghijkl", "sk-abc"),
        ] {
            let (out, n) = red.redact_cow(text);
            assert!(n >= 1 && !out.contains(gone), "{text} -> {out}");
        }
    }

    #[test]
    fn built_in_patterns_compile() {
        for (p, _) in BUILT_IN {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn short_literals_are_ignored() {
        let red = Redactor::new(&[], vec!["abc".into()]);
        assert_eq!(red.redact("abc abc").1, 0);
    }
}
