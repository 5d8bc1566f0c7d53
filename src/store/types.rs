//! Typed values of the store: the state enums stored as TEXT (declared with one macro so
//! `as_str`, `FromStr`, serde and the sqlx codecs cannot drift apart), [`RunId`], and the column
//! codecs that turn INTEGER milliseconds, JSON text and path text into Rust types in
//! `#[derive(FromRow)]` structs (`#[sqlx(try_from = "Millis")]`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};
use uuid::Uuid;

use super::from_millis;

/// Column codec: a time stored as INTEGER milliseconds, decoded into `DateTime<Utc>`
/// (used through `#[sqlx(try_from = "Millis")]`; not needed by callers).
#[derive(Debug, Clone, Copy)]
pub struct Millis(DateTime<Utc>);

impl<DB: Database> Type<DB> for Millis
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Millis
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let ms = <i64 as Decode<DB>>::decode(value)?;
        from_millis(ms)
            .map(Millis)
            .ok_or_else(|| format!("{ms} ms is outside the supported time range").into())
    }
}

impl From<Millis> for DateTime<Utc> {
    fn from(m: Millis) -> Self {
        m.0
    }
}

/// Column codec: a flag stored as INTEGER 0/1 (both backends store flags as integers: the `Any`
/// driver decodes a boolean only from a boolean column), decoded into `bool` (used through
/// `#[sqlx(try_from = "Flag")]`). Write flags with `i64::from(flag)`.
#[derive(Debug, Clone, Copy)]
pub struct Flag(bool);

impl<DB: Database> Type<DB> for Flag
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Flag
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        match <i64 as Decode<DB>>::decode(value)? {
            0 => Ok(Flag(false)),
            1 => Ok(Flag(true)),
            n => Err(format!("{n} is not a stored flag (0 or 1)").into()),
        }
    }
}

impl From<Flag> for bool {
    fn from(f: Flag) -> Self {
        f.0
    }
}

/// Column codec: a nullable time stored as INTEGER milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct OptMillis(Option<DateTime<Utc>>);

impl<DB: Database> Type<DB> for OptMillis
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for OptMillis
where
    i64: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        match <Option<Millis> as Decode<DB>>::decode(value)? {
            Some(m) => Ok(OptMillis(Some(m.0))),
            None => Ok(OptMillis(None)),
        }
    }
}

impl From<OptMillis> for Option<DateTime<Utc>> {
    fn from(m: OptMillis) -> Self {
        m.0
    }
}

/// Column codec: JSON stored as TEXT (`#[sqlx(try_from = "JsonText")]`).
#[derive(Debug, Clone)]
pub struct JsonText(serde_json::Value);

impl<DB: Database> Type<DB> for JsonText
where
    str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for JsonText
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        let text = <&str as Decode<DB>>::decode(value)?;
        Ok(JsonText(serde_json::from_str(text)?))
    }
}

impl From<JsonText> for serde_json::Value {
    fn from(j: JsonText) -> Self {
        j.0
    }
}

impl TryFrom<JsonText> for Vec<String> {
    type Error = serde_json::Error;
    fn try_from(j: JsonText) -> std::result::Result<Self, Self::Error> {
        serde_json::from_value(j.0)
    }
}

impl TryFrom<JsonText> for Vec<u64> {
    type Error = serde_json::Error;
    fn try_from(j: JsonText) -> std::result::Result<Self, Self::Error> {
        serde_json::from_value(j.0)
    }
}

/// Column codec: nullable JSON stored as TEXT.
#[derive(Debug, Clone)]
pub struct OptJsonText(Option<serde_json::Value>);

impl<DB: Database> Type<DB> for OptJsonText
where
    str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for OptJsonText
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        Ok(OptJsonText(
            <Option<JsonText> as Decode<DB>>::decode(value)?.map(|j| j.0),
        ))
    }
}

impl From<OptJsonText> for Option<serde_json::Value> {
    fn from(j: OptJsonText) -> Self {
        j.0
    }
}

impl TryFrom<OptJsonText> for Option<Vec<String>> {
    type Error = serde_json::Error;
    fn try_from(j: OptJsonText) -> std::result::Result<Self, Self::Error> {
        j.0.map(serde_json::from_value).transpose()
    }
}

// ===== ids =====

/// A run id: a UUID v7 (time ordered, so ids sort like creation times), stored as hyphenated
/// TEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    /// A new time-ordered id.
    pub fn new() -> RunId {
        RunId(Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Uuid::parse_str(s).map(RunId)
    }
}

impl<DB: Database> Type<DB> for RunId
where
    str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for RunId
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
        Ok(<&str as Decode<DB>>::decode(value)?.parse()?)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for RunId
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer,
    ) -> std::result::Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.to_string(), buf)
    }
}

// ===== typed TEXT columns =====

/// A stored TEXT value that is not one of the enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct ParseEnumError {
    /// The column's meaning, e.g. "run state".
    pub what: &'static str,
    /// The text that did not match.
    pub value: String,
}

/// Declares an enum stored as TEXT: `as_str`, `Display`, `FromStr`, serde and sqlx codecs, all
/// from one list of `Variant = "text"` pairs so they cannot drift apart.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::store::ParseEnumError;
            fn from_str(s: &str) -> ::std::result::Result<Self, $crate::store::ParseEnumError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::store::ParseEnumError { what: $what, value: s.to_string() }),
                }
            }
        }

        impl<DB: ::sqlx::Database> ::sqlx::Type<DB> for $name
        where
            str: ::sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as ::sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as ::sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: ::sqlx::Database> ::sqlx::Decode<'r, DB> for $name
        where
            &'r str: ::sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> ::std::result::Result<Self, ::sqlx::error::BoxDynError> {
                Ok(<&str as ::sqlx::Decode<DB>>::decode(value)?.parse()?)
            }
        }

        impl<'q, DB: ::sqlx::Database> ::sqlx::Encode<'q, DB> for $name
        where
            &'q str: ::sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as ::sqlx::Database>::ArgumentBuffer,
            ) -> ::std::result::Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&'q str as ::sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
    };
}

text_enum! {
    /// The state of a job row.
    pub enum JobState ("job state") {
        /// The current version is valid and scheduled.
        Active = "active",
        /// The current version is invalid; the last valid version (if any) stays active.
        Invalid = "invalid",
        /// The job's file (or its document) was removed; no future runs.
        Removed = "removed",
    }
}

text_enum! {
    /// The state of a run (SPEC §5).
    pub enum RunState ("run state") {
        /// Waiting to be claimed.
        Queued = "queued",
        /// Claimed by a daemon holding the lease.
        Running = "running",
        /// Failed steps wait for their backoff; claimed again at `next_attempt_at`.
        WaitingRetry = "waiting_retry",
        Succeeded = "succeeded",
        SucceededWithWarnings = "succeeded_with_warnings",
        Failed = "failed",
        Cancelled = "cancelled",
        /// A step is `in_doubt`; nothing is re-sent until an operator decides.
        NeedsAttention = "needs_attention",
        /// History only: a fire time that was not run (daemon down, past `startingDeadline`).
        Missed = "missed",
        /// History only: a fire time skipped by `concurrencyPolicy: Forbid`.
        Skipped = "skipped",
    }
}

impl RunState {
    /// A final state: the run will never change again.
    /// `needs_attention` is not terminal: an operator's `resolve` can resume the run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded
                | RunState::SucceededWithWarnings
                | RunState::Failed
                | RunState::Cancelled
                | RunState::Missed
                | RunState::Skipped
        )
    }

    /// Work is pending or in progress (counts for `concurrencyPolicy`).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Queued | RunState::Running | RunState::WaitingRetry
        )
    }
}

text_enum! {
    /// Why a run was created.
    pub enum Trigger ("run trigger") {
        Schedule = "schedule",
        Manual = "manual",
        OneShot = "one_shot",
    }
}

text_enum! {
    /// The state of a step (SPEC §5).
    pub enum StepState ("step state") {
        Pending = "pending",
        /// Committed before a restore POST: the request may or may not have been sent.
        Submitting = "submitting",
        /// The restore POST was answered; `remote_operation_id` is set.
        Submitted = "submitted",
        Downloading = "downloading",
        Verifying = "verifying",
        Done = "done",
        Warning = "warning",
        Failed = "failed",
        Skipped = "skipped",
        /// The outcome of a restore POST is unknown; waits for an operator's decision.
        InDoubt = "in_doubt",
    }
}

impl StepState {
    /// The step is finished (`done`, `warning`, `failed`, `skipped`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Done | StepState::Warning | StepState::Failed | StepState::Skipped
        )
    }
}

text_enum! {
    /// The state of a VB365 restore session the daemon opened.
    pub enum SessionState ("restore session state") {
        Open = "open",
        /// A stop was requested but not confirmed yet.
        Stopping = "stopping",
        Stopped = "stopped",
        /// The server no longer knows the session (expired, server restarted).
        Lost = "lost",
    }
}

impl SessionState {
    /// Counts against `maxConcurrentSessions` and must still be stopped.
    pub fn is_open(self) -> bool {
        matches!(self, SessionState::Open | SessionState::Stopping)
    }
}

text_enum! {
    /// The state of a download.
    pub enum DownloadState ("download state") {
        Pending = "pending",
        Downloading = "downloading",
        Verifying = "verifying",
        Published = "published",
        Failed = "failed",
    }
}

text_enum! {
    /// The kind of an operator request.
    pub enum RequestKind ("request kind") {
        Run = "run",
        Cancel = "cancel",
        Resolve = "resolve",
    }
}

text_enum! {
    /// An operator's decision about an `in_doubt` step (`restorectl resolve`).
    pub enum Decision ("decision") {
        /// Send the restore again (the operator checked it was not executed).
        Resend = "resend",
        /// The restore happened; count the step as done.
        MarkDone = "mark_done",
        /// Give up on the step.
        MarkFailed = "mark_failed",
    }
}

text_enum! {
    /// What a caller may do after a failed call, and so how a step's error is classified and
    /// retried (SPEC §5). Decided for VB365 calls by one pure function, `vb365::error::classify`
    /// (the client re-exports this type as `vb365::ErrorClass`); stored on a failed step.
    pub enum ErrorClass ("error class") {
        /// Transient: back off and try again (5xx, 429, `ProxyOffline`, `Timeout`,
        /// `OperationConflict`, connection failures, timeouts of idempotent calls).
        Retryable = "retryable",
        /// Retrying cannot help (validation, unknown resource, access denied, other 4xx).
        Permanent = "permanent",
        /// The server refused our credentials even after a token refresh and a password grant.
        Auth = "auth",
        /// The restore session the call ran under is gone or stopped; open a new one.
        SessionLost = "session_lost",
        /// A restore POST may or may not have been executed; do not re-send it blindly.
        Ambiguous = "ambiguous",
    }
}

text_enum! {
    /// The format of a published file.
    pub enum FileFormat ("file format") {
        Pst = "pst",
        Zip = "zip",
        Jsonl = "jsonl",
        Csv = "csv",
    }
}
