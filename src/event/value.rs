//! Attribute values: the OpenTelemetry `AnyValue` shape (scalars, byte strings, arrays and
//! maps, nested to any depth).

/// One attribute: a key and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: Value,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<Value>) -> KeyValue {
        KeyValue { key: key.into(), value: value.into() }
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Empty,
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<KeyValue>),
}

impl Value {
    /// The value as text: strings as they are, scalars in their usual form, bytes as lower-case
    /// hex, arrays and maps as JSON. This is the form sealed segments store in their
    /// `Map<Utf8, Utf8>` attribute columns.
    pub fn to_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Empty => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Bytes(b) => hex::encode(b),
            Value::Array(_) | Value::Map(_) => self.to_json().to_string(),
        }
    }

    /// The value as JSON (bytes as hex strings, maps as objects).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Empty => J::Null,
            Value::Str(s) => J::String(s.clone()),
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Double(d) => serde_json::Number::from_f64(*d).map(J::Number).unwrap_or(J::Null),
            Value::Bytes(b) => J::String(hex::encode(b)),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => attrs_to_json(m),
        }
    }

    fn size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(a) => a.iter().map(Value::size).sum(),
            Value::Map(m) => attrs_size(m),
            _ => 8,
        }
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

/// A list of attributes as a JSON object (a repeated key keeps its last value).
pub fn attrs_to_json(attrs: &[KeyValue]) -> serde_json::Value {
    serde_json::Value::Object(attrs.iter().map(|kv| (kv.key.clone(), kv.value.to_json())).collect())
}

/// The first value of `key` in a list of attributes.
pub fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

pub(crate) fn attrs_size(attrs: &[KeyValue]) -> usize {
    attrs.iter().map(|kv| kv.key.len() + kv.value.size()).sum()
}
