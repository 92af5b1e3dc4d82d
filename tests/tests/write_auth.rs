//! Write authorization over the real WebSocket (protocol-level Rust client): every row of the
//! permission table allowed and forbidden, forged actors, sealed actas, quarantine, no sync loop,
//! and a fresh client that sees exactly the accepted changes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};
use crdt_core::schema::{
    apply_edits, ActaKind, ActaStatus, Attendee, Comment, Edit, NewActa, NewDocument,
    NewObservation, NewProcess, NewProposal, PrioritizedEntry, ProcessPhase, ProposalStatus,
    Signature,
};
use crdt_core::wire::Message;
use crdt_core::{DocumentId, Ubigeo, UserId};
use minka_tests::harness::{http_request, token, Event, ProtoClient, TestServer};
use sha2::{Digest, Sha256};

const T: i64 = 1_790_000_000;

/// A test user: id, roles, district, and the one actor id their phone writes with.
#[derive(Clone)]
struct U {
    id: &'static str,
    roles: &'static [&'static str],
    district: &'static str,
}

impl U {
    fn user(&self) -> UserId {
        UserId::new(self.id).unwrap()
    }
    fn actor(&self) -> ActorId {
        ActorId::from(&Sha256::digest(self.id.as_bytes())[..16])
    }
    fn token(&self) -> String {
        token(self.id, self.roles, self.district)
    }
}

const ANA: U = U {
    id: "ana",
    roles: &["leader"],
    district: "150110",
};
const BETO: U = U {
    id: "beto",
    roles: &["leader"],
    district: "150110",
};
const CARLA: U = U {
    id: "carla",
    roles: &["leader"],
    district: "150110",
};
const TEC: U = U {
    id: "tec",
    roles: &["tecnico"],
    district: "150110",
};
const ADM: U = U {
    id: "adm",
    roles: &["admin"],
    district: "150110",
};
const VIG: U = U {
    id: "vig",
    roles: &["vigilancia"],
    district: "150110",
};
const SJM: U = U {
    id: "sjm",
    roles: &["leader"],
    district: "150133",
};
const REVIEWER: U = U {
    id: "rev",
    roles: &["vigilancia"],
    district: "*",
};

#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted,
    Rejected(String),
}

struct World {
    server: TestServer,
    proposal: DocumentId,
    acta: DocumentId,
    observation: DocumentId,
    process: DocumentId,
    /// Every change the tests expect the server to hold.
    accepted: Vec<(DocumentId, ChangeHash)>,
    /// Every change the tests expect it to have refused.
    refused: Vec<(DocumentId, ChangeHash)>,
}

fn err_for(events: &[Event], id: DocumentId) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Message(Message::Error(m)) if m.message.contains(&id.to_string()) => {
            Some(m.message.clone())
        }
        _ => None,
    })
}

impl World {
    /// Uploads a new document as `who`; returns its id. (Boxed, like [`Self::attempt`]'s callers:
    /// the test body awaits dozens of these, and inline futures overflow a debug build's stack.)
    async fn create(&mut self, who: &U, doc: Automerge) -> (DocumentId, Outcome) {
        Box::pin(self.create_inner(who, doc)).await
    }

    async fn create_inner(&mut self, who: &U, doc: Automerge) -> (DocumentId, Outcome) {
        let id = DocumentId::random();
        let mut doc = doc;
        let heads = doc.get_heads();
        let mut c = ProtoClient::connect(
            &self.server.ws_url(&who.token()),
            &format!("{}-create", who.id),
        )
        .await
        .unwrap();
        let events = c.sync_doc(id, &mut doc).await.unwrap();
        let outcome = match err_for(&events, id) {
            Some(e) => Outcome::Rejected(e),
            None => Outcome::Accepted,
        };
        for h in heads {
            match outcome {
                Outcome::Accepted => self.accepted.push((id, h)),
                Outcome::Rejected(_) => self.refused.push((id, h)),
            }
        }
        (id, outcome)
    }

    /// Fetches the server's copy as a province-wide reviewer.
    async fn fetch(&self, id: DocumentId) -> Automerge {
        let mut c = ProtoClient::connect(&self.server.ws_url(&REVIEWER.token()), "reviewer")
            .await
            .unwrap();
        let mut doc = Automerge::new();
        c.request_doc(id, &mut doc).await.unwrap();
        doc
    }

    /// `who` fetches the document, makes `edits` as one change with their own actor, and syncs.
    async fn attempt(&mut self, who: &U, id: DocumentId, edits: &[Edit]) -> Outcome {
        let mut c = ProtoClient::connect(
            &self.server.ws_url(&who.token()),
            &format!("{}-phone", who.id),
        )
        .await
        .unwrap();
        let mut doc = Automerge::new();
        c.request_doc(id, &mut doc).await.unwrap();
        doc.set_actor(who.actor());
        let hash = apply_edits(&mut doc, edits, "test edit", T)
            .unwrap()
            .expect("edit changes something");
        let events = c.sync_doc(id, &mut doc).await.unwrap();
        let on_server = self.fetch(id).await.get_change_by_hash(&hash).is_some();
        match err_for(&events, id) {
            Some(e) => {
                assert!(
                    !on_server,
                    "rejected change {hash} must not reach the stored document"
                );
                self.refused.push((id, hash));
                Outcome::Rejected(e)
            }
            None => {
                assert!(on_server, "accepted change {hash} must be stored");
                self.accepted.push((id, hash));
                Outcome::Accepted
            }
        }
    }

    async fn allowed(&mut self, row: &str, who: &U, id: DocumentId, edits: &[Edit]) {
        let o = Box::pin(self.attempt(who, id, edits)).await;
        assert_eq!(o, Outcome::Accepted, "allowed case: {row}");
    }

    async fn forbidden(&mut self, row: &str, who: &U, id: DocumentId, edits: &[Edit]) -> String {
        match Box::pin(self.attempt(who, id, edits)).await {
            Outcome::Rejected(e) => e,
            Outcome::Accepted => panic!("forbidden case went through: {row}"),
        }
    }
}

fn new_proposal(by: &U, district: Ubigeo, coauthors: &[&U]) -> Automerge {
    NewProposal {
        district,
        process_year: 2027,
        title: "Pistas y veredas en Collique".into(),
        description: "Pavimentación de 400 m de la calle 5".into(),
        zone: "Collique".into(),
        category: "vías y veredas".into(),
        beneficiaries: 900,
        estimated_cost: 45_000_000,
        cofinancing: 0,
        created_by: by.user(),
        coauthors: coauthors.iter().map(|u| u.user()).collect(),
    }
    .create(Some(by.actor()), T)
}

fn attendee(name: &str, votes: bool) -> Attendee {
    Attendee {
        name: name.into(),
        organization: "Junta vecinal".into(),
        votes,
    }
}

fn new_acta(by: &U, prioritized: Vec<PrioritizedEntry>) -> Automerge {
    let mut attendees = BTreeMap::new();
    attendees.insert(ANA.user(), attendee("Ana", true));
    attendees.insert(BETO.user(), attendee("Beto", true));
    attendees.insert(CARLA.user(), attendee("Carla", false));
    NewActa {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Acta de formalización de acuerdos".into(),
        kind: ActaKind::Formalization,
        date: "2027-03-14".into(),
        place: "Local comunal de Collique".into(),
        created_by: by.user(),
        committee_members: vec![VIG.user()],
        attendees,
        agreements: vec!["Priorizar pistas y veredas".into()],
        prioritized,
    }
    .create(Some(by.actor()), T)
}

fn new_process(by: &U) -> Automerge {
    NewProcess {
        district: Ubigeo::COMAS,
        process_year: 2027,
        ceiling: 100_000_000,
        zones: [("Collique".to_string(), 60_000_000)].into_iter().collect(),
        phase: ProcessPhase::Concertation,
        criteria: vec![],
    }
    .create(Some(by.actor()), T)
}

fn comment(by: &U, text: &str) -> Edit {
    Edit::AddComment(Comment {
        author: by.user(),
        text: text.into(),
        at: T,
    })
}

fn status(s: ProposalStatus) -> Edit {
    Edit::SetProposalStatus(s)
}

async fn world() -> World {
    let server = TestServer::start().unwrap();
    let mut w = World {
        server,
        proposal: DocumentId::random(),
        acta: DocumentId::random(),
        observation: DocumentId::random(),
        process: DocumentId::random(),
        accepted: vec![],
        refused: vec![],
    };
    let (process, o) = w.create(&ADM, new_process(&ADM)).await;
    assert_eq!(o, Outcome::Accepted, "admin creates the process");
    let (proposal, o) = w
        .create(&ANA, new_proposal(&ANA, Ubigeo::COMAS, &[&BETO]))
        .await;
    assert_eq!(
        o,
        Outcome::Accepted,
        "leader creates a proposal in own district"
    );
    let (acta, o) = w
        .create(
            &TEC,
            new_acta(&TEC, vec![PrioritizedEntry::new(proposal, 1, 45_000_000)]),
        )
        .await;
    assert_eq!(o, Outcome::Accepted, "tecnico creates an acta");
    let obs = NewObservation {
        district: Ubigeo::COMAS,
        process_year: 2027,
        target: proposal,
        kind: "agreement_not_kept".into(),
        description: "El monto no coincide con el acta".into(),
        evidence: vec![],
        created_by: VIG.user(),
    }
    .create(Some(VIG.actor()), T);
    let (observation, o) = w.create(&VIG, obs).await;
    assert_eq!(o, Outcome::Accepted, "vigilancia creates an observation");
    w.proposal = proposal;
    w.acta = acta;
    w.observation = observation;
    w.process = process;
    w
}

#[tokio::test]
async fn every_permission_row_over_the_wire() {
    let mut w = world().await;
    let (p, a, o, pr) = (w.proposal, w.acta, w.observation, w.process);

    // leader: create proposals in own district (allowed above); not in another district, not as someone else.
    let (_, out) = w.create(&ANA, new_proposal(&ANA, Ubigeo::ATE, &[])).await;
    assert!(
        matches!(out, Outcome::Rejected(_)),
        "leader creates in another district"
    );
    let (_, out) = w
        .create(&CARLA, new_proposal(&ANA, Ubigeo::COMAS, &[]))
        .await;
    assert!(
        matches!(out, Outcome::Rejected(_)),
        "leader creates in another's name"
    );
    // Creation by the wrong role.
    let (_, out) = w.create(&ANA, new_acta(&ANA, vec![])).await;
    assert!(
        matches!(out, Outcome::Rejected(_)),
        "leader creates an acta"
    );
    let (_, out) = w.create(&TEC, new_process(&TEC)).await;
    assert!(
        matches!(out, Outcome::Rejected(_)),
        "tecnico creates a process"
    );

    // leader: edit own or co-authored proposals while draft/submitted/observed.
    w.allowed(
        "author edits title",
        &ANA,
        p,
        &[Edit::SetText {
            field: "title".into(),
            text: "Pistas en Collique Alto".into(),
        }],
    )
    .await;
    w.allowed(
        "coauthor edits description",
        &BETO,
        p,
        &[Edit::SetText {
            field: "description".into(),
            text: "Pavimentación de 500 m".into(),
        }],
    )
    .await;
    let e = w
        .forbidden(
            "other leader edits title",
            &CARLA,
            p,
            &[Edit::SetText {
                field: "title".into(),
                text: "Otro".into(),
            }],
        )
        .await;
    assert!(e.contains("title"), "{e}");

    // leader: own key in supporters.
    w.allowed(
        "own supporter key",
        &CARLA,
        p,
        &[Edit::AddSupporter {
            user: CARLA.user(),
            at: T,
        }],
    )
    .await;
    w.forbidden(
        "someone else's supporter key",
        &CARLA,
        p,
        &[Edit::AddSupporter {
            user: BETO.user(),
            at: T,
        }],
    )
    .await;

    // leader: append comments as self.
    w.allowed(
        "comment as self",
        &CARLA,
        p,
        &[comment(&CARLA, "Apoyo esta propuesta")],
    )
    .await;
    w.forbidden(
        "comment as someone else",
        &CARLA,
        p,
        &[comment(&ANA, "Retiro mi propuesta")],
    )
    .await;

    // author status transition draft → submitted; leader cannot set a technical status.
    w.allowed(
        "author submits",
        &ANA,
        p,
        &[status(ProposalStatus::Submitted)],
    )
    .await;
    w.forbidden(
        "leader sets in_evaluation",
        &ANA,
        p,
        &[status(ProposalStatus::InEvaluation)],
    )
    .await;

    // tecnico: evaluation and scores; status in_evaluation/eligible.
    let eval = Edit::SetEvaluation {
        evaluator: TEC.user(),
        viable: Some(true),
        validated_cost: Some(44_000_000),
        notes: Some("Viable".into()),
    };
    w.forbidden(
        "leader writes the evaluation",
        &ANA,
        p,
        std::slice::from_ref(&eval),
    )
    .await;
    w.allowed(
        "tecnico moves to in_evaluation",
        &TEC,
        p,
        &[status(ProposalStatus::InEvaluation)],
    )
    .await;
    w.allowed("tecnico evaluates", &TEC, p, &[eval]).await;
    w.allowed(
        "tecnico scores",
        &TEC,
        p,
        &[Edit::SetScore {
            evaluator: TEC.user(),
            criterion: "pobreza".into(),
            score: 8,
        }],
    )
    .await;
    w.forbidden(
        "author edits during evaluation",
        &ANA,
        p,
        &[Edit::SetText {
            field: "title".into(),
            text: "Cambio tardío".into(),
        }],
    )
    .await;
    w.forbidden(
        "tecnico prioritizes",
        &TEC,
        p,
        &[
            status(ProposalStatus::Eligible),
            status(ProposalStatus::Prioritized),
        ],
    )
    .await;
    w.allowed(
        "tecnico marks eligible",
        &TEC,
        p,
        &[status(ProposalStatus::Eligible)],
    )
    .await;

    // admin: prioritized / not_prioritized; the process document.
    w.allowed(
        "admin prioritizes",
        &ADM,
        p,
        &[status(ProposalStatus::Prioritized)],
    )
    .await;
    w.allowed(
        "admin edits the process",
        &ADM,
        pr,
        &[Edit::SetZoneCeiling {
            zone: "Pamplona".into(),
            ceiling: 30_000_000,
        }],
    )
    .await;
    w.forbidden(
        "tecnico edits the process",
        &TEC,
        pr,
        &[Edit::SetZoneCeiling {
            zone: "Collique".into(),
            ceiling: 90_000_000,
        }],
    )
    .await;

    // vigilancia: edit observations; admin responds; a leader may not.
    w.allowed(
        "vigilancia edits its observation",
        &VIG,
        o,
        &[Edit::AddEvidence("foto-acta.jpg".into())],
    )
    .await;
    w.forbidden(
        "leader edits an observation",
        &ANA,
        o,
        &[Edit::AddEvidence("otra.jpg".into())],
    )
    .await;
    w.allowed(
        "vigilancia sends it",
        &VIG,
        o,
        &[Edit::SetObservationStatus(
            crdt_core::schema::ObservationStatus::Sent,
        )],
    )
    .await;
    let response = |u: &U| {
        Edit::AddResponse(Comment {
            author: u.user(),
            text: "Se corrigió el monto".into(),
            at: T,
        })
    };
    w.forbidden(
        "leader responds to an observation",
        &ANA,
        o,
        &[response(&ANA)],
    )
    .await;
    w.allowed("admin responds", &ADM, o, &[response(&ADM)])
        .await;

    // tecnico: edit actas before sealing; open signing. Leaders sign as themselves when voting attendees.
    w.allowed(
        "tecnico edits the acta",
        &TEC,
        a,
        &[Edit::AddAgreement("Ejecutar en 2027".into())],
    )
    .await;
    w.forbidden(
        "leader edits the acta",
        &ANA,
        a,
        &[Edit::AddAgreement("Otro acuerdo".into())],
    )
    .await;
    w.allowed(
        "tecnico opens signing",
        &TEC,
        a,
        &[Edit::SetActaStatus(ActaStatus::Signing)],
    )
    .await;
    let sig = |u: &U| Edit::Sign {
        user: u.user(),
        signature: Signature {
            at: T,
            device: "android".into(),
        },
    };
    w.forbidden("non-voting attendee signs", &CARLA, a, &[sig(&CARLA)])
        .await;
    w.forbidden("leader signs for someone else", &ANA, a, &[sig(&BETO)])
        .await;
    w.allowed("voting attendee signs as self", &ANA, a, &[sig(&ANA)])
        .await;
    w.allowed("second voting attendee signs", &BETO, a, &[sig(&BETO)])
        .await;
    w.forbidden(
        "nobody sets sealed through changes",
        &TEC,
        a,
        &[Edit::SetActaStatus(ActaStatus::Sealed)],
    )
    .await;

    // Another district cannot write (and cannot even read).
    let mut s = ProtoClient::connect(&w.server.ws_url(&SJM.token()), "sjm-phone")
        .await
        .unwrap();
    let events = s.request_doc(p, &mut Automerge::new()).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Message(Message::DocUnavailable(_)))));

    // A fresh client downloads every document and sees exactly the accepted changes.
    for (id, hash) in &w.accepted {
        assert!(
            w.fetch(*id).await.get_change_by_hash(hash).is_some(),
            "accepted {hash} missing"
        );
    }
    for (id, hash) in &w.refused {
        let doc = w.fetch(*id).await;
        assert!(
            doc.get_change_by_hash(hash).is_none(),
            "refused {hash} present"
        );
    }
    // Every refusal is in the quarantine, visible to the district's reviewers.
    let (status, body) = http_request(
        &w.server.addr,
        "GET",
        "/api/v1/quarantine?perPage=500",
        Some(&VIG.token()),
    )
    .unwrap();
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        page["total"].as_u64().unwrap() <= 500,
        "more than one page: {body}"
    );
    let entries: Vec<serde_json::Value> = page["items"].as_array().unwrap().clone();
    for (_, hash) in w
        .refused
        .iter()
        .filter(|(id, _)| [p, a, o, pr].contains(id))
    {
        assert!(
            entries.iter().any(|e| e["hash"] == hash.to_string()),
            "{hash} not in quarantine"
        );
    }
    assert!(entries
        .iter()
        .all(|e| !e["reason"].as_str().unwrap().is_empty()
            && !e["change"].as_str().unwrap().is_empty()));
}

#[tokio::test]
async fn forged_actor_is_rejected_and_quarantined() {
    let mut w = world().await;
    let p = w.proposal;
    // Beto (a coauthor, so the edit itself would be allowed) writes with Ana's actor id.
    let mut c = ProtoClient::connect(&w.server.ws_url(&BETO.token()), "beto-forger")
        .await
        .unwrap();
    let mut doc = Automerge::new();
    c.request_doc(p, &mut doc).await.unwrap();
    doc.set_actor(ANA.actor());
    let hash = apply_edits(
        &mut doc,
        &[Edit::SetText {
            field: "title".into(),
            text: "Título falsificado".into(),
        }],
        "forged",
        T,
    )
    .unwrap()
    .unwrap();
    let events = c.sync_doc(p, &mut doc).await.unwrap();
    let e = err_for(&events, p).expect("forged change gets an error");
    assert!(e.contains("another user"), "{e}");
    let stored = w.fetch(p).await;
    assert!(stored.get_change_by_hash(&hash).is_none());
    assert_eq!(
        crdt_core::schema::Proposal::read(&stored).unwrap().title,
        "Pistas y veredas en Collique"
    );
    // Ana's own later edit still goes through: her document is unharmed.
    w.allowed(
        "ana edits after the forgery",
        &ANA,
        p,
        &[Edit::SetText {
            field: "title".into(),
            text: "Pistas de Ana".into(),
        }],
    )
    .await;
    let (_, body) = http_request(
        &w.server.addr,
        "GET",
        "/api/v1/quarantine",
        Some(&VIG.token()),
    )
    .unwrap();
    assert!(body.contains(&hash.to_string()) && body.contains("beto"));
}

#[tokio::test]
async fn rejection_does_not_cause_a_sync_loop_and_dependents_are_rejected() {
    let w = world().await;
    let p = w.proposal;
    let mut c = ProtoClient::connect(&w.server.ws_url(&CARLA.token()), "carla-phone")
        .await
        .unwrap();
    let mut doc = Automerge::new();
    c.request_doc(p, &mut doc).await.unwrap();
    doc.set_actor(CARLA.actor());
    // A forbidden edit, then an otherwise-allowed one built on it.
    let bad = apply_edits(
        &mut doc,
        &[Edit::SetText {
            field: "title".into(),
            text: "No soy autora".into(),
        }],
        "bad",
        T,
    )
    .unwrap()
    .unwrap();
    let dependent = apply_edits(
        &mut doc,
        &[Edit::AddSupporter {
            user: CARLA.user(),
            at: T,
        }],
        "support",
        T,
    )
    .unwrap()
    .unwrap();
    let events = c.sync_doc(p, &mut doc).await.unwrap();
    let e = err_for(&events, p).expect("error for the rejected change");
    assert!(e.contains("title") && e.contains("1 more"), "{e}");
    // After the exchange settles, the server sends nothing more.
    let before = c.received.len();
    assert!(c.next(Duration::from_secs(2)).await.unwrap().is_none());
    // Even if the client keeps talking, the server does not answer in circles.
    c.reset(p);
    let _ = c.sync_doc(p, &mut doc).await.unwrap();
    let after_resync = c.received.len();
    assert!(
        after_resync - before <= 3,
        "resync exchanged {} messages",
        after_resync - before
    );
    assert!(c.next(Duration::from_secs(2)).await.unwrap().is_none());
    let stored = w.fetch(p).await;
    assert!(
        stored.get_change_by_hash(&bad).is_none()
            && stored.get_change_by_hash(&dependent).is_none()
    );
    let (_, body) = http_request(
        &w.server.addr,
        "GET",
        "/api/v1/quarantine",
        Some(&VIG.token()),
    )
    .unwrap();
    assert!(body.contains("depends on a rejected change"), "{body}");
    // The connection stays usable for other documents.
    let mut other = new_proposal(&CARLA, Ubigeo::COMAS, &[]);
    let id = DocumentId::random();
    let events = c.sync_doc(id, &mut other).await.unwrap();
    assert!(err_for(&events, id).is_none());
}

#[tokio::test]
async fn sealed_acta_rejects_offline_edits_and_check_verifies_the_seal() {
    let mut w = world().await;
    let a = w.acta;
    let sig = |u: &U| Edit::Sign {
        user: u.user(),
        signature: Signature {
            at: T,
            device: "android".into(),
        },
    };
    w.allowed(
        "open signing",
        &TEC,
        a,
        &[Edit::SetActaStatus(ActaStatus::Signing)],
    )
    .await;
    // A tecnico's phone holds the acta and edits it offline…
    let mut offline = ProtoClient::connect(&w.server.ws_url(&TEC.token()), "tec-offline")
        .await
        .unwrap();
    let mut offline_doc = Automerge::new();
    offline.request_doc(a, &mut offline_doc).await.unwrap();
    drop(offline);
    offline_doc.set_actor(TEC.actor());
    let late = apply_edits(
        &mut offline_doc,
        &[Edit::AddAgreement("Acuerdo escrito sin conexión".into())],
        "offline",
        T,
    )
    .unwrap()
    .unwrap();

    // Sealing needs a majority first: 409 with the reason.
    let addr = w.server.addr.clone();
    let seal = |who: &U| {
        http_request(
            &addr,
            "POST",
            &format!("/api/v1/docs/{a}/seal"),
            Some(&who.token()),
        )
        .unwrap()
    };
    let (status, body) = seal(&TEC);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("majority"), "{body}");
    w.allowed("ana signs", &ANA, a, &[sig(&ANA)]).await;
    w.allowed("beto signs", &BETO, a, &[sig(&BETO)]).await;
    let (status, _) = seal(&ANA);
    assert_eq!(status, 403, "a leader cannot seal");
    let (status, body) = seal(&TEC);
    assert_eq!(status, 200, "{body}");
    let record: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(record["sha256"].as_str().unwrap().len(), 64);

    // …and syncs after the seal: rejected, quarantined, acta unchanged.
    let mut back = ProtoClient::connect(&w.server.ws_url(&TEC.token()), "tec-offline")
        .await
        .unwrap();
    let events = back.sync_doc(a, &mut offline_doc).await.unwrap();
    let e = err_for(&events, a).expect("offline edit rejected");
    assert!(e.contains("sealed"), "{e}");
    let stored = w.fetch(a).await;
    assert!(stored.get_change_by_hash(&late).is_none());
    assert_eq!(
        crdt_core::schema::Acta::read(&stored).unwrap().status,
        ActaStatus::Sealed
    );
    w.forbidden(
        "admin edits a sealed acta",
        &ADM,
        a,
        &[Edit::AddAgreement("x".into())],
    )
    .await;
    let (_, body) = http_request(
        &w.server.addr,
        "GET",
        "/api/v1/quarantine",
        Some(&VIG.token()),
    )
    .unwrap();
    assert!(body.contains(&late.to_string()));
    let (status, _) = seal(&TEC);
    assert_eq!(status, 409, "a sealed acta cannot be sealed again");

    assert!(w.server.terminate());
    let (ok, out) = w.server.tool(&["check"]).unwrap();
    assert!(ok && out.contains("1 seals"), "{out}");
}

#[tokio::test]
async fn sealing_enforces_budget_ceilings() {
    let mut w = world().await;
    // A second acta prioritizing more than the Collique ceiling (S/ 600,000).
    let over = new_acta(&TEC, vec![PrioritizedEntry::new(w.proposal, 1, 70_000_000)]);
    let (a, o) = w.create(&TEC, over).await;
    assert_eq!(o, Outcome::Accepted);
    let sig = |u: &U| Edit::Sign {
        user: u.user(),
        signature: Signature {
            at: T,
            device: "web".into(),
        },
    };
    w.allowed(
        "open signing",
        &TEC,
        a,
        &[Edit::SetActaStatus(ActaStatus::Signing)],
    )
    .await;
    w.allowed("ana signs", &ANA, a, &[sig(&ANA)]).await;
    w.allowed("beto signs", &BETO, a, &[sig(&BETO)]).await;
    // The index lists documents asynchronously after creation; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = http_request(
        &w.server.addr,
        "POST",
        &format!("/api/v1/docs/{a}/seal"),
        Some(&ADM.token()),
    )
    .unwrap();
    assert_eq!(status, 409, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = v["violations"].to_string();
    assert!(
        text.contains("Collique") && text.contains("S/ 600,000.00"),
        "{text}"
    );
}
