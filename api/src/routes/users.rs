//! The caller's own profile: `GET /users/me` and `POST /users/me/sync`.

use axum::Json;
use serde::{Deserialize, Serialize};

use super::{Authenticated, OptionalJsonBody};
use crate::error::AppError;
use crate::model::Profile;
use crate::permissions::{Access, Permissions};
use crate::state::AppState;
use crate::store::ProfileSync;

/// A profile with its resolved AppRoles and permissions, as every user route returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView<'a> {
    /// The stored profile (`userId`, `email`, `name`, `roles`, `status`, …).
    #[serde(flatten)]
    pub profile: &'a Profile,
    /// Resolved AppRole ids.
    pub app_roles: &'a [String],
    /// What they grant.
    pub permissions: &'a Permissions,
}

impl<'a> UserView<'a> {
    /// The view of `profile` with `access`.
    #[must_use]
    pub fn new(profile: &'a Profile, access: &'a Access) -> Self {
        Self {
            profile,
            app_roles: &access.app_roles,
            permissions: &access.permissions,
        }
    }
}

/// `GET /users/me`: the caller's profile and permissions, whatever its status (so a suspended
/// user can see why); 404 before the first sync.
///
/// # Errors
/// 401, 404, or a store error.
pub async fn me(Authenticated(caller): Authenticated) -> Result<Json<serde_json::Value>, AppError> {
    let (Some(profile), Some(access)) = (&caller.profile, &caller.access) else {
        return Err(AppError::NotFound(
            "no profile for this user: POST /users/me/sync creates it".to_owned(),
        ));
    };
    Ok(Json(view_json(profile, access)))
}

/// Optional fields of a sync body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncBody {
    /// Overrides the token's `name`.
    pub name: Option<String>,
    /// Avatar URL.
    pub picture: Option<String>,
}

/// `POST /users/me/sync`: upserts the profile from the token's claims and the optional body.
///
/// # Errors
/// 400 for a bad body, 401, 403 for a user who is not active, or a store error.
pub async fn sync(
    axum::extract::State(state): axum::extract::State<AppState>,
    Authenticated(caller): Authenticated,
    OptionalJsonBody(body): OptionalJsonBody<SyncBody>,
) -> Result<Json<serde_json::Value>, AppError> {
    if let Some(profile) = &caller.profile
        && !profile.status.is_active()
    {
        return Err(AppError::Forbidden("user is not active".to_owned()));
    }
    let body = body.unwrap_or_default();
    let identity = &caller.identity;
    let sync = ProfileSync {
        user_id: identity.user_id.clone(),
        email: identity.email.clone(),
        name: body.name.or_else(|| identity.name.clone()),
        roles: identity.idp_roles.clone(),
        roles_issued_at: identity.issued_at,
        picture: body.picture,
        now: crate::now_iso8601(),
    };
    let profile = state.directory.sync_profile(&sync).await?;
    let access = state.directory.access(&profile).await?;
    Ok(Json(view_json(&profile, &access)))
}

/// The JSON of a [`UserView`].
pub(crate) fn view_json(profile: &Profile, access: &Access) -> serde_json::Value {
    serde_json::to_value(UserView::new(profile, access)).unwrap_or_default()
}
