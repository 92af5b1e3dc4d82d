//! Realistic demo data for Comas (150110), San Juan de Miraflores (150133) and Ate (150103):
//! per district a process, five or six proposals in various statuses, one acta, an index and
//! (in Ate) an observation of the Comité de Vigilancia. `minka demo` seeds a store with it.
//!
//! The output is stable: document ids are derived from district, year and a slug
//! ([`demo_document_id`]), every change is made by a fixed actor derived from its author's user
//! id ([`demo_actor`]), and every change carries the time `now_unix`. Each change is made by the
//! role that may make it (leaders create proposals and support them, the técnico evaluates and
//! drafts the acta, attendees sign as themselves, the admin writes the process, the server
//! writes the index), so the demo passes the permission rules. All prioritized lists fit their
//! process's ceilings.

use std::collections::BTreeMap;

use automerge::{ActorId, Automerge};
use sha2::{Digest, Sha256};

use crate::ids::{DocumentId, Role, Ubigeo, UserId};
use crate::schema::{
    apply_edit, ActaKind, ActaStatus, Attendee, Comment, Criterion, DocType, Edit, IndexEntry,
    NewActa, NewDocument, NewIndex, NewObservation, NewProcess, NewProposal, PrioritizedEntry,
    ProcessPhase, ProposalStatus, Signature,
};

/// The user id the index documents are written by (the server itself).
pub const SERVER_USER: &str = "minka-server";

/// One demo document.
#[derive(Debug, Clone)]
pub struct DemoDoc {
    pub id: DocumentId,
    pub district: Ubigeo,
    pub doc_type: DocType,
    pub doc: Automerge,
}

/// One demo user, for binding actors and minting tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoUser {
    pub id: UserId,
    pub name: String,
    /// The organization or office the user represents.
    pub organization: String,
    pub roles: Vec<Role>,
    pub district: Ubigeo,
}

/// The fixed actor of a demo user: the first 16 bytes of SHA-256 of `minka:demo-actor:v1:<user>`.
pub fn demo_actor(user: &UserId) -> ActorId {
    let digest = Sha256::digest(format!("minka:demo-actor:v1:{user}").as_bytes());
    ActorId::from(&digest[..16])
}

/// The id of a demo document: the first 16 bytes of SHA-256 of
/// `minka:demo:v1:<district>:<year>:<slug>` (the index uses [`DocumentId::index_for`] instead).
pub fn demo_document_id(district: Ubigeo, process_year: u16, slug: &str) -> DocumentId {
    let digest =
        Sha256::digest(format!("minka:demo:v1:{district}:{process_year}:{slug}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    DocumentId::from_bytes(bytes)
}

/// Every demo user of the three districts (leaders, técnicos, Comité de Vigilancia members,
/// admins) plus the server user that writes the indexes (no roles, no district of its own:
/// listed with each district's ubigeo).
pub fn demo_users() -> Vec<DemoUser> {
    let mut out = Vec::new();
    for spec in DISTRICTS {
        let mut push = |p: &Person, role: Role| {
            out.push(DemoUser {
                id: user(p.id),
                name: p.name.to_string(),
                organization: p.org.to_string(),
                roles: vec![role],
                district: spec.district,
            })
        };
        for p in spec.leaders {
            push(p, Role::Leader);
        }
        push(&spec.tecnico, Role::Tecnico);
        for p in spec.vigilancia {
            push(p, Role::Vigilancia);
        }
        push(&spec.admin, Role::Admin);
    }
    out
}

/// The demo documents of the three districts for `process_year`, every change stamped `now_unix`.
/// Per district: the process, the proposals, the acta, the observation (Ate) and last the index
/// (at [`DocumentId::index_for`]) listing all the others.
pub fn demo_documents(process_year: u16, now_unix: i64) -> Vec<DemoDoc> {
    DISTRICTS
        .iter()
        .flat_map(|spec| build_district(spec, process_year, now_unix))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Building

fn user(id: &str) -> UserId {
    UserId::new(id).expect("demo user ids are valid")
}

fn soles(s: i64) -> i64 {
    s * 100
}

struct Builder<'s> {
    spec: &'s DistrictSpec,
    year: u16,
    now: i64,
}

impl Builder<'_> {
    fn person(&self, who: Who) -> &Person {
        match who {
            Who::Leader(i) => &self.spec.leaders[i],
            Who::Vigilancia(i) => &self.spec.vigilancia[i],
            Who::Tecnico => &self.spec.tecnico,
            Who::Admin => &self.spec.admin,
        }
    }

    fn id(&self, slug: &str) -> DocumentId {
        demo_document_id(self.spec.district, self.year, slug)
    }

    /// Applies `edit` as `who` (switching the document's actor to theirs).
    fn edit(&self, doc: &mut Automerge, who: Who, edit: Edit) {
        self.edit_as(doc, &user(self.person(who).id), edit);
    }

    fn edit_as(&self, doc: &mut Automerge, as_user: &UserId, edit: Edit) {
        doc.set_actor(demo_actor(as_user));
        apply_edit(doc, &edit, self.now).expect("demo edits apply to demo documents");
    }

    fn doc(&self, slug: &str, doc_type: DocType, doc: Automerge) -> DemoDoc {
        DemoDoc {
            id: self.id(slug),
            district: self.spec.district,
            doc_type,
            doc,
        }
    }
}

fn build_district(spec: &DistrictSpec, year: u16, now: i64) -> Vec<DemoDoc> {
    let b = Builder { spec, year, now };
    let mut docs = Vec::new();

    let process = NewProcess {
        district: spec.district,
        process_year: year,
        ceiling: soles(spec.ceiling_soles),
        zones: spec
            .zones
            .iter()
            .map(|(z, c)| (z.to_string(), soles(*c)))
            .collect(),
        phase: spec.phase,
        criteria: spec
            .criteria
            .iter()
            .map(|(name, weight)| Criterion::new(*name, *weight))
            .collect(),
    };
    let admin = user(spec.admin.id);
    docs.push(b.doc(
        "process",
        DocType::Process,
        process.create(Some(demo_actor(&admin)), now),
    ));

    for p in spec.proposals {
        docs.push(b.doc(p.slug, DocType::Proposal, build_proposal(&b, p)));
    }
    docs.push(b.doc(spec.acta.slug, DocType::Acta, build_acta(&b)));
    if let Some(o) = &spec.observation {
        docs.push(b.doc(o.slug, DocType::Observation, build_observation(&b, o)));
    }

    let index = NewIndex {
        district: spec.district,
        process_year: year,
        docs: docs
            .iter()
            .map(|d| {
                let entry = IndexEntry {
                    doc_type: d.doc_type,
                    created_at: now,
                };
                (d.id, entry)
            })
            .collect(),
    };
    let server = user(SERVER_USER);
    docs.push(DemoDoc {
        id: index.id(),
        district: spec.district,
        doc_type: DocType::Index,
        doc: index.create(Some(demo_actor(&server)), now),
    });
    docs
}

fn build_proposal(b: &Builder<'_>, p: &ProposalSpec) -> Automerge {
    let author = Who::Leader(p.author);
    let new = NewProposal {
        district: b.spec.district,
        process_year: b.year,
        title: p.title.to_string(),
        description: p.description.to_string(),
        zone: p.zone.to_string(),
        category: p.category.to_string(),
        beneficiaries: p.beneficiaries,
        estimated_cost: soles(p.cost_soles),
        cofinancing: soles(p.cofinancing_soles),
        created_by: user(b.person(author).id),
        coauthors: p
            .coauthors
            .iter()
            .map(|i| user(b.spec.leaders[*i].id))
            .collect(),
    };
    let mut doc = new.create(Some(demo_actor(&new.created_by)), b.now);

    for i in p.supporters {
        let supporter = user(b.spec.leaders[*i].id);
        let edit = Edit::AddSupporter {
            user: supporter.clone(),
            at: b.now,
        };
        b.edit_as(&mut doc, &supporter, edit);
    }
    for (who, text) in p.comments {
        let comment = Comment {
            author: user(b.person(*who).id),
            text: text.to_string(),
            at: b.now,
        };
        b.edit(&mut doc, *who, Edit::AddComment(comment));
    }

    use ProposalStatus::*;
    let target = p.status;
    if target == Draft {
        return doc;
    }
    b.edit(&mut doc, author, Edit::SetProposalStatus(Submitted));
    match target {
        Submitted => return doc,
        Withdrawn => {
            b.edit(&mut doc, author, Edit::SetProposalStatus(Withdrawn));
            return doc;
        }
        _ => {}
    }
    b.edit(
        &mut doc,
        Who::Tecnico,
        Edit::SetProposalStatus(InEvaluation),
    );
    let tecnico = user(b.spec.tecnico.id);
    if let Some(e) = &p.evaluation {
        let edit = Edit::SetEvaluation {
            evaluator: tecnico.clone(),
            viable: e.viable,
            validated_cost: e.validated_soles.map(soles),
            notes: Some(e.notes.to_string()),
        };
        b.edit(&mut doc, Who::Tecnico, edit);
    }
    for ((criterion, _), score) in b.spec.criteria.iter().zip(p.scores) {
        let edit = Edit::SetScore {
            evaluator: tecnico.clone(),
            criterion: criterion.to_string(),
            score: *score,
        };
        b.edit(&mut doc, Who::Tecnico, edit);
    }
    match target {
        InEvaluation => {}
        Observed | Eligible | Ineligible => {
            b.edit(&mut doc, Who::Tecnico, Edit::SetProposalStatus(target));
        }
        Prioritized | NotPrioritized => {
            b.edit(&mut doc, Who::Tecnico, Edit::SetProposalStatus(Eligible));
            b.edit(&mut doc, Who::Admin, Edit::SetProposalStatus(target));
        }
        Draft | Submitted | Withdrawn => unreachable!("handled above"),
    }
    doc
}

fn build_acta(b: &Builder<'_>) -> Automerge {
    let spec = b.spec;
    let a = &spec.acta;
    let tecnico = user(spec.tecnico.id);
    let new = NewActa {
        district: spec.district,
        process_year: b.year,
        title: format!("{} {}", a.title, b.year),
        kind: a.kind,
        // Concertation for fiscal year Y happens in year Y - 1.
        date: format!("{}-{}", b.year.saturating_sub(1), a.month_day),
        place: a.place.to_string(),
        created_by: tecnico.clone(),
        committee_members: spec.vigilancia.iter().map(|p| user(p.id)).collect(),
        attendees: BTreeMap::new(),
        agreements: Vec::new(),
        prioritized: Vec::new(),
    };
    let mut doc = new.create(Some(demo_actor(&tecnico)), b.now);

    let mut attendees: Vec<(Who, bool)> = (0..spec.leaders.len())
        .map(|i| (Who::Leader(i), true))
        .collect();
    attendees.extend((0..spec.vigilancia.len()).map(|i| (Who::Vigilancia(i), true)));
    attendees.push((Who::Tecnico, false));
    for (who, votes) in attendees {
        let p = b.person(who);
        let edit = Edit::AddAttendee {
            user: user(p.id),
            attendee: Attendee {
                name: p.name.to_string(),
                organization: p.org.to_string(),
                votes,
            },
        };
        b.edit(&mut doc, Who::Tecnico, edit);
    }
    for text in a.agreements {
        b.edit(&mut doc, Who::Tecnico, Edit::AddAgreement(text.to_string()));
    }
    for (proposal, rank, amount) in a.prioritized {
        let id = b.id(spec.proposals[*proposal].slug);
        let entry = PrioritizedEntry::new(id, *rank, soles(*amount));
        b.edit(&mut doc, Who::Tecnico, Edit::AddPrioritized(entry));
    }
    if a.status != ActaStatus::Draft {
        b.edit(
            &mut doc,
            Who::Tecnico,
            Edit::SetActaStatus(ActaStatus::Signing),
        );
        for who in a.signed_by {
            let signer = user(b.person(*who).id);
            let edit = Edit::Sign {
                signature: Signature {
                    at: b.now,
                    device: format!("android:{signer}"),
                },
                user: signer,
            };
            b.edit(&mut doc, *who, edit);
        }
    }
    doc
}

fn build_observation(b: &Builder<'_>, o: &ObservationSpec) -> Automerge {
    let author = Who::Vigilancia(o.author);
    let new = NewObservation {
        district: b.spec.district,
        process_year: b.year,
        target: b.id(b.spec.acta.slug),
        kind: o.kind.to_string(),
        description: o.description.to_string(),
        evidence: o.evidence.iter().map(|e| e.to_string()).collect(),
        created_by: user(b.person(author).id),
    };
    let mut doc = new.create(Some(demo_actor(&new.created_by)), b.now);
    b.edit(
        &mut doc,
        author,
        Edit::SetObservationStatus(crate::schema::ObservationStatus::Sent),
    );
    if let Some(text) = o.response {
        let comment = Comment {
            author: user(b.spec.admin.id),
            text: text.to_string(),
            at: b.now,
        };
        b.edit(&mut doc, Who::Admin, Edit::AddResponse(comment));
    }
    doc
}

// ---------------------------------------------------------------------------------------------
// The data

#[derive(Clone, Copy)]
enum Who {
    Leader(usize),
    Vigilancia(usize),
    Tecnico,
    Admin,
}

struct Person {
    id: &'static str,
    name: &'static str,
    org: &'static str,
}

struct EvalSpec {
    viable: Option<bool>,
    validated_soles: Option<i64>,
    notes: &'static str,
}

struct ProposalSpec {
    slug: &'static str,
    title: &'static str,
    description: &'static str,
    zone: &'static str,
    category: &'static str,
    beneficiaries: i64,
    cost_soles: i64,
    cofinancing_soles: i64,
    /// Index into the district's leaders.
    author: usize,
    coauthors: &'static [usize],
    status: ProposalStatus,
    supporters: &'static [usize],
    comments: &'static [(Who, &'static str)],
    evaluation: Option<EvalSpec>,
    /// One score (0–10) per process criterion, in order.
    scores: &'static [i64],
}

struct ActaSpec {
    slug: &'static str,
    /// The year is appended.
    title: &'static str,
    kind: ActaKind,
    month_day: &'static str,
    place: &'static str,
    agreements: &'static [&'static str],
    /// (index into the district's proposals, rank, amount in soles)
    prioritized: &'static [(usize, i64, i64)],
    status: ActaStatus,
    signed_by: &'static [Who],
}

struct ObservationSpec {
    slug: &'static str,
    author: usize,
    kind: &'static str,
    description: &'static str,
    evidence: &'static [&'static str],
    response: Option<&'static str>,
}

struct DistrictSpec {
    district: Ubigeo,
    ceiling_soles: i64,
    zones: &'static [(&'static str, i64)],
    criteria: &'static [(&'static str, i64)],
    phase: ProcessPhase,
    leaders: &'static [Person],
    tecnico: Person,
    vigilancia: &'static [Person],
    admin: Person,
    proposals: &'static [ProposalSpec],
    acta: ActaSpec,
    observation: Option<ObservationSpec>,
}

const DISTRICTS: &[DistrictSpec] = &[COMAS, SAN_JUAN_DE_MIRAFLORES, ATE];

const COMAS: DistrictSpec = DistrictSpec {
    district: Ubigeo::COMAS,
    ceiling_soles: 6_500_000,
    zones: &[
        ("Collique", 2_000_000),
        ("Santa Luzmila", 1_500_000),
        ("La Pascana", 1_500_000),
        ("Año Nuevo", 1_500_000),
    ],
    criteria: &[
        ("Población en situación de pobreza", 40),
        ("Evaluación técnica", 30),
        ("Población beneficiaria", 20),
        ("Cofinanciamiento vecinal", 10),
    ],
    phase: ProcessPhase::Concertation,
    leaders: &[
        Person {
            id: "comas-rosa-quispe",
            name: "Rosa Quispe Huamán",
            org: "Asociación de Vivienda Collique Quinta Zona",
        },
        Person {
            id: "comas-julio-mamani",
            name: "Julio Mamani Condori",
            org: "Comité Vecinal Santa Luzmila",
        },
        Person {
            id: "comas-carmen-flores",
            name: "Carmen Flores Yupanqui",
            org: "Comedor Popular Virgen de la Puerta",
        },
        Person {
            id: "comas-pedro-huaman",
            name: "Pedro Huamán Rojas",
            org: "Junta Vecinal Año Nuevo Alto",
        },
    ],
    tecnico: Person {
        id: "comas-tec-lucia-vargas",
        name: "Lucía Vargas Salazar",
        org: "Gerencia de Planeamiento y Presupuesto, Municipalidad de Comas",
    },
    vigilancia: &[Person {
        id: "comas-vig-elena-torres",
        name: "Elena Torres Cárdenas",
        org: "Comité de Vigilancia del Presupuesto Participativo de Comas",
    }],
    admin: Person {
        id: "comas-admin-miguel-paredes",
        name: "Miguel Paredes Ríos",
        org: "Subgerencia de Participación Vecinal, Municipalidad de Comas",
    },
    proposals: &[
        ProposalSpec {
            slug: "escaleras-collique",
            title: "Construcción de escaleras y muros de contención en Collique Quinta Zona",
            description: "Las familias de la parte alta de Collique bajan por trochas de tierra que \
                se vuelven peligrosas con la garúa. Se propone construir 420 metros de escaleras de \
                concreto con barandas y tres muros de contención en los pasajes 12, 14 y 17.",
            zone: "Collique",
            category: "vías y veredas",
            beneficiaries: 1_850,
            cost_soles: 1_450_000,
            cofinancing_soles: 50_000,
            author: 0,
            coauthors: &[2],
            status: ProposalStatus::Prioritized,
            supporters: &[1, 2, 3],
            comments: &[
                (Who::Leader(2), "Las vecinas del comedor aportan la mano de obra no calificada los fines de semana."),
                (Who::Leader(3), "¿El proyecto incluye barandas en todo el tramo? En el pasaje 17 ya hubo caídas."),
                (Who::Leader(0), "Sí, barandas en todo el tramo. Adjuntamos el plano del pasaje 17 firmado por la junta directiva."),
            ],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(1_400_000),
                notes: "Viable. Costo validado con precios unitarios de la Gerencia de Obras; se \
                    descuenta el aporte vecinal en mano de obra.",
            }),
            scores: &[9, 8, 6, 7],
        },
        ProposalSpec {
            slug: "agua-ano-nuevo",
            title: "Ampliación de redes de agua potable y alcantarillado en Año Nuevo Alto",
            description: "Doscientas cuarenta viviendas se abastecen de camiones cisterna a un costo \
                cinco veces mayor que la tarifa de Sedapal. Se propone ampliar la red matriz y las \
                conexiones domiciliarias, en coordinación con Sedapal.",
            zone: "Año Nuevo",
            category: "agua y saneamiento",
            beneficiaries: 2_300,
            cost_soles: 1_280_000,
            cofinancing_soles: 0,
            author: 3,
            coauthors: &[],
            status: ProposalStatus::Eligible,
            supporters: &[0, 1],
            comments: &[(Who::Leader(1), "Es la necesidad más urgente de la zona, apoyamos.")],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(1_280_000),
                notes: "Viable con factibilidad de servicio de Sedapal vigente.",
            }),
            scores: &[10, 7, 7, 2],
        },
        ProposalSpec {
            slug: "parque-santa-luzmila",
            title: "Recuperación del parque zonal y áreas verdes de Santa Luzmila",
            description: "El parque central de Santa Luzmila está sin riego y con juegos rotos. Se \
                propone riego por goteo, arborización con especies nativas y juegos infantiles.",
            zone: "Santa Luzmila",
            category: "áreas verdes",
            beneficiaries: 4_200,
            cost_soles: 380_000,
            cofinancing_soles: 30_000,
            author: 1,
            coauthors: &[],
            status: ProposalStatus::Prioritized,
            supporters: &[0, 3],
            comments: &[],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(350_000),
                notes: "Viable. Se ajusta el metrado de riego tecnificado.",
            }),
            scores: &[5, 8, 8, 6],
        },
        ProposalSpec {
            slug: "camaras-la-pascana",
            title: "Cámaras de videovigilancia y alarmas vecinales en La Pascana",
            description: "Instalación de 24 cámaras conectadas a la central de serenazgo y 60 \
                alarmas comunitarias en los pasajes con más robos reportados.",
            zone: "La Pascana",
            category: "seguridad ciudadana",
            beneficiaries: 5_600,
            cost_soles: 620_000,
            cofinancing_soles: 0,
            author: 3,
            coauthors: &[1],
            status: ProposalStatus::Observed,
            supporters: &[1],
            comments: &[(
                Who::Leader(3),
                "Enviaremos esta semana las dos cotizaciones que pidió el equipo técnico.",
            )],
            evaluation: Some(EvalSpec {
                viable: None,
                validated_soles: None,
                notes: "Observado: presentar cotizaciones y opinión técnica de Seguridad Ciudadana.",
            }),
            scores: &[],
        },
        ProposalSpec {
            slug: "losa-collique",
            title: "Losa deportiva multiusos en Collique Tercera Zona",
            description: "Losa de concreto con arcos, tableros y cerco perimétrico para los clubes \
                de vóley y fútbol de la zona.",
            zone: "Collique",
            category: "deporte",
            beneficiaries: 900,
            cost_soles: 260_000,
            cofinancing_soles: 20_000,
            author: 2,
            coauthors: &[],
            status: ProposalStatus::Draft,
            supporters: &[],
            comments: &[],
            evaluation: None,
            scores: &[],
        },
    ],
    acta: ActaSpec {
        slug: "acta-formalizacion",
        title: "Acta de Formalización de Acuerdos y Compromisos del Presupuesto Participativo",
        kind: ActaKind::Formalization,
        month_day: "06-14",
        place: "Auditorio de la Municipalidad Distrital de Comas",
        agreements: &[
            "Priorizar los proyectos de la lista adjunta con los montos indicados, dentro del techo \
             presupuestal aprobado por ordenanza.",
            "La municipalidad incluirá los proyectos priorizados en el Presupuesto Institucional de \
             Apertura y publicará su avance cada trimestre.",
            "Los vecinos de Collique Quinta Zona aportan la mano de obra no calificada como \
             cofinanciamiento.",
            "Se elige el Comité de Vigilancia, que informará cada seis meses.",
        ],
        prioritized: &[(0, 1, 1_400_000), (1, 2, 1_280_000), (2, 3, 350_000)],
        status: ActaStatus::Signing,
        signed_by: &[Who::Leader(0), Who::Leader(1), Who::Vigilancia(0)],
    },
    observation: None,
};

const SAN_JUAN_DE_MIRAFLORES: DistrictSpec = DistrictSpec {
    district: Ubigeo::SAN_JUAN_DE_MIRAFLORES,
    ceiling_soles: 5_000_000,
    zones: &[
        ("Pamplona Alta", 1_800_000),
        ("Pamplona Baja", 1_000_000),
        ("María Auxiliadora", 1_000_000),
        ("Ciudad de Dios", 1_200_000),
    ],
    criteria: &[
        ("Población en situación de pobreza", 35),
        ("Evaluación técnica", 35),
        ("Población beneficiaria", 20),
        ("Cofinanciamiento", 10),
    ],
    phase: ProcessPhase::Concertation,
    leaders: &[
        Person {
            id: "sjm-maria-ccori",
            name: "María Ccori Apaza",
            org: "Comité de Gestión de Pamplona Alta",
        },
        Person {
            id: "sjm-wilber-chavez",
            name: "Wilber Chávez Inga",
            org: "Asociación de Pobladores de Ciudad de Dios",
        },
        Person {
            id: "sjm-nelly-soto",
            name: "Nelly Soto Palomino",
            org: "Club de Madres María Auxiliadora",
        },
    ],
    tecnico: Person {
        id: "sjm-tec-raul-medina",
        name: "Raúl Medina Ortiz",
        org: "Gerencia de Planeamiento, Presupuesto y Racionalización, Municipalidad de San Juan de Miraflores",
    },
    vigilancia: &[Person {
        id: "sjm-vig-gloria-ramos",
        name: "Gloria Ramos Tello",
        org: "Comité de Vigilancia del Presupuesto Participativo de San Juan de Miraflores",
    }],
    admin: Person {
        id: "sjm-admin-ana-castillo",
        name: "Ana Castillo León",
        org: "Gerencia de Participación Vecinal, Municipalidad de San Juan de Miraflores",
    },
    proposals: &[
        ProposalSpec {
            slug: "muro-nueva-rinconada",
            title: "Muros de contención y escalinatas en Nueva Rinconada, Pamplona Alta",
            description: "Las viviendas de ladera en Nueva Rinconada están expuestas a derrumbes. \
                Se proponen muros de contención de concreto armado y escalinatas de acceso.",
            zone: "Pamplona Alta",
            category: "vías y veredas",
            beneficiaries: 1_400,
            cost_soles: 1_650_000,
            cofinancing_soles: 80_000,
            author: 0,
            coauthors: &[],
            status: ProposalStatus::InEvaluation,
            supporters: &[1, 2],
            comments: &[(Who::Leader(2), "Las señoras del club de madres apoyamos este proyecto.")],
            evaluation: Some(EvalSpec {
                viable: None,
                validated_soles: None,
                notes: "Visita de campo programada; pendiente estudio de mecánica de suelos.",
            }),
            scores: &[],
        },
        ProposalSpec {
            slug: "agua-las-lomas",
            title: "Conexiones domiciliarias de agua y desagüe en Pamplona Alta, sector Las Lomas",
            description: "Trescientas familias sin conexión a la red. Se proponen conexiones \
                domiciliarias y una cámara de bombeo.",
            zone: "Pamplona Alta",
            category: "agua y saneamiento",
            beneficiaries: 2_100,
            cost_soles: 2_450_000,
            cofinancing_soles: 0,
            author: 0,
            coauthors: &[1],
            status: ProposalStatus::Submitted,
            supporters: &[2],
            comments: &[],
            evaluation: None,
            scores: &[],
        },
        ProposalSpec {
            slug: "casetas-ciudad-de-dios",
            title: "Casetas de vigilancia y alumbrado público en Ciudad de Dios",
            description: "Tres casetas de serenazgo con radio y 40 luminarias LED en los paraderos \
                de la avenida principal.",
            zone: "Ciudad de Dios",
            category: "seguridad ciudadana",
            beneficiaries: 3_800,
            cost_soles: 210_000,
            cofinancing_soles: 0,
            author: 1,
            coauthors: &[],
            status: ProposalStatus::Eligible,
            supporters: &[0, 2],
            comments: &[],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(210_000),
                notes: "Viable.",
            }),
            scores: &[6, 8, 7, 0],
        },
        ProposalSpec {
            slug: "arborizacion-los-heroes",
            title: "Arborización y riego tecnificado de la avenida Los Héroes",
            description: "Arborización de la berma central en María Auxiliadora con riego por \
                goteo y mantenimiento a cargo de los vecinos.",
            zone: "María Auxiliadora",
            category: "áreas verdes",
            beneficiaries: 6_000,
            cost_soles: 145_000,
            cofinancing_soles: 15_000,
            author: 2,
            coauthors: &[],
            status: ProposalStatus::Submitted,
            supporters: &[0],
            comments: &[],
            evaluation: None,
            scores: &[],
        },
        ProposalSpec {
            slug: "complejo-pamplona-baja",
            title: "Mejoramiento del complejo deportivo de Pamplona Baja",
            description: "Cambio de grass sintético, iluminación y vestuarios del complejo deportivo.",
            zone: "Pamplona Baja",
            category: "deporte",
            beneficiaries: 2_500,
            cost_soles: 480_000,
            cofinancing_soles: 0,
            author: 1,
            coauthors: &[],
            status: ProposalStatus::Draft,
            supporters: &[],
            comments: &[],
            evaluation: None,
            scores: &[],
        },
    ],
    acta: ActaSpec {
        slug: "acta-taller-priorizacion",
        title: "Acta del Taller de Identificación y Priorización de Proyectos",
        kind: ActaKind::Workshop,
        month_day: "05-24",
        place: "Local comunal de Ciudad de Dios",
        agreements: &[
            "Se acuerda una lista preliminar de proyectos, sujeta a la evaluación técnica.",
            "El equipo técnico visitará Nueva Rinconada antes del taller de formalización.",
        ],
        prioritized: &[(2, 1, 210_000), (0, 2, 1_600_000), (3, 3, 145_000)],
        status: ActaStatus::Draft,
        signed_by: &[],
    },
    observation: None,
};

const ATE: DistrictSpec = DistrictSpec {
    district: Ubigeo::ATE,
    ceiling_soles: 8_000_000,
    zones: &[
        ("Huaycán", 2_400_000),
        ("Vitarte", 1_800_000),
        ("Santa Clara", 1_600_000),
        ("Salamanca", 1_000_000),
        ("Horacio Zeballos", 1_200_000),
    ],
    criteria: &[
        ("Población en situación de pobreza", 40),
        ("Evaluación técnica", 30),
        ("Población beneficiaria", 15),
        ("Cofinanciamiento", 15),
    ],
    phase: ProcessPhase::Formalization,
    leaders: &[
        Person {
            id: "ate-juana-laura",
            name: "Juana Laura Mendoza",
            org: "Comunidad Urbana Autogestionaria de Huaycán, Zona Z",
        },
        Person {
            id: "ate-oscar-ticona",
            name: "Óscar Ticona Quispe",
            org: "Junta Vecinal de Santa Clara",
        },
        Person {
            id: "ate-sonia-rivas",
            name: "Sonia Rivas Aguilar",
            org: "Comité del Vaso de Leche Horacio Zeballos",
        },
        Person {
            id: "ate-felix-cruz",
            name: "Félix Cruz Poma",
            org: "Asociación de Comerciantes de Vitarte",
        },
    ],
    tecnico: Person {
        id: "ate-tec-jorge-salas",
        name: "Jorge Salas Benites",
        org: "Gerencia de Planificación y Presupuesto, Municipalidad de Ate",
    },
    vigilancia: &[
        Person {
            id: "ate-vig-teresa-nunez",
            name: "Teresa Núñez Villanueva",
            org: "Comité de Vigilancia del Presupuesto Participativo de Ate",
        },
        Person {
            id: "ate-vig-hector-lima",
            name: "Héctor Lima Arotoma",
            org: "Comité de Vigilancia del Presupuesto Participativo de Ate",
        },
    ],
    admin: Person {
        id: "ate-admin-carlos-ugarte",
        name: "Carlos Ugarte Paz",
        org: "Gerencia de Participación Vecinal, Municipalidad de Ate",
    },
    proposals: &[
        ProposalSpec {
            slug: "pistas-huaycan-z",
            title: "Pistas y veredas en la Zona Z de Huaycán",
            description: "Pavimentación de 1,2 km de vías y veredas con rampas, en las calles por \
                donde pasan las movilidades escolares.",
            zone: "Huaycán",
            category: "vías y veredas",
            beneficiaries: 3_200,
            cost_soles: 2_350_000,
            cofinancing_soles: 120_000,
            author: 0,
            coauthors: &[],
            status: ProposalStatus::Prioritized,
            supporters: &[1, 2, 3],
            comments: &[(
                Who::Leader(1),
                "Santa Clara apoya; es la vía de salida de Huaycán.",
            )],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(2_300_000),
                notes: "Viable. Cuenta con expediente técnico del año anterior.",
            }),
            scores: &[8, 9, 7, 6],
        },
        ProposalSpec {
            slug: "reservorio-horacio-zeballos",
            title: "Reservorio y red de agua potable para el AA.HH. Horacio Zeballos Gámez",
            description: "Reservorio elevado de 250 m³ y red de distribución para las manzanas \
                altas que hoy compran agua de cisterna.",
            zone: "Horacio Zeballos",
            category: "agua y saneamiento",
            beneficiaries: 2_700,
            cost_soles: 1_150_000,
            cofinancing_soles: 0,
            author: 2,
            coauthors: &[0],
            status: ProposalStatus::Prioritized,
            supporters: &[0, 1],
            comments: &[],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(1_150_000),
                notes: "Viable con factibilidad de Sedapal.",
            }),
            scores: &[10, 8, 6, 0],
        },
        ProposalSpec {
            slug: "vigilancia-santa-clara",
            title: "Centro de vigilancia vecinal y alumbrado en Santa Clara",
            description: "Módulo de serenazgo, 30 cámaras y renovación del alumbrado de los \
                parques de Santa Clara.",
            zone: "Santa Clara",
            category: "seguridad ciudadana",
            beneficiaries: 7_400,
            cost_soles: 860_000,
            cofinancing_soles: 0,
            author: 1,
            coauthors: &[],
            status: ProposalStatus::Prioritized,
            supporters: &[0, 3],
            comments: &[],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(860_000),
                notes: "Viable.",
            }),
            scores: &[6, 8, 9, 0],
        },
        ProposalSpec {
            slug: "parque-ecologico-vitarte",
            title: "Parque ecológico y vivero comunal en Vitarte",
            description: "Recuperación de un terreno baldío como parque con vivero comunal y \
                biohuerto escolar.",
            zone: "Vitarte",
            category: "áreas verdes",
            beneficiaries: 5_100,
            cost_soles: 420_000,
            cofinancing_soles: 40_000,
            author: 3,
            coauthors: &[],
            status: ProposalStatus::NotPrioritized,
            supporters: &[1],
            comments: &[],
            evaluation: Some(EvalSpec {
                viable: Some(true),
                validated_soles: Some(420_000),
                notes: "Viable; puntaje menor en la matriz de priorización.",
            }),
            scores: &[4, 7, 6, 5],
        },
        ProposalSpec {
            slug: "losa-huaycan-d",
            title: "Losa deportiva y graderías en Huaycán Zona D",
            description: "Losa deportiva con graderías y techado parcial.",
            zone: "Huaycán",
            category: "deporte",
            beneficiaries: 1_600,
            cost_soles: 95_000,
            cofinancing_soles: 10_000,
            author: 0,
            coauthors: &[1],
            status: ProposalStatus::Ineligible,
            supporters: &[3],
            comments: &[(
                Who::Leader(0),
                "Estamos tramitando el saneamiento del terreno; lo presentaremos el próximo año.",
            )],
            evaluation: Some(EvalSpec {
                viable: Some(false),
                validated_soles: None,
                notes: "No viable: terreno sin saneamiento físico-legal.",
            }),
            scores: &[],
        },
        ProposalSpec {
            slug: "veredas-salamanca",
            title: "Mejoramiento de veredas en la avenida principal de Salamanca",
            description: "Reparación de 300 m de veredas rotas frente al mercado.",
            zone: "Salamanca",
            category: "vías y veredas",
            beneficiaries: 8_000,
            cost_soles: 38_500,
            cofinancing_soles: 0,
            author: 3,
            coauthors: &[],
            status: ProposalStatus::Withdrawn,
            supporters: &[],
            comments: &[(
                Who::Leader(3),
                "Lo retiramos: la obra ya está en el plan de mantenimiento de la municipalidad.",
            )],
            evaluation: None,
            scores: &[],
        },
    ],
    acta: ActaSpec {
        slug: "acta-formalizacion",
        title: "Acta de Acuerdos y Compromisos del Presupuesto Participativo",
        kind: ActaKind::Formalization,
        month_day: "06-21",
        place: "Coliseo Municipal de Ate, Vitarte",
        agreements: &[
            "Priorizar los proyectos de la lista adjunta según la matriz de criterios aprobada, \
             respetando el orden y los montos acordados con los agentes participantes.",
            "La asignación por zonas sigue la priorización acordada y no un reparto en partes \
             iguales.",
            "El Comité de Vigilancia recibirá el proyecto de PIA antes de su aprobación.",
        ],
        prioritized: &[(0, 1, 2_300_000), (1, 2, 1_150_000), (2, 3, 860_000)],
        status: ActaStatus::Signing,
        signed_by: &[Who::Leader(0), Who::Vigilancia(0)],
    },
    observation: Some(ObservationSpec {
        slug: "observacion-pia-reparto",
        author: 0,
        kind: "agreement_not_kept",
        description: "El proyecto de PIA reparte el presupuesto participativo en partes iguales \
            entre las cinco zonas (S/ 1,600,000 cada una) en lugar de asignarlo según la \
            priorización del acta de acuerdos: Huaycán recibiría S/ 700,000 menos que lo acordado \
            para las pistas de la Zona Z.",
        evidence: &[
            "Proyecto de PIA, anexo de inversiones por zona, página 14",
            "Acta de Acuerdos y Compromisos (documento en Minka), acuerdo 2",
        ],
        response: Some(
            "La Gerencia de Presupuesto revisará la asignación por zonas y presentará la \
             corrección al Consejo de Coordinación Local.",
        ),
    }),
};
