//! The simulator's deterministic world: organisations, backup jobs, mailboxes (with archive
//! twins), restore points and per-mailbox item corpora, all derived from a seed.
//!
//! Nothing here is random at run time: ids are UUIDs hashed from the seed and the e-mail
//! address, and each mailbox's items come from a ChaCha stream keyed by the seed and the
//! mailbox id, so two simulators with the same seed agree on every byte and tests can compute
//! ground truth (search hit counts, export digests) from the same world.
//!
//! The world's instants reach clients in one shape, the server's .NET time format
//! ([`dotnet_time`]), which the token, session and item answers share.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Name (and officeName) of the demo organisation.
pub const DEMO_ORG_NAME: &str = "contoso.onmicrosoft.com";
/// Fixed id of the demo organisation (shared with `--dev` and the example jobs).
pub const DEMO_ORG_ID: Uuid = Uuid::from_u128(0x6f1c8e0a_6a4b_4d1e_9a51_3c2f0b7d9e01);
/// Name of the organisation with 2,500 mailboxes used by paging tests.
pub const PAGING_ORG_NAME: &str = "fabrikam.onmicrosoft.com";
/// Number of mailboxes of [`PAGING_ORG_NAME`] unless
/// [`SimConfig::paging_org_mailboxes`](super::SimConfig::paging_org_mailboxes) says otherwise.
pub const PAGING_ORG_MAILBOXES: usize = 2500;
/// Development username accepted by the default configuration.
pub const DEV_USERNAME: &str = "CONTOSO\\svc-restore";
/// Development password accepted by the default configuration.
pub const DEV_PASSWORD: &str = "restorectl-dev";

/// Demo mailboxes of contoso: (e-mail, display name).
const CONTOSO: &[(&str, &str)] = &[
    ("alice@contoso.com", "Alice Adams"),
    ("bob@contoso.com", "Bob Brown"),
    ("carol@contoso.com", "Carol Clark"),
    ("dave@contoso.com", "Dave Davis"),
    ("erin@contoso.com", "Erin Evans"),
    ("frank@contoso.com", "Frank Foster"),
    ("grace@contoso.com", "Grace Green"),
    ("heidi@contoso.com", "Heidi Hill"),
    ("ivan@contoso.com", "Ivan Irwin"),
    ("judy@contoso.com", "Judy Jones"),
    ("mallory@contoso.com", "Mallory Moore"),
    ("olivia@contoso.com", "Olivia Owens"),
    ("peggy@contoso.com", "Peggy Parker"),
    ("rupert@contoso.com", "Rupert Reed"),
    ("sybil@contoso.com", "Sybil Scott"),
    ("trent@contoso.com", "Trent Turner"),
    ("victor@contoso.com", "Victor Vance"),
    ("walter@contoso.com", "Walter White"),
    ("ceo@contoso.com", "Chief Executive"),
    ("legal-review@contoso.com", "Legal Review"),
    ("svc-backup@contoso.com", "Backup Service"),
    ("svc-scan@contoso.com", "Scanner Service"),
    ("anna@legal.contoso.com", "Anna Lang"),
    ("ben@legal.contoso.com", "Ben Lowe"),
    ("chloe@legal.contoso.com", "Chloe Lund"),
    ("dan@legal.contoso.com", "Dan Lyle"),
    ("eve@legal.contoso.com", "Eve Lord"),
    ("finn@legal.contoso.com", "Finn Lamb"),
    ("gina@legal.contoso.com", "Gina Lee"),
    ("hugo@legal.contoso.com", "Hugo Lin"),
    ("iris@legal.contoso.com", "Iris Loy"),
    ("jack@legal.contoso.com", "Jack Lutz"),
];

/// Demo mailboxes that also have an archive twin.
const ARCHIVED: &[&str] = &[
    "alice@contoso.com",
    "bob@contoso.com",
    "ceo@contoso.com",
    "anna@legal.contoso.com",
];

/// Correspondents from outside the organisations.
const EXTERNALS: &[(&str, &str)] = &[
    ("nancy@northwind.example", "Nancy North"),
    ("news@newsletter.example", "Industry Newsletter"),
    ("billing@adatum.example", "Adatum Billing"),
    ("jane@fourthcoffee.example", "Jane Doe"),
    ("counsel@lawfirm.example", "Outside Counsel"),
];

const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "Board minutes",
    "Project Falcon status",
    "Announcement: office move",
    "Weekly newsletter",
    "Invoice",
    "Re: budget",
    "Team lunch",
    "Contract review",
    "Security alert",
    "Travel itinerary",
    "Performance review",
    "Legal hold notice",
    "Customer escalation",
    "Release plan",
    "Fw: merger timeline",
];

const WORDS: &[&str] = &[
    "information",
    "falcon",
    "merger",
    "deadline",
    "confidential",
    "draft",
    "approval",
    "meeting",
    "forecast",
    "invoice",
    "contract",
    "review",
    "schedule",
    "customer",
    "budget",
    "audit",
    "policy",
    "release",
    "travel",
    "summary",
];

/// Importance values, weighted towards `Normal`.
const IMPORTANCE: &[&str] = &["Normal", "Normal", "Normal", "High", "Low"];
const LOCATIONS: &[&str] = &["Room 4.12", "Teams meeting", "Head office", "Cafeteria"];
const COMPANIES: &[&str] = &["Northwind", "Adatum", "Fourth Coffee", "Contoso"];
const CATEGORIES: &[&str] = &["Red category", "Blue category", "Legal", "Finance"];

/// A backed-up organisation with its single backup job.
#[derive(Debug, Clone)]
pub struct Organization {
    /// Organisation id.
    pub id: Uuid,
    /// Name, which is also its `officeName`.
    pub name: String,
    /// Microsoft tenant id.
    pub msid: Uuid,
    /// Id of the backup job that protects it (for `POST /v8/Jobs/{id}/explore`).
    pub job_id: Uuid,
    /// Name of that job.
    pub job_name: String,
    /// Mailboxes, primary and archive, in listing order.
    pub mailboxes: Vec<Mailbox>,
}

/// A backed-up mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Deterministic id derived from the seed, the e-mail and the archive flag.
    pub id: Uuid,
    /// Organisation id.
    pub org_id: Uuid,
    /// E-mail address (archive twins share it with their primary).
    pub email: String,
    /// Display name ("`<Name> (Archive)`" for archives).
    pub name: String,
    /// Whether this is an archive mailbox.
    pub is_archive: bool,
}

/// A mailbox added to the demo organisation by
/// [`SimConfig::extra_mailboxes`](super::SimConfig::extra_mailboxes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtraMailbox {
    /// E-mail address; may be empty, or the address of another mailbox.
    #[serde(default)]
    pub email: String,
    /// Display name.
    pub name: String,
    #[serde(default)]
    pub is_archive: bool,
}

/// Kind of a mailbox item, with its Exchange message class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemClass {
    Message,
    Appointment,
    Contact,
    Task,
    StickyNote,
    Post,
}

impl ItemClass {
    /// The `itemClass` string the server reports.
    pub fn message_class(self) -> &'static str {
        match self {
            ItemClass::Message => "IPM.Note",
            ItemClass::Appointment => "IPM.Appointment",
            ItemClass::Contact => "IPM.Contact",
            ItemClass::Task => "IPM.Task",
            ItemClass::StickyNote => "IPM.StickyNote",
            ItemClass::Post => "IPM.Post",
        }
    }
}

/// A correspondent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub address: String,
}

impl Person {
    fn new(address: &str, name: &str) -> Self {
        Person {
            name: name.to_string(),
            address: address.to_string(),
        }
    }

    /// `Name <address>` as the server shows correspondents.
    pub fn display(&self) -> String {
        format!("{} <{}>", self.name, self.address)
    }
}

/// One item of a mailbox's backup.
#[derive(Debug, Clone)]
pub struct Item {
    /// Opaque item id (not a uuid, as on the real server).
    pub id: String,
    pub class: ItemClass,
    pub subject: String,
    /// Body text (searchable with `body:`, not returned).
    pub body: String,
    pub from: Person,
    pub to: Vec<Person>,
    pub cc: Vec<Person>,
    pub bcc: Vec<Person>,
    pub sent: DateTime<Utc>,
    pub received: DateTime<Utc>,
    /// `Low`, `Normal` or `High`.
    pub importance: &'static str,
    /// Attachment (name, size in bytes).
    pub attachments: Vec<(String, u64)>,
    pub size: u64,
    pub read: bool,
    pub flagged: bool,
    pub categories: Vec<String>,
    pub location: String,
    pub company: String,
}

/// The whole simulated backup world.
#[derive(Debug, Clone)]
pub struct World {
    seed: u64,
    orgs: Vec<Organization>,
    first_backup: DateTime<Utc>,
    latest_backup: DateTime<Utc>,
    /// Mailbox id → (organisation index, mailbox index).
    index: HashMap<Uuid, (usize, usize)>,
}

/// Default time of the latest restore point: fixed, so digests and search counts never depend
/// on the wall clock.
pub fn default_latest_backup() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 30, 22, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// .NET-style timestamp with seven fractional digits, as the server writes them.
pub fn dotnet_time(t: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

/// 32 bytes hashed from labelled parts; the root of every derived value.
pub(crate) fn derive(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"restorectl-sim/v1");
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A v4-shaped UUID derived from labelled parts.
pub(crate) fn derive_uuid(parts: &[&[u8]]) -> Uuid {
    let bytes = derive(parts);
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    uuid::Builder::from_random_bytes(first).into_uuid()
}

/// A deterministic RNG for a labelled purpose.
pub(crate) fn rng_for(parts: &[&[u8]]) -> ChaCha8Rng {
    ChaCha8Rng::from_seed(derive(parts))
}

impl World {
    /// Builds the world for `seed` with its latest restore point at `latest_backup`
    /// (daily restore points at the same time of day going back 540 days).
    #[cfg(test)]
    pub fn new(seed: u64, latest_backup: DateTime<Utc>) -> World {
        World::build(seed, latest_backup, &[], PAGING_ORG_MAILBOXES)
    }

    /// [`World::new`] with `extra` mailboxes appended to the demo organisation and
    /// `paging_mailboxes` mailboxes (`user0001@fabrikam.com` …) in the paging organisation. An
    /// extra mailbox's id also derives from its name, so two without an address differ.
    pub fn build(
        seed: u64,
        latest_backup: DateTime<Utc>,
        extra: &[ExtraMailbox],
        paging_mailboxes: usize,
    ) -> World {
        let seed_bytes = seed.to_le_bytes();
        let mailbox = |org_id: Uuid, email: &str, name: &str, is_archive: bool| Mailbox {
            id: derive_uuid(&[
                b"mailbox",
                &seed_bytes,
                email.to_ascii_lowercase().as_bytes(),
                &[u8::from(is_archive)],
            ]),
            org_id,
            email: email.to_string(),
            name: if is_archive {
                format!("{name} (Archive)")
            } else {
                name.to_string()
            },
            is_archive,
        };
        let mut contoso_boxes = Vec::new();
        for (email, name) in CONTOSO {
            contoso_boxes.push(mailbox(DEMO_ORG_ID, email, name, false));
        }
        for (email, name) in CONTOSO.iter().filter(|(e, _)| ARCHIVED.contains(e)) {
            contoso_boxes.push(mailbox(DEMO_ORG_ID, email, name, true));
        }
        for x in extra {
            let mut m = mailbox(DEMO_ORG_ID, &x.email, &x.name, x.is_archive);
            m.id = derive_uuid(&[
                b"extra-mailbox",
                &seed_bytes,
                x.email.to_ascii_lowercase().as_bytes(),
                x.name.as_bytes(),
                &[u8::from(x.is_archive)],
            ]);
            m.name.clone_from(&x.name);
            contoso_boxes.push(m);
        }
        let fabrikam_id = derive_uuid(&[b"org", &seed_bytes, PAGING_ORG_NAME.as_bytes()]);
        let fabrikam_boxes = (1..=paging_mailboxes)
            .map(|n| {
                let email = format!("user{n:04}@fabrikam.com");
                mailbox(fabrikam_id, &email, &format!("User {n:04}"), false)
            })
            .collect();
        let org = |id: Uuid, name: &str, mailboxes: Vec<Mailbox>| Organization {
            id,
            name: name.to_string(),
            msid: derive_uuid(&[b"msid", &seed_bytes, name.as_bytes()]),
            job_id: derive_uuid(&[b"job", &seed_bytes, name.as_bytes()]),
            job_name: format!("Backup {name}"),
            mailboxes,
        };
        let orgs = vec![
            org(DEMO_ORG_ID, DEMO_ORG_NAME, contoso_boxes),
            org(fabrikam_id, PAGING_ORG_NAME, fabrikam_boxes),
        ];
        let mut index = HashMap::new();
        for (oi, o) in orgs.iter().enumerate() {
            for (mi, m) in o.mailboxes.iter().enumerate() {
                index.insert(m.id, (oi, mi));
            }
        }
        World {
            seed,
            orgs,
            first_backup: latest_backup - Duration::days(540),
            latest_backup,
            index,
        }
    }

    /// The seed the world was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// All organisations in listing order.
    pub fn organizations(&self) -> &[Organization] {
        &self.orgs
    }

    /// An organisation by id.
    pub fn organization(&self, id: Uuid) -> Option<&Organization> {
        self.orgs.iter().find(|o| o.id == id)
    }

    /// The organisation whose backup job has this id.
    pub fn organization_by_job(&self, job_id: Uuid) -> Option<&Organization> {
        self.orgs.iter().find(|o| o.job_id == job_id)
    }

    /// A mailbox by id.
    pub fn mailbox(&self, id: Uuid) -> Option<&Mailbox> {
        let (oi, mi) = *self.index.get(&id)?;
        self.orgs.get(oi)?.mailboxes.get(mi)
    }

    /// A mailbox by e-mail (case-insensitive) and archive flag.
    pub fn mailbox_by_email(&self, email: &str, is_archive: bool) -> Option<&Mailbox> {
        self.orgs
            .iter()
            .flat_map(|o| &o.mailboxes)
            .find(|m| m.is_archive == is_archive && m.email.eq_ignore_ascii_case(email))
    }

    /// Oldest restore point.
    pub fn first_backup(&self) -> DateTime<Utc> {
        self.first_backup
    }

    /// Newest restore point.
    pub fn latest_backup(&self) -> DateTime<Utc> {
        self.latest_backup
    }

    /// The restore point an explore at `at` opens: the newest one not after `at` (`None` = the
    /// latest); `None` when `at` is before the first backup (a session without data, as the
    /// vendor documents for job explore).
    pub fn restore_point(&self, at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let Some(at) = at else {
            return Some(self.latest_backup);
        };
        if at < self.first_backup {
            return None;
        }
        if at >= self.latest_backup {
            return Some(self.latest_backup);
        }
        let days = (self.latest_backup - at).num_seconds().div_euclid(86_400)
            + i64::from((self.latest_backup - at).num_seconds() % 86_400 != 0);
        Some(self.latest_backup - Duration::days(days))
    }

    /// The items of a mailbox's backup that exist at `restore_point`, oldest first.
    pub fn items(&self, mailbox: &Mailbox, restore_point: DateTime<Utc>) -> Vec<Item> {
        let mut all = self.all_items(mailbox);
        all.retain(|i| i.received <= restore_point);
        all
    }

    /// Every item the mailbox ever had, oldest first.
    fn all_items(&self, mailbox: &Mailbox) -> Vec<Item> {
        let seed = self.seed.to_le_bytes();
        let mut rng = rng_for(&[b"items", &seed, mailbox.id.as_bytes()]);
        let demo = mailbox.org_id == DEMO_ORG_ID;
        let count = if demo {
            rng.random_range(40..300)
        } else {
            rng.random_range(3..12)
        };
        let owner = Person::new(&mailbox.email, mailbox.name.trim_end_matches(" (Archive)"));
        let colleagues: Vec<Person> = match self.organization(mailbox.org_id) {
            Some(o) if demo => o
                .mailboxes
                .iter()
                .filter(|m| !m.is_archive)
                .map(|m| Person::new(&m.email, &m.name))
                .collect(),
            _ => (0..8)
                .map(|_| {
                    let n = rng.random_range(1..=PAGING_ORG_MAILBOXES);
                    Person::new(&format!("user{n:04}@fabrikam.com"), &format!("User {n:04}"))
                })
                .collect(),
        };
        // Archives hold the older half of the history.
        let span = (self.latest_backup - self.first_backup).num_seconds() + 365 * 86_400;
        let (lo, hi) = if mailbox.is_archive {
            (0, span / 2)
        } else {
            (0, span)
        };
        let origin = self.first_backup - Duration::days(365);
        let mut items: Vec<Item> = (0..count)
            .map(|n| {
                let received = origin + Duration::seconds(rng.random_range(lo..hi));
                generate_item(&mut rng, mailbox, n, &owner, &colleagues, received)
            })
            .collect();
        items.sort_by(|a, b| a.received.cmp(&b.received).then(a.id.cmp(&b.id)));
        items
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, list: &'a [T]) -> &'a T {
    &list[rng.random_range(0..list.len())]
}

fn generate_item(
    rng: &mut ChaCha8Rng,
    mailbox: &Mailbox,
    n: u32,
    owner: &Person,
    colleagues: &[Person],
    received: DateTime<Utc>,
) -> Item {
    let class = match rng.random_range(0..100) {
        0..78 => ItemClass::Message,
        78..86 => ItemClass::Appointment,
        86..91 => ItemClass::Contact,
        91..95 => ItemClass::Task,
        95..97 => ItemClass::StickyNote,
        _ => ItemClass::Post,
    };
    let correspondent = |rng: &mut ChaCha8Rng| {
        if rng.random_bool(0.25) {
            let (a, nm) = pick(rng, EXTERNALS);
            Person::new(a, nm)
        } else {
            pick(rng, colleagues).clone()
        }
    };
    let incoming = rng.random_bool(0.7);
    let other = correspondent(rng);
    let (from, mut to) = if incoming {
        (other, vec![owner.clone()])
    } else {
        (owner.clone(), vec![other])
    };
    if rng.random_bool(0.2) {
        to.push(correspondent(rng));
    }
    let cc = if rng.random_bool(0.3) {
        vec![correspondent(rng)]
    } else {
        Vec::new()
    };
    let bcc = if rng.random_bool(0.05) {
        vec![correspondent(rng)]
    } else {
        Vec::new()
    };
    let mut subject = pick(rng, SUBJECTS).to_string();
    if rng.random_bool(0.5) {
        subject.push_str(&format!(" #{}", rng.random_range(100..999)));
    }
    let body_words: Vec<&str> = (0..rng.random_range(4..12))
        .map(|_| *pick(rng, WORDS))
        .collect();
    let body = format!("{subject}. {}", body_words.join(" "));
    let attachments: Vec<(String, u64)> = if rng.random_bool(0.3) {
        (0..rng.random_range(1..4))
            .map(|k| {
                let ext = pick(rng, &["pdf", "docx", "xlsx", "png"]);
                (
                    format!("{}-{k}.{ext}", pick(rng, WORDS)),
                    rng.random_range(10_000..5_000_000),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let size = 2_000 + body.len() as u64 * 20 + attachments.iter().map(|a| a.1).sum::<u64>();
    let tag = derive(&[b"item", mailbox.id.as_bytes(), &n.to_le_bytes()]);
    Item {
        id: format!("AAMkAG{}", hex::encode(&tag[..24])),
        class,
        subject,
        body,
        from,
        to,
        cc,
        bcc,
        sent: received - Duration::seconds(rng.random_range(1..600)),
        received,
        importance: pick::<&str>(rng, IMPORTANCE),
        attachments,
        size,
        read: rng.random_bool(0.8),
        flagged: rng.random_bool(0.1),
        categories: if rng.random_bool(0.2) {
            vec![pick(rng, CATEGORIES).to_string()]
        } else {
            Vec::new()
        },
        location: pick(rng, LOCATIONS).to_string(),
        company: pick(rng, COMPANIES).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_is_deterministic_and_shaped_as_documented() {
        let a = World::new(7, default_latest_backup());
        let b = World::new(7, default_latest_backup());
        let c = World::new(8, default_latest_backup());
        let contoso = a.organization(DEMO_ORG_ID).expect("contoso");
        assert_eq!(contoso.name, DEMO_ORG_NAME);
        assert_eq!(contoso.mailboxes.len(), 32 + 4);
        assert_eq!(a.organizations()[1].mailboxes.len(), PAGING_ORG_MAILBOXES);
        let alice = a
            .mailbox_by_email("ALICE@contoso.com", false)
            .expect("alice");
        let alice_archive = a
            .mailbox_by_email("alice@contoso.com", true)
            .expect("archive");
        assert_ne!(alice.id, alice_archive.id);
        assert_eq!(alice_archive.name, "Alice Adams (Archive)");
        assert_eq!(
            b.mailbox_by_email("alice@contoso.com", false).map(|m| m.id),
            Some(alice.id)
        );
        assert_ne!(
            c.mailbox_by_email("alice@contoso.com", false).map(|m| m.id),
            Some(alice.id)
        );
        let rp = a.latest_backup();
        let items_a: Vec<String> = a.items(alice, rp).into_iter().map(|i| i.subject).collect();
        let items_b: Vec<String> = b.items(alice, rp).into_iter().map(|i| i.subject).collect();
        assert!(items_a.len() >= 20);
        assert_eq!(items_a, items_b);
    }

    #[test]
    fn restore_points_are_daily_and_clamped() {
        let w = World::new(1, default_latest_backup());
        let latest = w.latest_backup();
        assert_eq!(w.restore_point(None), Some(latest));
        assert_eq!(
            w.restore_point(Some(latest + Duration::days(3))),
            Some(latest)
        );
        assert_eq!(
            w.restore_point(Some(latest - Duration::hours(1))),
            Some(latest - Duration::days(1))
        );
        assert_eq!(
            w.restore_point(Some(latest - Duration::days(2))),
            Some(latest - Duration::days(2))
        );
        assert_eq!(
            w.restore_point(Some(w.first_backup() - Duration::seconds(1))),
            None
        );
        let alice = w
            .mailbox_by_email("alice@contoso.com", false)
            .expect("alice");
        let older = w.items(alice, latest - Duration::days(200)).len();
        assert!(older < w.items(alice, latest).len());
    }
}
