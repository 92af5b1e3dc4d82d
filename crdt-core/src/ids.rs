//! Identifiers that cross module lines: document ids, user ids, roles and district ubigeos.
//!
//! Each is a newtype with `FromStr`/`Display` and a one-line parse error, so no bare strings
//! travel between the server, the SDK and the schema.

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why an identifier could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("document id is empty")]
    EmptyDocumentId,
    #[error("document id is not base58: {0}")]
    NotBase58(String),
    #[error("document id decodes to {0} bytes, expected 20 (16 id bytes + 4 checksum bytes)")]
    WrongLength(usize),
    #[error(
        "document id checksum does not match (a character was mistyped or the id was truncated)"
    )]
    BadChecksum,
    #[error("document URL must start with `automerge:`")]
    NotAutomergeUrl,
    #[error("ubigeo must be 6 digits, got {0:?}")]
    UbigeoFormat(String),
    #[error("ubigeo {0} is not a district of Metropolitan Lima (1501xx)")]
    UnknownDistrict(String),
    #[error("user id must be 1..=128 characters without control characters")]
    BadUserId,
    #[error("unknown role {0:?} (expected leader, tecnico, vigilancia or admin)")]
    UnknownRole(String),
}

/// The fiscal years a document may be for. A new document's `processYear` must be in this range,
/// so the index ids of every year that can hold documents are known ([`DocumentId::reserved_index`]).
pub const PROCESS_YEARS: RangeInclusive<u16> = 2000..=2100;

/// A document id: 16 bytes, shown as base58check (4-byte double-SHA-256 checksum, no version byte),
/// exactly as automerge-repo spells them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let once = Sha256::digest(bytes);
    let twice = Sha256::digest(once);
    [twice[0], twice[1], twice[2], twice[3]]
}

impl DocumentId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id of a district's index document for a fiscal year: the first 16 bytes of
    /// SHA-256 of `minka:index:v1:<district>:<processYear>`.
    pub fn index_for(district: Ubigeo, process_year: u16) -> Self {
        let digest = Sha256::digest(format!("minka:index:v1:{district}:{process_year}").as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }

    /// The district and fiscal year whose index document lives at this id, if it is one of the
    /// reserved index ids (every district of Lima × every year in [`PROCESS_YEARS`]). Index ids
    /// are predictable, so a peer could otherwise create a document at one before the server does.
    pub fn reserved_index(&self) -> Option<(Ubigeo, u16)> {
        static RESERVED: OnceLock<HashMap<DocumentId, (Ubigeo, u16)>> = OnceLock::new();
        RESERVED
            .get_or_init(|| {
                Ubigeo::all()
                    .flat_map(|d| PROCESS_YEARS.map(move |y| (DocumentId::index_for(d, y), (d, y))))
                    .collect()
            })
            .get(self)
            .copied()
    }

    /// The `automerge:<id>` URL form.
    pub fn url(&self) -> String {
        format!("automerge:{self}")
    }

    /// Parses an `automerge:<id>` URL (a `#heads` suffix is ignored).
    pub fn from_url(url: &str) -> Result<Self, IdError> {
        let rest = url
            .strip_prefix("automerge:")
            .ok_or(IdError::NotAutomergeUrl)?;
        let id = rest.split('#').next().unwrap_or_default();
        id.parse()
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(20);
        buf.extend_from_slice(&self.0);
        buf.extend_from_slice(&checksum(&self.0));
        f.write_str(&bs58::encode(buf).into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::EmptyDocumentId);
        }
        let raw = bs58::decode(s)
            .into_vec()
            .map_err(|e| IdError::NotBase58(e.to_string()))?;
        if raw.len() != 20 {
            return Err(IdError::WrongLength(raw.len()));
        }
        let (id, sum) = raw.split_at(16);
        if checksum(id) != sum {
            return Err(IdError::BadChecksum);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(id);
        Ok(Self(out))
    }
}

impl Serialize for DocumentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DocumentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The 43 districts of the province of Lima (ubigeo 1501xx, INEI) with their names.
pub const LIMA_DISTRICTS: [(u32, &str); 43] = [
    (150101, "Lima"),
    (150102, "Ancón"),
    (150103, "Ate"),
    (150104, "Barranco"),
    (150105, "Breña"),
    (150106, "Carabayllo"),
    (150107, "Chaclacayo"),
    (150108, "Chorrillos"),
    (150109, "Cieneguilla"),
    (150110, "Comas"),
    (150111, "El Agustino"),
    (150112, "Independencia"),
    (150113, "Jesús María"),
    (150114, "La Molina"),
    (150115, "La Victoria"),
    (150116, "Lince"),
    (150117, "Los Olivos"),
    (150118, "Lurigancho"),
    (150119, "Lurín"),
    (150120, "Magdalena del Mar"),
    (150121, "Pueblo Libre"),
    (150122, "Miraflores"),
    (150123, "Pachacámac"),
    (150124, "Pucusana"),
    (150125, "Puente Piedra"),
    (150126, "Punta Hermosa"),
    (150127, "Punta Negra"),
    (150128, "Rímac"),
    (150129, "San Bartolo"),
    (150130, "San Borja"),
    (150131, "San Isidro"),
    (150132, "San Juan de Lurigancho"),
    (150133, "San Juan de Miraflores"),
    (150134, "San Luis"),
    (150135, "San Martín de Porres"),
    (150136, "San Miguel"),
    (150137, "Santa Anita"),
    (150138, "Santa María del Mar"),
    (150139, "Santa Rosa"),
    (150140, "Santiago de Surco"),
    (150141, "Surquillo"),
    (150142, "Villa El Salvador"),
    (150143, "Villa María del Triunfo"),
];

/// A district of Metropolitan Lima by its 6-digit INEI ubigeo.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ubigeo(u32);

impl Ubigeo {
    pub const COMAS: Ubigeo = Ubigeo(150110);
    pub const SAN_JUAN_DE_MIRAFLORES: Ubigeo = Ubigeo(150133);
    pub const ATE: Ubigeo = Ubigeo(150103);

    /// Every district, in ubigeo order.
    pub fn all() -> impl Iterator<Item = Ubigeo> {
        LIMA_DISTRICTS.iter().map(|(code, _)| Ubigeo(*code))
    }

    pub fn code(&self) -> u32 {
        self.0
    }

    /// The district's name, in Spanish.
    pub fn name(&self) -> &'static str {
        LIMA_DISTRICTS
            .iter()
            .find(|(code, _)| *code == self.0)
            .map(|(_, name)| *name)
            .unwrap_or("?")
    }
}

impl fmt::Display for Ubigeo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl fmt::Debug for Ubigeo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ubigeo({} {})", self, self.name())
    }
}

impl FromStr for Ubigeo {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::UbigeoFormat(s.to_string()));
        }
        let code: u32 = s
            .parse()
            .map_err(|_| IdError::UbigeoFormat(s.to_string()))?;
        if LIMA_DISTRICTS.iter().any(|(c, _)| *c == code) {
            Ok(Ubigeo(code))
        } else {
            Err(IdError::UnknownDistrict(s.to_string()))
        }
    }
}

impl Serialize for Ubigeo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ubigeo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which districts a token covers: one district, or `*` (province-wide reviewers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DistrictScope {
    One(Ubigeo),
    All,
}

impl DistrictScope {
    pub fn covers(&self, district: Ubigeo) -> bool {
        match self {
            DistrictScope::All => true,
            DistrictScope::One(d) => *d == district,
        }
    }
}

impl fmt::Display for DistrictScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistrictScope::All => f.write_str("*"),
            DistrictScope::One(d) => d.fmt(f),
        }
    }
}

impl FromStr for DistrictScope {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            Ok(DistrictScope::All)
        } else {
            s.parse().map(DistrictScope::One)
        }
    }
}

impl Serialize for DistrictScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DistrictScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A user id: the JWT `sub`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
            return Err(IdError::BadUserId);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

impl FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// A role from the JWT `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A community leader (agente participante).
    Leader,
    /// Municipal technical team (equipo técnico).
    Tecnico,
    /// Oversight committee member (Comité de Vigilancia).
    Vigilancia,
    /// Process administrator.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Leader, Role::Tecnico, Role::Vigilancia, Role::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Tecnico => "tecnico",
            Role::Vigilancia => "vigilancia",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdError::UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_id_round_trips_and_matches_automerge_repo_spelling() {
        // Known pair from automerge-repo: 16 zero bytes.
        let id = DocumentId::from_bytes([0; 16]);
        let s = id.to_string();
        assert_eq!(s.parse::<DocumentId>().unwrap(), id);
        let random = DocumentId::random();
        assert_eq!(DocumentId::from_url(&random.url()).unwrap(), random);
    }

    #[test]
    fn document_id_errors_say_what_is_wrong() {
        assert_eq!("".parse::<DocumentId>(), Err(IdError::EmptyDocumentId));
        assert!(matches!(
            "0OIl".parse::<DocumentId>(),
            Err(IdError::NotBase58(_))
        ));
        assert!(matches!(
            "abc".parse::<DocumentId>(),
            Err(IdError::WrongLength(3))
        ));
        let mut s = DocumentId::random().to_string();
        let last = s.pop().unwrap();
        s.push(if last == '2' { '3' } else { '2' });
        assert_eq!(s.parse::<DocumentId>(), Err(IdError::BadChecksum));
        assert_eq!(
            DocumentId::from_url("http://x"),
            Err(IdError::NotAutomergeUrl)
        );
    }

    #[test]
    fn index_id_is_derived_from_district_and_year() {
        let a = DocumentId::index_for(Ubigeo::COMAS, 2027);
        assert_eq!(a, DocumentId::index_for(Ubigeo::COMAS, 2027));
        assert_ne!(a, DocumentId::index_for(Ubigeo::COMAS, 2026));
        assert_ne!(a, DocumentId::index_for(Ubigeo::ATE, 2027));
        let digest = Sha256::digest(b"minka:index:v1:150110:2027");
        assert_eq!(a.as_bytes()[..], digest[..16]);
    }

    #[test]
    fn every_index_id_of_every_served_year_is_reserved() {
        for d in Ubigeo::all() {
            for y in [*PROCESS_YEARS.start(), 2027, 2028, *PROCESS_YEARS.end()] {
                assert_eq!(DocumentId::index_for(d, y).reserved_index(), Some((d, y)));
            }
        }
        assert_eq!(DocumentId::random().reserved_index(), None);
        let outside = DocumentId::index_for(Ubigeo::ATE, PROCESS_YEARS.end() + 1);
        assert_eq!(outside.reserved_index(), None);
    }

    #[test]
    fn ubigeo_knows_the_43_districts() {
        assert_eq!(Ubigeo::all().count(), 43);
        assert_eq!("150110".parse::<Ubigeo>().unwrap().name(), "Comas");
        assert_eq!(
            Ubigeo::SAN_JUAN_DE_MIRAFLORES.name(),
            "San Juan de Miraflores"
        );
        assert!(matches!(
            "15011".parse::<Ubigeo>(),
            Err(IdError::UbigeoFormat(_))
        ));
        assert!(matches!(
            "150144".parse::<Ubigeo>(),
            Err(IdError::UnknownDistrict(_))
        ));
        assert_eq!("*".parse::<DistrictScope>().unwrap(), DistrictScope::All);
        assert!(DistrictScope::All.covers(Ubigeo::ATE));
        assert!(!DistrictScope::One(Ubigeo::COMAS).covers(Ubigeo::ATE));
    }

    #[test]
    fn roles_and_users_parse() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!(matches!(
            "alcalde".parse::<Role>(),
            Err(IdError::UnknownRole(_))
        ));
        assert!(UserId::new("").is_err());
        assert!(UserId::new("dni-40404040").is_ok());
    }
}
