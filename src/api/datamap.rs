//! The data map of a DataSystem: where a subject's personal data lives in it and what each
//! operation (export, soft delete, purge, restrict, rectify) does to each table.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::subject::IdentifierKind;

/// A SQL identifier (column or unqualified table name). Names from the data map are spliced
/// into SQL as identifiers, so only this safe form is accepted.
pub const SQL_IDENTIFIER: &str = "^[A-Za-z_][A-Za-z0-9_]{0,62}$";
/// A table name, optionally schema-qualified (`crm.contacts`).
pub const TABLE_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]{0,62}(\\.[A-Za-z_][A-Za-z0-9_]{0,62})?$";
/// A data category name: lower-case words joined by `-`.
pub const CATEGORY_NAME: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Where personal data lives in a system and how to handle it. Tables are a graph: tables with
/// `identity` columns are where a subject is found; `relations` lead from them to the records
/// that belong to the subject (contact -> notes, calls -> recordings), traversed in dependency
/// order for export and erasure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.tables.all(t, !has(t.relations) || t.relations.all(r, self.tables.exists(x, x.name == r.table)))",
        "message": "every relation must point at a table declared in dataMap.tables; add the child table or fix relations[].table",
        "fieldPath": ".tables"
    },
    {
        "rule": "self.tables.all(t, (has(t.identity) && size(t.identity) > 0) || self.tables.exists(p, has(p.relations) && p.relations.exists(r, r.table == t.name)))",
        "message": "every table needs identity columns, or must be the child of a relation from another table; otherwise the operator cannot tell which rows belong to the subject",
        "fieldPath": ".tables"
    }
]))]
pub struct DataMap {
    /// Tables (or collections) holding personal data. At most 48 (the bound keeps the
    /// apiserver's cost estimate of the relation checks within budget); split a larger
    /// database into several DataSystems.
    #[schemars(
        length(min = 1, max = 48),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub tables: Vec<Table>,
}

/// One table and how each operation treats it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Table name, optionally schema-qualified (`crm.contacts`).
    #[schemars(length(min = 1, max = 127), regex(pattern = TABLE_NAME))]
    pub name: String,

    /// Primary key column, used for batching and to follow relations. Defaults to `id`.
    #[serde(default = "default_primary_key")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub primary_key: String,

    /// Columns that identify the subject directly: a row belongs to the subject when any of
    /// these columns equals the subject's identifier of that kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["column"])
    )]
    pub identity: Vec<IdentityColumn>,

    /// Records that hang off this table's rows (foreign keys pointing here), at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub relations: Vec<Relation>,

    /// Columns that hold personal data, with their data categories and treatment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 128),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub fields: Vec<Field>,

    /// How the subject's rows are hidden during the restore window of an erasure.
    /// Defaults to Quarantine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete: Option<SoftDelete>,

    /// What a purge does to the subject's rows: Delete removes them; Anonymise keeps them and
    /// overwrites each personal field with its `anonymise` strategy (for records you must keep,
    /// such as invoices). Defaults to Delete.
    #[serde(default)]
    pub purge: PurgeMode,

    /// How to restrict processing per purpose: columns to set on the subject's rows when a
    /// Restriction, Objection or ConsentWithdrawal names that purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["purpose"])
    )]
    pub restrict: Vec<RestrictAction>,

    /// This table records consent (when, how, from which source, for which purpose): export
    /// includes it and the ConsentPolicy's stale-consent sweep expires old rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentColumns>,
}

fn default_primary_key() -> String {
    "id".to_string()
}

/// A column holding one kind of subject identifier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct IdentityColumn {
    /// Column name.
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub column: String,
    /// Which of the subject's identifiers the column holds: email, phone, userId, customerId
    /// or externalIds.<name>.
    pub identifier: IdentifierKind,
}

/// A child table whose rows belong to the subject when they point at one of the subject's rows
/// in this table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Relation {
    /// The child table (must be declared in dataMap.tables).
    #[schemars(length(min = 1, max = 127), regex(pattern = TABLE_NAME))]
    pub table: String,
    /// Column in the child table that references this table.
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub foreign_key: String,
    /// Column in this table that the foreign key references. Defaults to this table's
    /// primary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub parent_key: Option<String>,
    /// What erasure does to the child rows: Cascade erases them with the parent (a contact's
    /// notes and call recordings); Detach keeps them and sets the foreign key to NULL (a
    /// company's deals when a contact is erased). Defaults to Cascade.
    #[serde(default)]
    pub on_erase: OnErase,
}

/// What erasure does to related rows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnErase {
    #[default]
    Cascade,
    Detach,
}

/// A column holding personal data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.pattern) || (has(self.rectifiable) && self.rectifiable)",
        "message": "pattern only applies to rectifiable fields; set rectifiable: true or remove pattern",
        "fieldPath": ".pattern"
    }
]))]
pub struct Field {
    /// Column name.
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub name: String,
    /// Data categories the column carries, for the access report (e.g. contact, identity,
    /// financial, location, communication, behavioural, health).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 1, max = 63), regex(pattern = CATEGORY_NAME)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub categories: Vec<String>,
    /// How the value is anonymised when the table's purge is Anonymise (or a retention rule
    /// anonymises): Null sets NULL, Mask replaces it with a fixed mask, Hash replaces it with a
    /// salted hash (still joinable, no longer readable). Defaults to Null.
    #[serde(default)]
    pub anonymise: AnonymiseStrategy,
    /// A Rectification request may change this column. Keys used to identify records (such
    /// as a primary e-mail) should stay false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rectifiable: bool,
    /// A regular expression (RE2) that rectified values must match, e.g. `^\+[0-9]{7,15}$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub pattern: Option<String>,
}

/// How a field is anonymised.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AnonymiseStrategy {
    #[default]
    Null,
    Mask,
    Hash,
}

/// What a purge does to the subject's rows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PurgeMode {
    #[default]
    Delete,
    Anonymise,
}

/// How rows are hidden but kept restorable during the restore window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.strategy == 'DeletedAt' ? has(self.column) : !has(self.column)",
        "message": "strategy DeletedAt needs column (the timestamp column your application already filters on, e.g. deleted_at); Quarantine takes no column",
        "fieldPath": ".column"
    }
]))]
pub struct SoftDelete {
    /// DeletedAt sets a timestamp column your application already treats as deleted;
    /// Quarantine copies the rows to an encrypted restore archive in object storage and
    /// deletes them.
    pub strategy: SoftDeleteStrategy,
    /// The deleted-at column (DeletedAt only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub column: Option<String>,
}

/// How rows are soft-deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SoftDeleteStrategy {
    DeletedAt,
    Quarantine,
}

/// Columns to set on the subject's rows to restrict processing for one purpose.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RestrictAction {
    /// The purpose (as named in the ConsentPolicy, e.g. marketing-email), or `all` for any
    /// restriction.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::request::PURPOSE_NAME))]
    pub purpose: String,
    /// Column -> value to set, e.g. `{do_not_contact: "true", marketing_opt_in: "false"}`.
    /// Values are strings; the database converts them to the column's type.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16), inner(length(max = 256)))]
    pub set: BTreeMap<String, String>,
}

/// Which columns of a consent table hold what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentColumns {
    /// Column naming the purpose.
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub purpose_column: String,
    /// Column with the time consent was given.
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub given_at_column: String,
    /// Column with the time consent was withdrawn (NULL while in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub withdrawn_at_column: Option<String>,
    /// Column recording how consent was given (web form, e-mail double opt-in, call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub method_column: Option<String>,
    /// Column recording where consent came from (form URL, campaign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub source_column: Option<String>,
    /// Column the stale-consent sweep sets when consent is older than the purpose's
    /// reconsentAfter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub expired_at_column: Option<String>,
}

impl DataMap {
    /// The table with this name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Tables in an order where every parent comes before its children (export order; erasure
    /// runs it in reverse). Returns the names on a cycle when the relations form one.
    pub fn topological_order(&self) -> Result<Vec<&Table>, Vec<String>> {
        let mut indegree: BTreeMap<&str, usize> =
            self.tables.iter().map(|t| (t.name.as_str(), 0)).collect();
        for t in &self.tables {
            for r in &t.relations {
                if let Some(d) = indegree.get_mut(r.table.as_str()) {
                    *d += 1;
                }
            }
        }
        let mut ready: Vec<&str> = self
            .tables
            .iter()
            .filter(|t| indegree[t.name.as_str()] == 0)
            .map(|t| t.name.as_str())
            .collect();
        let mut order = Vec::with_capacity(self.tables.len());
        while let Some(name) = ready.pop() {
            let Some(table) = self.table(name) else {
                continue;
            };
            order.push(table);
            for r in &table.relations {
                if let Some(d) = indegree.get_mut(r.table.as_str()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(r.table.as_str());
                    }
                }
            }
        }
        if order.len() == self.tables.len() {
            Ok(order)
        } else {
            Err(indegree
                .into_iter()
                .filter(|(_, d)| *d > 0)
                .map(|(n, _)| n.to_string())
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, children: &[&str]) -> Table {
        Table {
            name: name.into(),
            primary_key: "id".into(),
            identity: vec![],
            relations: children
                .iter()
                .map(|c| Relation {
                    table: c.to_string(),
                    foreign_key: "parent_id".into(),
                    parent_key: None,
                    on_erase: OnErase::Cascade,
                })
                .collect(),
            fields: vec![],
            soft_delete: None,
            purge: PurgeMode::Delete,
            restrict: vec![],
            consent: None,
        }
    }

    #[test]
    fn parents_come_before_children() {
        let map = DataMap {
            tables: vec![
                table("recordings", &[]),
                table("calls", &["recordings"]),
                table("contacts", &["calls", "notes"]),
                table("notes", &[]),
            ],
        };
        let order: Vec<&str> = map
            .topological_order()
            .unwrap()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
        assert!(pos("contacts") < pos("calls") && pos("calls") < pos("recordings"));
        assert!(pos("contacts") < pos("notes"));
    }

    #[test]
    fn cycles_are_reported_by_name() {
        let map = DataMap {
            tables: vec![table("a", &["b"]), table("b", &["a"]), table("c", &[])],
        };
        assert_eq!(map.topological_order().unwrap_err(), vec!["a", "b"]);
    }
}
