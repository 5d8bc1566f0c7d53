//! Device-code sign-in (`POST …/organization/restoreDeviceCode`): the simulator hands out a
//! code per request, bound to the restore session it was asked in, valid for
//! `deviceCodeLifetime`. No browser exists here: a test marks a code signed in through
//! [`super::SimHandle::sign_in_device_code`], and an operator trying job files against
//! `restorectl simulate` (or `daemon --dev`) through `POST /sim/devicelogin?code=CODE` on the
//! simulator's own address (only before the code expires; not a vendor route, so it is not
//! journalled and not in the OpenAPI document). A restore carrying a
//! `userCode` is accepted only for a signed-in code of the same session; otherwise it is
//! refused with 400 before anything runs.

use axum::Json;
use axum::response::IntoResponse;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::api::{ApiError, Ctx, HandlerResult};
use super::handlers::{Use, session_mut};
use super::sessions::DeviceCode;
use super::state::SimState;

/// `POST /v8/RestoreSessions/{id}/organization/restoreDeviceCode`.
pub(crate) fn request(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let lifetime = state.config.device_code_lifetime;
    let code = state.with_data(|d| {
        let session = session_mut(state, d, ctx, Use::Data)?.id;
        let n = d.device_codes.len() + 1;
        // Eight letters in two groups, like the real codes; unique per simulator.
        let letters: String = Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .filter(char::is_ascii_alphabetic)
            .chain("QWERTYUI".chars())
            .take(6)
            .collect::<String>()
            .to_ascii_uppercase();
        let user_code = format!("{}{n:02}", letters);
        d.device_codes.insert(
            user_code.clone(),
            DeviceCode {
                session,
                expires_at: Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default(),
                signed_in: false,
                request: ctx.body.clone(),
            },
        );
        Ok::<_, ApiError>(user_code)
    })?;
    let url = "https://microsoft.com/devicelogin";
    Ok(Json(json!({
        "userCode": code,
        "verificationUrl": url,
        "expiresIn": lifetime.as_secs(),
        "message": format!("To sign in, use a web browser to open the page {url} and enter the code {code} to authenticate."),
    }))
    .into_response())
}

/// Checks the `userCode` of a restore body in session `session` (see the module doc).
pub(crate) fn check(state: &SimState, session: Uuid, user_code: &str) -> Result<(), ApiError> {
    state.with_data(|d| {
        let Some(code) = d.device_codes.get(user_code) else {
            return Err(ApiError::invalid(
                "userCode: the device code is not valid; request a new one with restoreDeviceCode.",
            ));
        };
        if code.session != session {
            return Err(ApiError::invalid(
                "userCode: the device code was issued for another restore session.",
            ));
        }
        if code.signed_in {
            return Ok(());
        }
        if code.expires_at <= Utc::now() {
            return Err(ApiError::invalid(
                "userCode: the device code has expired before anyone signed in with it.",
            ));
        }
        Err(ApiError::invalid(
            "userCode: nobody has signed in with the device code yet.",
        ))
    })
}

/// The simulator's own sign-in route: `POST /sim/devicelogin?code=CODE`.
pub(crate) const SIGN_IN_PATH: &str = "/sim/devicelogin";

/// `POST /sim/devicelogin?code=CODE`: 200 when the code is now signed in, 404 when it is
/// unknown or expired, 400 without a code.
pub(crate) async fn sign_in_route(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<SimState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let Some(code) = query.get("code").map(|c| c.trim().to_ascii_uppercase()) else {
        return (StatusCode::BAD_REQUEST, "pass the user code: ?code=CODE\n").into_response();
    };
    if sign_in(&state, &code) {
        tracing::info!(user_code = %code, "simulator: device code signed in");
        (StatusCode::OK, format!("signed in: {code}\n")).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            format!(
                "unknown or expired code: {code}; the run asks for a new one when it expires\n"
            ),
        )
            .into_response()
    }
}

/// Marks a code signed in; false when it is unknown or expired.
pub(crate) fn sign_in(state: &SimState, user_code: &str) -> bool {
    state.with_data(|d| match d.device_codes.get_mut(user_code) {
        Some(code) if code.expires_at > Utc::now() => {
            code.signed_in = true;
            true
        }
        _ => false,
    })
}
