//! The HTTP surface (`docs/design.md`, and the README's *The API*): the router, the extractors that turn a request into a
//! caller, and the JSON body extractors whose rejections are [`AppError`]s.
//!
//! - [`users`]: `GET /users/me`, `POST /users/me/sync`.
//! - [`admin`]: `/admin/users/{user_id}`, `/admin/roles` CRUD, `/admin/cache/stats`.
//! - [`ops`]: `/health`, `/ready`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::AuthError;
use crate::error::AppError;
use crate::model::Profile;
use crate::permissions::{ADMIN_ROLE, Access};
use crate::state::{AppState, Caller};

pub mod admin;
pub mod ops;
pub mod users;

/// Every route of the service, with body limit, request timeout, request tracing and the
/// request-duration histogram.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    let timeout = state.config.request_timeout();
    Router::new()
        .route("/users/me", get(users::me))
        .route("/users/me/sync", post(users::sync))
        .route("/admin/users/{user_id}", get(admin::user))
        .route("/admin/roles", get(admin::list_roles).post(admin::create_role))
        .route(
            "/admin/roles/{role_id}",
            get(admin::get_role)
                .patch(admin::update_role)
                .delete(admin::delete_role),
        )
        .route("/admin/cache/stats", get(admin::cache_stats))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { AppError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(axum::middleware::map_response(json_timeout))
        .layer(
            TraceLayer::new_for_http()
                // A 503 from `/ready` or a dependency is an expected state, reported by metrics
                // and the listener's own logs; logging each as an ERROR would drown real ones.
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        // Outermost: the duration includes the timeout's and the body limit's answers.
        .layer(axum::middleware::from_fn(crate::metrics::record_request_duration))
        .with_state(state)
}

/// The timeout layer answers with an empty body; every error of this service is JSON.
async fn json_timeout(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse as _;

    if response.status() == StatusCode::REQUEST_TIMEOUT {
        AppError::Timeout.into_response()
    } else {
        response
    }
}

/// The bearer token of a request, if it has one.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Any caller with a valid token, with or without a profile, active or not.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(AppError::Unauthorized(AuthError::Missing))?;
        Ok(Self(state.caller(token).await?))
    }
}

/// A caller with a profile whose status is `active`.
pub struct ActiveUser {
    /// The caller.
    pub caller: Caller,
    /// The profile.
    pub profile: Arc<Profile>,
    /// What it may do.
    pub access: Arc<Access>,
}

impl ActiveUser {
    /// The active user of `caller`, or why not.
    ///
    /// # Errors
    /// 403 without a profile or with a status other than `active`.
    pub fn of(caller: Caller) -> Result<Self, AppError> {
        let (Some(profile), Some(access)) = (caller.profile.clone(), caller.access.clone()) else {
            return Err(AppError::Forbidden(
                "no profile yet: POST /users/me/sync first".to_owned(),
            ));
        };
        if !profile.status.is_active() {
            return Err(AppError::Forbidden("user is not active".to_owned()));
        }
        Ok(Self {
            caller,
            profile,
            access,
        })
    }
}

impl FromRequestParts<AppState> for ActiveUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Authenticated(caller) = Authenticated::from_request_parts(parts, state).await?;
        Self::of(caller)
    }
}

/// An active user holding the `system_admin` AppRole.
pub struct Admin(pub ActiveUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = ActiveUser::from_request_parts(parts, state).await?;
        if !user.access.has_role(ADMIN_ROLE) {
            return Err(AppError::Forbidden(format!("requires the {ADMIN_ROLE} role")));
        }
        Ok(Self(user))
    }
}

/// A JSON body; malformed → 400, over the limit → 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// An optional JSON body: an empty body is `None`; anything else must be valid JSON.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge
                } else {
                    AppError::BadRequest(rejection.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        serde_json::from_slice(&bytes)
            .map(|value| Self(Some(value)))
            .map_err(|err| AppError::BadRequest(format!("invalid JSON body: {err}")))
    }
}
