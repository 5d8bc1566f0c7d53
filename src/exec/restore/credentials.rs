//! The restore credentials of a job (`credentials:` of Restore, RestoreTo, BulkRestore) with
//! their secrets resolved, in the form the restore requests carry. A secret that cannot be read
//! is a permanent step failure, found before anything is recorded or sent. A device code is the
//! one the operator signed in with ([`crate::exec::sign_in`]).

use crate::exec::error::StepFailure;
use crate::exec::run_ctx::RunCtx;
use crate::jobs::{BulkCredentials, Credentials};
use crate::vb365::RestoreCredentials;

/// The run's signed-in device code as credentials.
fn user_code(ctx: &RunCtx) -> Result<RestoreCredentials, StepFailure> {
    ctx.user_code()
        .map(RestoreCredentials::UserCode)
        .ok_or_else(|| {
            StepFailure::permanent("device code sign-in: the run has no signed-in device code")
        })
}

pub(super) fn resolve_credentials(
    ctx: &RunCtx,
    c: &Credentials,
) -> Result<RestoreCredentials, StepFailure> {
    let secrets = &ctx.secrets;
    let text = |r: &crate::config::SecretRef| {
        r.resolve(secrets)
            .map_err(|e| StepFailure::permanent(format!("restore credentials: {e}")))
    };
    Ok(match c {
        Credentials::Application(a) => {
            let cert = a
                .certificate
                .resolve_bytes(secrets)
                .map_err(|e| StepFailure::permanent(format!("restore certificate: {e}")))?;
            let password = a.certificate_password.as_ref().map(text).transpose()?;
            RestoreCredentials::application(
                a.application_id,
                &cert,
                password,
                a.impersonation_account_name.clone(),
            )
        }
        Credentials::User {
            user_name,
            password,
        } => RestoreCredentials::User {
            user_name: user_name.clone(),
            password: text(password)?,
        },
        Credentials::DeviceCode(_) => user_code(ctx)?,
    })
}

pub(super) fn resolve_bulk_credentials(
    ctx: &RunCtx,
    c: &BulkCredentials,
) -> Result<RestoreCredentials, StepFailure> {
    let secrets = &ctx.secrets;
    let text = |r: &crate::config::SecretRef| {
        r.resolve(secrets)
            .map_err(|e| StepFailure::permanent(format!("restore credentials: {e}")))
    };
    Ok(match c {
        BulkCredentials::Application(a) => {
            resolve_credentials(ctx, &Credentials::Application(a.clone()))?
        }
        BulkCredentials::Office365 {
            user_name,
            password,
        } => RestoreCredentials::User {
            user_name: user_name.clone(),
            password: text(password)?,
        },
        BulkCredentials::OnPremises {
            domain_name,
            user_name,
            password,
        } => RestoreCredentials::OnPremises {
            domain_name: domain_name.clone(),
            user_name: user_name.clone(),
            password: text(password)?,
        },
        BulkCredentials::Hybrid {
            office365_user_name,
            office365_password,
            domain_name,
            on_premises_user_name,
            on_premises_password,
        } => RestoreCredentials::Hybrid {
            office365_user_name: office365_user_name.clone(),
            office365_password: text(office365_password)?,
            domain_name: domain_name.clone(),
            on_premises_user_name: on_premises_user_name.clone(),
            on_premises_password: text(on_premises_password)?,
        },
        BulkCredentials::DeviceCode(_) => user_code(ctx)?,
    })
}
