//! `DataSystem`: a place where personal data lives (a database, an object-storage prefix, a
//! SaaS or processor API, or anything a custom image can reach) and how to reach it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    conditions::{HasConditions, conditions_schema},
    datamap::DataMap,
    duration::Duration,
    refs::SecretKeyReference,
};

/// Where personal data lives and how the operator reaches it.
// Each printcolumn(...) repeats `type_ = ...`; clippy mistakes them for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "privacy-operator.dev",
    version = "v1alpha1",
    kind = "DataSystem",
    plural = "datasystems",
    shortname = "dsys",
    category = "privacy",
    namespaced,
    status = "DataSystemStatus",
    derive = "PartialEq",
    doc = "A system that holds personal data (SQL database, object-storage prefix, SaaS or third-party processor API, or a custom connector image), how to connect to it, and a data map saying which tables hold which identifiers and how to export, soft-delete, purge, restrict and rectify them. DataSubjectRequests select DataSystems by label.",
    printcolumn(
        name = "Connector",
        type_ = "string",
        json_path = ".spec.connector.type",
        description = "Kind of connector"
    ),
    printcolumn(
        name = "ThirdParty",
        type_ = "boolean",
        json_path = ".spec.thirdParty",
        description = "A processor that must be told to purge"
    ),
    printcolumn(
        name = "Vendor",
        type_ = "string",
        json_path = ".spec.vendor.name",
        priority = 1,
        description = "Who runs the system"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Connection and data map checked"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.thirdParty) && self.thirdParty) || has(self.vendor)",
        "message": "a thirdParty system needs vendor (name and contact) so requests can tell the subject who else holds their data",
        "fieldPath": ".vendor",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "!has(self.exportable) || self.exportable || has(self.vendor)",
        "message": "a system that is not exportable needs vendor (name and contact): access requests list it as the place to ask",
        "fieldPath": ".vendor",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.connector.type != 'SQL' || has(self.dataMap)",
        "message": "an SQL connector needs dataMap (tables, identity columns, relations) to find the subject's rows",
        "fieldPath": ".dataMap",
        "reason": "FieldValueRequired"
    }
]))]
pub struct DataSystemSpec {
    /// How to reach the system.
    pub connector: Connector,

    /// True for a processor outside your control (a SaaS vendor, a partner) that must be told
    /// to purge; erasure then tracks its confirmation against the third-party deadline.
    #[serde(default)]
    pub third_party: bool,

    /// Who runs the system and how to reach them. Required for third parties and for systems
    /// that are not exportable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<Vendor>,

    /// False when the operator cannot export from this system (integration data held by a
    /// vendor): access requests then list the system and its vendor in the export manifest
    /// instead of its data. Defaults to true.
    #[serde(default = "default_true")]
    pub exportable: bool,

    /// At most this many Jobs run against the system at once, across all requests and
    /// retention rules. Defaults to 4.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: i32,

    /// Where the subject's data lives in the system. Required for SQL connectors; optional
    /// for the others (object storage uses connector.objectStorage.prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_map: Option<DataMap>,

    /// Set when the system was restored from a backup: the operator replays every erasure
    /// recorded in the erasure ledger after the backup was taken, so the restore does not bring
    /// back erased subjects. Change backupTakenAt to trigger a new replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from_backup: Option<RestoredFromBackup>,
}

fn default_true() -> bool {
    true
}

fn default_concurrency() -> i32 {
    4
}

/// How to reach a system: `type` names the connector, and exactly the matching field is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.sql) ? 1 : 0) + (has(self.objectStorage) ? 1 : 0) + (has(self.http) ? 1 : 0) + (has(self.custom) ? 1 : 0) == 1",
        "message": "set exactly one connector: sql, objectStorage, http or custom"
    },
    {
        "rule": "self.type == 'SQL' ? has(self.sql) : self.type == 'ObjectStorage' ? has(self.objectStorage) : self.type == 'HTTP' ? has(self.http) : has(self.custom)",
        "message": "connector.type must name the connector that is set: SQL needs sql, ObjectStorage needs objectStorage, HTTP needs http, Custom needs custom",
        "fieldPath": ".type"
    }
]))]
pub struct Connector {
    /// The kind of connector: SQL, ObjectStorage, HTTP or Custom. The field of the same name
    /// (sql, objectStorage, http, custom) holds its settings.
    #[serde(rename = "type")]
    pub type_: ConnectorType,
    /// A PostgreSQL or SQLite database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlConnector>,
    /// Objects under a per-subject prefix in a bucket or directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_storage: Option<ObjectStorageConnector>,
    /// The HTTP API of a SaaS or processor, following the privacy-operator webhook contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConnector>,
    /// Your own container image, following the custom connector contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomConnector>,
}

/// The kind of connector.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConnectorType {
    #[serde(rename = "SQL")]
    Sql,
    ObjectStorage,
    #[serde(rename = "HTTP")]
    Http,
    Custom,
}

/// A SQL database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqlConnector {
    /// Database engine: postgres or sqlite.
    pub driver: SqlDriver,
    /// Secret key holding the connection URL, e.g.
    /// `postgres://privacy:…@crm-db:5432/crm?sslmode=require` or `sqlite:///data/app.db`.
    /// Use a role that may read, update and delete the mapped tables, nothing more.
    pub connection_secret_ref: SecretKeyReference,
    /// Rows per batch when streaming exports and erasing large subjects. Defaults to 1000.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: i32,
}

fn default_batch_size() -> i32 {
    1000
}

/// Database engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SqlDriver {
    Postgres,
    Sqlite,
}

/// Objects stored per subject under a prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageConnector {
    /// The bucket or directory: `s3://bucket`, `gs://bucket`, `az://container`, or
    /// `file:///var/data` for single-machine use.
    #[schemars(length(min = 1, max = 1024), regex(pattern = "^(s3|gs|az|file)://.+$"))]
    pub url: String,
    /// Where one subject's objects live, with identifier placeholders, e.g.
    /// `users/{userId}/` or `tenants/{externalIds.tenant}/{email}/`.
    #[schemars(length(min = 1, max = 1024), regex(pattern = PREFIX_TEMPLATE))]
    pub prefix: String,
    /// Secret with the store's credentials (keys as for the operator's own object store,
    /// e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). Omit to use the operator's
    /// workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<super::refs::SecretReference>,
}

/// A prefix template: text with at least one `{identifier}` placeholder.
pub const PREFIX_TEMPLATE: &str = r"^[^{}]*(\{(email|phone|userId|customerId|externalIds\.[A-Za-z][A-Za-z0-9_-]{0,62})\}[^{}]*)+$";

/// A SaaS or processor HTTP API that implements the webhook contract
/// (docs/connectors/http-webhook.md): signed, idempotent POSTs to `{baseURL}/export`, `/erase`,
/// `/restore`, `/restrict` and `/rectify`, asynchronous completion polled at a status URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpConnector {
    /// Base URL of the privacy endpoints (export, erase, restore, restrict, rectify). Status
    /// URLs the processor hands out must be on the same scheme, host and port.
    #[serde(rename = "baseURL")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = "^https?://[^\\s]+$"))]
    pub base_url: String,
    /// Secret key holding a bearer token sent as `Authorization: Bearer …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeyReference>,
    /// Secret key holding the shared secret that signs every call (HMAC-SHA256 over
    /// `<unix time>.<body>`, sent as `X-Privacy-Operator-Signature: t=…,v1=…`), so the
    /// processor can check the call came from you and is fresh.
    pub hmac_secret_ref: SecretKeyReference,
    /// How long one call may take, retries of 429, 5xx and connection errors included.
    /// Defaults to 30s.
    #[serde(default = "default_http_timeout")]
    pub timeout: Duration,
    /// How often to check on a request the processor has accepted but not completed. A
    /// worker polls the status URL at this interval for at most 15 minutes, then ends and is
    /// run again after this interval (with the same idempotency key) until the processor
    /// confirms. Defaults to 1h.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Duration,
}

fn default_http_timeout() -> Duration {
    "30s".parse().expect("30s is a valid duration")
}

fn default_poll_interval() -> Duration {
    Duration::hours(1)
}

/// A container image that implements the custom connector contract (task file in, result
/// manifest out).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomConnector {
    /// Container image, e.g. `registry.example.com/privacy/legacy-erp-connector:1.4.2`.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Entrypoint override; omit to use the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 4096)))]
    pub command: Vec<String>,
    /// Arguments; the task file path is passed in the environment, never here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub args: Vec<String>,
    /// Service account the connector Job runs as (to reach cloud APIs with workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = super::refs::DNS_SUBDOMAIN))]
    pub service_account_name: Option<String>,
}

/// Who runs a system.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Vendor {
    /// Vendor name, as the subject would recognise it (e.g. "Acme Mailer Ltd").
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Privacy contact: an e-mail address or URL of the vendor's privacy desk.
    #[schemars(length(min = 1, max = 512))]
    pub contact: String,
}

/// A restore from backup, to be reconciled with the erasure ledger.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFromBackup {
    /// When the restored backup was taken. Every erasure recorded after this time is replayed.
    pub backup_taken_at: Time,
    /// Why the restore happened, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub note: Option<String>,
}

/// Observed state of a DataSystem.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSystemStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (connection and data map checked), Replaying, and Reconciling/Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Jobs running against the system now (bounded by spec.concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<i32>,
    /// Erasure-ledger replay after a restore from backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStatus>,
}

impl HasConditions for DataSystemStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// Progress of an erasure-ledger replay.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// The spec.restoredFromBackup.backupTakenAt this replay is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_taken_at: Option<Time>,
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReplayPhase>,
    /// Ledger entries (erasures) to replay.
    #[serde(default)]
    pub total: i64,
    /// Ledger entries replayed so far.
    #[serde(default)]
    pub replayed: i64,
    /// Rows found again and erased by the replay.
    #[serde(default)]
    pub rows_erased: i64,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// State of a replay.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReplayPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}
