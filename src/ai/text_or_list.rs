//! Wire fields that are either a string or an array (message content, a system prompt,
//! stop sequences), read in one pass.
//!
//! serde's `untagged` enums copy the value into an intermediate tree and then try each
//! variant against it: an allocation and a copy of every such field of every request and
//! response. [`TextOrList`] looks at the first token instead and reads the value once;
//! an error inside the array keeps its own message and path.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// A string or an array of `T`.
pub enum TextOrList<T> {
    Text(String),
    List(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOrList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Either<T> {
            type Value = TextOrList<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOrList::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOrList::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(TextOrList::List)
            }
        }

        d.deserialize_any(Either(PhantomData))
    }
}

/// `Deserialize` for an enum of a `String` variant and a `Vec` variant, through
/// [`TextOrList`].
macro_rules! text_or_list {
    ($ty:ident, $text:ident, $list:ident, $item:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(
                    match <$crate::ai::text_or_list::TextOrList<$item> as serde::Deserialize>::deserialize(d)? {
                        $crate::ai::text_or_list::TextOrList::Text(t) => $ty::$text(t),
                        $crate::ai::text_or_list::TextOrList::List(l) => $ty::$list(l),
                    },
                )
            }
        }
    };
}
pub(crate) use text_or_list;

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<TextOrList<u32>, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_string_or_an_array_and_nothing_else() {
        assert!(matches!(read(r#""hello""#), Ok(TextOrList::Text(t)) if t == "hello"));
        assert!(matches!(read(r#""esc\"aped""#), Ok(TextOrList::Text(t)) if t == "esc\"aped"));
        assert!(matches!(read("[1, 2]"), Ok(TextOrList::List(l)) if l == vec![1, 2]));
        assert!(matches!(read("[]"), Ok(TextOrList::List(l)) if l.is_empty()));
        let err = read("7").err().unwrap_or_default();
        assert!(err.contains("expected a string or an array"), "{err}");
        let err = read("{}").err().unwrap_or_default();
        assert!(err.contains("expected a string or an array"), "{err}");
    }

    #[test]
    fn an_error_inside_the_array_keeps_its_own_message() {
        let err = read(r#"[1, "two"]"#).err().unwrap_or_default();
        assert!(err.contains("expected u32"), "{err}");
    }

    #[test]
    fn reads_from_a_json_value_too() {
        let v = serde_json::json!(["a", "b"]);
        let read: TextOrList<String> = serde_json::from_value(v)
            .map_err(|e| e.to_string())
            .unwrap_or(TextOrList::List(vec![]));
        assert!(matches!(read, TextOrList::List(l) if l == ["a", "b"]));
    }
}
