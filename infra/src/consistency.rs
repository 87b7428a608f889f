//! The consistency check: does every API task serve what DynamoDB holds?
//!
//! For each sampled key the checker reads the item with `ConsistentRead` (the truth) and asks every
//! task through its admin routes. A task that disagrees is asked again until it agrees or the
//! patience runs out (a 503, a dependency call past the task's timeout, is such an answer); the time
//! that took is the staleness seen for that key. Operators run it as
//! `infra check-consistency`; the end-to-end fault matrix ends every row with it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use staleless_model::{Profile, StoredRole, read_item};
use staleless_protocol::keys::{self, role_pk, user_pk};

/// Why the check could not run (as opposed to finding inconsistencies, which is its result).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// DynamoDB could not be read.
    #[error("cannot read {table}: {detail}")]
    Dynamo {
        /// The table.
        table: String,
        /// The SDK's message.
        detail: String,
    },
    /// A task could not be reached or answered with an unexpected status.
    #[error("task {task}: {detail}")]
    Task {
        /// The task's base URL.
        task: String,
        /// What happened.
        detail: String,
    },
}

/// Which kind of key is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A user id: `GET /admin/users/{id}` against the users table.
    User,
    /// A role id: `GET /admin/roles/{id}` against the roles table.
    Role,
}

/// What to check and where.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    /// Base URLs of the API tasks (`http://127.0.0.1:8081`).
    pub tasks: Vec<String>,
    /// A bearer token with the `system_admin` AppRole.
    pub admin_token: String,
    /// The users table.
    pub users_table: String,
    /// The roles table.
    pub roles_table: String,
    /// How long a disagreeing task may take to agree before the key counts as lost.
    pub patience: Duration,
}

/// The outcome for one key on one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOutcome {
    /// User or role.
    pub kind: KeyKind,
    /// The id.
    pub id: String,
    /// The task's base URL.
    pub task: String,
    /// Time from the first disagreeing read until the task agreed; zero when it agreed at once.
    pub staleness: Duration,
    /// Still disagreeing when the patience ran out.
    pub never_consistent: bool,
}

/// Summary over every (key, task) pair checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Pairs checked.
    pub checked: usize,
    /// Pairs that disagreed on the first read.
    pub inconsistent_at_first: usize,
    /// Pairs that never agreed within the patience: lost invalidations.
    pub never_consistent: usize,
    /// The longest time a pair took to agree.
    pub worst_staleness: Duration,
    /// Every pair that was not consistent at once.
    pub stale: Vec<KeyOutcome>,
}

impl Report {
    /// The share of pairs that disagreed on the first read.
    #[must_use]
    pub fn inconsistency_ratio(&self) -> f64 {
        if self.checked == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let ratio = self.inconsistent_at_first as f64 / self.checked as f64;
        ratio
    }

    fn record(&mut self, outcome: KeyOutcome) {
        self.checked += 1;
        if outcome.staleness.is_zero() && !outcome.never_consistent {
            return;
        }
        self.inconsistent_at_first += 1;
        self.never_consistent += usize::from(outcome.never_consistent);
        self.worst_staleness = self.worst_staleness.max(outcome.staleness);
        self.stale.push(outcome);
    }
}

/// What a stored item or a task's answer holds, read with the data model's own types (the
/// API's): a profile as [`Profile`], a role definition as [`StoredRole::read`] reads it. Both
/// sides are compared on exactly what the model holds, whatever else either carries (the item's
/// key and `lastLoginAt`, the answer's permissions). `None` (absent) stays `None`; a profile the
/// model cannot read compares as its fault.
#[must_use]
pub fn comparable(kind: KeyKind, id: &str, value: Option<&Value>) -> Option<Value> {
    let value = value?;
    Some(match kind {
        KeyKind::User => read_item::<Profile>(value).map_or_else(
            |fault| serde_json::json!({ "unreadable": fault.to_string() }),
            |profile| serde_json::to_value(profile).unwrap_or_default(),
        ),
        KeyKind::Role => serde_json::to_value(StoredRole::read(id, value.clone()).role).unwrap_or_default(),
    })
}

/// Checks every given key on every task.
///
/// # Errors
/// When DynamoDB or a task cannot be reached at all; disagreement is reported, not an error.
pub async fn check(
    dynamodb: &Client,
    http: &reqwest::Client,
    target: &CheckTarget,
    keys: &[(KeyKind, String)],
) -> Result<Report, CheckError> {
    let mut report = Report::default();
    for (kind, id) in keys {
        for task in &target.tasks {
            let outcome = check_one(dynamodb, http, target, *kind, id, task).await?;
            report.record(outcome);
        }
    }
    Ok(report)
}

async fn check_one(
    dynamodb: &Client,
    http: &reqwest::Client,
    target: &CheckTarget,
    kind: KeyKind,
    id: &str,
    task: &str,
) -> Result<KeyOutcome, CheckError> {
    let started = Instant::now();
    let mut first = true;
    loop {
        // The truth is re-read on every round: writes may still be landing while we check.
        let truth = read_truth(dynamodb, target, kind, id).await?;
        // A 503 (the task's DynamoDB call timed out) is an answer that does not agree yet.
        let served = read_task(http, target, kind, id, task).await?;
        if served.as_ref().is_some_and(|served| truth == *served) {
            return Ok(KeyOutcome {
                kind,
                id: id.to_owned(),
                task: task.to_owned(),
                staleness: if first { Duration::ZERO } else { started.elapsed() },
                never_consistent: false,
            });
        }
        first = false;
        if started.elapsed() > target.patience {
            return Ok(KeyOutcome {
                kind,
                id: id.to_owned(),
                task: task.to_owned(),
                staleness: started.elapsed(),
                never_consistent: true,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn read_truth(
    dynamodb: &Client,
    target: &CheckTarget,
    kind: KeyKind,
    id: &str,
) -> Result<Option<Value>, CheckError> {
    let (table, pk, sk): (&str, String, &str) = match kind {
        KeyKind::User => (&target.users_table, user_pk(id), keys::PROFILE_SK),
        KeyKind::Role => (&target.roles_table, role_pk(id), keys::DEFINITION_SK),
    };
    let item = dynamodb
        .get_item()
        .table_name(table)
        .key("PK", AttributeValue::S(pk))
        .key("SK", AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|err| CheckError::Dynamo {
            table: table.to_owned(),
            detail: DisplayErrorContext(&err).to_string(),
        })?
        .item;
    let json = match item {
        Some(item) => Some(
            serde_dynamo::from_item::<HashMap<String, AttributeValue>, Value>(item).map_err(|err| {
                CheckError::Dynamo {
                    table: table.to_owned(),
                    detail: err.to_string(),
                }
            })?,
        ),
        None => None,
    };
    Ok(comparable(kind, id, json.as_ref()))
}

/// What `task` serves for the key (`Some(None)`: nothing, a 404), or `None` when it answered 503:
/// a dependency call past its timeout, which the checker asks again like any disagreement.
async fn read_task(
    http: &reqwest::Client,
    target: &CheckTarget,
    kind: KeyKind,
    id: &str,
    task: &str,
) -> Result<Option<Option<Value>>, CheckError> {
    let path = match kind {
        KeyKind::User => format!("{task}/admin/users/{id}"),
        KeyKind::Role => format!("{task}/admin/roles/{id}"),
    };
    let task_error = |detail: String| CheckError::Task {
        task: task.to_owned(),
        detail,
    };
    let response = http
        .get(&path)
        .bearer_auth(&target.admin_token)
        .send()
        .await
        .map_err(|err| task_error(format!("GET {path}: {err}")))?;
    match response.status() {
        reqwest::StatusCode::NOT_FOUND => Ok(Some(None)),
        reqwest::StatusCode::SERVICE_UNAVAILABLE => Ok(None),
        status if status.is_success() => {
            let body: Value = response
                .json()
                .await
                .map_err(|err| task_error(format!("GET {path}: body is not JSON: {err}")))?;
            Ok(Some(comparable(kind, id, Some(&body))))
        }
        status => Err(task_error(format!("GET {path}: unexpected status {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comparison_is_on_what_the_model_holds() {
        let stored = json!({"PK": "USER#u", "SK": "PROFILE", "userId": "u", "name": "A", "roles": ["Staff"], "lastLoginAt": "x"});
        let served = json!({"userId": "u", "name": "A", "roles": ["Staff"], "permissions": {}, "appRoles": []});
        let user = |value: &Value| comparable(KeyKind::User, "u", Some(value));
        assert_eq!(user(&stored), user(&served));
        for changed in [
            json!({"userId": "u", "name": "B", "roles": ["Staff"]}),
            json!({"userId": "u", "name": "A", "roles": ["Staff"], "status": "suspended"}),
            json!({"userId": "u", "name": "A", "roles": ["Staff"], "picture": "https://x/p.png"}),
        ] {
            assert_ne!(user(&stored), user(&changed), "{changed}");
        }
        assert_eq!(comparable(KeyKind::User, "u", None), None);
        let corrupt = json!({"userId": "u", "status": "deleted"});
        assert!(user(&corrupt).is_some_and(|value| value["unreadable"].is_string()));

        let role = |value: &Value| comparable(KeyKind::Role, "ops", Some(value));
        let stored = json!({"PK": "ROLE#ops", "SK": "DEFINITION", "roleId": "ops", "priority": 5, "enabled": "yes"});
        let served =
            json!({"roleId": "ops", "priority": 5, "faults": [{"attribute": "enabled", "problem": "not a bool"}]});
        assert_eq!(role(&stored), role(&served), "a corrupt role as far as it can be read");
        assert_ne!(role(&stored), role(&json!({"roleId": "ops", "priority": 6})));
    }

    #[test]
    fn report_counts_ratio_and_worst_staleness() {
        let outcome = |millis, never| KeyOutcome {
            kind: KeyKind::User,
            id: "u".into(),
            task: "a".into(),
            staleness: Duration::from_millis(millis),
            never_consistent: never,
        };
        let mut report = Report::default();
        report.record(outcome(0, false));
        report.record(outcome(0, false));
        report.record(outcome(40, false));
        report.record(outcome(5_000, true));
        assert_eq!(report.checked, 4);
        assert_eq!(report.inconsistent_at_first, 2);
        assert_eq!(report.never_consistent, 1);
        assert_eq!(report.worst_staleness, Duration::from_millis(5_000));
        assert!((report.inconsistency_ratio() - 0.5).abs() < f64::EPSILON);
    }
}
