//! Handlers of the read endpoints, explore/stop, tokens, search and PST export. Restores live
//! in `restore.rs`. Each handler gets the validated request (`Ctx`) and answers JSON shaped as
//! the vendor's schemas, or an [`ApiError`].

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::{ApiError, Ctx, Endpoint, HandlerResult};
use super::auth::oauth_error;
use super::config::{RangeMode, StoppedSessions};
use super::export::{ExportKey, ExportLayout, data_size};
use super::search::{item_json, parse_instant, parse_query, synthetic_hit};
use super::sessions::{Data, SearchHits, SearchSet, Session, SessionKind};
use super::state::SimState;
use super::world::{Mailbox, Organization, derive_uuid, dotnet_time};

/// Default page size of the vendor's paged endpoints.
const DEFAULT_LIMIT: usize = 30;
/// Largest page the vendor serves.
const MAX_LIMIT: usize = 10_000;
/// Smallest accepted `pstSizeLimitBytes` (1 GiB).
pub(crate) const PST_LIMIT_MIN: i64 = 1 << 30;
/// Largest accepted `pstSizeLimitBytes` (49 GiB).
pub(crate) const PST_LIMIT_MAX: i64 = 49 << 30;

/// Reads `offset`/`limit` (default 0/30, limit capped at 10,000).
fn paging(ctx: &Ctx) -> Result<(usize, usize), ApiError> {
    let num = |name: &str, default: usize| -> Result<usize, ApiError> {
        match ctx.query(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Query parameter {name}: '{v}' must not be negative"
                    ))
                }),
        }
    };
    let offset = num("offset", 0)?;
    let limit = num("limit", DEFAULT_LIMIT)?;
    if limit == 0 {
        return Err(ApiError::invalid(
            "Query parameter limit: must be at least 1",
        ));
    }
    Ok((offset, limit.min(MAX_LIMIT)))
}

/// A vendor page (`offset`, `limit`, `results`, optional `setId`, relative `_links`).
fn page(all: Vec<Value>, offset: usize, limit: usize, base: &str, set_id: Option<Uuid>) -> Value {
    let total = all.len();
    let results: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    page_of(total, results, offset, limit, base, set_id)
}

/// A page whose `results` were already cut from a collection of `total` items.
fn page_of(
    total: usize,
    results: Vec<Value>,
    offset: usize,
    limit: usize,
    base: &str,
    set_id: Option<Uuid>,
) -> Value {
    let set = set_id.map(|s| format!("&setId={s}")).unwrap_or_default();
    let href = |o: usize| json!({"href": format!("{base}?offset={o}&limit={limit}{set}")});
    let mut links = json!({"self": href(offset)});
    if offset > 0 {
        links["first"] = href(0);
        links["prev"] = href(offset.saturating_sub(limit));
    }
    if offset + results.len() < total {
        links["next"] = href(offset + results.len());
    }
    let mut v = json!({"offset": offset, "limit": limit, "results": results, "_links": links});
    if let Some(s) = set_id {
        v["setId"] = json!(s);
    }
    v
}

fn ok(value: Value) -> HandlerResult {
    Ok(Json(value).into_response())
}

fn parse_id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::not_found(format!("{what} '{text}' was not found.")))
}

/// How a handler uses a session: reading its state, stopping it, or using its backup data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    Info,
    Stop,
    Data,
}

/// Finds the session of the path for a use, with the simulator's 404 rules.
pub(crate) fn session_mut<'a>(
    state: &SimState,
    data: &'a mut Data,
    ctx: &Ctx,
    usage: Use,
) -> Result<&'a mut Session, ApiError> {
    let text = ctx.param("restoreSessionId");
    let id = parse_id(text, "Restore session")?;
    let gone = || ApiError::not_found(format!("Restore session '{id}' was not found."));
    let session = data.sessions.get_mut(&id).ok_or_else(gone)?;
    let stopped = session.is_stopped();
    let hidden = match usage {
        Use::Info => stopped && state.config.stopped_sessions == StoppedSessions::NotFound,
        Use::Stop => stopped,
        Use::Data => stopped || matches!(session.kind, SessionKind::Operation { .. }),
    };
    if hidden {
        return Err(gone());
    }
    if usage == Use::Data && session.explore_type != "Vex" {
        return Err(ApiError::not_found(format!(
            "Restore session '{id}' holds no Exchange data."
        )));
    }
    Ok(session)
}

/// The mailbox of the path, if it belongs to the session's organisation and the session has
/// data.
pub(crate) fn session_mailbox<'w>(
    state: &'w SimState,
    session: &Session,
    text: &str,
) -> Result<&'w Mailbox, ApiError> {
    let id = parse_id(text, "Mailbox")?;
    state
        .world
        .mailbox(id)
        .filter(|m| m.org_id == session.org_id && session.restore_point.is_some())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Mailbox '{id}' was not found in restore session '{}'.",
                session.id
            ))
        })
}

pub(crate) fn token(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let field = |name: &str| {
        ctx.body
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let bad = |error: &str, description: &str| {
        Ok((
            StatusCode::BAD_REQUEST,
            Json(oauth_error(error, description)),
        )
            .into_response())
    };
    match field("grant_type").as_str() {
        "password" => {
            let (user, password) = (field("username"), field("password"));
            let known = state
                .config
                .users
                .iter()
                .find(|u| u.username.eq_ignore_ascii_case(&user) && u.password == password);
            match known {
                Some(u) => ok(state.with_data(|d| d.tokens.issue(&u.username, &state.config))),
                None => bad("invalid_grant", "The user name or password is incorrect."),
            }
        }
        "refresh_token" => {
            let rt = field("refresh_token");
            if rt.is_empty() {
                return bad("invalid_request", "refresh_token is required.");
            }
            match state.with_data(|d| d.tokens.refresh(&rt, &state.config)) {
                Some(pair) => ok(pair),
                None => bad("invalid_grant", "The refresh token is invalid or expired."),
            }
        }
        other => bad(
            "unsupported_grant_type",
            &format!("Grant type '{other}' is not supported by this server."),
        ),
    }
}

pub(crate) fn logout(state: &SimState, ctx: &Ctx) -> HandlerResult {
    if let Some(token) = &ctx.bearer {
        state.with_data(|d| d.tokens.logout(token));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn org_json(state: &SimState, org: &Organization, extended: bool) -> Value {
    let mut v = json!({
        "id": org.id, "name": org.name, "officeName": org.name, "type": "Office365",
        "region": "Worldwide", "isExchangeOnline": true, "isSharePointOnline": true,
        "isTeamsOnline": false, "isTeamsChatsOnline": false, "msid": org.msid,
        "backedUpOrganizationId": org.id.to_string(),
        "_links": {"self": {"href": format!("/v8/Organizations/{}", org.id)}},
    });
    if extended {
        v["isBackedup"] = json!(true);
        v["firstBackuptime"] = json!(dotnet_time(state.world.first_backup()));
        v["lastBackuptime"] = json!(dotnet_time(state.world.latest_backup()));
    }
    v
}

pub(crate) fn organizations(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (offset, limit) = paging(ctx)?;
    let extended = ctx
        .query("extendedView")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let all = state
        .world
        .organizations()
        .iter()
        .filter(|o| {
            ctx.query("msid")
                .is_none_or(|m| m.eq_ignore_ascii_case(&o.msid.to_string()))
        })
        .filter(|o| {
            ctx.query("backedUpOrganizationId")
                .is_none_or(|b| b.eq_ignore_ascii_case(&o.id.to_string()))
        })
        .map(|o| org_json(state, o, extended))
        .collect();
    ok(page(all, offset, limit, "/v8/Organizations", None))
}

/// `GET /v8/RestorePoints`: one Exchange restore point per day from the newest
/// (`SimConfig::latest_backup`, so a test sets the age of the newest point) back to the first
/// backup, per organisation; `organizationId` filters, `orderAsc=false` puts the newest first.
pub(crate) fn restore_points(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (offset, limit) = paging(ctx)?;
    let ascending = ctx
        .query("orderAsc")
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    let wanted = match ctx.query("organizationId") {
        Some(id) => Some(parse_id(id, "Organization")?),
        None => None,
    };
    let to = match ctx.query("to") {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| ApiError::invalid(format!("`to` is not a date-time: {t}")))?,
        ),
        None => None,
    };
    let latest = state.world.latest_backup();
    let days = (latest - state.world.first_backup()).num_days().max(0);
    let mut all = Vec::new();
    for org in state
        .world
        .organizations()
        .iter()
        .filter(|o| wanted.is_none_or(|w| w == o.id))
    {
        for day in 0..=days {
            let time = latest - chrono::Duration::days(day);
            if to.is_some_and(|to| time > to) {
                continue;
            }
            let id = derive_uuid(&[b"restore-point", org.id.as_bytes(), &day.to_le_bytes()]);
            all.push((time, json!({
                "id": id.to_string(), "backupTime": dotnet_time(time), "organizationId": org.id,
                "isExchange": true, "isOneDrive": false, "isSharePoint": false, "isTeams": false,
                "isCopy": false, "isLongTermCopy": false, "isRetrieved": false, "isDeleted": false,
            })));
        }
    }
    all.sort_by_key(|(t, _)| *t);
    if !ascending {
        all.reverse();
    }
    let all = all.into_iter().map(|(_, v)| v).collect();
    ok(page(all, offset, limit, "/v8/RestorePoints", None))
}

pub(crate) fn organization(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let id = parse_id(ctx.param("organizationId"), "Organization")?;
    let org = state
        .world
        .organization(id)
        .ok_or_else(|| ApiError::not_found(format!("Organization '{id}' was not found.")))?;
    let extended = ctx
        .query("extendedView")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    ok(org_json(state, org, extended))
}

pub(crate) fn jobs(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (offset, limit) = paging(ctx)?;
    let seed = state.world.seed().to_le_bytes();
    let all = state
        .world
        .organizations()
        .iter()
        .filter(|o| {
            ctx.query("organizationId")
                .is_none_or(|id| id.eq_ignore_ascii_case(&o.id.to_string()))
        })
        .map(|o| {
            json!({
                "id": o.job_id, "name": o.job_name, "organizationId": o.id,
                "repositoryId": derive_uuid(&[b"repository", &seed]),
                "isEnabled": true, "backupType": "EntireOrganization", "lastStatus": "Success",
                "lastRun": dotnet_time(state.world.latest_backup()),
                "lastBackup": dotnet_time(state.world.latest_backup()), "eTag": 1,
                "_links": {"self": {"href": format!("/v8/Jobs/{}", o.job_id)}},
            })
        })
        .collect();
    ok(page(all, offset, limit, "/v8/Jobs", None))
}

pub(crate) fn explore(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let org = if ctx.route.endpoint == Endpoint::JobExplore {
        let id = parse_id(ctx.param("jobId"), "Job")?;
        state
            .world
            .organization_by_job(id)
            .ok_or_else(|| ApiError::not_found(format!("Job '{id}' was not found.")))?
    } else {
        let id = parse_id(ctx.param("organizationId"), "Organization")?;
        state
            .world
            .organization(id)
            .ok_or_else(|| ApiError::not_found(format!("Organization '{id}' was not found.")))?
    };
    // One repository holds every organisation's backups in this world (the one `/v8/Jobs`
    // names); another id is unknown.
    if let Some(repo) = ctx.body.get("repositoryId").and_then(Value::as_str) {
        let known = derive_uuid(&[b"repository", &state.world.seed().to_le_bytes()]);
        if !repo.eq_ignore_ascii_case(&known.to_string()) {
            return Err(ApiError::not_found(format!(
                "Repository '{repo}' was not found or holds no backups of this organization."
            )));
        }
    }
    let at = ctx
        .body
        .get("dateTime")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let restore_point = state.world.restore_point(at);
    let label = restore_point.map_or_else(|| "no restore point".to_string(), |t| t.to_rfc3339());
    let mut session = Session::new(
        SessionKind::Explore,
        format!("Explore {} ({label})", org.name),
        (org.id, &org.name),
        &ctx.user,
    );
    session.restore_point = restore_point;
    if let Some(t) = ctx.body.get("type").and_then(Value::as_str) {
        session.explore_type = t.to_string();
    }
    let body = session.to_json();
    state.with_data(|d| d.insert(session));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) fn sessions(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (offset, limit) = paging(ctx)?;
    let bound = |name: &str| -> Result<Option<DateTime<Utc>>, ApiError> {
        ctx.query(name)
            .map(|v| {
                parse_instant(v).ok_or_else(|| {
                    ApiError::invalid(format!("Query parameter {name}: '{v}' is not a date"))
                })
            })
            .transpose()
    };
    let (sf, st, ef, et) = (
        bound("startTimeFrom")?,
        bound("startTimeTo")?,
        bound("endTimeFrom")?,
        bound("endTimeTo")?,
    );
    let by_end = ctx.query("orderBy") == Some("EndTime");
    let asc = ctx
        .query("orderAsc")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let all = state.with_data(|d| {
        let mut list: Vec<&Session> = d
            .order
            .iter()
            .filter_map(|id| d.sessions.get(id))
            .filter(|s| s.user.eq_ignore_ascii_case(&ctx.user))
            .filter(|s| {
                !(s.is_stopped() && state.config.stopped_sessions == StoppedSessions::NotFound)
            })
            .filter(|s| sf.is_none_or(|t| s.created >= t) && st.is_none_or(|t| s.created <= t))
            .filter(|s| {
                ef.is_none_or(|t| s.ended.is_some_and(|e| e >= t))
                    && et.is_none_or(|t| s.ended.is_some_and(|e| e <= t))
            })
            .collect();
        list.sort_by_key(|s| {
            if by_end {
                s.ended.unwrap_or(DateTime::<Utc>::MAX_UTC)
            } else {
                s.created
            }
        });
        if !asc {
            list.reverse();
        }
        list.into_iter().map(Session::to_json).collect::<Vec<_>>()
    });
    ok(page(all, offset, limit, "/v8/RestoreSessions", None))
}

pub(crate) fn session(state: &SimState, ctx: &Ctx) -> HandlerResult {
    ok(state.with_data(|d| session_mut(state, d, ctx, Use::Info).map(|s| s.to_json()))?)
}

pub(crate) fn events(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (offset, limit) = paging(ctx)?;
    let (id, all) = state.with_data(|d| {
        session_mut(state, d, ctx, Use::Info).map(|s| {
            (
                s.id,
                s.events.iter().map(|e| s.event_json(e)).collect::<Vec<_>>(),
            )
        })
    })?;
    ok(page(
        all,
        offset,
        limit,
        &format!("/v8/RestoreSessions/{id}/Events"),
        None,
    ))
}

pub(crate) fn statistics(state: &SimState, ctx: &Ctx) -> HandlerResult {
    ok(state.with_data(|d| session_mut(state, d, ctx, Use::Info).map(|s| s.statistics_json()))?)
}

pub(crate) fn stop(state: &SimState, ctx: &Ctx) -> HandlerResult {
    state.with_data(|d| session_mut(state, d, ctx, Use::Stop).map(Session::stop))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) fn session_organization(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (org_id, name) = state.with_data(|d| {
        session_mut(state, d, ctx, Use::Data).map(|s| (s.org_id, s.org_name.clone()))
    })?;
    ok(json!({"id": org_id, "name": name, "type": "Office365",
        "_links": {"self": {"href": format!("/v8/Organizations/{org_id}")}}}))
}

fn mailbox_json(session: Uuid, m: &Mailbox) -> Value {
    let base = format!(
        "/v8/RestoreSessions/{session}/organization/mailboxes/{}",
        m.id
    );
    let action = |verb: &str| json!({"uri": format!("{base}/{verb}"), "method": "POST"});
    json!({
        "id": m.id, "name": m.name, "email": m.email, "isArchive": m.is_archive, "isPublic": false,
        "_links": {"self": {"href": base.clone()}},
        "_actions": {"restore": action("restore"), "restoreTo": action("restoreTo"), "exportToPst": action("exportToPst")},
    })
}

pub(crate) fn mailboxes(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (offset, limit) = paging(ctx)?;
    let (id, org, has_data, set) = state.with_data(|d| {
        session_mut(state, d, ctx, Use::Data)
            .map(|s| (s.id, s.org_id, s.restore_point.is_some(), s.mailbox_set))
    })?;
    let boxes: &[Mailbox] = match state.world.organization(org) {
        Some(o) if has_data => &o.mailboxes,
        _ => &[],
    };
    let results = boxes
        .iter()
        .skip(offset)
        .take(limit)
        .map(|m| mailbox_json(id, m))
        .collect();
    // The page carries a setId, but the operation declares no setId parameter, so the links
    // do not pass it back (API.md §3.1).
    let base = format!("/v8/RestoreSessions/{id}/organization/mailboxes");
    let mut body = page_of(boxes.len(), results, offset, limit, &base, None);
    body["setId"] = json!(set);
    ok(body)
}

pub(crate) fn mailbox(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let value = state.with_data(|d| {
        let s = session_mut(state, d, ctx, Use::Data)?;
        session_mailbox(state, s, ctx.param("mailboxId")).map(|m| mailbox_json(s.id, m))
    })?;
    ok(value)
}

pub(crate) fn search(state: &SimState, ctx: &Ctx) -> HandlerResult {
    let (offset, limit) = paging(ctx)?;
    let per_mailbox = ctx.route.endpoint == Endpoint::MailboxSearch;
    let (session_id, org_id, restore_point, scope) = state.with_data(|d| {
        let s = session_mut(state, d, ctx, Use::Data)?;
        let scope = if per_mailbox {
            Some(session_mailbox(state, s, ctx.param("mailboxId"))?.id)
        } else {
            None
        };
        Ok::<_, ApiError>((s.id, s.org_id, s.restore_point, scope))
    })?;
    let base = match scope {
        Some(m) => format!("/v8/RestoreSessions/{session_id}/organization/mailboxes/{m}/search"),
        None => format!("/v8/RestoreSessions/{session_id}/organization/mailboxes/search"),
    };
    if let Some(text) = ctx.query("setId") {
        let set_id = Uuid::parse_str(text).map_err(|_| {
            ApiError::invalid(format!("Query parameter setId: '{text}' is not a uuid"))
        })?;
        let set = state.with_data(|d| {
            d.sessions
                .get(&session_id)
                .and_then(|s| s.searches.get(&set_id))
                .filter(|set| set.mailbox == scope)
                .cloned()
        });
        let set = set.ok_or_else(|| {
            ApiError::not_found(format!("Search result set '{set_id}' was not found."))
        })?;
        return ok(search_page(
            state, &set, session_id, offset, limit, &base, set_id,
        ));
    }
    let query = parse_query(ctx.body.get("query").and_then(Value::as_str).unwrap_or(""))
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let mailboxes = || {
        state
            .world
            .organization(org_id)
            .into_iter()
            .flat_map(|org| org.mailboxes.iter())
            .filter(|m| scope.is_none_or(|id| id == m.id))
    };
    let hits = if state.config.synthetic_search_hits > 0 {
        SearchHits::Synthetic {
            total: if restore_point.is_some() {
                state.config.synthetic_search_hits
            } else {
                0
            },
            mailboxes: mailboxes().map(|m| m.id).collect(),
        }
    } else {
        let mut items = Vec::new();
        if let Some(rp) = restore_point {
            for m in mailboxes() {
                let tag = scope.is_none().then_some(m.id);
                items.extend(
                    state
                        .world
                        .items(m, rp)
                        .iter()
                        .filter(|i| query.matches(i))
                        .map(|i| item_json(i, tag, session_id, m.id)),
                );
            }
        }
        SearchHits::Items(items)
    };
    let set_id = Uuid::new_v4();
    let set = Arc::new(SearchSet {
        mailbox: scope,
        hits,
    });
    state.with_data(|d| {
        if let Some(s) = d.sessions.get_mut(&session_id) {
            s.remember_search(set_id, Arc::clone(&set));
        }
    });
    ok(search_page(
        state, &set, session_id, offset, limit, &base, set_id,
    ))
}

/// One page of a cached search result set; generated hits are built here, only for the page.
fn search_page(
    state: &SimState,
    set: &SearchSet,
    session_id: Uuid,
    offset: usize,
    limit: usize,
    base: &str,
    set_id: Uuid,
) -> Value {
    match &set.hits {
        SearchHits::Items(items) => {
            let results = items.iter().skip(offset).take(limit).cloned().collect();
            page_of(items.len(), results, offset, limit, base, Some(set_id))
        }
        SearchHits::Synthetic { total, mailboxes } => {
            let total = usize::try_from(*total).unwrap_or(usize::MAX);
            let end = offset.saturating_add(limit).min(total);
            let results = (offset..end)
                .filter_map(|i| {
                    let owner = *mailboxes.get(i % mailboxes.len().max(1))?;
                    Some(synthetic_hit(
                        state.config.seed,
                        state.config.latest_backup,
                        i as u64,
                        owner,
                        set.mailbox.is_none(),
                        session_id,
                    ))
                })
                .collect();
            page_of(total, results, offset, limit, base, Some(set_id))
        }
    }
}

/// `Range: bytes=N-` or `bytes=N-M` → (start, inclusive end); other forms are ignored.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    // `bytes=9-3` is syntactically invalid, and an invalid range header is ignored (RFC 9110).
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some((start, end))
}

pub(crate) async fn export(state: &Arc<SimState>, ctx: &Ctx) -> HandlerResult {
    let keyword = ctx
        .body
        .get("contentKeyword")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    let enabled = ctx.body.get("enablePstSizeLimit").and_then(Value::as_bool) == Some(true);
    let limit = ctx.body.get("pstSizeLimitBytes").and_then(Value::as_i64);
    if let Some(l) = limit
        && !(PST_LIMIT_MIN..=PST_LIMIT_MAX).contains(&l)
    {
        return Err(ApiError::invalid(format!(
            "pstSizeLimitBytes: {l} is outside the allowed range 1 GB to 49 GB ({PST_LIMIT_MIN}..{PST_LIMIT_MAX})"
        )));
    }
    if enabled && limit.is_none() {
        return Err(ApiError::invalid(
            "pstSizeLimitBytes: required when enablePstSizeLimit is true",
        ));
    }
    let size_limit = if enabled {
        limit.and_then(|l| u64::try_from(l).ok())
    } else {
        None
    };
    let (session_id, mailbox, restore_point) = state.with_data(|d| {
        let s = session_mut(state, d, ctx, Use::Data)?;
        let m = session_mailbox(state, s, ctx.param("mailboxId"))?.clone();
        Ok::<_, ApiError>((s.id, m, s.restore_point))
    })?;
    let restore_point =
        restore_point.ok_or_else(|| ApiError::not_found("The restore session holds no data."))?;
    let key = ExportKey {
        seed: state.config.seed,
        mailbox_id: mailbox.id,
        keyword,
        restore_point,
        size_limit,
    };
    let built = state.with_data(|d| {
        d.sessions
            .get(&session_id)
            .is_some_and(|s| s.exports.contains(&key))
    });
    if !built {
        // The server builds the PST in a temporary folder before the first byte.
        tokio::time::sleep(state.config.export_build_delay).await;
    }
    let layout = state.export_layout(&key, &mailbox).await;
    let alive = state.with_data(|d| match d.sessions.get_mut(&session_id) {
        Some(s) if !s.is_stopped() => {
            s.exports.insert(key.clone());
            true
        }
        _ => false,
    });
    if !alive {
        return Err(ApiError::not_found(format!(
            "Restore session '{session_id}' was not found."
        )));
    }
    let len = layout.total_len();
    tracing::debug!(mailbox = %mailbox.email, bytes = len, zip = layout.is_zip(), "simulator export");
    let range = ctx
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let honour = state.config.range_mode == RangeMode::Honour;
    let (status, start, end) = match range {
        Some((start, _)) if honour && start >= len => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                None,
                format!("Range start {start} is beyond the export's {len} bytes."),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{len}")),
            );
            return Ok(r);
        }
        Some((start, end)) if honour => (
            StatusCode::PARTIAL_CONTENT,
            start,
            end.map_or(len, |e| e.saturating_add(1).min(len)),
        ),
        _ => (StatusCode::OK, 0, len),
    };
    let body = Body::from_stream(layout.stream(start, end));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if honour {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        headers.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{}/{len}", end.saturating_sub(1))),
        );
    }
    Ok(response)
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl SimState {
    /// The layout of an export, built once (the ZIP CRCs need a pass over the data) on a
    /// blocking thread and cached.
    pub(crate) async fn export_layout(
        &self,
        key: &ExportKey,
        mailbox: &Mailbox,
    ) -> Arc<ExportLayout> {
        if let Some(l) = self.with_data(|d| d.layouts.get(key).cloned()) {
            return l;
        }
        let (key2, mailbox2) = (key.clone(), mailbox.clone());
        let configured = self
            .config
            .export_sizes
            .get(&mailbox.email.to_ascii_lowercase())
            .copied();
        let default = self.config.export_default_size;
        let scale = self.config.pst_split_scale.max(1);
        let build = move || {
            let data = data_size(&key2, configured, default);
            let split = key2.size_limit.map(|l| l / scale);
            Arc::new(ExportLayout::build(&key2, &mailbox2, data, split))
        };
        let layout = match tokio::task::spawn_blocking(build.clone()).await {
            Ok(l) => l,
            // The blocking pool is gone (runtime shutting down): build inline.
            Err(_) => build(),
        };
        self.with_data(|d| d.layouts.insert(key.clone(), layout.clone()));
        layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_parse_or_are_ignored() {
        assert_eq!(parse_range("bytes=100-"), Some((100, None)));
        assert_eq!(parse_range("bytes=0-1023"), Some((0, Some(1023))));
        assert_eq!(parse_range("bytes=9-3"), None);
        assert_eq!(parse_range("bytes=-500"), None);
        assert_eq!(parse_range("items=1-"), None);
        assert_eq!(parse_range("bytes=1-2,5-6"), None);
    }
}
