//! Errors of the run engine: [`RunError`] (the engine cannot go on with a run) and [`StepFailure`]
//! (one attempt of a step failed; recorded on the step with its class, then retried or not).

use crate::download::DownloadError;
use crate::store::{ErrorClass, RunId, StepErrorRecord, StoreError};
use crate::vb365::ApiError;

/// Why the engine could not execute (or finish recording) a run. The run keeps its state and
/// lease; a later claim (after the lease expired, or at the next start) picks it up again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The state database failed.
    #[error("run {run}: {source}")]
    Store {
        run: String,
        #[source]
        source: StoreError,
    },
    /// A store call outside any run (recovery, engine start).
    #[error(transparent)]
    StoreGeneral(#[from] StoreError),
    /// The run is not claimable (another owner holds a live lease, or it is finished).
    #[error("run {run} is not claimable: {why}")]
    NotClaimable { run: RunId, why: String },
    /// A server's API client could not be built (its `caFile`): a configuration problem.
    #[error(transparent)]
    Client(#[from] crate::vb365::ClientError),
}

impl RunError {
    /// Whether the configuration is at fault (fixing it, not retrying, helps).
    pub fn is_config(&self) -> bool {
        match self {
            RunError::Client(_) => true,
            RunError::Store { .. } | RunError::StoreGeneral(_) | RunError::NotClaimable { .. } => {
                false
            }
        }
    }

    /// Wraps a store error with the run it happened in.
    pub fn store(run: RunId) -> impl FnOnce(StoreError) -> RunError {
        move |source| RunError::Store {
            run: run.to_string(),
            source,
        }
    }
}

/// One failed attempt of a step: the class decides what happens next (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub class: ErrorClass,
    /// VB365 `errorCode` when known.
    pub code: Option<String>,
    /// One line naming the subject (mailbox, URL, path); never a secret.
    pub message: String,
    /// `Retry-After` the server asked for.
    pub retry_after: Option<std::time::Duration>,
    /// For [`ErrorClass::SessionLost`]: the restore session that is gone, when known. Only that
    /// session is recorded `lost`; by the time a step reports, another step may already have
    /// opened its replacement, which must not be forgotten in its place.
    pub session: Option<uuid::Uuid>,
}

impl StepFailure {
    /// A failure of class `class` with `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        StepFailure {
            class,
            code: None,
            message: message.into(),
            retry_after: None,
            session: None,
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }

    /// The store's form of this failure.
    pub fn to_step_error(&self) -> StepErrorRecord {
        StepErrorRecord {
            class: self.class,
            code: self.code.clone(),
            message: self.message.clone(),
        }
    }
}

impl From<&ApiError> for StepFailure {
    fn from(e: &ApiError) -> Self {
        StepFailure {
            class: e.class,
            code: e.error_code.map(|c| c.to_string()),
            message: e.to_string(),
            retry_after: e.retry_after,
            session: e.session(),
        }
    }
}

impl From<ApiError> for StepFailure {
    fn from(e: ApiError) -> Self {
        StepFailure::from(&e)
    }
}

impl From<DownloadError> for StepFailure {
    fn from(e: DownloadError) -> Self {
        // `class()` keeps the source's own class (e.g. a lost session while opening the export).
        StepFailure {
            class: e.class(),
            code: None,
            message: e.to_string(),
            retry_after: None,
            session: None,
        }
    }
}

/// Result of engine work that can only fail as a step failure.
pub(crate) type StepResult<T> = Result<T, StepFailure>;

/// Why an attempt of a step did not complete: the step failed (handled by its class), or the
/// state database failed (the engine stops).
#[derive(Debug)]
pub(crate) enum AttemptError {
    Step(StepFailure),
    Run(RunError),
}

impl From<StepFailure> for AttemptError {
    fn from(f: StepFailure) -> Self {
        AttemptError::Step(f)
    }
}

impl From<RunError> for AttemptError {
    fn from(e: RunError) -> Self {
        AttemptError::Run(e)
    }
}

impl From<ApiError> for AttemptError {
    fn from(e: ApiError) -> Self {
        AttemptError::Step(StepFailure::from(&e))
    }
}

impl From<DownloadError> for AttemptError {
    fn from(e: DownloadError) -> Self {
        AttemptError::Step(StepFailure::from(e))
    }
}
