//! The SDK with no server at all: typed edits, local checks, durability across reopening.

use base64::Engine as _;
use minka_client::{
    Client, ConnectionState, DocStatus, Error, ObservationDraft, ProposalDraft, ProposalStatus,
};

/// A token as the app would hold it. The phone never checks the signature (it cannot: the secret
/// is the server's), so any signature does here.
fn token(sub: &str, roles: &[&str], district: &str) -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        b64(serde_json::json!({
            "sub": sub, "name": "Rosa Quispe", "roles": roles, "district": district,
            "exp": 4_102_444_800u64,
        }))
    )
}

fn draft() -> ProposalDraft {
    ProposalDraft {
        title: "Losa deportiva en Collique".into(),
        description: "Techado y graderías.".into(),
        zone: "zona-2".into(),
        category: "deporte".into(),
        beneficiaries: 2500,
        estimated_cost: 38_000_000,
        cofinancing: 2_000_000,
    }
}

#[test]
fn edits_need_an_identity_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let c = Client::open(dir.path()).unwrap();
        assert!(matches!(c.create_proposal(draft()), Err(Error::Auth(_))));
        assert_eq!(c.connection_state(), ConnectionState::Offline);
        c.set_token(&token("u-rosa", &["leader"], "150110"))
            .unwrap();
        let id = c.create_proposal(draft()).unwrap();
        c.set_title(&id, "Losa deportiva techada en Collique")
            .unwrap();
        c.comment(&id, "Lo conversamos en la asamblea del sábado.")
            .unwrap();
        c.support(&id).unwrap();
        c.set_proposal_status(&id, ProposalStatus::Submitted)
            .unwrap();
        let info = c.status(&id).unwrap();
        assert_eq!(info.status, DocStatus::LocalOnly);
        assert_eq!(info.unacknowledged, 5);
        assert_eq!(info.last_synced, None);
        id
    };
    // A new process: the token and every edit are still there.
    let c = Client::open(dir.path()).unwrap();
    assert_eq!(c.identity().unwrap().user.as_str(), "u-rosa");
    let p = c.proposal(&id).unwrap();
    assert_eq!(p.title, "Losa deportiva techada en Collique");
    assert_eq!(p.status, ProposalStatus::Submitted);
    assert_eq!(p.comments.len(), 1);
    assert!(p.supporters.contains_key(&"u-rosa".parse().unwrap()));
    assert_eq!(p.header.district.to_string(), "150110");
    let list = c.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    assert_eq!(list[0].status, "submitted");
    // Every change has a time and a message (automerge's plain commit would store 0 and none).
    let history = c.history(&id).unwrap();
    assert_eq!(history.len(), 5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for h in &history {
        assert!((now - h.time).abs() < 600, "change time {}", h.time);
        assert!(h.message.as_deref().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(history[0].message.as_deref(), Some("create proposal"));
}

#[test]
fn what_the_server_would_refuse_fails_locally_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::open(dir.path()).unwrap();
    c.set_token(&token("u-rosa", &["leader"], "150110"))
        .unwrap();
    let id = c.create_proposal(draft()).unwrap();
    let heads = c.heads(&id).unwrap();

    // Invalid input.
    for bad in [
        ProposalDraft {
            estimated_cost: -1,
            ..draft()
        },
        ProposalDraft {
            title: "  ".into(),
            ..draft()
        },
    ] {
        assert!(matches!(
            c.create_proposal(bad),
            Err(Error::InvalidInput(_))
        ));
    }
    assert!(matches!(
        c.set_estimated_cost(&id, -100),
        Err(Error::InvalidInput(_))
    ));
    // A status change the schema forbids for an author.
    let e = c
        .set_proposal_status(&id, ProposalStatus::Eligible)
        .unwrap_err();
    assert!(
        matches!(e, Error::NotPermitted(ref m) if m.contains("status")),
        "{e}"
    );
    // A leader may not write observations (the committee does).
    assert!(matches!(
        c.create_observation(ObservationDraft {
            target: id,
            kind: "missing_information".into(),
            description: "Falta el expediente técnico.".into(),
            evidence: vec![],
        }),
        Err(Error::NotPermitted(_))
    ));
    assert_eq!(c.heads(&id).unwrap(), heads, "a refused edit was written");
    assert_eq!(c.list().len(), 1, "a refused document was stored");

    // Another leader's phone with a copy of this proposal may not edit it either.
    let dir2 = tempfile::tempdir().unwrap();
    drop(c);
    let c2 = Client::open(dir2.path()).unwrap();
    c2.set_token(&token("u-otro", &["leader"], "150110"))
        .unwrap();
    assert!(matches!(c2.proposal(&id), Err(Error::NotFound(_))));
}

#[test]
fn the_committee_writes_observations_and_sees_no_rejections_offline() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::open(dir.path()).unwrap();
    c.set_token(&token("u-elena", &["vigilancia"], "150110"))
        .unwrap();
    let target: minka_client::DocumentId = "3HxWYo9vMCSD9xESth131w69EsR3".parse().unwrap();
    let id = c
        .create_observation(ObservationDraft {
            target,
            kind: "missing_information".into(),
            description: "Falta el expediente técnico.".into(),
            evidence: vec!["acta de la asamblea del 14 de mayo".into()],
        })
        .unwrap();
    assert_eq!(c.observation(&id).unwrap().target, target.to_string());
    assert!(c.rejections(&id).is_empty());
    assert!(matches!(
        c.discard_rejected(&id),
        Err(Error::NothingRejected(_))
    ));
}
