//! A batch of automerge changes resolved into [`PlacedOp`]s: one per operation, placed at its path
//! from the document root, so the rules can judge writes by where they land.
//!
//! They are read from the operations themselves (not from a diff of two states), so a write
//! that is invisible today (it lost a conflict, or landed in a deleted object) is still judged: it
//! could become visible later when the winning value is removed.

use std::collections::{HashMap, HashSet};
use std::fmt;

use automerge::legacy::{Key, OpType};
use automerge::{
    Automerge, Change, ChangeHash, ExpandedChange, ObjType, ReadDoc, ScalarValue, Value, ROOT,
};

use super::place::{exid, obj_key, op_ids, op_key, Layout, OpKey, Placer};

/// One step of a path from the document root.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    /// A key of a map.
    Key(String),
    /// An element of a list.
    Elem {
        /// The element's id (`counter@actor`); for an object element, the object's id.
        id: String,
        /// Its position in the merged document, or else before the batch (for messages only;
        /// `None` when it is visible in neither).
        index: Option<usize>,
        /// Whether the element was inserted by the batch being judged.
        new: bool,
    },
}

impl Seg {
    /// The map key, if this step is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Seg::Key(k) => Some(k),
            Seg::Elem { .. } => None,
        }
    }
}

/// Renders a path as `comments/3/text`.
pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg {
            Seg::Key(k) => out.push_str(k),
            Seg::Elem { index: Some(i), .. } => out.push_str(&i.to_string()),
            Seg::Elem { index: None, .. } => out.push('?'),
        }
    }
    out
}

/// A value written by an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// A scalar.
    Scalar(ScalarValue),
    /// A Text object, with its content in the merged document.
    Text(String),
    /// A new map.
    Map,
    /// A new list.
    List,
}

impl Written {
    /// The value as a string, if it is a scalar string or Text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Written::Scalar(s) => s.as_str(),
            Written::Text(t) => Some(t),
            Written::Map | Written::List => None,
        }
    }

    /// Whether this is a new map or list (a container).
    pub fn is_container(&self) -> bool {
        matches!(self, Written::Map | Written::List)
    }
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Written::Scalar(s) => match s.as_str() {
                Some(s) => f.write_str(s),
                None => write!(f, "{s}"),
            },
            Written::Text(t) => f.write_str(t),
            Written::Map => f.write_str("{}"),
            Written::List => f.write_str("[]"),
        }
    }
}

/// What an operation does at its path.
#[derive(Debug, Clone, PartialEq)]
pub enum OpAction {
    /// Sets a map key or overwrites a list element.
    Set(Written),
    /// Inserts a new list element.
    Insert(Written),
    /// Deletes a map key or a list element.
    Delete,
    /// Increments a counter.
    Increment,
    /// Splices, deletes or marks characters of the existing Text object at the path.
    EditText,
}

/// One operation of a batch, placed in the document.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedOp {
    /// Where it lands, from the root; for [`OpAction::EditText`] the path of the Text object.
    pub path: Vec<Seg>,
    /// What it does there.
    pub action: OpAction,
    /// For writes of a root key: the values visible before this operation that it overwrote.
    pub replaced: Vec<Written>,
    /// For writes of a root key: values visible before this operation that it did *not*
    /// overwrite (it was made concurrently with them, so the key now holds a conflict).
    pub concurrent: Vec<Written>,
}

impl PlacedOp {
    /// A placed operation without root-key bookkeeping, handy for tables.
    pub fn new(path: Vec<Seg>, action: OpAction) -> Self {
        Self {
            path,
            action,
            replaced: Vec::new(),
            concurrent: Vec::new(),
        }
    }

    /// The root key the operation falls under.
    pub fn root_key(&self) -> &str {
        self.path.first().and_then(Seg::key).unwrap_or("")
    }

    /// The path as `comments/3/text`.
    pub fn display_path(&self) -> String {
        display_path(&self.path)
    }
}

/// Orders changes so that every change comes after its dependencies within the set, breaking ties
/// by hash, so the result does not depend on the order the changes arrived in.
pub fn causal_order(mut changes: Vec<Change>) -> Vec<Change> {
    use std::collections::{BTreeSet, HashMap as Map};
    changes.sort_by_key(Change::hash);
    let index: Map<ChangeHash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let mut waiting = vec![0usize; changes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, c) in changes.iter().enumerate() {
        for d in c.deps() {
            if let Some(&j) = index.get(d) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..changes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(changes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in &dependents[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.insert(k);
            }
        }
    }
    let mut slots: Vec<Option<Change>> = changes.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Resolves the operations of `changes` (already applied to `after`, absent from `before`, in
/// causal order) into placed operations.
pub(crate) fn extract(before: &Automerge, after: &Automerge, changes: &[Change]) -> Vec<PlacedOp> {
    let decoded: Vec<ExpandedChange> = changes.iter().map(Change::decode).collect();

    // Objects and list elements this batch brings into being.
    let mut created: HashSet<OpKey> = HashSet::new();
    let mut placer = Placer::new(after, vec![Layout::of(after), Layout::of(before)]);
    for c in &decoded {
        placer.learn(c);
        for (op, id) in c.operations.iter().zip(op_ids(c)) {
            if op.insert || matches!(op.action, OpType::Make(_)) {
                created.insert(id);
            }
        }
    }
    let is_new = |k: &OpKey| created.contains(k);

    let mut roots = RootTracker::new(before);
    let mut text_seen: HashSet<OpKey> = HashSet::new();
    let mut placed = Vec::new();
    for c in &decoded {
        for (op, id) in c.operations.iter().zip(op_ids(c)) {
            let obj = obj_key(&op.obj);
            let obj_type = match &obj {
                None => ObjType::Map,
                Some(k) => after.object_type(exid(k)).unwrap_or(ObjType::Map),
            };
            if let (ObjType::Text, Some(text)) = (obj_type, &obj) {
                // Characters of a Text object: one entry per object. A Text object made by this
                // batch is judged by the operation that made it.
                if !created.contains(text) && text_seen.insert(text.clone()) {
                    placed.push(PlacedOp::new(
                        placer.path(Some(text), is_new),
                        OpAction::EditText,
                    ));
                }
                continue;
            }
            let written = match &op.action {
                OpType::Make(ObjType::Text) => {
                    Some(Written::Text(after.text(exid(&id)).unwrap_or_default()))
                }
                OpType::Make(ObjType::List) => Some(Written::List),
                OpType::Make(ObjType::Map | ObjType::Table) => Some(Written::Map),
                OpType::Put(v) => Some(Written::Scalar(v.clone())),
                _ => None,
            };
            let action = match (&op.action, written) {
                (_, Some(w)) if op.insert => OpAction::Insert(w),
                (_, Some(w)) => OpAction::Set(w),
                (OpType::Delete, _) => OpAction::Delete,
                (OpType::Increment(_), _) => OpAction::Increment,
                _ => OpAction::EditText,
            };
            let mut path = placer.path(obj.as_ref(), is_new);
            match &op.key {
                Key::Map(k) => path.push(Seg::Key(k.to_string())),
                Key::Seq(elem) => {
                    let elem_key = if op.insert {
                        id.clone()
                    } else {
                        match elem.as_opid() {
                            Some(o) => (o.counter(), o.actor().clone()),
                            None => continue, // only inserts may refer to the list head
                        }
                    };
                    path.push(Seg::Elem {
                        id: format!("{}@{}", elem_key.0, elem_key.1),
                        index: obj
                            .as_ref()
                            .and_then(|list| placer.element_index(list, &elem_key)),
                        new: created.contains(&elem_key),
                    });
                }
            }
            let mut entry = PlacedOp::new(path, action);
            if let (None, Key::Map(k)) = (&obj, &op.key) {
                if entry.action != OpAction::Increment {
                    let pred: HashSet<OpKey> = op
                        .pred
                        .iter()
                        .map(|p| (p.counter(), p.actor().clone()))
                        .collect();
                    let value = match &entry.action {
                        OpAction::Set(w) => Some(w.clone()),
                        _ => None,
                    };
                    (entry.replaced, entry.concurrent) = roots.write(k, &pred, id.clone(), value);
                }
            }
            placed.push(entry);
        }
    }
    placed
}

/// Tracks, for each root key, which values are visible as the batch's operations are replayed,
/// so each write knows what it overwrote and what it was concurrent with.
struct RootTracker<'a> {
    before: &'a Automerge,
    live: HashMap<String, Vec<(OpKey, Written)>>,
}

impl<'a> RootTracker<'a> {
    fn new(before: &'a Automerge) -> Self {
        Self {
            before,
            live: HashMap::new(),
        }
    }

    fn write(
        &mut self,
        key: &str,
        pred: &HashSet<OpKey>,
        id: OpKey,
        value: Option<Written>,
    ) -> (Vec<Written>, Vec<Written>) {
        let before = self.before;
        let live = self
            .live
            .entry(key.to_string())
            .or_insert_with(|| visible_values(before, key));
        let (replaced, kept): (Vec<_>, Vec<_>) =
            live.drain(..).partition(|(k, _)| pred.contains(k));
        let concurrent: Vec<Written> = kept.iter().map(|(_, w)| w.clone()).collect();
        *live = kept;
        if let Some(v) = value {
            live.push((id, v));
        }
        (replaced.into_iter().map(|(_, w)| w).collect(), concurrent)
    }
}

fn visible_values(doc: &Automerge, key: &str) -> Vec<(OpKey, Written)> {
    doc.get_all(ROOT, key)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(value, id)| {
            let written = match value {
                Value::Scalar(s) => Written::Scalar(s.into_owned()),
                Value::Object(ObjType::Text) => Written::Text(doc.text(&id).unwrap_or_default()),
                Value::Object(ObjType::List) => Written::List,
                Value::Object(_) => Written::Map,
            };
            Some((op_key(&id)?, written))
        })
        .collect()
}
