//! Admin routes (AppRole `system_admin`): any user's profile, the role catalogue, cache stats.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{Admin, JsonBody};
use crate::directory::RoleChange;
use crate::error::AppError;
use crate::model::{NewRole, RoleDefinition, RolePatch, is_valid_role_id};
use crate::state::AppState;

/// The role version an `If-Match` header pins: `3` or `"3"` (the `ETag` of `GET`); none when
/// the header is absent or `*`.
fn expected_version(headers: &HeaderMap) -> Result<Option<u64>, AppError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            AppError::BadRequest(
                "If-Match must be a role version, as in the ETag of GET /admin/roles/{role_id}".to_owned(),
            )
        })
}

/// A role as JSON with its version as the `ETag`, for a later `If-Match`.
fn with_etag(role: &RoleDefinition) -> ([(axum::http::HeaderName, String); 1], Json<serde_json::Value>) {
    etagged(role.version, json!(role))
}

/// `body` with `version` as the `ETag`.
fn etagged(version: u64, body: serde_json::Value) -> ([(axum::http::HeaderName, String); 1], Json<serde_json::Value>) {
    ([(ETAG, format!("\"{version}\""))], Json(body))
}

fn checked_role_id(role_id: &str) -> Result<(), AppError> {
    if is_valid_role_id(role_id) {
        Ok(())
    } else {
        Err(AppError::BadRequest(format!(
            "role id {role_id:?} must match ^[a-z][a-z0-9_]{{2,49}}$"
        )))
    }
}

/// `GET /admin/users/{user_id}`.
///
/// # Errors
/// 401, 403, 404, or a store error.
pub async fn user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let profile = state
        .directory
        .profile(&user_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no profile for user {user_id}")))?;
    let access = state.directory.access(&profile).await?;
    Ok(Json(super::users::view_json(&profile, &access)))
}

/// `GET /admin/roles`: `{"roles": [...], "corrupt": [...]}`, each sorted by id. A corrupt role
/// (an item that does not fit the data model) grants nothing; it is listed apart, as much of it
/// as could be read, with its `faults`, to be repaired (`PATCH` naming each attribute at fault)
/// or deleted.
///
/// # Errors
/// 401, 403, or a store error.
pub async fn list_roles(State(state): State<AppState>, _admin: Admin) -> Result<Json<serde_json::Value>, AppError> {
    let catalogue = state.directory.catalogue().await?;
    Ok(Json(
        json!({"roles": catalogue.roles(), "corrupt": catalogue.corrupt()}),
    ))
}

/// `POST /admin/roles`: 201 with the stored role.
///
/// # Errors
/// 400 for invalid input, 401, 403, 409 if it exists, 413, or a store error.
pub async fn create_role(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(new): JsonBody<NewRole>,
) -> Result<impl axum::response::IntoResponse, AppError> {
    let role = state.directory.create_role(new, &crate::now_iso8601()).await?;
    Ok((StatusCode::CREATED, with_etag(&role)))
}

/// `GET /admin/roles/{role_id}`: the role, or a corrupt one with its `faults`.
///
/// # Errors
/// 400 for a malformed id, 401, 403, 404, or a store error.
pub async fn get_role(
    State(state): State<AppState>,
    _admin: Admin,
    Path(role_id): Path<String>,
) -> Result<impl axum::response::IntoResponse, AppError> {
    checked_role_id(&role_id)?;
    let catalogue = state.directory.catalogue().await?;
    if let Some(stored) = catalogue.corrupt_role(&role_id) {
        return Ok(etagged(stored.role.version, json!(stored)));
    }
    let role = catalogue
        .role(&role_id)
        .ok_or_else(|| AppError::NotFound(format!("role {role_id} does not exist")))?;
    Ok(with_etag(role))
}

/// `PATCH /admin/roles/{role_id}`: sets the named fields (and nothing else), bumping the version.
/// With `If-Match: <version>` it applies only to that version.
///
/// # Errors
/// 400, 401, 403, 404, 409 on a version mismatch, a role that keeps changing, or a change that
/// would lock administrators out, 413, or a store error.
pub async fn update_role(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(role_id): Path<String>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<RolePatch>,
) -> Result<impl axum::response::IntoResponse, AppError> {
    checked_role_id(&role_id)?;
    let now = crate::now_iso8601();
    let change = RoleChange {
        now: &now,
        expected_version: expected_version(&headers)?,
        caller_roles: &admin.profile.roles,
    };
    let role = state.directory.update_role(&role_id, &patch, &change).await?;
    Ok(with_etag(&role))
}

/// `DELETE /admin/roles/{role_id}`: 204, with its mapping items, in one conditional transaction.
/// System roles are refused with 409; `If-Match: <version>` applies only to that version.
///
/// # Errors
/// 400, 401, 403, 404, 409, or a store error.
pub async fn delete_role(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(role_id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    checked_role_id(&role_id)?;
    let now = crate::now_iso8601();
    let change = RoleChange {
        now: &now,
        expected_version: expected_version(&headers)?,
        caller_roles: &admin.profile.roles,
    };
    state.directory.delete_role(&role_id, &change).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/cache/stats`: entries, hits and misses per cache, the mode, whether each cache is
/// served or bypassed (`reads`), the sampled verification of profile-cache hits (`verified`:
/// fresh and stale counts, `null` when off), and the channel.
///
/// # Errors
/// 401, 403.
pub async fn cache_stats(State(state): State<AppState>, _admin: Admin) -> Result<Json<serde_json::Value>, AppError> {
    let data = state.directory.stats();
    Ok(Json(json!({
        "mode": state.directory.mode(),
        "reads": super::ops::read_modes(&state),
        "verified": {"profiles": state.directory.profile_verification()},
        "channel": state.channel.report(),
        "caches": {
            "profiles": data.profiles,
            "roles": data.roles,
            "tokens": state.auth.stats(),
        },
    })))
}
