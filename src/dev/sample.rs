//! `dev --with-sample-data`: a SQLite CRM with realistic sample records, its connection
//! Secret, a `DataSystem` with a full data map, and a `RetentionPolicy` whose windows are
//! seconds, so a whole erasure (soft delete, restore window, purge) can be watched in a minute.
//!
//! The database is generated deterministically (the same rows on every machine) the first
//! time only: on later starts it is left as the requests left it. The resources are created
//! when absent and never overwritten, so edits made with kubectl survive a restart.
//!
//! The sample subjects [`SUBJECT_EMAIL`] (Jane Doe) and [`SECOND_SUBJECT_EMAIL`] (John Roe)
//! have rows in every table of the data map; `examples/dev/` holds requests for them.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, api::PostParams};
use rusqlite::{Connection, params};
use serde_json::json;

use crate::api::{DataSystem, RetentionPolicy};
use crate::{Error, Result};

/// Namespace of the sample resources (kubectl's default).
pub const NAMESPACE: &str = "default";
/// The sample CRM's DataSystem.
pub const SYSTEM: &str = "crm-sample";
/// The Secret holding its connection URL.
pub const CONNECTION_SECRET: &str = "crm-sample-db";
/// The RetentionPolicy with short windows.
pub const POLICY: &str = "sample-fast";
/// Label on the sample DataSystem; the example requests select it, so other DataSystems
/// applied beside it (say, from `examples/`) stay out of their scope.
pub const LABEL: (&str, &str) = ("privacy-operator.dev/sample", "crm");
/// The sample subject with rows in every table.
pub const SUBJECT_EMAIL: &str = "jane.doe@example.com";
/// Her phone number and user id in the CRM.
pub const SUBJECT_PHONE: &str = "+44 20 7946 0958";
pub const SUBJECT_USER_ID: &str = "u-48213";
/// A second subject with rows in every table (for an erasure beside Jane's).
pub const SECOND_SUBJECT_EMAIL: &str = "john.roe@example.com";
/// Contacts generated besides the two sample subjects.
pub const CONTACTS: usize = 300;
/// Restore window of the sample policy: how long a cancel can bring the data back.
pub const RESTORE_WINDOW: &str = "30s";

/// Tables of the data map, in the order the schema creates them.
pub const TABLES: [&str; 9] = [
    "contacts",
    "deals",
    "notes",
    "calls",
    "call_recordings",
    "sms",
    "tasks",
    "tickets",
    "consents",
];

/// What `install` set up.
#[derive(Debug, Clone)]
pub struct Installed {
    pub database: PathBuf,
    /// Contacts in the database when it was opened.
    pub contacts: u64,
}

/// Commands to try, printed by `dev` (run from the repository root).
pub fn try_commands(objects: &Path, database: &Path) -> Vec<String> {
    vec![
        "kubectl get dsys,rpol                       # the sample CRM and its short-window policy".into(),
        "kubectl apply -f examples/dev/access.yaml   # Jane Doe asks for her data".into(),
        "kubectl wait --for=condition=Ready dsr/sample-access --timeout=2m".into(),
        format!(
            "ls {}/exports/{NAMESPACE}/sample-access/   # the export: files and manifest.json",
            objects.display()
        ),
        "kubectl apply -f examples/dev/erasure.yaml  # ...and to be forgotten".into(),
        "kubectl get dsr -w                          # SoftDeleted, then Purged after the 30s restore window".into(),
        "kubectl patch dsr sample-erasure --type merge -p '{\"spec\":{\"cancel\":true}}'   # within 30s: restore".into(),
        format!(
            "sqlite3 {} \"select id, email, deleted_at from contacts where email like '%doe%'\"",
            database.display()
        ),
        "kubectl describe dsr sample-erasure         # the story, as Events".into(),
    ]
}

/// Creates the database (first start only) and the resources (when absent).
pub async fn install(client: &Client, data_dir: &Path) -> Result<Installed> {
    let dir = data_dir.join("sample");
    super::jobs::pod::private_dir(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let database = dir.join("crm.db");
    let db = database.clone();
    let contacts = tokio::task::spawn_blocking(move || ensure_database(&db))
        .await
        .map_err(|e| Error::Config(format!("generating the sample database: {e}")))??;

    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CONNECTION_SECRET, "namespace": NAMESPACE, "labels": {LABEL.0: LABEL.1}},
        "type": "Opaque",
        "stringData": {"url": connection_url(&database)},
    }))?;
    create_if_absent(&Api::namespaced(client.clone(), NAMESPACE), &secret).await?;
    let system: DataSystem = serde_json::from_value(data_system())?;
    create_if_absent(&Api::namespaced(client.clone(), NAMESPACE), &system).await?;
    let policy: RetentionPolicy = serde_json::from_value(retention_policy())?;
    create_if_absent(&Api::namespaced(client.clone(), NAMESPACE), &policy).await?;
    Ok(Installed { database, contacts })
}

/// The SQLite connection URL of a database file: `sqlite://` and the absolute path.
pub fn connection_url(database: &Path) -> String {
    format!("sqlite://{}", database.display())
}

async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The DataSystem of the sample CRM: where Jane's rows are and what each operation does.
pub fn data_system() -> serde_json::Value {
    let deleted_at = json!({"strategy": "DeletedAt", "column": "deleted_at"});
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSystem",
        "metadata": {
            "name": SYSTEM,
            "namespace": NAMESPACE,
            "labels": {LABEL.0: LABEL.1, "privacy-operator.dev/tier": "first-party"},
        },
        "spec": {
            "connector": {"type": "SQL", "sql": {
                "driver": "sqlite",
                "connectionSecretRef": {"name": CONNECTION_SECRET, "key": "url"},
            }},
            "concurrency": 1,
            "dataMap": {"tables": [
                {
                    "name": "contacts",
                    "identity": [
                        {"column": "email", "identifier": "email"},
                        {"column": "phone", "identifier": "phone"},
                        {"column": "external_user_id", "identifier": "userId"},
                    ],
                    "relations": [
                        {"table": "notes", "foreignKey": "contact_id"},
                        {"table": "calls", "foreignKey": "contact_id"},
                        {"table": "sms", "foreignKey": "contact_id"},
                        {"table": "tasks", "foreignKey": "contact_id"},
                        {"table": "tickets", "foreignKey": "contact_id"},
                        {"table": "consents", "foreignKey": "contact_id"},
                        {"table": "deals", "foreignKey": "contact_id", "onErase": "Detach"},
                    ],
                    "fields": [
                        {"name": "email", "categories": ["contact"], "anonymise": "Hash"},
                        {"name": "phone", "categories": ["contact"], "rectifiable": true, "pattern": "^\\+[0-9 ]{7,20}$"},
                        {"name": "first_name", "categories": ["identity"], "rectifiable": true},
                        {"name": "last_name", "categories": ["identity"], "rectifiable": true},
                        {"name": "address", "categories": ["location"], "rectifiable": true, "anonymise": "Mask"},
                        {"name": "birthday", "categories": ["identity"], "rectifiable": true},
                    ],
                    "softDelete": deleted_at,
                    "purge": "Delete",
                    "restrict": [
                        {"purpose": "marketing-email", "set": {"marketing_opt_in": "0"}},
                        {"purpose": "profile-enrichment", "set": {"enrichment_enabled": "0"}},
                        {"purpose": "all", "set": {"do_not_contact": "1", "processing_restricted": "1"}},
                    ],
                },
                {
                    "name": "notes",
                    "fields": [{"name": "body", "categories": ["communication"]}],
                    "softDelete": deleted_at,
                },
                {
                    "name": "calls",
                    "relations": [{"table": "call_recordings", "foreignKey": "call_id"}],
                    "fields": [
                        {"name": "summary", "categories": ["communication"]},
                        {"name": "phone_number", "categories": ["contact"]},
                    ],
                    "softDelete": deleted_at,
                },
                {
                    "name": "call_recordings",
                    "fields": [{"name": "audio_url", "categories": ["communication", "biometric"]}],
                    "softDelete": deleted_at,
                },
                {
                    "name": "sms",
                    "fields": [
                        {"name": "body", "categories": ["communication"]},
                        {"name": "to_number", "categories": ["contact"]},
                    ],
                    "softDelete": deleted_at,
                },
                {
                    "name": "tasks",
                    "fields": [{"name": "title", "categories": ["communication"]}],
                    "softDelete": deleted_at,
                },
                {
                    "name": "tickets",
                    "fields": [
                        {"name": "subject", "categories": ["communication"]},
                        {"name": "description", "categories": ["communication"]},
                    ],
                    "softDelete": deleted_at,
                },
                {
                    "name": "consents",
                    "consent": {
                        "purposeColumn": "purpose",
                        "givenAtColumn": "given_at",
                        "withdrawnAtColumn": "withdrawn_at",
                        "methodColumn": "method",
                        "sourceColumn": "source",
                        "expiredAtColumn": "expired_at",
                    },
                    "softDelete": deleted_at,
                },
                {
                    // Deals are business records: an erasure of a contact keeps them and,
                    // on purge, unlinks them (Detach above). Found directly only by customer
                    // number; then anonymised rather than deleted.
                    "name": "deals",
                    "identity": [{"column": "customer_number", "identifier": "customerId"}],
                    "fields": [{"name": "notes", "categories": ["financial"]}],
                    "softDelete": deleted_at,
                    "purge": "Anonymise",
                },
            ]},
        },
    })
}

/// The sample RetentionPolicy: an erasure's restore window of 30 seconds, processors given a
/// minute, fast retries.
pub fn retention_policy() -> serde_json::Value {
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "RetentionPolicy",
        "metadata": {"name": POLICY, "namespace": NAMESPACE, "labels": {LABEL.0: LABEL.1}},
        "spec": {
            "erasure": {
                "restoreWindow": RESTORE_WINDOW,
                "thirdPartyPurgeWithin": "1m",
                "backupRetention": "5m",
            },
            "exportExpiry": "1d",
            "retry": {"maxAttempts": 3, "initialBackoff": "2s", "maxBackoff": "10s"},
        },
    })
}

/// The schema of the sample CRM. Timestamps are ISO 8601 text; `deleted_at` is the
/// application's soft-delete marker.
pub const SCHEMA: &str = "
CREATE TABLE companies (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, domain TEXT NOT NULL, industry TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY, company_id INTEGER REFERENCES companies(id),
    email TEXT NOT NULL, phone TEXT, external_user_id TEXT,
    first_name TEXT NOT NULL, last_name TEXT NOT NULL, address TEXT, birthday TEXT,
    marketing_opt_in INTEGER NOT NULL DEFAULT 0, enrichment_enabled INTEGER NOT NULL DEFAULT 1,
    do_not_contact INTEGER NOT NULL DEFAULT 0, processing_restricted INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, closed_at TEXT, deleted_at TEXT);
CREATE INDEX contacts_email ON contacts(email);
CREATE TABLE deals (
    id INTEGER PRIMARY KEY, contact_id INTEGER REFERENCES contacts(id),
    company_id INTEGER REFERENCES companies(id), customer_number TEXT, title TEXT NOT NULL,
    amount_cents INTEGER NOT NULL, stage TEXT NOT NULL, notes TEXT, created_at TEXT NOT NULL,
    deleted_at TEXT);
CREATE TABLE notes (
    id INTEGER PRIMARY KEY, contact_id INTEGER NOT NULL REFERENCES contacts(id),
    body TEXT NOT NULL, created_at TEXT NOT NULL, deleted_at TEXT);
CREATE TABLE calls (
    id INTEGER PRIMARY KEY, contact_id INTEGER NOT NULL REFERENCES contacts(id),
    direction TEXT NOT NULL, phone_number TEXT, summary TEXT, duration_seconds INTEGER NOT NULL,
    started_at TEXT NOT NULL, deleted_at TEXT);
CREATE TABLE call_recordings (
    id INTEGER PRIMARY KEY, call_id INTEGER NOT NULL REFERENCES calls(id),
    audio_url TEXT NOT NULL, duration_seconds INTEGER NOT NULL, created_at TEXT NOT NULL,
    deleted_at TEXT);
CREATE TABLE sms (
    id INTEGER PRIMARY KEY, contact_id INTEGER NOT NULL REFERENCES contacts(id),
    direction TEXT NOT NULL, to_number TEXT NOT NULL, body TEXT NOT NULL, sent_at TEXT NOT NULL,
    deleted_at TEXT);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, contact_id INTEGER NOT NULL REFERENCES contacts(id),
    title TEXT NOT NULL, due_at TEXT, done INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
    deleted_at TEXT);
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY, contact_id INTEGER NOT NULL REFERENCES contacts(id),
    subject TEXT NOT NULL, description TEXT NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL, deleted_at TEXT);
CREATE TABLE consents (
    id INTEGER PRIMARY KEY, contact_id INTEGER NOT NULL REFERENCES contacts(id),
    purpose TEXT NOT NULL, given_at TEXT NOT NULL, withdrawn_at TEXT, method TEXT NOT NULL,
    source TEXT NOT NULL, expired_at TEXT, deleted_at TEXT);
";

/// Creates the database if it does not exist (atomically: generated under a temporary name,
/// then renamed) and returns its number of contacts.
pub fn ensure_database(path: &Path) -> Result<u64> {
    let sql_err =
        |e: rusqlite::Error| Error::Config(format!("sample database {}: {e}", path.display()));
    if !path.exists() {
        let partial = path.with_extension("db.partial");
        match std::fs::remove_file(&partial) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path: partial,
                    source,
                });
            }
        }
        let mut conn = Connection::open(&partial).map_err(sql_err)?;
        generate(&mut conn).map_err(sql_err)?;
        drop(conn);
        std::fs::rename(&partial, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(sql_err)?;
    conn.query_row("SELECT count(*) FROM contacts", [], |r| r.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(sql_err)
}

/// SplitMix64: a tiny deterministic generator (the same sample everywhere).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi` (`lo <= hi`, both small and non-negative).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).unwrap_or(1).max(1);
        lo + i64::try_from(self.next() % span).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = usize::try_from(self.next() % items.len() as u64).unwrap_or(0);
        items[i]
    }
}

const FIRST: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Sophia", "Elijah", "Mia", "Lucas",
    "Hannah", "Mateo", "Lena", "Finn", "Chloe", "Jonas", "Ava", "Leon", "Isla", "Mohammed", "Zoe",
    "Luca", "Freya", "Arjun", "Maya", "Tomasz", "Ines", "Kenji", "Aisha", "Pedro",
];
const LAST: &[&str] = &[
    "Smith",
    "Müller",
    "Garcia",
    "Rossi",
    "Nowak",
    "Johansson",
    "Dubois",
    "Silva",
    "Kowalski",
    "Jensen",
    "Murphy",
    "Schmidt",
    "Martin",
    "Novak",
    "Fischer",
    "Tanaka",
    "Okafor",
    "Patel",
    "Costa",
    "Weber",
    "Lindqvist",
    "Moreau",
    "Horvat",
    "Byrne",
    "Santos",
    "Kaya",
    "Berg",
];
const STREETS: &[&str] = &[
    "High Street",
    "Station Road",
    "Hauptstraße",
    "Rue de la Paix",
    "Main Street",
    "Church Lane",
    "Kingsway",
    "Via Roma",
    "Calle Mayor",
    "Park Avenue",
];
const CITIES: &[&str] = &[
    "London",
    "Berlin",
    "Paris",
    "Madrid",
    "Lisbon",
    "Dublin",
    "Vienna",
    "Milan",
    "Warsaw",
    "Amsterdam",
];
const COMPANY_A: &[&str] = &[
    "Northwind",
    "Bluebird",
    "Evergreen",
    "Silverline",
    "Brightwave",
    "Ironbridge",
    "Redwood",
    "Lighthouse",
    "Summit",
    "Harbor",
];
const COMPANY_B: &[&str] = &[
    "Logistics",
    "Labs",
    "Foods",
    "Energy",
    "Health",
    "Software",
    "Retail",
    "Media",
];
const INDUSTRIES: &[&str] = &[
    "logistics",
    "software",
    "retail",
    "healthcare",
    "energy",
    "media",
];
const NOTES: &[&str] = &[
    "Asked about the annual plan; send a quote.",
    "Prefers to be contacted in the morning.",
    "Met at the trade fair; interested in the analytics add-on.",
    "Complained about the last invoice; resolved with a credit note.",
    "Wants a demo for the operations team next month.",
    "Moving to a new office in the spring.",
];
const CALL_SUMMARIES: &[&str] = &[
    "Discussed renewal terms.",
    "Onboarding call, walked through the dashboard.",
    "Support call about login problems.",
    "Follow-up on the proposal.",
    "Billing question about VAT.",
];
const SMS: &[&str] = &[
    "Your appointment is confirmed for tomorrow at 10:00.",
    "Thanks for your order! It ships today.",
    "Reminder: your invoice is due on Friday.",
    "Your support ticket has been updated.",
];
const TASKS: &[&str] = &[
    "Send the contract",
    "Call back about pricing",
    "Schedule the quarterly review",
    "Prepare the onboarding pack",
];
const TICKETS: &[(&str, &str)] = &[
    ("Cannot log in", "Password reset e-mail never arrives."),
    (
        "Invoice address wrong",
        "Please update the billing address on my account.",
    ),
    ("Export to CSV fails", "The export stops at 50%."),
    (
        "Cancel my subscription",
        "Please cancel at the end of the term.",
    ),
];
const PURPOSES: &[&str] = &[
    "marketing-email",
    "analytics",
    "call-recording",
    "partner-sharing",
];
const METHODS: &[&str] = &["web-form", "double-opt-in", "phone", "paper"];
const STAGES: &[&str] = &["lead", "qualified", "proposal", "won", "lost"];

/// A timestamp `days` and `minutes` after 2025-01-06 (fixed, for a deterministic sample).
fn at(days: i64, minutes: i64) -> String {
    let base = jiff::civil::date(2025, 1, 6).at(9, 0, 0, 0);
    let t = base
        .checked_add(jiff::Span::new().days(days))
        .and_then(|t| t.checked_add(jiff::Span::new().minutes(minutes)))
        .unwrap_or(base);
    format!("{}Z", t.strftime("%Y-%m-%dT%H:%M:%S"))
}

struct Person {
    email: String,
    phone: String,
    user_id: String,
    first: String,
    last: String,
    /// The sample subjects get rows in every table.
    full: bool,
}

fn generate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    let mut rng = Rng(0x5eed_2024_0117);
    let companies: i64 = 40;
    for id in 1..=companies {
        let name = format!("{} {}", rng.pick(COMPANY_A), rng.pick(COMPANY_B));
        let domain = format!("{}{id}.example.com", name.to_lowercase().replace(' ', "-"));
        tx.execute(
            "INSERT INTO companies (id, name, domain, industry, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, name, domain, rng.pick(INDUSTRIES), at(id, 0)],
        )?;
    }
    let mut people = vec![
        Person {
            email: SUBJECT_EMAIL.into(),
            phone: SUBJECT_PHONE.into(),
            user_id: SUBJECT_USER_ID.into(),
            first: "Jane".into(),
            last: "Doe".into(),
            full: true,
        },
        Person {
            email: SECOND_SUBJECT_EMAIL.into(),
            phone: "+1 415 555 0100".into(),
            user_id: "u-51877".into(),
            first: "John".into(),
            last: "Roe".into(),
            full: true,
        },
    ];
    for i in 0..CONTACTS {
        let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
        let local = format!("{}.{}{}", first, last, i)
            .to_lowercase()
            .replace('ü', "ue");
        people.push(Person {
            email: format!("{local}@example.org"),
            phone: format!("+49 30 {:07}", rng.range(1_000_000, 9_999_999)),
            user_id: format!("u-{}", 60_000 + i),
            first: first.into(),
            last: last.into(),
            full: false,
        });
    }
    let (mut note, mut call, mut rec, mut sms, mut task, mut ticket, mut consent, mut deal) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    for (i, p) in people.iter().enumerate() {
        let contact = i64::try_from(i).unwrap_or(i64::MAX - 1) + 1;
        let day = rng.range(0, 300);
        let company = rng.range(1, companies);
        let address = format!(
            "{} {}, {}",
            rng.range(1, 220),
            rng.pick(STREETS),
            rng.pick(CITIES)
        );
        let birthday = format!(
            "{}-{:02}-{:02}",
            rng.range(1950, 2003),
            rng.range(1, 12),
            rng.range(1, 28)
        );
        tx.execute(
            "INSERT INTO contacts (id, company_id, email, phone, external_user_id, first_name, last_name,
                 address, birthday, marketing_opt_in, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                contact, company, p.email, p.phone, p.user_id, p.first, p.last, address, birthday,
                rng.range(0, 1), at(day, 0)
            ],
        )?;
        // The sample subjects have at least two rows in every related table.
        let n = |rng: &mut Rng, max: i64| if p.full { 2 } else { rng.range(0, max) };
        for k in 0..n(&mut rng, 3) {
            note += 1;
            tx.execute(
                "INSERT INTO notes (id, contact_id, body, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![note, contact, rng.pick(NOTES), at(day + k, 30)],
            )?;
        }
        for k in 0..n(&mut rng, 3) {
            call += 1;
            tx.execute(
                "INSERT INTO calls (id, contact_id, direction, phone_number, summary, duration_seconds, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    call, contact, if k % 2 == 0 { "inbound" } else { "outbound" }, p.phone,
                    rng.pick(CALL_SUMMARIES), rng.range(30, 1800), at(day + k, 60)
                ],
            )?;
            if p.full || rng.range(0, 1) == 1 {
                rec += 1;
                tx.execute(
                    "INSERT INTO call_recordings (id, call_id, audio_url, duration_seconds, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        rec, call, format!("https://recordings.example.com/calls/{call}.ogg"),
                        rng.range(30, 1800), at(day + k, 61)
                    ],
                )?;
            }
        }
        for k in 0..n(&mut rng, 3) {
            sms += 1;
            tx.execute(
                "INSERT INTO sms (id, contact_id, direction, to_number, body, sent_at) VALUES (?1, ?2, 'outbound', ?3, ?4, ?5)",
                params![sms, contact, p.phone, rng.pick(SMS), at(day + k, 90)],
            )?;
        }
        for k in 0..n(&mut rng, 2) {
            task += 1;
            tx.execute(
                "INSERT INTO tasks (id, contact_id, title, due_at, done, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![task, contact, rng.pick(TASKS), at(day + k + 7, 0), rng.range(0, 1), at(day + k, 120)],
            )?;
        }
        for k in 0..n(&mut rng, 2) {
            ticket += 1;
            let (subject, description) =
                TICKETS[usize::try_from(rng.next() % TICKETS.len() as u64).unwrap_or(0)];
            tx.execute(
                "INSERT INTO tickets (id, contact_id, subject, description, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ticket, contact, subject, description, if k == 0 { "closed" } else { "open" }, at(day + k, 150)],
            )?;
        }
        for k in 0..(if p.full { 2 } else { rng.range(1, 3) }) {
            consent += 1;
            tx.execute(
                "INSERT INTO consents (id, contact_id, purpose, given_at, method, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    consent, contact, PURPOSES[usize::try_from(k).unwrap_or(0) % PURPOSES.len()],
                    at(day, 5), rng.pick(METHODS), "https://www.example.com/signup"
                ],
            )?;
        }
        for k in 0..n(&mut rng, 1) {
            deal += 1;
            tx.execute(
                "INSERT INTO deals (id, contact_id, company_id, customer_number, title, amount_cents, stage, notes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    deal, contact, company, format!("C-{}", 100_000 + contact), format!("Annual plan {}", 2025 + k),
                    rng.range(50_000, 5_000_000), rng.pick(STAGES), "Discount approved by sales lead", at(day + k, 200)
                ],
            )?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn the_sample_is_deterministic_and_jane_is_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        assert_eq!(ensure_database(&a).unwrap(), CONTACTS as u64 + 2);
        ensure_database(&b).unwrap();
        let dump = |p: &Path| {
            let c = Connection::open(p).unwrap();
            let mut out = Vec::new();
            for t in TABLES {
                let mut s = c
                    .prepare(&format!("SELECT * FROM {t} ORDER BY id"))
                    .unwrap();
                let cols = s.column_count();
                let rows: Vec<String> = s
                    .query_map([], |r| {
                        Ok((0..cols)
                            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                            .collect::<Vec<_>>()
                            .join("|"))
                    })
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                out.push(rows);
            }
            out
        };
        assert_eq!(dump(&a), dump(&b));

        let c = Connection::open(&a).unwrap();
        let jane = "(SELECT id FROM contacts WHERE email = 'jane.doe@example.com')";
        assert_eq!(
            count(
                &c,
                &format!("SELECT count(*) FROM contacts WHERE id = {jane}")
            ),
            1
        );
        for t in [
            "notes", "calls", "sms", "tasks", "tickets", "consents", "deals",
        ] {
            let n = count(
                &c,
                &format!("SELECT count(*) FROM {t} WHERE contact_id = {jane}"),
            );
            assert!(n >= 1, "Jane has no rows in {t}");
        }
        let recordings = count(
            &c,
            &format!(
                "SELECT count(*) FROM call_recordings WHERE call_id IN (SELECT id FROM calls WHERE contact_id = {jane})"
            ),
        );
        assert!(recordings >= 1);
        assert!(count(&c, "SELECT count(*) FROM contacts") > 300);
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM contacts WHERE deleted_at IS NOT NULL"
            ),
            0
        );
    }

    #[test]
    fn an_existing_database_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crm.db");
        ensure_database(&p).unwrap();
        Connection::open(&p)
            .unwrap()
            .execute("DELETE FROM notes", [])
            .unwrap();
        ensure_database(&p).unwrap();
        let c = Connection::open(&p).unwrap();
        assert_eq!(count(&c, "SELECT count(*) FROM notes"), 0);
    }

    #[test]
    fn the_resources_match_the_crds() {
        let system: DataSystem = serde_json::from_value(data_system()).unwrap();
        let map = system.spec.data_map.as_ref().unwrap();
        assert_eq!(map.tables.len(), TABLES.len());
        for t in TABLES {
            assert!(map.table(t).is_some(), "{t} not in the data map");
        }
        assert!(map.topological_order().is_ok());
        let _: RetentionPolicy = serde_json::from_value(retention_policy()).unwrap();
        assert_eq!(
            connection_url(Path::new("/d/sample/crm.db")),
            "sqlite:///d/sample/crm.db"
        );
    }

    #[test]
    fn every_mapped_column_exists_in_the_schema() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let system: DataSystem = serde_json::from_value(data_system()).unwrap();
        let map = system.spec.data_map.as_ref().unwrap();
        for t in &map.tables {
            let mut columns = vec![t.primary_key.clone()];
            columns.extend(t.identity.iter().map(|i| i.column.clone()));
            columns.extend(t.fields.iter().map(|f| f.name.clone()));
            columns.extend(t.soft_delete.iter().filter_map(|s| s.column.clone()));
            columns.extend(t.restrict.iter().flat_map(|r| r.set.keys().cloned()));
            for r in &t.relations {
                columns.extend(r.parent_key.clone());
                let fk = format!("{}.{}", r.table, r.foreign_key);
                let n = count(
                    &c,
                    &format!(
                        "SELECT count(*) FROM pragma_table_info('{}') WHERE name = '{}'",
                        r.table, r.foreign_key
                    ),
                );
                assert_eq!(n, 1, "{fk} is not in the schema");
            }
            if let Some(k) = &t.consent {
                columns.extend([k.purpose_column.clone(), k.given_at_column.clone()]);
                columns.extend(
                    [
                        &k.withdrawn_at_column,
                        &k.method_column,
                        &k.source_column,
                        &k.expired_at_column,
                    ]
                    .into_iter()
                    .flatten()
                    .cloned(),
                );
            }
            for column in columns {
                let n = count(
                    &c,
                    &format!(
                        "SELECT count(*) FROM pragma_table_info('{}') WHERE name = '{column}'",
                        t.name
                    ),
                );
                assert_eq!(n, 1, "{}.{column} is not in the schema", t.name);
            }
        }
    }
}
