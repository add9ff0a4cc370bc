//! A small JSON-schema validator for tool arguments: `type`, `required`, `properties`,
//! `additionalProperties: false`, `enum`, `items`, `minimum`/`maximum`, `maxLength`.
//! That is the subset our tool definitions use; anything else is accepted.

use serde_json::Value;

/// Largest output schema accepted, serialized.
pub const MAX_OUTPUT_SCHEMA_BYTES: usize = 16 * 1024;

/// Whether `schema` can be an output schema: a JSON object of reasonable size whose
/// `type`, when present, is a string or a list of strings.
pub fn check_output_schema(schema: &Value) -> Result<(), String> {
    if !schema.is_object() {
        return Err("must be a JSON schema object".into());
    }
    if schema.to_string().len() > MAX_OUTPUT_SCHEMA_BYTES {
        return Err(format!("must be at most {MAX_OUTPUT_SCHEMA_BYTES} bytes"));
    }
    match schema.get("type") {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(ts)) if ts.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err("type must be a string or a list of strings".into()),
    }
}

/// `Ok` when `v` fits `schema`; otherwise the first problem, with its JSON path.
pub fn validate(schema: &Value, v: &Value) -> Result<(), String> {
    check(schema, v, "$")
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    match schema.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => {
            return Err(format!("{path}: expected {t}"));
        }
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)) => {
            return Err(format!("{path}: has the wrong type"));
        }
        _ => {}
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        return Err(format!(
            "{path}: must be one of {}",
            Value::from(options.clone())
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!("{path}: must be >= {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!("{path}: must be <= {max}"));
        }
    }
    if let (Some(s), Some(max)) = (v.as_str(), schema.get("maxLength").and_then(Value::as_u64))
        && s.chars().count() as u64 > max
    {
        return Err(format!("{path}: longer than {max} characters"));
    }
    if let Some(obj) = v.as_object() {
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for k in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(k) {
                    return Err(format!("{path}: missing required property '{k}'"));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, val, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}: unknown property '{k}'"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::json;

    #[test]
    fn checks_the_subset_tools_use() {
        let s = json!({"type": "object", "required": ["a"], "additionalProperties": false,
            "properties": {"a": {"type": "string", "enum": ["x", "y"]},
                           "n": {"type": "integer", "minimum": 1},
                           "l": {"type": "array", "items": {"type": "number"}}}});
        assert!(validate(&s, &json!({"a": "x", "n": 2, "l": [1, 2.5]})).is_ok());
        assert!(validate(&s, &json!({})).is_err_and(|e| e.contains("'a'")));
        assert!(validate(&s, &json!({"a": "z"})).is_err());
        assert!(validate(&s, &json!({"a": "x", "n": 0})).is_err());
        assert!(validate(&s, &json!({"a": "x", "n": 1.5})).is_err());
        assert!(validate(&s, &json!({"a": "x", "l": ["s"]})).is_err_and(|e| e.contains("l[0]")));
        assert!(validate(&s, &json!({"a": "x", "b": 1})).is_err());
        assert!(validate(&s, &json!([1])).is_err());
    }
}
