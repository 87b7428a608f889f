//! Admin routes (AppRole `system_admin`): any user's profile, the role catalogue, cache stats.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::{Admin, JsonBody};
use crate::error::AppError;
use crate::model::{NewRole, RolePatch, is_valid_role_id};
use crate::state::AppState;

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

/// `GET /admin/roles`: `{"roles": [...]}`, sorted by id.
///
/// # Errors
/// 401, 403, or a store error.
pub async fn list_roles(State(state): State<AppState>, _admin: Admin) -> Result<Json<serde_json::Value>, AppError> {
    let catalogue = state.directory.catalogue().await?;
    Ok(Json(json!({"roles": catalogue.roles()})))
}

/// `POST /admin/roles`: 201 with the stored role.
///
/// # Errors
/// 400 for invalid input, 401, 403, 409 if it exists, 413, or a store error.
pub async fn create_role(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(new): JsonBody<NewRole>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let role = state.directory.create_role(new, &crate::now_iso8601()).await?;
    Ok((StatusCode::CREATED, Json(json!(role))))
}

/// `GET /admin/roles/{role_id}`.
///
/// # Errors
/// 400 for a malformed id, 401, 403, 404, or a store error.
pub async fn get_role(
    State(state): State<AppState>,
    _admin: Admin,
    Path(role_id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    checked_role_id(&role_id)?;
    let catalogue = state.directory.catalogue().await?;
    let role = catalogue
        .role(&role_id)
        .ok_or_else(|| AppError::NotFound(format!("role {role_id} does not exist")))?;
    Ok(Json(json!(role)))
}

/// `PATCH /admin/roles/{role_id}`: changes the named fields.
///
/// # Errors
/// 400, 401, 403, 404, 409 on a concurrent change, 413, or a store error.
pub async fn update_role(
    State(state): State<AppState>,
    _admin: Admin,
    Path(role_id): Path<String>,
    JsonBody(patch): JsonBody<RolePatch>,
) -> Result<Json<serde_json::Value>, AppError> {
    checked_role_id(&role_id)?;
    let role = state
        .directory
        .update_role(&role_id, patch, &crate::now_iso8601())
        .await?;
    Ok(Json(json!(role)))
}

/// `DELETE /admin/roles/{role_id}`: 204; system roles are refused with 409.
///
/// # Errors
/// 400, 401, 403, 404, 409, or a store error.
pub async fn delete_role(
    State(state): State<AppState>,
    _admin: Admin,
    Path(role_id): Path<String>,
) -> Result<StatusCode, AppError> {
    checked_role_id(&role_id)?;
    state.directory.delete_role(&role_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/cache/stats`: entries, hits and misses per cache, the mode and the channel.
///
/// # Errors
/// 401, 403.
pub async fn cache_stats(State(state): State<AppState>, _admin: Admin) -> Result<Json<serde_json::Value>, AppError> {
    let data = state.directory.stats();
    Ok(Json(json!({
        "mode": state.directory.mode(),
        "channel": state.channel.report(),
        "caches": {
            "profiles": data.profiles,
            "roles": data.roles,
            "tokens": state.auth.stats(),
        },
    })))
}
