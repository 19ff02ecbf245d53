//! SQL text for the data map, independent of any driver: which rows of each table belong to the
//! subject, as one predicate per table that follows the relations from the identity tables.
//!
//! Every statement finds the subject's rows itself, in the database: the ancestors of a table
//! become `WITH` clauses
//! (`_po_k3 AS (SELECT id FROM contacts AS t WHERE lower(t.email) = $1)`), and the table's
//! rows are those whose foreign key is in a parent's clause. Nothing is fetched
//! to the worker and sent back, and each table takes exactly one statement however many rows
//! it has. Identifier values only ever appear as bound parameters; table and column names are
//! validated and quoted.

use std::collections::{BTreeMap, BTreeSet};

use super::WorkerError;
use super::task::FieldChange;
use crate::api::datamap::{
    AnonymiseStrategy, DataMap, OnErase, PurgeMode, Relation, SoftDeleteStrategy, Table,
};
use crate::api::subject::{IdentifierKind, IdentifierSet};

/// Prefix of the `WITH` clauses holding each ancestor's keys; unlike any sensible table name,
/// since an unqualified table of the same name would be shadowed by the clause.
const CTE: &str = "_po_k";

/// Which relations lead to the subject's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every relation: what an export shows (a contact's deals, even those kept on erasure).
    All,
    /// Cascade relations only: the rows the subject owns, which erasure, restriction and
    /// rectification change. Detach children are not the subject's.
    Owned,
}

impl Reach {
    fn follows(self, on_erase: OnErase) -> bool {
        self == Reach::All || on_erase == OnErase::Cascade
    }
}

/// The SQL flavour a [`Finder`] writes. Statements share their shape (`WITH` clauses,
/// `IN (SELECT …)`, `$n` placeholders, which SQLite reads as named parameters); only the
/// comparisons that normalise a stored identifier differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    #[default]
    Postgres,
    /// Needs the [`SQLITE_PHONE_FN`] function registered on the connection.
    Sqlite,
}

/// SQLite function (registered by the SQLite connector) that reduces a phone number to `+`
/// and digits, as PostgreSQL's `regexp_replace(…, '[^0-9+]', '', 'g')` does.
pub const SQLITE_PHONE_FN: &str = "privacy_operator_phone";

/// A statement and its parameters, all text.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<String>,
}

impl Sql {
    /// Adds a parameter and returns its placeholder.
    pub fn bind(&mut self, value: impl Into<String>) -> String {
        self.params.push(value.into());
        format!("${}", self.params.len())
    }
}

/// Why a name from the data map cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid SQL identifier: use letters, digits and _, not starting with a digit, at most 63 characters"
)]
pub struct BadIdentifier(pub String);

/// Quotes a column (or unqualified table) name after checking it has the safe form the
/// data map schema demands; the check is repeated here because a task file is also input.
pub fn quote_ident(name: &str) -> Result<String, BadIdentifier> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(BadIdentifier(name.chars().take(80).collect()))
    }
}

/// Quotes an optionally schema-qualified table name.
pub fn quote_table(name: &str) -> Result<String, BadIdentifier> {
    match name.split_once('.') {
        Some((schema, table)) => Ok(format!("{}.{}", quote_ident(schema)?, quote_ident(table)?)),
        None => quote_ident(name),
    }
}

/// The subject's rows in every table of one data map.
pub struct Finder<'a> {
    map: &'a DataMap,
    /// Tables, parents before children.
    order: Vec<&'a Table>,
    /// Normalised identifier values by kind.
    identifiers: BTreeMap<IdentifierKind, String>,
    dialect: Dialect,
}

impl<'a> Finder<'a> {
    /// Fails with the tables on a cycle when the relations form one, or with a bad name.
    pub fn new(map: &'a DataMap, identifiers: &IdentifierSet) -> Result<Self, FinderError> {
        Self::with_dialect(map, identifiers, Dialect::Postgres)
    }

    /// As [`Finder::new`], writing statements for `dialect`.
    pub fn with_dialect(
        map: &'a DataMap,
        identifiers: &IdentifierSet,
        dialect: Dialect,
    ) -> Result<Self, FinderError> {
        let order = map.topological_order().map_err(FinderError::Cycle)?;
        for t in &map.tables {
            quote_table(&t.name)?;
            quote_ident(&t.primary_key)?;
            for r in &t.relations {
                if map.table(&r.table).is_none() {
                    return Err(FinderError::UnknownTable {
                        from: t.name.clone(),
                        to: r.table.clone(),
                    });
                }
                quote_ident(&r.foreign_key)?;
                if let Some(k) = &r.parent_key {
                    quote_ident(k)?;
                }
            }
            for i in &t.identity {
                quote_ident(&i.column)?;
            }
        }
        let identifiers = identifiers
            .iter()
            .map(|(kind, value)| {
                let normal = kind.normalise(value);
                (kind, normal)
            })
            .collect();
        Ok(Finder {
            map,
            order,
            identifiers,
            dialect,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The data map this finder walks.
    pub fn map(&self) -> &'a DataMap {
        self.map
    }

    /// The subject's identifiers, in normal form.
    pub fn identifiers(&self) -> IdentifierSet {
        let mut set = IdentifierSet::default();
        for (kind, value) in &self.identifiers {
            set.insert(kind.clone(), value.clone());
        }
        set
    }

    /// Tables, parents before children.
    pub fn order(&self) -> &[&'a Table] {
        &self.order
    }

    /// Tables, children before parents (erasure order).
    pub fn reverse_order(&self) -> impl Iterator<Item = &'a Table> + '_ {
        self.order.iter().rev().copied()
    }

    fn index(&self, table: &str) -> usize {
        self.map
            .tables
            .iter()
            .position(|t| t.name == table)
            .unwrap_or_default()
    }

    /// (parent, foreign key in `table`, parent key) for each relation into `table`.
    fn parents(&self, table: &str, reach: Reach) -> Vec<(&'a Table, &'a str, &'a str)> {
        let mut out = Vec::new();
        for p in &self.map.tables {
            for r in &p.relations {
                if r.table == table && reach.follows(r.on_erase) {
                    let key = r.parent_key.as_deref().unwrap_or(&p.primary_key);
                    out.push((p, r.foreign_key.as_str(), key));
                }
            }
        }
        out
    }

    /// True when the subject may have rows in `table` under `reach`: it has identity columns
    /// for an identifier the subject has, or a parent that may.
    pub fn reachable(&self, table: &Table, reach: Reach) -> bool {
        let mut seen = BTreeSet::new();
        self.reachable_inner(table, reach, &mut seen)
    }

    fn reachable_inner<'b>(
        &'b self,
        table: &'b Table,
        reach: Reach,
        seen: &mut BTreeSet<&'b str>,
    ) -> bool {
        if !seen.insert(&table.name) {
            return false;
        }
        table
            .identity
            .iter()
            .any(|i| self.identifiers.contains_key(&i.identifier))
            || self
                .parents(&table.name, reach)
                .into_iter()
                .any(|(p, _, _)| self.reachable_inner(p, reach, seen))
    }

    /// Every ancestor of `table` under `reach`, parents before children, without `table`.
    fn ancestors(&self, table: &str, reach: Reach) -> Vec<&'a Table> {
        let mut wanted = BTreeSet::new();
        let mut stack = vec![table.to_string()];
        while let Some(t) = stack.pop() {
            for (p, _, _) in self.parents(&t, reach) {
                if wanted.insert(p.name.clone()) {
                    stack.push(p.name.clone());
                }
            }
        }
        self.order
            .iter()
            .filter(|t| wanted.contains(&t.name))
            .copied()
            .collect()
    }

    /// The condition on `t` (the alias of `table`) that selects the subject's rows, using
    /// the `_po_k<i>` clauses of its parents.
    fn predicate(&self, sql: &mut Sql, table: &Table, reach: Reach) -> String {
        let mut terms = Vec::new();
        for id in &table.identity {
            let Some(value) = self.identifiers.get(&id.identifier) else {
                continue;
            };
            // Validated in new().
            let col = format!("t.\"{}\"", id.column);
            let p = sql.bind(value.clone());
            // Match the normal form of the identifier kind (see IdentifierKind::normalise).
            terms.push(match (self.dialect, &id.identifier) {
                (Dialect::Postgres, IdentifierKind::Email) => format!("lower({col}::text) = {p}"),
                (Dialect::Postgres, IdentifierKind::Phone) => {
                    format!("regexp_replace({col}::text, '[^0-9+]', '', 'g') = {p}")
                }
                (Dialect::Postgres, _) => format!("{col}::text = {p}"),
                (Dialect::Sqlite, IdentifierKind::Email) => format!("lower({col}) = {p}"),
                (Dialect::Sqlite, IdentifierKind::Phone) => {
                    format!("{SQLITE_PHONE_FN}({col}) = {p}")
                }
                // A bound text value takes the column's affinity, so integer ids match too,
                // and a plain column comparison can use its index.
                (Dialect::Sqlite, _) => format!("{col} = {p}"),
            });
        }
        for (parent, fk, key) in self.parents(&table.name, reach) {
            terms.push(format!(
                "t.\"{fk}\" IN (SELECT \"{key}\" FROM {CTE}{})",
                self.index(&parent.name)
            ));
        }
        if terms.is_empty() {
            "FALSE".to_string()
        } else {
            format!("({})", terms.join(" OR "))
        }
    }

    /// The `WITH` clause with every ancestor's keys (empty without ancestors). With
    /// `with_self`, `table` gets a clause too (for updating its Detach children).
    pub fn scope(&self, sql: &mut Sql, table: &Table, reach: Reach, with_self: bool) -> String {
        let mut clauses = Vec::new();
        let mut tables = self.ancestors(&table.name, reach);
        if with_self {
            tables.push(self.order[self.order_index(&table.name)]);
        }
        for a in tables {
            // The keys children refer to: the parent keys of every relation out of `a`.
            let keys: BTreeSet<&str> = a
                .relations
                .iter()
                .filter(|r| with_self || reach.follows(r.on_erase))
                .map(|r| r.parent_key.as_deref().unwrap_or(&a.primary_key))
                .collect();
            let cols = if keys.is_empty() {
                format!("t.\"{}\"", a.primary_key)
            } else {
                keys.iter()
                    .map(|k| format!("t.\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let pred = self.predicate(sql, a, reach);
            clauses.push(format!(
                "{CTE}{} AS (SELECT {cols} FROM {} AS t WHERE {pred})",
                self.index(&a.name),
                quoted(&a.name)
            ));
        }
        if clauses.is_empty() {
            String::new()
        } else {
            format!("WITH {} ", clauses.join(", "))
        }
    }

    fn order_index(&self, table: &str) -> usize {
        self.order
            .iter()
            .position(|t| t.name == table)
            .unwrap_or_default()
    }

    /// `WITH … <verb> … WHERE <predicate>`: the caller supplies what goes around the
    /// predicate. `body` receives the statement so far (for binding) and the predicate.
    pub fn statement(
        &self,
        table: &Table,
        reach: Reach,
        body: impl FnOnce(&mut Sql, &str) -> String,
    ) -> Sql {
        let mut sql = Sql::default();
        let with = self.scope(&mut sql, table, reach, false);
        let pred = self.predicate(&mut sql, table, reach);
        let rest = body(&mut sql, &pred);
        sql.text = format!("{with}{rest}");
        sql
    }

    /// The subject's rows of `table` as JSON text, in primary-key order.
    pub fn export(&self, table: &Table) -> Sql {
        let name = quoted(&table.name);
        let pk = &table.primary_key;
        self.statement(table, Reach::All, |_, pred| {
            format!("SELECT row_to_json(t)::text FROM {name} AS t WHERE {pred} ORDER BY t.\"{pk}\"")
        })
    }

    /// How many of the subject's rows `table` holds.
    pub fn count(&self, table: &Table, reach: Reach) -> Sql {
        let name = quoted(&table.name);
        self.statement(table, reach, |_, pred| {
            format!("SELECT count(*) FROM {name} AS t WHERE {pred}")
        })
    }

    /// Sets the Detach children's foreign keys to NULL where they point at the subject's rows
    /// of `table` (before those rows go).
    pub fn detach(&self, table: &Table) -> Vec<(String, Sql)> {
        self.detached(table, |_, r, child, keys| {
            format!(
                "UPDATE {child} AS t SET \"{fk}\" = NULL WHERE t.\"{fk}\" IN ({keys})",
                fk = r.foreign_key
            )
        })
    }

    /// One statement per Detach relation out of `table`, on the child rows that point at the
    /// subject's rows of `table`: `body` gets the relation, the quoted child table and the
    /// subquery of the keys they point at, and writes what follows the `WITH` clause.
    pub fn detached(
        &self,
        table: &Table,
        body: impl Fn(&mut Sql, &Relation, &str, &str) -> String,
    ) -> Vec<(String, Sql)> {
        let mut out = Vec::new();
        for r in table
            .relations
            .iter()
            .filter(|r| r.on_erase == OnErase::Detach)
        {
            let mut sql = Sql::default();
            let with = self.scope(&mut sql, table, Reach::Owned, true);
            let key = r.parent_key.as_deref().unwrap_or(&table.primary_key);
            let keys = format!("SELECT \"{key}\" FROM {CTE}{}", self.index(&table.name));
            let rest = body(&mut sql, r, &quoted(&r.table), &keys);
            sql.text = format!("{with}{rest}");
            out.push((r.table.clone(), sql));
        }
        out
    }
}

impl Finder<'_> {
    /// Counts the rows of `table` that still identify the subject after a purge: every owned
    /// row of a Delete table; for an Anonymise table, rows whose identity columns still match
    /// in clear (the kept rows may still hang off a kept parent, so relations do not count).
    pub fn remaining(&self, table: &Table) -> Result<Sql, FinderError> {
        match table.purge {
            PurgeMode::Delete => Ok(self.count(table, Reach::Owned)),
            PurgeMode::Anonymise => {
                let mut only_identity = table.clone();
                only_identity.relations.clear();
                let solo = DataMap {
                    tables: vec![only_identity],
                };
                let finder = Finder::with_dialect(&solo, &self.identifiers(), self.dialect)?;
                Ok(finder.count(&solo.tables[0], Reach::Owned))
            }
        }
    }
}

/// How a table's rows are hidden during the restore window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hide<'a> {
    /// Set (or, on restore, clear) this timestamp column.
    DeletedAt(&'a str),
    /// Copy the rows into the encrypted restore archive, then delete them.
    Quarantine,
}

/// The owned tables of a soft delete or restore, children first, with how each is hidden
/// (Quarantine when the table says nothing, as the data map documents).
pub fn soft_delete_plan<'a>(
    finder: &Finder<'a>,
) -> Result<Vec<(&'a Table, Hide<'a>)>, WorkerError> {
    let mut plan = Vec::new();
    for table in finder.reverse_order() {
        if !finder.reachable(table, Reach::Owned) {
            continue;
        }
        let hide = match &table.soft_delete {
            Some(sd) if sd.strategy == SoftDeleteStrategy::DeletedAt => {
                let column = sd.column.as_deref().ok_or_else(|| {
                    WorkerError::invalid(format!(
                        "table {}: softDelete DeletedAt needs a column",
                        table.name
                    ))
                })?;
                quote_ident(column).map_err(|e| WorkerError::invalid(e.to_string()))?;
                Hide::DeletedAt(column)
            }
            _ => Hide::Quarantine,
        };
        plan.push((table, hide));
    }
    Ok(plan)
}

/// The columns a Restrict for `purposes` sets on `table` (later actions win on the same
/// column; `all`, as a purpose or an action, matches every restriction).
pub fn restrict_values<'t>(table: &'t Table, purposes: &[String]) -> BTreeMap<&'t str, &'t str> {
    let all = purposes.iter().any(|p| p == "all");
    let mut set = BTreeMap::new();
    for action in &table.restrict {
        if all || action.purpose == "all" || purposes.contains(&action.purpose) {
            for (c, v) in &action.set {
                set.insert(c.as_str(), v.as_str());
            }
        }
    }
    set
}

/// Column -> new value per table for a Rectify: each change goes to every table (or the one
/// it names) declaring the field rectifiable, after checking the field's pattern. The error
/// names the field and pattern, never the value.
pub fn rectify_plan<'a, 'c>(
    finder: &Finder<'a>,
    changes: &'c [FieldChange],
) -> Result<BTreeMap<&'a str, BTreeMap<&'a str, &'c str>>, WorkerError> {
    let mut per_table: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for change in changes {
        let mut found = false;
        for table in finder.order() {
            if change.table.as_deref().is_some_and(|t| t != table.name) {
                continue;
            }
            let Some(field) = table.fields.iter().find(|f| f.name == change.field) else {
                continue;
            };
            if !field.rectifiable {
                continue;
            }
            if let Some(pattern) = &field.pattern {
                let re = regex::Regex::new(pattern).map_err(|e| {
                    WorkerError::invalid(format!(
                        "table {} field {}: pattern is not a valid regular expression: {e}",
                        table.name, field.name
                    ))
                })?;
                if !re.is_match(&change.value) {
                    return Err(WorkerError::invalid(format!(
                        "the new value of {} does not match the pattern {pattern} declared for table {}",
                        field.name, table.name
                    )));
                }
            }
            per_table
                .entry(table.name.as_str())
                .or_default()
                .insert(field.name.as_str(), change.value.as_str());
            found = true;
        }
        if !found {
            return Err(WorkerError::invalid(format!(
                "field {} is not declared rectifiable in {}; mark it `rectifiable: true` in the data map or drop the change",
                change.field,
                change
                    .table
                    .as_deref()
                    .map_or("any table of this system".to_string(), |t| format!(
                        "table {t}"
                    ))
            )));
        }
    }
    Ok(per_table)
}

/// The columns an Anonymise purge overwrites, quoted: every declared field with its strategy,
/// and identity columns not declared as fields set to NULL (they identify the subject
/// directly).
pub fn anonymise_sets(table: &Table) -> Result<Vec<(String, AnonymiseStrategy)>, WorkerError> {
    let mut out: BTreeMap<String, AnonymiseStrategy> = BTreeMap::new();
    for i in &table.identity {
        out.insert(i.column.clone(), AnonymiseStrategy::Null);
    }
    for f in &table.fields {
        out.insert(f.name.clone(), f.anonymise);
    }
    out.into_iter()
        .map(|(c, s)| {
            quote_ident(&c)
                .map(|q| (q, s))
                .map_err(|e| WorkerError::invalid(format!("table {}: {e}", table.name)))
        })
        .collect()
}

/// Every column of `table` the data map names, with where it is named, so a connector can
/// report a missing one by name before anything runs.
pub fn referenced_columns<'a>(map: &'a DataMap, table: &'a Table) -> Vec<(&'a str, String)> {
    let mut out = vec![(table.primary_key.as_str(), "primaryKey".to_string())];
    for i in &table.identity {
        out.push((i.column.as_str(), "identity".into()));
    }
    for r in &table.relations {
        out.push((
            r.parent_key.as_deref().unwrap_or(&table.primary_key),
            format!("relation to {}", r.table),
        ));
    }
    for p in &map.tables {
        for r in p.relations.iter().filter(|r| r.table == table.name) {
            out.push((
                r.foreign_key.as_str(),
                format!("relation from {} (foreignKey)", p.name),
            ));
        }
    }
    for f in &table.fields {
        out.push((f.name.as_str(), "fields".into()));
    }
    if let Some(c) = table.soft_delete.as_ref().and_then(|s| s.column.as_deref()) {
        out.push((c, "softDelete.column".into()));
    }
    for r in &table.restrict {
        for c in r.set.keys() {
            out.push((c.as_str(), format!("restrict[{}].set", r.purpose)));
        }
    }
    out
}

/// A table name already validated by [`Finder::new`].
fn quoted(name: &str) -> String {
    quote_table(name).unwrap_or_else(|_| "\"\"".to_string())
}

/// Why the data map cannot be traversed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinderError {
    #[error("the data map's relations form a cycle through tables {}: a table cannot (indirectly) be its own child; break the cycle or split the system", .0.join(", "))]
    Cycle(Vec<String>),
    #[error("table {from} has a relation to {to}, which is not in the data map")]
    UnknownTable { from: String, to: String },
    #[error("data map: {0}")]
    BadName(#[from] BadIdentifier),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::datamap::IdentityColumn;

    fn table(
        name: &str,
        identity: &[(&str, IdentifierKind)],
        rel: &[(&str, &str, OnErase)],
    ) -> Table {
        Table {
            name: name.into(),
            primary_key: "id".into(),
            identity: identity
                .iter()
                .map(|(c, k)| IdentityColumn {
                    column: c.to_string(),
                    identifier: k.clone(),
                })
                .collect(),
            relations: rel
                .iter()
                .map(|(t, fk, on)| Relation {
                    table: t.to_string(),
                    foreign_key: fk.to_string(),
                    parent_key: None,
                    on_erase: *on,
                })
                .collect(),
            fields: vec![],
            soft_delete: None,
            purge: PurgeMode::Delete,
            restrict: vec![],
            consent: None,
        }
    }

    fn map() -> DataMap {
        DataMap {
            tables: vec![
                table(
                    "contacts",
                    &[
                        ("email", IdentifierKind::Email),
                        ("user_id", IdentifierKind::UserId),
                    ],
                    &[
                        ("calls", "contact_id", OnErase::Cascade),
                        ("deals", "contact_id", OnErase::Detach),
                    ],
                ),
                table("calls", &[], &[("recordings", "call_id", OnErase::Cascade)]),
                table("recordings", &[], &[]),
                table("deals", &[], &[]),
            ],
        }
    }

    fn jane() -> IdentifierSet {
        IdentifierSet {
            email: Some("Jane@Example.com".into()),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_validated_and_quoted() {
        assert_eq!(quote_table("crm.contacts").unwrap(), "\"crm\".\"contacts\"");
        for bad in ["a;drop", "1a", "a\"b", "", "a.b.c", "a b"] {
            assert!(quote_table(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grandchildren_are_found_through_parents_with_bound_values() {
        let m = map();
        let f = Finder::new(&m, &jane()).unwrap();
        let sql = f.export(m.table("recordings").unwrap());
        assert_eq!(sql.params, vec!["jane@example.com"]);
        assert_eq!(
            sql.text,
            "WITH _po_k0 AS (SELECT t.\"id\" FROM \"contacts\" AS t WHERE (lower(t.\"email\"::text) = $1)), \
             _po_k1 AS (SELECT t.\"id\" FROM \"calls\" AS t WHERE (t.\"contact_id\" IN (SELECT \"id\" FROM _po_k0))) \
             SELECT row_to_json(t)::text FROM \"recordings\" AS t WHERE (t.\"call_id\" IN (SELECT \"id\" FROM _po_k1)) ORDER BY t.\"id\""
        );
        assert!(!sql.text.contains("jane"));
    }

    #[test]
    fn detach_children_are_exported_but_not_owned() {
        let m = map();
        let f = Finder::new(&m, &jane()).unwrap();
        let deals = m.table("deals").unwrap();
        assert!(f.reachable(deals, Reach::All));
        assert!(!f.reachable(deals, Reach::Owned));
        assert!(f.count(deals, Reach::Owned).text.ends_with("WHERE FALSE"));
        let detach = f.detach(m.table("contacts").unwrap());
        assert_eq!(detach.len(), 1);
        assert!(
            detach[0]
                .1
                .text
                .contains("UPDATE \"deals\" AS t SET \"contact_id\" = NULL")
        );
    }

    #[test]
    fn cycles_and_bad_names_are_refused() {
        let mut m = map();
        m.tables[2].relations.push(Relation {
            table: "contacts".into(),
            foreign_key: "x".into(),
            parent_key: None,
            on_erase: OnErase::Cascade,
        });
        let err = Finder::new(&m, &jane()).err().unwrap();
        assert!(err.to_string().contains("cycle"), "{err}");
        let mut m = map();
        m.tables[0].identity[0].column = "email; drop table x".into();
        assert!(matches!(
            Finder::new(&m, &jane()),
            Err(FinderError::BadName(_))
        ));
    }

    #[test]
    fn the_sqlite_dialect_differs_only_in_the_comparisons() {
        let m = map();
        let ids = IdentifierSet {
            email: Some("Jane@Example.com".into()),
            phone: Some("+1 (555) 0100".into()),
            user_id: Some("u-1".into()),
            ..Default::default()
        };
        let mut m2 = m.clone();
        m2.tables[0].identity.push(IdentityColumn {
            column: "phone".into(),
            identifier: IdentifierKind::Phone,
        });
        let f = Finder::with_dialect(&m2, &ids, Dialect::Sqlite).unwrap();
        let sql = f.count(m2.table("recordings").unwrap(), Reach::Owned);
        assert!(
            sql.text.contains(
                "WHERE (lower(t.\"email\") = $1 OR t.\"user_id\" = $2 OR privacy_operator_phone(t.\"phone\") = $3)"
            ),
            "{}",
            sql.text
        );
        assert_eq!(sql.params, vec!["jane@example.com", "u-1", "+15550100"]);
        let pg = Finder::new(&m2, &ids).unwrap();
        let pg_sql = pg.count(m2.table("recordings").unwrap(), Reach::Owned);
        assert_eq!(pg_sql.params, sql.params);
        assert!(pg_sql.text.contains("regexp_replace(t.\"phone\"::text"));
    }

    #[test]
    fn remaining_of_an_anonymised_table_looks_at_identity_columns_only() {
        let mut m = map();
        m.tables[3].identity.push(IdentityColumn {
            column: "owner_email".into(),
            identifier: IdentifierKind::Email,
        });
        m.tables[3].purge = PurgeMode::Anonymise;
        let f = Finder::new(&m, &jane()).unwrap();
        let sql = f.remaining(m.table("deals").unwrap()).unwrap();
        assert_eq!(
            sql.text,
            "SELECT count(*) FROM \"deals\" AS t WHERE (lower(t.\"owner_email\"::text) = $1)"
        );
    }

    #[test]
    fn unknown_identifier_kinds_match_nothing() {
        let m = map();
        let only_phone = IdentifierSet {
            phone: Some("+1 555".into()),
            ..Default::default()
        };
        let f = Finder::new(&m, &only_phone).unwrap();
        assert!(!f.reachable(m.table("contacts").unwrap(), Reach::All));
        let sql = f.count(m.table("contacts").unwrap(), Reach::Owned);
        assert!(sql.text.ends_with("WHERE FALSE") && sql.params.is_empty());
    }
}
