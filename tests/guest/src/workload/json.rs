// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! A JSON value that keeps the order of object keys, written by serde_json.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// Written with up to 3 decimals; NaN and infinities become `null`.
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs, keeping their order.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// Appends `(key, value)` to an object (no-op on other values).
    pub fn push(&mut self, key: &str, value: Json) {
        if let Json::Obj(v) = self {
            v.push((key.to_string(), value));
        }
    }

    /// Appends the JSON text to `out` (serialized by serde_json).
    pub fn write(&self, out: &mut String) {
        out.push_str(&serde_json::to_string(self).unwrap_or_else(|_| "null".into()));
    }
}

/// Numbers are written with up to 3 decimals (an integral result as an integer); NaN and
/// infinities become `null`.
fn rounded(x: f64) -> Option<serde_json::Number> {
    if !x.is_finite() {
        return None;
    }
    let r = (x * 1000.0).round() / 1000.0;
    if r == r.trunc() && r.abs() < 9.0e15 {
        Some(serde_json::Number::from(r as i64))
    } else {
        serde_json::Number::from_f64(r)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Int(i) => s.serialize_i64(*i),
            Json::Num(x) => match rounded(*x) {
                Some(n) => n.serialize(s),
                None => s.serialize_unit(),
            },
            Json::Str(v) => s.serialize_str(v),
            Json::Arr(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            // (a map, not serde_json::Map: the keys keep their order)
            Json::Obj(v) => {
                let mut map = s.serialize_map(Some(v.len()))?;
                for (k, x) in v {
                    map.serialize_entry(k, x)?;
                }
                map.end()
            }
        }
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        self.write(&mut s);
        f.write_str(&s)
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}
macro_rules! json_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Json {
            fn from(x: $t) -> Json {
                Json::Int(x as i64)
            }
        }
    )*};
}
json_from_int!(u64, usize, i64, u32);
impl From<f64> for Json {
    fn from(x: f64) -> Json {
        Json::Num(x)
    }
}
impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(o: Option<T>) -> Json {
        o.map_or(Json::Null, Into::into)
    }
}
impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Json {
        Json::Arr(v.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_values() {
        let v = Json::obj([
            ("a", Json::Int(-3)),
            ("b", Json::Num(1.5)),
            ("c", Json::Num(2.0)),
            ("d", Json::Num(f64::NAN)),
            ("e", Json::str("q\"\\\n\u{1}é")),
            ("f", Json::Arr(vec![Json::Null, Json::Bool(true)])),
            ("g", Json::obj(Vec::<(String, Json)>::new())),
            ("h", Json::Num(0.0004)),
            ("i", Json::Num(-0.25)),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"a":-3,"b":1.5,"c":2,"d":null,"e":"q\"\\\n\u0001é","f":[null,true],"g":{},"h":0,"i":-0.25}"#
        );
    }

    #[test]
    fn conversions_and_push() {
        let mut o = Json::obj([("x", Json::from(Some(3u64)))]);
        o.push("y", Json::from(None::<u64>));
        o.push("z", Json::from(vec![1u32, 2]));
        assert_eq!(o.to_string(), r#"{"x":3,"y":null,"z":[1,2]}"#);
    }
}
