//! Placing automerge objects and list elements in a document: the path from the root to any
//! object an operation touches, including objects that are no longer visible.
//!
//! Visible objects are found by one walk over the document ([`Layout`]); an object that is not
//! visible (deleted, overwritten, or lost a conflict) is placed through the operation that made
//! it. This avoids `ReadDoc::parents` on hidden list elements, where automerge 0.12's debug
//! assertions fire.

use std::collections::HashMap;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{ActorId, Automerge, ExpandedChange, ObjId, ObjType, ReadDoc, ValueRef, ROOT};

use super::ops::Seg;

/// An operation (or object, or list element) id as (counter, actor).
pub(crate) type OpKey = (u64, ActorId);

/// The object id for an operation id.
pub(crate) fn exid(key: &OpKey) -> ObjId {
    // The actor index is only a hint; automerge looks the actor up when it does not match.
    ObjId::Id(key.0, key.1.clone(), 0)
}

pub(crate) fn op_key(id: &ObjId) -> Option<OpKey> {
    match id {
        ObjId::Root => None,
        ObjId::Id(ctr, actor, _) => Some((*ctr, actor.clone())),
    }
}

pub(crate) fn obj_key(obj: &ObjectId) -> Option<OpKey> {
    match obj {
        ObjectId::Root => None,
        ObjectId::Id(o) => Some((o.counter(), o.actor().clone())),
    }
}

/// The ids of a decoded change's operations, in order.
pub(crate) fn op_ids(change: &ExpandedChange) -> impl Iterator<Item = OpKey> + '_ {
    let start = change.start_op.get();
    (0..change.operations.len() as u64).map(move |i| (start + i, change.actor_id.clone()))
}

/// A step of a path before the `new` flags are known.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Elem(OpKey, Option<usize>),
}

/// Where each visible object and list element of one document state is.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    objects: HashMap<OpKey, Vec<Step>>,
    elements: HashMap<OpKey, HashMap<OpKey, usize>>,
}

impl Layout {
    /// Walks every visible map and list of `doc` (not the characters of texts).
    pub(crate) fn of(doc: &Automerge) -> Self {
        let mut layout = Layout::default();
        let mut stack: Vec<(ObjId, ObjType, Vec<Step>)> = vec![(ROOT, ObjType::Map, Vec::new())];
        while let Some((obj, obj_type, path)) = stack.pop() {
            match obj_type {
                ObjType::Map | ObjType::Table => {
                    for item in doc.map_range(&obj, ..) {
                        if let ValueRef::Object(t) = item.value {
                            let id = item.id();
                            let mut p = path.clone();
                            p.push(Step::Key(item.key.to_string()));
                            if let Some(k) = op_key(&id) {
                                layout.objects.insert(k, p.clone());
                            }
                            stack.push((id, t, p));
                        }
                    }
                }
                ObjType::List => {
                    let Some(list) = op_key(&obj) else { continue };
                    let mut positions = HashMap::new();
                    for item in doc.list_range(&obj, ..) {
                        let id = item.id();
                        let Some(k) = op_key(&id) else { continue };
                        positions.insert(k.clone(), item.index);
                        if let ValueRef::Object(t) = item.value {
                            let mut p = path.clone();
                            p.push(Step::Elem(k.clone(), Some(item.index)));
                            layout.objects.insert(k, p.clone());
                            stack.push((id, t, p));
                        }
                    }
                    layout.elements.insert(list, positions);
                }
                ObjType::Text => {}
            }
        }
        layout
    }
}

/// Where an object was made: in which object, under which key or after which element.
#[derive(Debug, Clone)]
enum Origin {
    Map(Option<OpKey>, String),
    Elem(Option<OpKey>, OpKey),
}

/// Computes paths of objects and elements against one or more layouts (tried in order).
pub(crate) struct Placer<'a> {
    /// The document holding every operation asked about (for origins not seen in `origins`).
    doc: &'a Automerge,
    layouts: Vec<Layout>,
    origins: HashMap<OpKey, Origin>,
    cache: HashMap<OpKey, Vec<Step>>,
}

impl<'a> Placer<'a> {
    pub(crate) fn new(doc: &'a Automerge, layouts: Vec<Layout>) -> Self {
        Self {
            doc,
            layouts,
            origins: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// Remembers where the objects made by `change` were made.
    pub(crate) fn learn(&mut self, change: &ExpandedChange) {
        for (op, id) in change.operations.iter().zip(op_ids(change)) {
            if matches!(op.action, OpType::Make(_)) {
                self.origins.insert(id.clone(), origin_of(op, &id));
            }
        }
    }

    /// The position of element `elem` in `list`, in the first layout where it is visible.
    pub(crate) fn element_index(&self, list: &OpKey, elem: &OpKey) -> Option<usize> {
        self.layouts
            .iter()
            .find_map(|l| l.elements.get(list).and_then(|m| m.get(elem)).copied())
    }

    /// The path of `obj` (`None`: the root); `is_new` marks elements made by the batch.
    pub(crate) fn path(
        &mut self,
        obj: Option<&OpKey>,
        is_new: impl Fn(&OpKey) -> bool,
    ) -> Vec<Seg> {
        let Some(obj) = obj else { return Vec::new() };
        self.steps(obj, 0)
            .into_iter()
            .map(|s| match s {
                Step::Key(k) => Seg::Key(k),
                Step::Elem(id, index) => Seg::Elem {
                    new: is_new(&id),
                    id: format!("{}@{}", id.0, id.1),
                    index,
                },
            })
            .collect()
    }

    fn steps(&mut self, obj: &OpKey, depth: usize) -> Vec<Step> {
        if let Some(p) = self.cache.get(obj) {
            return p.clone();
        }
        let found = self
            .layouts
            .iter()
            .find_map(|l| l.objects.get(obj).cloned());
        let steps = match found {
            Some(p) => p,
            None if depth < 64 => match self.origin(obj) {
                Some(Origin::Map(parent, key)) => {
                    let mut p = self.parent_steps(parent.as_ref(), depth);
                    p.push(Step::Key(key));
                    p
                }
                Some(Origin::Elem(parent, elem)) => {
                    let index = parent.as_ref().and_then(|l| self.element_index(l, &elem));
                    let mut p = self.parent_steps(parent.as_ref(), depth);
                    p.push(Step::Elem(elem, index));
                    p
                }
                None => vec![Step::Key("?".into())],
            },
            None => vec![Step::Key("?".into())],
        };
        self.cache.insert(obj.clone(), steps.clone());
        steps
    }

    fn parent_steps(&mut self, parent: Option<&OpKey>, depth: usize) -> Vec<Step> {
        match parent {
            None => Vec::new(),
            Some(p) => self.steps(p, depth + 1),
        }
    }

    /// Where `obj` was made: known from a change we decoded, or looked up in the document.
    fn origin(&mut self, obj: &OpKey) -> Option<Origin> {
        if let Some(o) = self.origins.get(obj) {
            return Some(o.clone());
        }
        let hash = self.doc.hash_for_opid(&exid(obj))?;
        let change = self.doc.get_change_by_hash(&hash)?.decode();
        self.learn(&change);
        self.origins.get(obj).cloned()
    }
}

fn origin_of(op: &automerge::legacy::Op, id: &OpKey) -> Origin {
    let parent = obj_key(&op.obj);
    match &op.key {
        Key::Map(k) => Origin::Map(parent, k.to_string()),
        Key::Seq(elem) => {
            let elem = if op.insert {
                id.clone()
            } else {
                elem.as_opid()
                    .map(|o| (o.counter(), o.actor().clone()))
                    .unwrap_or_else(|| id.clone())
            };
            Origin::Elem(parent, elem)
        }
    }
}
