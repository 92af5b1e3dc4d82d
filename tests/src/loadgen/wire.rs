//! The slice of the automerge-repo v1 network protocol a phone uses, over the workspace codec
//! (`crdt_core::wire`): CBOR maps in binary WebSocket frames.

use anyhow::{anyhow, Result};
use crdt_core::wire::{
    DocUnavailableMessage, ErrorMessage, JoinMessage, Message, PeerMessage, PeerMetadata,
    RequestMessage, SyncMessage, PROTOCOL_V1,
};

/// One protocol message, as far as a phone cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Join {
        sender_id: String,
        storage_id: Option<String>,
        is_ephemeral: bool,
    },
    Peer {
        sender_id: String,
        target_id: String,
        storage_id: Option<String>,
    },
    Request {
        sender_id: String,
        target_id: String,
        document_id: String,
        data: Vec<u8>,
    },
    Sync {
        sender_id: String,
        target_id: String,
        document_id: String,
        data: Vec<u8>,
    },
    DocUnavailable {
        sender_id: String,
        target_id: String,
        document_id: String,
    },
    Error {
        message: String,
    },
    /// Anything else (`ephemeral`, `remote-heads-changed`, …): its `type`.
    Other(&'static str),
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let m: Message = match self.clone() {
            Msg::Join {
                sender_id,
                storage_id,
                is_ephemeral,
            } => Message::Join(JoinMessage {
                sender_id,
                supported_protocol_versions: vec![PROTOCOL_V1.to_string()],
                peer_metadata: Some(PeerMetadata::new(storage_id.as_deref(), is_ephemeral)),
                metadata: None,
            }),
            Msg::Peer {
                sender_id,
                target_id,
                storage_id,
            } => Message::Peer(PeerMessage {
                sender_id,
                target_id,
                selected_protocol_version: PROTOCOL_V1.to_string(),
                peer_metadata: Some(PeerMetadata::new(storage_id.as_deref(), false)),
                metadata: None,
            }),
            Msg::Request {
                sender_id,
                target_id,
                document_id,
                data,
            } => Message::Request(RequestMessage {
                sender_id,
                target_id,
                document_id,
                data,
            }),
            Msg::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            } => Message::Sync(SyncMessage {
                sender_id,
                target_id,
                document_id,
                data,
            }),
            Msg::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            } => Message::DocUnavailable(DocUnavailableMessage {
                sender_id,
                target_id,
                document_id,
            }),
            Msg::Error { message } => Message::Error(ErrorMessage {
                sender_id: None,
                target_id: None,
                message,
            }),
            Msg::Other(kind) => panic!("the load generator never sends `{kind}`"),
        };
        m.encode()
    }

    pub fn decode(bytes: &[u8]) -> Result<Msg> {
        let m = Message::decode(bytes).map_err(|e| anyhow!("undecodable frame: {e}"))?;
        let kind = m.type_name();
        Ok(match m {
            Message::Join(j) => Msg::Join {
                storage_id: j
                    .peer_metadata
                    .as_ref()
                    .or(j.metadata.as_ref())
                    .and_then(|p| p.storage_id().map(str::to_string)),
                is_ephemeral: j
                    .peer_metadata
                    .as_ref()
                    .or(j.metadata.as_ref())
                    .and_then(PeerMetadata::is_ephemeral)
                    .unwrap_or(false),
                sender_id: j.sender_id,
            },
            Message::Peer(p) => Msg::Peer {
                storage_id: p
                    .peer_metadata
                    .as_ref()
                    .or(p.metadata.as_ref())
                    .and_then(|m| m.storage_id().map(str::to_string)),
                sender_id: p.sender_id,
                target_id: p.target_id,
            },
            Message::Request(r) => Msg::Request {
                sender_id: r.sender_id,
                target_id: r.target_id,
                document_id: r.document_id,
                data: r.data,
            },
            Message::Sync(s) => Msg::Sync {
                sender_id: s.sender_id,
                target_id: s.target_id,
                document_id: s.document_id,
                data: s.data,
            },
            Message::DocUnavailable(d) => Msg::DocUnavailable {
                sender_id: d.sender_id,
                target_id: d.target_id,
                document_id: d.document_id,
            },
            Message::Error(e) => Msg::Error { message: e.message },
            _ => Msg::Other(kind),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let msgs = [
            Msg::Join {
                sender_id: "a".into(),
                storage_id: Some("s".into()),
                is_ephemeral: false,
            },
            Msg::Peer {
                sender_id: "b".into(),
                target_id: "a".into(),
                storage_id: None,
            },
            Msg::Sync {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: "d".into(),
                data: vec![1, 2, 3],
            },
            Msg::Request {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: "d".into(),
                data: vec![],
            },
            Msg::DocUnavailable {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: "d".into(),
            },
        ];
        for m in msgs {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
    }
}
