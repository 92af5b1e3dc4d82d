//! `process` documents: one per district and fiscal year, written by the admin: the budget
//! ceiling, the zones and their ceilings, the phase and the prioritization criteria.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjType, ReadDoc, ROOT};
use serde::Serialize;

use super::header::{write_header, DocumentHeader, NewDocument};
use super::read::{Item, Node, Reader};
use super::types::{DocType, ProcessPhase, SchemaError};
use crate::ids::Ubigeo;

/// One prioritization criterion (`criteria` [ {name, weight} ]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Criterion {
    /// `name`, e.g. "Población en situación de pobreza".
    pub name: String,
    /// `weight` in percent (the weights of a process add up to 100).
    pub weight: i64,
}

impl Criterion {
    /// A criterion.
    pub fn new(name: impl Into<String>, weight: i64) -> Self {
        Criterion {
            name: name.into(),
            weight,
        }
    }

    fn read<D: ReadDoc>(r: &Reader<'_, D>, item: Item<'_>) -> Result<Self, SchemaError> {
        let node = r.map(item)?;
        Ok(Criterion {
            name: r.req(&node, "name", Reader::string)?,
            weight: r.req(&node, "weight", Reader::int)?,
        })
    }
}

/// A new process document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProcess {
    pub district: Ubigeo,
    pub process_year: u16,
    /// `ceiling`: the district's budget ceiling in céntimos.
    pub ceiling: i64,
    /// `zones` {zone: ceiling in céntimos}; empty when the ordinance sets no zone ceilings.
    pub zones: BTreeMap<String, i64>,
    pub phase: ProcessPhase,
    pub criteria: Vec<Criterion>,
}

impl NewDocument for NewProcess {
    fn doc_type(&self) -> DocType {
        DocType::Process
    }

    fn write_into<T: Transactable>(&self, tx: &mut T) -> Result<(), AutomergeError> {
        write_header(tx, DocType::Process, self.district, self.process_year)?;
        tx.put(ROOT, "ceiling", self.ceiling)?;
        let zones = tx.put_object(ROOT, "zones", ObjType::Map)?;
        for (zone, ceiling) in &self.zones {
            tx.put(&zones, zone.as_str(), *ceiling)?;
        }
        tx.put(ROOT, "phase", self.phase.as_str())?;
        let criteria = tx.put_object(ROOT, "criteria", ObjType::List)?;
        for (i, c) in self.criteria.iter().enumerate() {
            let obj = tx.insert_object(&criteria, i, ObjType::Map)?;
            tx.put(&obj, "name", c.name.as_str())?;
            tx.put(&obj, "weight", c.weight)?;
        }
        Ok(())
    }
}

/// A `process` document as read. Required: the header, `ceiling`, `phase`; optional: `zones`,
/// `criteria`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(flatten)]
    pub header: DocumentHeader,
    /// Céntimos.
    pub ceiling: i64,
    /// zone → ceiling in céntimos.
    pub zones: BTreeMap<String, i64>,
    pub phase: ProcessPhase,
    pub criteria: Vec<Criterion>,
}

super::impl_read!(Process);

impl Process {
    pub(crate) fn read_from<D: ReadDoc>(r: &Reader<'_, D>) -> Result<Self, SchemaError> {
        let header = DocumentHeader::read_expecting(r, DocType::Process)?;
        let root = Node::root();
        let zones = match r.opt(&root, "zones", Reader::map)? {
            None => BTreeMap::new(),
            Some(node) => r
                .entries(&node)?
                .into_iter()
                .map(|(zone, item)| Ok((zone, r.int(item)?)))
                .collect::<Result<_, SchemaError>>()?,
        };
        Ok(Process {
            header,
            ceiling: r.req(&root, "ceiling", Reader::int)?,
            zones,
            phase: r.req(&root, "phase", Reader::enumerated)?,
            criteria: r.list_of(&root, "criteria", Criterion::read)?,
        })
    }

    /// The ceiling of `zone`, if the process sets one.
    pub fn zone_ceiling(&self, zone: &str) -> Option<i64> {
        self.zones.get(zone).copied()
    }
}
