//! Rendering any automerge document (or subtree) as JSON, now or as at given heads.
//!
//! Deterministic: map keys come out sorted, conflicts show automerge's winning value (the same
//! on every replica). Text renders as a string, counters and timestamps as numbers (timestamps
//! keep the stored milliseconds), bytes as a lowercase hex string, null and values of unknown
//! scalar types as `null`, non-finite floats as `null`.

use automerge::{ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde_json::{Map, Number, Value as Json};

/// The whole document as JSON.
pub fn to_json(doc: &impl ReadDoc) -> Json {
    object_to_json(doc, &ROOT, None)
}

/// The whole document as JSON, as at `heads`.
pub fn to_json_at(doc: &impl ReadDoc, heads: &[ChangeHash]) -> Json {
    object_to_json(doc, &ROOT, Some(heads))
}

/// One object (map, table, list or text) as JSON, now or as at `heads`.
pub fn object_to_json<D: ReadDoc>(doc: &D, obj: &ObjId, heads: Option<&[ChangeHash]>) -> Json {
    let obj_type = match doc.object_type(obj) {
        Ok(t) => t,
        Err(_) => return Json::Null,
    };
    match obj_type {
        ObjType::Map | ObjType::Table => {
            let keys: Vec<String> = match heads {
                Some(h) => doc.keys_at(obj, h).collect(),
                None => doc.keys(obj).collect(),
            };
            let mut out = Map::new();
            for key in keys {
                let got = match heads {
                    Some(h) => doc.get_at(obj, key.as_str(), h),
                    None => doc.get(obj, key.as_str()),
                };
                if let Ok(Some((value, id))) = got {
                    out.insert(key, item_to_json(doc, heads, &value, &id));
                }
            }
            Json::Object(out)
        }
        ObjType::List => {
            let len = match heads {
                Some(h) => doc.length_at(obj, h),
                None => doc.length(obj),
            };
            let mut out = Vec::with_capacity(len);
            for i in 0..len {
                let got = match heads {
                    Some(h) => doc.get_at(obj, i, h),
                    None => doc.get(obj, i),
                };
                if let Ok(Some((value, id))) = got {
                    out.push(item_to_json(doc, heads, &value, &id));
                }
            }
            Json::Array(out)
        }
        ObjType::Text => {
            let text = match heads {
                Some(h) => doc.text_at(obj, h),
                None => doc.text(obj),
            };
            text.map(Json::String).unwrap_or(Json::Null)
        }
    }
}

/// A value found at some key or index, given the id `get` returned with it.
pub(crate) fn item_to_json<D: ReadDoc>(
    doc: &D,
    heads: Option<&[ChangeHash]>,
    value: &Value<'_>,
    id: &ObjId,
) -> Json {
    match value {
        Value::Object(_) => object_to_json(doc, id, heads),
        Value::Scalar(s) => scalar_to_json(s),
    }
}

/// One scalar as JSON.
pub fn scalar_to_json(value: &ScalarValue) -> Json {
    match value {
        ScalarValue::Bytes(b) => Json::String(hex::encode(b)),
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Int(n) | ScalarValue::Timestamp(n) => Json::Number((*n).into()),
        ScalarValue::Uint(n) => Json::Number((*n).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        ScalarValue::Counter(c) => Json::Number(i64::from(c).into()),
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Unknown { .. } | ScalarValue::Null => Json::Null,
    }
}
