//! Whole numbers as JSON Schema sees them (API bodies, query strings and the gateway's
//! wire types share this): `3`, `3.0` and `-0` are all the integer 3 (or
//! 0), so a field typed `integer` accepts each. Fields take
//! `#[serde(default, deserialize_with = "num::optional")]`; a fraction or a number
//! out of the field's range is a 422 naming the field. Query strings work the same way
//! (`limit=20.0`).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// `deserialize_with` for an optional whole number of any integer type.
pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    d.deserialize_option(OptionalWhole(PhantomData))
}

struct OptionalWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<i64>> Visitor<'de> for OptionalWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Whole(PhantomData)).map(Some)
    }

    // Query strings hand over their text without an "is it there" layer.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Whole(PhantomData).visit_str(v).map(Some)
    }
}

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<i64>> Whole<T> {
    fn fit<E: de::Error>(v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn from_f64<E: de::Error>(v: f64) -> Result<T, E> {
        // Within ±2^53 every whole f64 is exact; further out the value is refused (no
        // field of this API takes numbers that large).
        if v.fract() != 0.0 || !v.is_finite() || v.abs() > 9_007_199_254_740_992.0 {
            return Err(E::custom(format!("expected a whole number, got {v}")));
        }
        Self::fit(v as i64)
    }
}

impl<'de, T: TryFrom<i64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::fit(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        i64::try_from(v)
            .map_err(|_| E::custom(format!("{v} is out of range")))
            .and_then(Self::fit)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Self::from_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        if let Ok(n) = v.parse::<i64>() {
            return Self::fit(n);
        }
        match v.parse::<f64>() {
            Ok(f) => Self::from_f64(f),
            Err(_) => Err(E::custom(format!("expected a whole number, got {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct B {
        #[serde(default, deserialize_with = "super::optional")]
        n: Option<i32>,
        #[serde(default, deserialize_with = "super::optional")]
        u: Option<u32>,
    }

    fn n(json: &str) -> Result<Option<i32>, String> {
        serde_json::from_str::<B>(json)
            .map(|b| b.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        assert_eq!(n(r#"{"n":3}"#), Ok(Some(3)));
        assert_eq!(n(r#"{"n":3.0}"#), Ok(Some(3)));
        assert_eq!(n(r#"{"n":-0.0}"#), Ok(Some(0)));
        assert_eq!(n(r#"{"n":1e2}"#), Ok(Some(100)));
        assert_eq!(n(r#"{"n":null}"#), Ok(None));
        assert_eq!(n(r#"{}"#), Ok(None));
        assert!(n(r#"{"n":3.5}"#).is_err());
        assert!(
            n(r#"{"n":"3"}"#).is_ok(),
            "query strings carry numbers as text"
        );
        assert!(n(r#"{"n":true}"#).is_err());
        assert!(
            n(r#"{"n":3000000000}"#)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(serde_json::from_str::<B>(r#"{"u":-1}"#).is_err());
        assert!(n(r#"{"n":1e300}"#).is_err());
    }

    #[test]
    fn query_strings_too() {
        let b: B = serde_urlencoded::from_str("n=20.0&u=7").unwrap();
        assert_eq!((b.n, b.u), (Some(20), Some(7)));
        assert!(serde_urlencoded::from_str::<B>("n=x").is_err());
    }
}
