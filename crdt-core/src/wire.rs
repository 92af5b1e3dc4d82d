//! The automerge-repo network protocol, version "1": one CBOR map per WebSocket binary frame.
//!
//! This module owns the mapping between frames and [`Message`]; it does no I/O. It is checked against
//! the stock JavaScript client (`@automerge/automerge-repo` and `-network-websocket` 2.5.x) by
//! recorded fixtures in `tests/fixtures/js-frames` and by `tests/js/accept-frames.mjs`.
//!
//! Decoding is tolerant in the ways the JS client needs: the client encodes with `cbor-x`, which
//! writes `undefined` for absent optional values (`storageId: undefined`, `remove: undefined`),
//! writes `Date.now()` and other large integers as float64, and may tag byte arrays with CBOR
//! tag 64. Unknown fields are ignored and, as in JavaScript, the last of duplicate keys wins.
//! Identifiers (`senderId`, `documentId`, storage ids) stay plain strings here: deciding whether a
//! document id is valid is the server's job, and it answers a bad one with a message rather than
//! by dropping the frame.
//!
//! Encoding writes definite-length maps with text keys, byte strings (major type 2) for binary data
//! and counts and timestamps the way `cbor-x` writes JS numbers (integers below 2^32, float64
//! above), so the client decodes plain numbers, not `BigInt`s. Absent optional fields are omitted,
//! never written as `null`.

use std::collections::BTreeMap;

use ciborium::Value;

/// The only protocol version this codec speaks, as sent in `supportedProtocolVersions` and
/// `selectedProtocolVersion`.
pub const PROTOCOL_V1: &str = "1";

/// CBOR tag 64: a `Uint8Array` typed array, accepted wherever a byte string is expected.
const TAG_UINT8_ARRAY: u64 = 64;
/// CBOR tag 68: a `Uint8ClampedArray` typed array, accepted like tag 64.
const TAG_UINT8_CLAMPED_ARRAY: u64 = 68;
/// CBOR tag 55799: "self-described CBOR", a no-op wrapper some encoders put around a whole item.
const TAG_SELF_DESCRIBED: u64 = 55799;

/// Why a frame could not be decoded into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is not one well-formed CBOR item.
    #[error("frame is not valid CBOR: {0}")]
    NotCbor(String),
    /// The frame holds a CBOR item followed by more bytes.
    #[error("frame has {0} trailing bytes after the CBOR message")]
    TrailingBytes(usize),
    /// The frame is CBOR but not a map.
    #[error("message must be a CBOR map, found {0}")]
    NotAMap(&'static str),
    /// The map has no `type` field (or it is `null`/`undefined`).
    #[error("message has no `type` field")]
    MissingType,
    /// The `type` field is not a text string.
    #[error("message `type` must be text, found {0}")]
    TypeNotText(&'static str),
    /// The `type` field names a message this protocol does not have.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A required field is absent, `null` or `undefined`.
    #[error("`{message_type}` message is missing field `{field}`")]
    MissingField {
        /// The `type` of the message being decoded.
        message_type: &'static str,
        /// The missing field; nested fields are written as a path, e.g. `newHeads.<id>.heads`.
        field: String,
    },
    /// A field holds a value of the wrong kind.
    #[error("field `{field}` of `{message_type}` message must be {expected}, found {found}")]
    WrongType {
        /// The `type` of the message being decoded.
        message_type: &'static str,
        /// The offending field; nested fields are written as a path, e.g. `add[2]`.
        field: String,
        /// What the protocol requires there.
        expected: &'static str,
        /// What the frame holds there.
        found: &'static str,
    },
}

/// One message of the automerge-repo network protocol v1.
///
/// `join`, `peer`, `error` and `leave` belong to the WebSocket handshake; the others are the
/// repo messages exchanged once the handshake is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `join`: the connecting peer introduces itself.
    Join(JoinMessage),
    /// `peer`: the accepting peer answers a `join`.
    Peer(PeerMessage),
    /// `error`: a protocol or policy error; the JS client only logs it.
    Error(ErrorMessage),
    /// `leave`: an advisory "I am disconnecting" (documented by automerge-repo, sent by samod).
    Leave(LeaveMessage),
    /// `request`: the first sync message for a document, asking for `doc-unavailable` if the
    /// target does not have it.
    Request(RequestMessage),
    /// `sync`: an automerge sync message for a document.
    Sync(SyncMessage),
    /// `doc-unavailable`: the sender does not have the document (or may not share it).
    DocUnavailable(DocUnavailableMessage),
    /// `ephemeral`: application data about a document that is relayed but never stored.
    Ephemeral(EphemeralMessage),
    /// `remote-subscription-change`: change the storage ids whose heads the sender wants to hear about.
    RemoteSubscriptionChange(RemoteSubscriptionChangeMessage),
    /// `remote-heads-changed`: the heads another storage id has for a document.
    RemoteHeadsChanged(RemoteHeadsChangedMessage),
}

/// `join`, sent first by the connecting peer.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinMessage {
    /// The connecting peer's id.
    pub sender_id: String,
    /// Protocol versions the peer speaks; the JS client sends `["1"]`.
    pub supported_protocol_versions: Vec<String>,
    /// `peerMetadata`, what the JS client sends.
    pub peer_metadata: Option<PeerMetadata>,
    /// `metadata`, the name the protocol README uses; kept separately so both round-trip.
    pub metadata: Option<PeerMetadata>,
}

/// `peer`, the answer to `join`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerMessage {
    /// The answering peer's id.
    pub sender_id: String,
    /// The id of the peer that sent `join`.
    pub target_id: String,
    /// The chosen protocol version, [`PROTOCOL_V1`].
    pub selected_protocol_version: String,
    /// `peerMetadata`, what the JS client reads.
    pub peer_metadata: Option<PeerMetadata>,
    /// `metadata`, the name the protocol README uses.
    pub metadata: Option<PeerMetadata>,
}

/// `error`. The JS server adapter fills in `senderId` and `targetId`; the protocol README only
/// requires `message`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorMessage {
    /// The sending peer, if given.
    pub sender_id: Option<String>,
    /// The receiving peer, if given.
    pub target_id: Option<String>,
    /// A human-readable description.
    pub message: String,
}

/// `leave`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaveMessage {
    /// The departing peer.
    pub sender_id: String,
}

/// `request`: like `sync`, but the sender wants `doc-unavailable` if the target lacks the document.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMessage {
    /// The requesting peer.
    pub sender_id: String,
    /// The peer asked.
    pub target_id: String,
    /// The document, as sent (normally base58check); not validated here.
    pub document_id: String,
    /// The sender's first automerge sync message.
    pub data: Vec<u8>,
}

/// `sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncMessage {
    /// The sending peer.
    pub sender_id: String,
    /// The receiving peer.
    pub target_id: String,
    /// The document, as sent; not validated here.
    pub document_id: String,
    /// An automerge sync message.
    pub data: Vec<u8>,
}

/// `doc-unavailable`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocUnavailableMessage {
    /// The peer that does not have the document.
    pub sender_id: String,
    /// The peer that asked for it.
    pub target_id: String,
    /// The document, as sent; not validated here.
    pub document_id: String,
}

/// `ephemeral`.
#[derive(Debug, Clone, PartialEq)]
pub struct EphemeralMessage {
    /// The originating peer.
    pub sender_id: String,
    /// The receiving peer.
    pub target_id: String,
    /// The document the data is about; not validated here.
    pub document_id: String,
    /// The originator's session, random per process; with `count` it de-duplicates gossip.
    pub session_id: String,
    /// Sequence number within the session.
    pub count: u64,
    /// Opaque application payload (the JS client puts CBOR here).
    pub data: Vec<u8>,
}

/// `remote-subscription-change`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSubscriptionChangeMessage {
    /// The subscribing peer.
    pub sender_id: String,
    /// The peer asked to watch.
    pub target_id: String,
    /// Storage ids to start watching.
    pub add: Option<Vec<String>>,
    /// Storage ids to stop watching.
    pub remove: Option<Vec<String>>,
}

/// `remote-heads-changed`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteHeadsChangedMessage {
    /// The reporting peer.
    pub sender_id: String,
    /// The receiving peer.
    pub target_id: String,
    /// The document whose heads changed; not validated here.
    pub document_id: String,
    /// The new heads, per storage id.
    pub new_heads: BTreeMap<String, RemoteHeads>,
}

/// The heads one storage id has for a document, inside `remote-heads-changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// The heads, as the JS client writes them: base58check-encoded change hashes.
    pub heads: Vec<String>,
    /// When the heads were seen, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// The `peerMetadata`/`metadata` of `join` and `peer`, kept as the CBOR value it arrived as so
/// that fields this codec does not know survive a round trip. Within it, `undefined` reads as
/// `null`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerMetadata(pub Value);

impl PeerMetadata {
    /// The metadata automerge-repo peers send: `{storageId?, isEphemeral}`.
    pub fn new(storage_id: Option<&str>, is_ephemeral: bool) -> Self {
        let mut entries = Vec::with_capacity(2);
        if let Some(id) = storage_id {
            entries.push((text("storageId"), text(id)));
        }
        entries.push((text("isEphemeral"), Value::Bool(is_ephemeral)));
        Self(Value::Map(entries))
    }

    /// The raw CBOR value.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// `storageId`, if present and text: the id of the peer's persistent storage.
    pub fn storage_id(&self) -> Option<&str> {
        self.field("storageId").and_then(Value::as_text)
    }

    /// `isEphemeral`, if present and a boolean: whether the peer will not come back with this
    /// storage id (so its sync state need not be saved).
    pub fn is_ephemeral(&self) -> Option<bool> {
        self.field("isEphemeral").and_then(Value::as_bool)
    }

    fn field(&self, name: &str) -> Option<&Value> {
        self.0
            .as_map()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v)
    }
}

impl Message {
    /// Decodes one frame.
    pub fn decode(frame: &[u8]) -> Result<Self, WireError> {
        let mut rest = frame;
        let value: Value =
            ciborium::from_reader(&mut rest).map_err(|e| WireError::NotCbor(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes(rest.len()));
        }
        let value = match value {
            Value::Tag(TAG_SELF_DESCRIBED, inner) => *inner,
            other => other,
        };
        let Value::Map(entries) = value else {
            return Err(WireError::NotAMap(kind(&value)));
        };
        let type_name = match last_entry(&entries, "type") {
            None => return Err(WireError::MissingType),
            Some(Value::Text(t)) => t.as_str(),
            Some(other) => return Err(WireError::TypeNotText(kind(other))),
        };
        let message_type = MESSAGE_TYPES
            .iter()
            .copied()
            .find(|t| *t == type_name)
            .ok_or_else(|| WireError::UnknownType(type_name.to_owned()))?;
        let f = Fields {
            message_type,
            entries: &entries,
        };
        Ok(match message_type {
            "join" => Message::Join(JoinMessage {
                sender_id: f.text("senderId")?,
                supported_protocol_versions: f.text_array("supportedProtocolVersions")?,
                peer_metadata: f.metadata("peerMetadata"),
                metadata: f.metadata("metadata"),
            }),
            "peer" => Message::Peer(PeerMessage {
                sender_id: f.text("senderId")?,
                target_id: f.text("targetId")?,
                selected_protocol_version: f.text("selectedProtocolVersion")?,
                peer_metadata: f.metadata("peerMetadata"),
                metadata: f.metadata("metadata"),
            }),
            "error" => Message::Error(ErrorMessage {
                sender_id: f.opt_text("senderId")?,
                target_id: f.opt_text("targetId")?,
                message: f.text("message")?,
            }),
            "leave" => Message::Leave(LeaveMessage {
                sender_id: f.text("senderId")?,
            }),
            "request" => Message::Request(RequestMessage {
                sender_id: f.text("senderId")?,
                target_id: f.text("targetId")?,
                document_id: f.text("documentId")?,
                data: f.bytes("data")?,
            }),
            "sync" => Message::Sync(SyncMessage {
                sender_id: f.text("senderId")?,
                target_id: f.text("targetId")?,
                document_id: f.text("documentId")?,
                data: f.bytes("data")?,
            }),
            "doc-unavailable" => Message::DocUnavailable(DocUnavailableMessage {
                sender_id: f.text("senderId")?,
                target_id: f.text("targetId")?,
                document_id: f.text("documentId")?,
            }),
            "ephemeral" => Message::Ephemeral(EphemeralMessage {
                sender_id: f.text("senderId")?,
                target_id: f.text("targetId")?,
                document_id: f.text("documentId")?,
                session_id: f.text("sessionId")?,
                count: f.uint("count")?,
                data: f.bytes("data")?,
            }),
            "remote-subscription-change" => {
                Message::RemoteSubscriptionChange(RemoteSubscriptionChangeMessage {
                    sender_id: f.text("senderId")?,
                    target_id: f.text("targetId")?,
                    add: f.opt_text_array("add")?,
                    remove: f.opt_text_array("remove")?,
                })
            }
            "remote-heads-changed" => Message::RemoteHeadsChanged(RemoteHeadsChangedMessage {
                sender_id: f.text("senderId")?,
                target_id: f.text("targetId")?,
                document_id: f.text("documentId")?,
                new_heads: f.new_heads("newHeads")?,
            }),
            _ => unreachable!("every name in MESSAGE_TYPES has an arm"),
        })
    }

    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(&self.to_value(), &mut out)
            .expect("serializing a CBOR value into a Vec cannot fail");
        out
    }

    /// The message as a CBOR map, in the shape [`Message::encode`] writes.
    pub fn to_value(&self) -> Value {
        let mut m = MapBuilder::new(self.type_name());
        match self {
            Message::Join(j) => {
                m.text("senderId", &j.sender_id);
                m.text_array("supportedProtocolVersions", &j.supported_protocol_versions);
                m.metadata("peerMetadata", &j.peer_metadata);
                m.metadata("metadata", &j.metadata);
            }
            Message::Peer(p) => {
                m.text("senderId", &p.sender_id);
                m.text("targetId", &p.target_id);
                m.text("selectedProtocolVersion", &p.selected_protocol_version);
                m.metadata("peerMetadata", &p.peer_metadata);
                m.metadata("metadata", &p.metadata);
            }
            Message::Error(e) => {
                if let Some(s) = &e.sender_id {
                    m.text("senderId", s);
                }
                if let Some(t) = &e.target_id {
                    m.text("targetId", t);
                }
                m.text("message", &e.message);
            }
            Message::Leave(l) => m.text("senderId", &l.sender_id),
            Message::Request(r) => {
                m.text("senderId", &r.sender_id);
                m.text("targetId", &r.target_id);
                m.text("documentId", &r.document_id);
                m.bytes("data", &r.data);
            }
            Message::Sync(s) => {
                m.text("senderId", &s.sender_id);
                m.text("targetId", &s.target_id);
                m.text("documentId", &s.document_id);
                m.bytes("data", &s.data);
            }
            Message::DocUnavailable(d) => {
                m.text("senderId", &d.sender_id);
                m.text("targetId", &d.target_id);
                m.text("documentId", &d.document_id);
            }
            Message::Ephemeral(e) => {
                m.text("senderId", &e.sender_id);
                m.text("targetId", &e.target_id);
                m.text("documentId", &e.document_id);
                m.text("sessionId", &e.session_id);
                m.push("count", js_uint(e.count));
                m.bytes("data", &e.data);
            }
            Message::RemoteSubscriptionChange(r) => {
                m.text("senderId", &r.sender_id);
                m.text("targetId", &r.target_id);
                if let Some(add) = &r.add {
                    m.text_array("add", add);
                }
                if let Some(remove) = &r.remove {
                    m.text_array("remove", remove);
                }
            }
            Message::RemoteHeadsChanged(r) => {
                m.text("senderId", &r.sender_id);
                m.text("targetId", &r.target_id);
                m.text("documentId", &r.document_id);
                let heads = r
                    .new_heads
                    .iter()
                    .map(|(storage_id, h)| {
                        let entry = Value::Map(vec![
                            (text("heads"), text_array(&h.heads)),
                            (text("timestamp"), js_uint(h.timestamp)),
                        ]);
                        (text(storage_id), entry)
                    })
                    .collect();
                m.push("newHeads", Value::Map(heads));
            }
        }
        m.finish()
    }

    /// The wire name of the message type, e.g. `"doc-unavailable"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Join(_) => "join",
            Message::Peer(_) => "peer",
            Message::Error(_) => "error",
            Message::Leave(_) => "leave",
            Message::Request(_) => "request",
            Message::Sync(_) => "sync",
            Message::DocUnavailable(_) => "doc-unavailable",
            Message::Ephemeral(_) => "ephemeral",
            Message::RemoteSubscriptionChange(_) => "remote-subscription-change",
            Message::RemoteHeadsChanged(_) => "remote-heads-changed",
        }
    }

    /// The sender's peer id (absent only on an `error` without one).
    pub fn sender_id(&self) -> Option<&str> {
        Some(match self {
            Message::Join(m) => &m.sender_id,
            Message::Peer(m) => &m.sender_id,
            Message::Error(m) => return m.sender_id.as_deref(),
            Message::Leave(m) => &m.sender_id,
            Message::Request(m) => &m.sender_id,
            Message::Sync(m) => &m.sender_id,
            Message::DocUnavailable(m) => &m.sender_id,
            Message::Ephemeral(m) => &m.sender_id,
            Message::RemoteSubscriptionChange(m) => &m.sender_id,
            Message::RemoteHeadsChanged(m) => &m.sender_id,
        })
    }

    /// The target's peer id (absent on `join`, `leave` and an `error` without one).
    pub fn target_id(&self) -> Option<&str> {
        Some(match self {
            Message::Join(_) | Message::Leave(_) => return None,
            Message::Error(m) => return m.target_id.as_deref(),
            Message::Peer(m) => &m.target_id,
            Message::Request(m) => &m.target_id,
            Message::Sync(m) => &m.target_id,
            Message::DocUnavailable(m) => &m.target_id,
            Message::Ephemeral(m) => &m.target_id,
            Message::RemoteSubscriptionChange(m) => &m.target_id,
            Message::RemoteHeadsChanged(m) => &m.target_id,
        })
    }

    /// The document the message is about, for the document-scoped types.
    pub fn document_id(&self) -> Option<&str> {
        Some(match self {
            Message::Request(m) => &m.document_id,
            Message::Sync(m) => &m.document_id,
            Message::DocUnavailable(m) => &m.document_id,
            Message::Ephemeral(m) => &m.document_id,
            Message::RemoteHeadsChanged(m) => &m.document_id,
            Message::Join(_)
            | Message::Peer(_)
            | Message::Error(_)
            | Message::Leave(_)
            | Message::RemoteSubscriptionChange(_) => return None,
        })
    }
}

/// Every `type` [`Message::decode`] accepts.
pub const MESSAGE_TYPES: [&str; 10] = [
    "join",
    "peer",
    "error",
    "leave",
    "request",
    "sync",
    "doc-unavailable",
    "ephemeral",
    "remote-subscription-change",
    "remote-heads-changed",
];

macro_rules! impl_from_variant {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Message {
            fn from(m: $ty) -> Self {
                Message::$variant(m)
            }
        })*
    };
}

impl_from_variant!(
    Join(JoinMessage),
    Peer(PeerMessage),
    Error(ErrorMessage),
    Leave(LeaveMessage),
    Request(RequestMessage),
    Sync(SyncMessage),
    DocUnavailable(DocUnavailableMessage),
    Ephemeral(EphemeralMessage),
    RemoteSubscriptionChange(RemoteSubscriptionChangeMessage),
    RemoteHeadsChanged(RemoteHeadsChangedMessage),
);

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn text_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| text(s)).collect())
}

/// An unsigned integer as `cbor-x` writes a JS number: CBOR integers up to 2^32 - 1, float64 from
/// 2^32 to 2^53 (cbor-x decodes an 8-byte CBOR integer as a `BigInt`, which breaks arithmetic and
/// `JSON.stringify` in the client). Above 2^53 no JS number holds the value exactly, so it stays an
/// integer and round-trips.
fn js_uint(n: u64) -> Value {
    const MAX_SAFE: u64 = 1 << 53;
    if n > u64::from(u32::MAX) && n <= MAX_SAFE {
        Value::Float(n as f64)
    } else {
        Value::Integer(n.into())
    }
}

/// The value of the last entry with text key `name`; `null`/`undefined` count as absent.
fn last_entry<'a>(entries: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k.as_text() == Some(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// A short name for the kind of a CBOR value, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "integer",
        Value::Bytes(_) => "bytes",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Tag(..) => "tagged value",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        _ => "unsupported CBOR value",
    }
}

/// Reads a CBOR integer, or a float holding a whole number (as `cbor-x` writes large integers).
fn as_uint(v: &Value) -> Result<u64, &'static str> {
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| "negative integer"),
        // 2^64 is exactly representable; everything below it that is whole fits in u64.
        Value::Float(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0 => {
            Ok(*f as u64)
        }
        Value::Float(_) => Err("non-integral or negative float"),
        other => Err(kind(other)),
    }
}

/// Reads a byte string, also when wrapped in a typed-array tag.
fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::Tag(TAG_UINT8_ARRAY | TAG_UINT8_CLAMPED_ARRAY, inner) => match inner.as_ref() {
            Value::Bytes(b) => Some(b),
            _ => None,
        },
        _ => None,
    }
}

/// The fields of one message being decoded, with the errors phrased for that message type.
struct Fields<'a> {
    message_type: &'static str,
    entries: &'a [(Value, Value)],
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        last_entry(self.entries, name)
    }

    fn missing(&self, field: &str) -> WireError {
        WireError::MissingField {
            message_type: self.message_type,
            field: field.to_owned(),
        }
    }

    fn wrong(&self, field: &str, expected: &'static str, found: &'static str) -> WireError {
        WireError::WrongType {
            message_type: self.message_type,
            field: field.to_owned(),
            expected,
            found,
        }
    }

    fn text(&self, name: &str) -> Result<String, WireError> {
        self.opt_text(name)?.ok_or_else(|| self.missing(name))
    }

    fn opt_text(&self, name: &str) -> Result<Option<String>, WireError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(name, "text", kind(other))),
        }
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, WireError> {
        let v = self.get(name).ok_or_else(|| self.missing(name))?;
        as_bytes(v)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| self.wrong(name, "a byte string", kind(v)))
    }

    fn uint(&self, name: &str) -> Result<u64, WireError> {
        let v = self.get(name).ok_or_else(|| self.missing(name))?;
        as_uint(v).map_err(|found| self.wrong(name, "a non-negative integer", found))
    }

    fn text_array(&self, name: &str) -> Result<Vec<String>, WireError> {
        self.opt_text_array(name)?.ok_or_else(|| self.missing(name))
    }

    fn opt_text_array(&self, name: &str) -> Result<Option<Vec<String>>, WireError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => self.strings(name, v).map(Some),
        }
    }

    fn strings(&self, path: &str, v: &Value) -> Result<Vec<String>, WireError> {
        let Value::Array(items) = v else {
            return Err(self.wrong(path, "an array of text", kind(v)));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Text(s) => Ok(s.clone()),
                other => Err(self.wrong(&format!("{path}[{i}]"), "text", kind(other))),
            })
            .collect()
    }

    fn metadata(&self, name: &str) -> Option<PeerMetadata> {
        self.get(name).cloned().map(PeerMetadata)
    }

    fn new_heads(&self, name: &str) -> Result<BTreeMap<String, RemoteHeads>, WireError> {
        let v = self.get(name).ok_or_else(|| self.missing(name))?;
        let Value::Map(entries) = v else {
            return Err(self.wrong(name, "a map", kind(v)));
        };
        let mut out = BTreeMap::new();
        for (key, value) in entries {
            let Value::Text(storage_id) = key else {
                return Err(self.wrong(name, "a map with text keys", kind(key)));
            };
            let path = format!("{name}.{storage_id}");
            let Value::Map(inner) = value else {
                return Err(self.wrong(&path, "a map", kind(value)));
            };
            let heads_path = format!("{path}.heads");
            let heads = last_entry(inner, "heads").ok_or_else(|| self.missing(&heads_path))?;
            let ts_path = format!("{path}.timestamp");
            let ts = last_entry(inner, "timestamp").ok_or_else(|| self.missing(&ts_path))?;
            let heads = RemoteHeads {
                heads: self.strings(&heads_path, heads)?,
                timestamp: as_uint(ts)
                    .map_err(|found| self.wrong(&ts_path, "a non-negative integer", found))?,
            };
            out.insert(storage_id.clone(), heads);
        }
        Ok(out)
    }
}

/// Builds the CBOR map of one message, `type` first.
struct MapBuilder(Vec<(Value, Value)>);

impl MapBuilder {
    fn new(type_name: &str) -> Self {
        Self(vec![(text("type"), text(type_name))])
    }

    fn push(&mut self, key: &str, value: Value) {
        self.0.push((text(key), value));
    }

    fn text(&mut self, key: &str, value: &str) {
        self.push(key, text(value));
    }

    fn bytes(&mut self, key: &str, value: &[u8]) {
        self.push(key, Value::Bytes(value.to_vec()));
    }

    fn text_array(&mut self, key: &str, items: &[String]) {
        self.push(key, text_array(items));
    }

    fn metadata(&mut self, key: &str, value: &Option<PeerMetadata>) {
        if let Some(m) = value {
            self.push(key, m.0.clone());
        }
    }

    fn finish(self) -> Value {
        Value::Map(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut frame = Message::Leave(LeaveMessage {
            sender_id: "p".into(),
        })
        .encode();
        frame.extend_from_slice(&[0, 0]);
        assert_eq!(Message::decode(&frame), Err(WireError::TrailingBytes(2)));
    }

    #[test]
    fn self_described_tag_is_unwrapped() {
        let inner = Message::Leave(LeaveMessage {
            sender_id: "p".into(),
        })
        .to_value();
        let frame = cbor(&Value::Tag(TAG_SELF_DESCRIBED, Box::new(inner)));
        assert!(matches!(Message::decode(&frame), Ok(Message::Leave(_))));
    }

    #[test]
    fn metadata_accessors() {
        let m = PeerMetadata::new(Some("s1"), false);
        assert_eq!(m.storage_id(), Some("s1"));
        assert_eq!(m.is_ephemeral(), Some(false));
        let m = PeerMetadata::new(None, true);
        assert_eq!(m.storage_id(), None);
        assert_eq!(m.is_ephemeral(), Some(true));
        assert_eq!(PeerMetadata(Value::Text("x".into())).storage_id(), None);
    }

    #[test]
    fn large_integers_are_written_as_js_numbers() {
        assert_eq!(js_uint(7), Value::Integer(7.into()));
        assert_eq!(js_uint(u32::MAX.into()), Value::Integer(u32::MAX.into()));
        assert_eq!(js_uint(1 << 32), Value::Float(4_294_967_296.0));
        assert_eq!(js_uint(1_764_288_000_000), Value::Float(1.764288e12));
        assert_eq!(js_uint(1 << 53), Value::Float(9_007_199_254_740_992.0));
        assert_eq!(
            js_uint((1 << 53) + 1),
            Value::Integer(((1u64 << 53) + 1).into())
        );
        for n in [0, 1 << 32, (1 << 53) - 1, 1 << 53, (1 << 53) + 1, u64::MAX] {
            assert_eq!(as_uint(&js_uint(n)), Ok(n));
        }
    }

    #[test]
    fn floats_read_as_integers_only_when_whole() {
        assert_eq!(as_uint(&Value::Float(3.0)), Ok(3));
        assert_eq!(as_uint(&Value::Float(1.7e12)), Ok(1_700_000_000_000));
        assert!(as_uint(&Value::Float(3.5)).is_err());
        assert!(as_uint(&Value::Float(-1.0)).is_err());
        assert!(as_uint(&Value::Float(f64::NAN)).is_err());
        assert!(as_uint(&Value::Float(f64::INFINITY)).is_err());
        assert!(as_uint(&Value::Float(1.8446744073709552e19)).is_err());
    }
}
