//! Path-aware, tolerant accessors that the typed views are built from.
//!
//! Every accessor reads either the current state or the state at given heads, accepts the
//! spellings other clients write (Text or scalar strings; int, uint or integral f64 for whole
//! numbers; JS `Date` timestamps for times) and turns anything else into a [`SchemaError`] that
//! names the field's path.

use std::collections::BTreeMap;

use automerge::{ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT};

use super::types::SchemaError;
use crate::ids::UserId;

/// One value found in a document, with the id of the object it is (when it is one) and its path.
pub(crate) struct Item<'a> {
    pub(crate) value: Value<'a>,
    pub(crate) id: ObjId,
    pub(crate) path: String,
}

/// A map or list object and its path.
#[derive(Clone)]
pub(crate) struct Node {
    pub(crate) obj: ObjId,
    pub(crate) path: String,
}

impl Node {
    pub(crate) fn root() -> Self {
        Node {
            obj: ROOT,
            path: String::new(),
        }
    }

    pub(crate) fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// Reads a document now (`heads == None`) or as at `heads`.
pub(crate) struct Reader<'a, D: ReadDoc> {
    doc: &'a D,
    heads: Option<&'a [ChangeHash]>,
}

/// A short name for what was found, used in [`SchemaError::WrongType`].
pub(crate) fn describe(value: &Value<'_>) -> String {
    match value {
        Value::Object(ObjType::Map) => "map",
        Value::Object(ObjType::Table) => "table",
        Value::Object(ObjType::List) => "list",
        Value::Object(ObjType::Text) => "text",
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Bytes(_) => "bytes",
            ScalarValue::Str(_) => "string",
            ScalarValue::Int(_) => "int",
            ScalarValue::Uint(_) => "uint",
            ScalarValue::F64(_) => "f64",
            ScalarValue::Counter(_) => "counter",
            ScalarValue::Timestamp(_) => "timestamp",
            ScalarValue::Boolean(_) => "boolean",
            ScalarValue::Unknown { .. } => "unknown scalar",
            ScalarValue::Null => "null",
        },
    }
    .to_string()
}

fn wrong(item: &Item<'_>, expected: &'static str) -> SchemaError {
    SchemaError::WrongType {
        path: item.path.clone(),
        expected,
        found: describe(&item.value),
    }
}

fn is_null(value: &Value<'_>) -> bool {
    matches!(value, Value::Scalar(s) if matches!(s.as_ref(), ScalarValue::Null))
}

impl<'a, D: ReadDoc> Reader<'a, D> {
    pub(crate) fn new(doc: &'a D, heads: Option<&'a [ChangeHash]>) -> Self {
        Reader { doc, heads }
    }

    /// The value at `prop` of `node`, or `None` when absent.
    pub(crate) fn item(
        &self,
        node: &Node,
        prop: impl Into<Prop>,
    ) -> Result<Option<Item<'a>>, SchemaError> {
        let prop = prop.into();
        let path = match &prop {
            Prop::Map(key) => node.child_path(key),
            Prop::Seq(i) => format!("{}[{i}]", node.path),
        };
        let found = match self.heads {
            Some(heads) => self.doc.get_at(&node.obj, prop, heads),
            None => self.doc.get(&node.obj, prop),
        }
        .map_err(|e| SchemaError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(found.map(|(value, id)| Item { value, id, path }))
    }

    /// Reads `key` with `f`; `Missing` when absent.
    pub(crate) fn req<T>(
        &self,
        node: &Node,
        key: &str,
        f: impl FnOnce(&Self, Item<'a>) -> Result<T, SchemaError>,
    ) -> Result<T, SchemaError> {
        match self.item(node, key)? {
            Some(item) => f(self, item),
            None => Err(SchemaError::Missing(node.child_path(key))),
        }
    }

    /// Reads `key` with `f`; `None` when absent or null.
    pub(crate) fn opt<T>(
        &self,
        node: &Node,
        key: &str,
        f: impl FnOnce(&Self, Item<'a>) -> Result<T, SchemaError>,
    ) -> Result<Option<T>, SchemaError> {
        match self.item(node, key)? {
            Some(item) if !is_null(&item.value) => f(self, item).map(Some),
            _ => Ok(None),
        }
    }

    /// A string: automerge Text or a scalar string.
    pub(crate) fn string(&self, item: Item<'a>) -> Result<String, SchemaError> {
        match &item.value {
            Value::Object(ObjType::Text) => {
                let text = match self.heads {
                    Some(heads) => self.doc.text_at(&item.id, heads),
                    None => self.doc.text(&item.id),
                };
                text.map_err(|e| SchemaError::Invalid {
                    path: item.path.clone(),
                    reason: e.to_string(),
                })
            }
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(s.to_string()),
                _ => Err(wrong(&item, "string")),
            },
            _ => Err(wrong(&item, "string")),
        }
    }

    /// A whole number: int, uint (up to i64::MAX), counter or an f64 with an integral value.
    pub(crate) fn int(&self, item: Item<'a>) -> Result<i64, SchemaError> {
        let Value::Scalar(s) = &item.value else {
            return Err(wrong(&item, "integer"));
        };
        match s.as_ref() {
            ScalarValue::Int(n) => Ok(*n),
            ScalarValue::Uint(n) => i64::try_from(*n).map_err(|_| SchemaError::Invalid {
                path: item.path.clone(),
                reason: format!("{n} does not fit in a signed 64-bit integer"),
            }),
            ScalarValue::Counter(c) => Ok(i64::from(c)),
            ScalarValue::F64(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                // Exact: |f| < 2^53, so the cast loses nothing.
                #[allow(clippy::cast_possible_truncation)]
                Ok(*f as i64)
            }
            ScalarValue::F64(f) if f.is_finite() => Err(SchemaError::Invalid {
                path: item.path.clone(),
                reason: format!("{f} is not a whole number"),
            }),
            _ => Err(wrong(&item, "integer")),
        }
    }

    /// A time in unix seconds: a whole number, or an automerge timestamp (JS `Date`, milliseconds).
    pub(crate) fn time(&self, item: Item<'a>) -> Result<i64, SchemaError> {
        if let Value::Scalar(s) = &item.value {
            if let ScalarValue::Timestamp(ms) = s.as_ref() {
                return Ok(ms.div_euclid(1000));
            }
        }
        self.int(item).map_err(|e| match e {
            SchemaError::WrongType { path, found, .. } => SchemaError::WrongType {
                path,
                expected: "unix seconds (integer or timestamp)",
                found,
            },
            other => other,
        })
    }

    /// A boolean.
    pub(crate) fn boolean(&self, item: Item<'a>) -> Result<bool, SchemaError> {
        match &item.value {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Boolean(b) => Ok(*b),
                _ => Err(wrong(&item, "boolean")),
            },
            _ => Err(wrong(&item, "boolean")),
        }
    }

    /// A map (or table) object.
    pub(crate) fn map(&self, item: Item<'a>) -> Result<Node, SchemaError> {
        match item.value {
            Value::Object(ObjType::Map | ObjType::Table) => Ok(Node {
                obj: item.id,
                path: item.path,
            }),
            _ => Err(wrong(&item, "map")),
        }
    }

    /// A list object.
    pub(crate) fn list(&self, item: Item<'a>) -> Result<Node, SchemaError> {
        match item.value {
            Value::Object(ObjType::List) => Ok(Node {
                obj: item.id,
                path: item.path,
            }),
            _ => Err(wrong(&item, "list")),
        }
    }

    /// A user id string.
    pub(crate) fn user(&self, item: Item<'a>) -> Result<UserId, SchemaError> {
        let path = item.path.clone();
        let s = self.string(item)?;
        UserId::new(s).map_err(|e| SchemaError::Invalid {
            path,
            reason: e.to_string(),
        })
    }

    /// A string parsed into one of the schema's enums.
    pub(crate) fn enumerated<T: std::str::FromStr>(
        &self,
        item: Item<'a>,
    ) -> Result<T, SchemaError> {
        let path = item.path.clone();
        let s = self.string(item)?;
        s.parse()
            .map_err(|_| SchemaError::UnknownValue { path, value: s })
    }

    /// The keys of a map node, sorted.
    pub(crate) fn keys(&self, node: &Node) -> Vec<String> {
        match self.heads {
            Some(heads) => self.doc.keys_at(&node.obj, heads).collect(),
            None => self.doc.keys(&node.obj).collect(),
        }
    }

    /// Every entry of a map node, sorted by key.
    pub(crate) fn entries(&self, node: &Node) -> Result<Vec<(String, Item<'a>)>, SchemaError> {
        let mut out = Vec::new();
        for key in self.keys(node) {
            if let Some(item) = self.item(node, key.as_str())? {
                out.push((key, item));
            }
        }
        Ok(out)
    }

    /// Every element of a list node, in order.
    pub(crate) fn elements(&self, node: &Node) -> Result<Vec<Item<'a>>, SchemaError> {
        let len = match self.heads {
            Some(heads) => self.doc.length_at(&node.obj, heads),
            None => self.doc.length(&node.obj),
        };
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            if let Some(item) = self.item(node, i)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// A map `userId -> T`, read with `f`; an absent map is empty.
    pub(crate) fn user_map<T>(
        &self,
        node: &Node,
        key: &str,
        mut f: impl FnMut(&Self, Item<'a>) -> Result<T, SchemaError>,
    ) -> Result<BTreeMap<UserId, T>, SchemaError> {
        let Some(map) = self.opt(node, key, Self::map)? else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for (k, item) in self.entries(&map)? {
            let user = UserId::new(k.clone()).map_err(|e| SchemaError::Invalid {
                path: map.child_path(&k),
                reason: e.to_string(),
            })?;
            out.insert(user, f(self, item)?);
        }
        Ok(out)
    }

    /// A set `{userId: true}`; keys whose value is `false` are left out, an absent map is empty.
    pub(crate) fn user_set(
        &self,
        node: &Node,
        key: &str,
    ) -> Result<std::collections::BTreeSet<UserId>, SchemaError> {
        Ok(self
            .user_map(node, key, Self::boolean)?
            .into_iter()
            .filter_map(|(user, member)| member.then_some(user))
            .collect())
    }

    /// A list of items read with `f`; an absent list is empty.
    pub(crate) fn list_of<T>(
        &self,
        node: &Node,
        key: &str,
        mut f: impl FnMut(&Self, Item<'a>) -> Result<T, SchemaError>,
    ) -> Result<Vec<T>, SchemaError> {
        let Some(list) = self.opt(node, key, Self::list)? else {
            return Ok(Vec::new());
        };
        self.elements(&list)?
            .into_iter()
            .map(|item| f(self, item))
            .collect()
    }

    /// The underlying document and heads, for rendering subtrees.
    pub(crate) fn doc(&self) -> (&'a D, Option<&'a [ChangeHash]>) {
        (self.doc, self.heads)
    }
}
