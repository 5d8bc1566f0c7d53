//! Item search: a forgiving parser for the documented `property:value` query syntax (API.md §6)
//! and the matcher that evaluates it against the world's item corpora.
//!
//! Accepted: shortcuts and canonical Windows Search names (case-insensitive), `prop:value` and
//! `prop: value`, double-quoted values with `\"` escapes, implicit AND between terms, upper-case
//! `AND`/`OR`/`NOT`, parentheses (also `prop:(a OR b)`), comparisons `> < >= <= =` and ranges
//! `a..b` on dates and sizes, ISO (`2024-03-01`, RFC 3339) and US (`3/1/2024`) dates and the
//! words `today`, `yesterday`, `this/last week|month|year`. Words without a property search the
//! subject, body and correspondents. Known Outlook properties the world does not model match
//! nothing; an unknown `word:` prefix is plain text. Only clearly malformed input (unbalanced
//! quotes or parentheses, a dangling operator or property, an unparsable date/size/boolean) is
//! a [`QueryError`], which the server answers with 400 `ParameterValidationFailure`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::world::{Item, ItemClass, dotnet_time};

/// A malformed query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid search query: {0}")]
pub struct QueryError(pub String);

/// The item property a term searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Text,
    Subject,
    Body,
    From,
    To,
    Cc,
    Bcc,
    Attachments,
    HasAttachments,
    Received,
    Sent,
    Start,
    Importance,
    Size,
    Read,
    Flagged,
    Category,
    Location,
    Class,
    Company,
    /// A documented property the simulated items do not carry: matches nothing.
    Unmodelled,
}

/// Property names (lower case) → field; shortcuts first, then canonical names.
const PROPERTIES: &[(&str, Field)] = &[
    ("subject", Field::Subject),
    ("title", Field::Subject),
    ("system.subject", Field::Subject),
    ("system.title", Field::Subject),
    ("body", Field::Body),
    ("content", Field::Body),
    ("contents", Field::Body),
    ("system.search.contents", Field::Body),
    ("from", Field::From),
    ("organizer", Field::From),
    ("by", Field::From),
    ("system.message.fromaddress", Field::From),
    ("system.message.fromname", Field::From),
    ("system.message.senderaddress", Field::From),
    ("system.message.sendername", Field::From),
    ("to", Field::To),
    ("toaddress", Field::To),
    ("toname", Field::To),
    ("system.message.toaddress", Field::To),
    ("system.message.toname", Field::To),
    ("cc", Field::Cc),
    ("ccaddress", Field::Cc),
    ("ccname", Field::Cc),
    ("system.message.ccaddress", Field::Cc),
    ("system.message.ccname", Field::Cc),
    ("bcc", Field::Bcc),
    ("bccaddress", Field::Bcc),
    ("bccname", Field::Bcc),
    ("system.message.bccaddress", Field::Bcc),
    ("system.message.bccname", Field::Bcc),
    ("attachments", Field::Attachments),
    ("system.message.attachmentnames", Field::Attachments),
    ("hasattachments", Field::HasAttachments),
    ("system.message.hasattachments", Field::HasAttachments),
    ("received", Field::Received),
    ("system.message.datereceived", Field::Received),
    ("datecreated", Field::Received),
    ("datemodified", Field::Received),
    ("sent", Field::Sent),
    ("system.message.datesent", Field::Sent),
    ("start", Field::Start),
    ("importance", Field::Importance),
    ("priority", Field::Importance),
    ("size", Field::Size),
    ("read", Field::Read),
    ("isread", Field::Read),
    ("isflagged", Field::Flagged),
    ("hashflag", Field::Flagged),
    ("category", Field::Category),
    ("location", Field::Location),
    ("system.message.messageclass", Field::Class),
    ("company", Field::Company),
];

/// Documented Outlook/AQS properties the simulated items do not model.
const UNMODELLED: &[&str] = &[
    "enddate",
    "due",
    "duedate",
    "completed",
    "remindertime",
    "sensitivity",
    "flagstatus",
    "iscompleted",
    "incomplete",
    "requiredattendees",
    "optionalattendees",
    "isrecurring",
    "recurring",
    "duration",
    "meetingstatus",
    "showtimeas",
    "firstname",
    "lastname",
    "fullname",
    "emailaddress",
    "department",
    "jobtitle",
    "mobilephone",
    "businessphone",
    "homephone",
    "color",
    "taskowner",
    "system.message.conversationid",
    "system.flagcolor",
    "veeam.message.header",
];

fn field_of(name: &str) -> Option<Field> {
    let lower = name.to_ascii_lowercase();
    PROPERTIES
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, f)| *f)
        .or_else(|| {
            UNMODELLED
                .contains(&lower.as_str())
                .then_some(Field::Unmodelled)
        })
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Prop(Field),
    Word(String),
}

fn tokenize(query: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            tokens.push(Token::LParen);
            i += 1;
        } else if c == ')' {
            tokens.push(Token::RParen);
            i += 1;
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(QueryError("unterminated quoted value".into())),
                    Some('\\') if chars.get(i + 1) == Some(&'"') => {
                        text.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(*ch);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Word(text));
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"()\"".contains(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match word.as_str() {
                "AND" => tokens.push(Token::And),
                "OR" => tokens.push(Token::Or),
                "NOT" => tokens.push(Token::Not),
                _ => match word.split_once(':') {
                    Some((name, rest)) if field_of(name).is_some() => {
                        tokens.push(Token::Prop(field_of(name).unwrap_or(Field::Unmodelled)));
                        if !rest.is_empty() {
                            tokens.push(Token::Word(rest.to_string()));
                        }
                    }
                    _ => tokens.push(Token::Word(word)),
                },
            }
        }
    }
    Ok(tokens)
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Matches every item (empty query).
    All,
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
    Term(Term),
}

/// One `property:value` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    field: Field,
    cond: Cond,
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Contains(String),
    Bool(bool),
    /// Half-open interval [from, to) of seconds (dates) or bytes (sizes).
    Range(i64, i64),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Parses a query string; an empty query matches everything.
///
/// # Errors
///
/// [`QueryError`] for clearly malformed input.
pub fn parse(query: &str) -> Result<Query, QueryError> {
    let tokens = tokenize(query)?;
    if tokens.is_empty() {
        return Ok(Query::All);
    }
    let mut p = Parser { tokens, pos: 0 };
    let q = p.or(None)?;
    match p.peek() {
        None => Ok(q),
        Some(Token::RParen) => Err(QueryError("unbalanced ')'".into())),
        Some(t) => Err(QueryError(format!("unexpected {t:?}"))),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self, ctx: Option<Field>) -> Result<Query, QueryError> {
        let mut parts = vec![self.and(ctx)?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            parts.push(self.and(ctx)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self, ctx: Option<Field>) -> Result<Query, QueryError> {
        let mut parts = vec![self.unary(ctx)?];
        loop {
            match self.peek() {
                None | Some(Token::Or) | Some(Token::RParen) => break,
                Some(Token::And) => {
                    self.pos += 1;
                    parts.push(self.unary(ctx)?);
                }
                Some(_) => parts.push(self.unary(ctx)?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::And(parts)
        })
    }

    fn unary(&mut self, ctx: Option<Field>) -> Result<Query, QueryError> {
        match self.next() {
            Some(Token::Not) => Ok(Query::Not(Box::new(self.unary(ctx)?))),
            Some(Token::LParen) => {
                if self.peek() == Some(&Token::RParen) {
                    return Err(QueryError("empty parentheses".into()));
                }
                let q = self.or(ctx)?;
                match self.next() {
                    Some(Token::RParen) => Ok(q),
                    _ => Err(QueryError("missing ')'".into())),
                }
            }
            Some(Token::Prop(field)) => match self.peek() {
                Some(Token::LParen) => self.unary(Some(field)),
                Some(Token::Word(_)) => match self.next() {
                    Some(Token::Word(w)) => Ok(Query::Term(term(field, &w)?)),
                    _ => Err(QueryError("property without a value".into())),
                },
                _ => Err(QueryError("property without a value".into())),
            },
            Some(Token::Word(w)) => Ok(Query::Term(term(ctx.unwrap_or(Field::Text), &w)?)),
            Some(t) => Err(QueryError(format!("unexpected {t:?}"))),
            None => Err(QueryError("query ends after an operator".into())),
        }
    }
}

fn term(field: Field, value: &str) -> Result<Term, QueryError> {
    let cond = match field {
        Field::HasAttachments | Field::Read | Field::Flagged => {
            Cond::Bool(match value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => return Err(QueryError(format!("'{value}' is not a boolean"))),
            })
        }
        Field::Received | Field::Sent | Field::Start => {
            let (from, to) = comparison(value, date_interval)?;
            Cond::Range(from, to)
        }
        Field::Size => {
            let (from, to) = comparison(value, size_interval)?;
            Cond::Range(from, to)
        }
        _ => Cond::Contains(value.to_lowercase()),
    };
    Ok(Term { field, cond })
}

/// Applies an optional comparison prefix or `a..b` range to a literal that denotes an interval.
fn comparison(
    value: &str,
    interval: fn(&str) -> Result<(i64, i64), QueryError>,
) -> Result<(i64, i64), QueryError> {
    if let Some((a, b)) = value.split_once("..") {
        return Ok((interval(a)?.0, interval(b)?.1));
    }
    for (op, f) in [
        (
            ">=",
            (|(s, _)| (s, i64::MAX)) as fn((i64, i64)) -> (i64, i64),
        ),
        ("<=", |(_, e)| (i64::MIN, e)),
        (">", |(_, e)| (e, i64::MAX)),
        ("<", |(s, _)| (i64::MIN, s)),
        ("=", |x| x),
    ] {
        if let Some(rest) = value.strip_prefix(op) {
            return Ok(f(interval(rest)?));
        }
    }
    interval(value)
}

fn size_interval(text: &str) -> Result<(i64, i64), QueryError> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| QueryError(format!("'{text}' is not a size")))?;
    let mult = match unit {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        _ => return Err(QueryError(format!("'{text}' is not a size"))),
    };
    let v = n.saturating_mul(mult);
    Ok((v, v.saturating_add(1)))
}

fn day_start(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp())
}

/// A date literal as a half-open interval of Unix seconds.
fn date_interval(text: &str) -> Result<(i64, i64), QueryError> {
    let day = 86_400;
    let today = Utc::now().date_naive();
    let lower = text.to_ascii_lowercase();
    let month_start = |d: NaiveDate| NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d);
    let words: Option<(NaiveDate, NaiveDate)> = match lower.as_str() {
        "today" => Some((today, today + Duration::days(1))),
        "yesterday" => Some((today - Duration::days(1), today)),
        "thisweek" | "this_week" => {
            let s = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
            Some((s, s + Duration::days(7)))
        }
        "lastweek" | "last_week" => {
            let s = today - Duration::days(i64::from(today.weekday().num_days_from_monday()) + 7);
            Some((s, s + Duration::days(7)))
        }
        "thismonth" | "this_month" => {
            let s = month_start(today);
            Some((s, month_start(s + Duration::days(32))))
        }
        "lastmonth" | "last_month" => {
            let e = month_start(today);
            Some((month_start(e - Duration::days(1)), e))
        }
        "thisyear" | "this_year" => NaiveDate::from_ymd_opt(today.year(), 1, 1)
            .zip(NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)),
        "lastyear" | "last_year" => NaiveDate::from_ymd_opt(today.year() - 1, 1, 1)
            .zip(NaiveDate::from_ymd_opt(today.year(), 1, 1)),
        _ => None,
    };
    if let Some((s, e)) = words {
        return Ok((day_start(s), day_start(e)));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        let t = t.timestamp();
        return Ok((t, t + 1));
    }
    for format in ["%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(text, format) {
            let s = day_start(d);
            return Ok((s, s + day));
        }
    }
    Err(QueryError(format!("'{text}' is not a date")))
}

/// Normalises the multi-word relative dates ("this week") into single tokens before parsing.
fn join_relative_dates(query: &str) -> String {
    let mut out = query.to_string();
    for (from, to) in [
        ("this week", "this_week"),
        ("last week", "last_week"),
        ("this month", "this_month"),
        ("last month", "last_month"),
        ("this year", "this_year"),
        ("last year", "last_year"),
    ] {
        out = replace_ci(&out, from, to);
    }
    out
}

fn replace_ci(text: &str, from: &str, to: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::new();
    let mut last = 0;
    for (i, _) in lower.match_indices(from) {
        // Only a date position: right after `prop:` or a comparison operator.
        let before = text[..i].trim_end();
        if !before.ends_with([':', '>', '<', '=', '.']) || i < last {
            continue;
        }
        out.push_str(&text[last..i]);
        out.push_str(to);
        last = i + from.len();
    }
    out.push_str(&text[last..]);
    out
}

/// Parses a query as the simulator's endpoints do (relative date phrases included).
///
/// # Errors
///
/// [`QueryError`] for clearly malformed input.
pub fn parse_query(query: &str) -> Result<Query, QueryError> {
    parse(&join_relative_dates(query))
}

impl Query {
    /// Whether `item` satisfies the query.
    pub fn matches(&self, item: &Item) -> bool {
        match self {
            Query::All => true,
            Query::And(parts) => parts.iter().all(|q| q.matches(item)),
            Query::Or(parts) => parts.iter().any(|q| q.matches(item)),
            Query::Not(q) => !q.matches(item),
            Query::Term(t) => t.matches(item),
        }
    }
}

fn people_contain(people: &[super::world::Person], needle: &str) -> bool {
    people.iter().any(|p| {
        p.address.to_lowercase().contains(needle) || p.name.to_lowercase().contains(needle)
    })
}

impl Term {
    fn matches(&self, item: &Item) -> bool {
        let has = |text: &str, needle: &str| text.to_lowercase().contains(needle);
        match (&self.cond, self.field) {
            (_, Field::Unmodelled) => false,
            (Cond::Contains(n), Field::Text) => {
                has(&item.subject, n)
                    || has(&item.body, n)
                    || people_contain(std::slice::from_ref(&item.from), n)
                    || people_contain(&item.to, n)
            }
            // Contacts carry no subject in the backup (their name is `fullName`).
            (Cond::Contains(n), Field::Subject) => {
                item.class != ItemClass::Contact && has(&item.subject, n)
            }
            (Cond::Contains(n), Field::Body) => has(&item.body, n),
            (Cond::Contains(n), Field::From) => people_contain(std::slice::from_ref(&item.from), n),
            (Cond::Contains(n), Field::To) => people_contain(&item.to, n),
            (Cond::Contains(n), Field::Cc) => people_contain(&item.cc, n),
            (Cond::Contains(n), Field::Bcc) => people_contain(&item.bcc, n),
            (Cond::Contains(n), Field::Attachments) => {
                item.attachments.iter().any(|a| has(&a.0, n))
            }
            (Cond::Contains(n), Field::Importance) => {
                let alias = match n.as_str() {
                    "0" => "low",
                    "1" => "normal",
                    "2" => "high",
                    other => other,
                };
                item.importance.eq_ignore_ascii_case(alias)
            }
            (Cond::Contains(n), Field::Category) => item.categories.iter().any(|c| has(c, n)),
            (Cond::Contains(n), Field::Location) => {
                item.class == ItemClass::Appointment && has(&item.location, n)
            }
            (Cond::Contains(n), Field::Class) => item
                .class
                .message_class()
                .to_lowercase()
                .starts_with(n.as_str()),
            (Cond::Contains(n), Field::Company) => {
                item.class == ItemClass::Contact && has(&item.company, n)
            }
            (Cond::Bool(b), Field::HasAttachments) => item.attachments.is_empty() != *b,
            (Cond::Bool(b), Field::Read) => item.read == *b,
            (Cond::Bool(b), Field::Flagged) => item.flagged == *b,
            (Cond::Range(s, e), Field::Received) => (*s..*e).contains(&item.received.timestamp()),
            (Cond::Range(s, e), Field::Sent) => (*s..*e).contains(&item.sent.timestamp()),
            (Cond::Range(s, e), Field::Start) => {
                item.class == ItemClass::Appointment
                    && (*s..*e).contains(&appointment_start(item).timestamp())
            }
            (Cond::Range(s, e), Field::Size) => {
                i64::try_from(item.size).is_ok_and(|v| (*s..*e).contains(&v))
            }
            _ => false,
        }
    }
}

fn appointment_start(item: &Item) -> DateTime<Utc> {
    item.received + Duration::days(3)
}

fn join_people(people: &[super::world::Person]) -> String {
    people
        .iter()
        .map(|p| p.display())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The item as `RESTExchangeItemsComposed` (the variant's properties only); `mailbox_id` is set
/// on hits of the cross-mailbox search.
pub fn item_json(item: &Item, mailbox_id: Option<Uuid>, session_id: Uuid, owner: Uuid) -> Value {
    let self_href = format!(
        "/v8/RestoreSessions/{session_id}/organization/mailboxes/{owner}/items/{}",
        item.id
    );
    let mut v = match item.class {
        ItemClass::Message => json!({
            "subject": item.subject, "from": item.from.display(), "to": join_people(&item.to),
            "cc": join_people(&item.cc), "bcc": join_people(&item.bcc),
            "sent": dotnet_time(item.sent), "received": dotnet_time(item.received),
            "importance": item.importance, "reminder": false,
            "attachments": item.attachments.iter().map(|(n, s)| json!({"name": n, "sizeBytes": s})).collect::<Vec<_>>(),
        }),
        ItemClass::Appointment => {
            let start = appointment_start(item);
            json!({
                "subject": item.subject, "organizer": item.from.display(),
                "attendees": join_people(&item.to), "location": item.location,
                "startTime": dotnet_time(start), "endTime": dotnet_time(start + Duration::hours(1)),
                "recurring": false,
            })
        }
        ItemClass::Contact => json!({
            "fullName": item.from.name, "email": item.from.address, "company": item.company,
            "fileAs": item.from.name, "displayAs": item.from.display(),
        }),
        ItemClass::Task => json!({
            "subject": item.subject, "owner": item.from.display(),
            "startDate": dotnet_time(item.received), "dueDate": dotnet_time(item.received + Duration::days(7)),
            "status": if item.read { "Completed" } else { "NotStarted" },
            "percentComplete": if item.read { 100.0 } else { 0.0 },
        }),
        ItemClass::StickyNote => {
            json!({"subject": item.subject, "date": dotnet_time(item.received)})
        }
        ItemClass::Post => json!({
            "subject": item.subject, "from": item.from.display(),
            "postedOn": dotnet_time(item.received), "importance": item.importance,
        }),
    };
    v["id"] = json!(item.id);
    v["itemClass"] = json!(item.class.message_class());
    v["_links"] = json!({"self": {"href": self_href}});
    if let Some(id) = mailbox_id {
        v["mailboxId"] = json!(id);
    }
    v
}

/// Generated search hit number `index` (`SimConfig::synthetic_search_hits`): a message of
/// mailbox `owner` whose every field follows from the seed and the index, so any page can be
/// built alone and two simulators with the same seed serve the same bytes.
pub fn synthetic_hit(
    seed: u64,
    latest_backup: DateTime<Utc>,
    index: u64,
    owner: Uuid,
    tagged: bool,
    session_id: Uuid,
) -> Value {
    let id = format!("AAMkSynthetic{seed:08x}{index:012x}");
    let received =
        latest_backup - Duration::seconds(i64::try_from(index).unwrap_or(i64::MAX) % 400_000_000);
    let mut v = json!({
        "id": id,
        "itemClass": "IPM.Note",
        "subject": format!("Quarterly report, part {index}"),
        "from": format!("Sender {} <sender{}@contoso.com>", index % 97, index % 97),
        "to": format!("Team {} <team{}@contoso.com>", index % 13, index % 13),
        "cc": "", "bcc": "",
        "sent": dotnet_time(received - Duration::minutes(3)),
        "received": dotnet_time(received),
        "importance": "Normal",
        "reminder": false,
        "sizeBytes": 2_000 + (index.wrapping_mul(7_919) % 200_000),
        "attachments": [],
        "_links": {"self": {"href": format!(
            "/v8/RestoreSessions/{session_id}/organization/mailboxes/{owner}/items/{id}"
        )}},
    });
    if tagged {
        v["mailboxId"] = json!(owner);
    }
    v
}

/// Parses a date-only or RFC 3339 text into a UTC instant (used for session list filters).
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d", "%m/%d/%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(text, format) {
            return d.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::{World, default_latest_backup};

    fn count(query: &str) -> usize {
        let w = World::new(1, default_latest_backup());
        let q = parse_query(query).expect("parses");
        let mut n = 0;
        for m in &w.organizations()[0].mailboxes {
            n += w
                .items(m, w.latest_backup())
                .iter()
                .filter(|i| q.matches(i))
                .count();
        }
        n
    }

    #[test]
    fn documented_examples_parse() {
        for q in [
            "from:admin",
            "to:user",
            "hasattachments:true",
            "body:information",
            "subject:announcement",
            "from:user_X to:user_Y",
            "from: \"user X\" to: \"user Y\"",
            "subject: Test",
            "subject:\"quarterly report\" hasattachments:true",
            "received:>=1/1/2024 received:<2/1/2024",
            "from:jane@contoso.com AND NOT subject:newsletter",
            "System.Message.FromAddress:jane@contoso.com",
            "received:2024-01-01..2024-06-30 size:>1MB",
            "subject:(report OR minutes)",
            "received:this week",
            "RE: budget",
            "",
        ] {
            assert!(parse_query(q).is_ok(), "{q}");
        }
    }

    #[test]
    fn malformed_queries_are_rejected() {
        for q in [
            "subject:\"open",
            "(from:ceo",
            "from:ceo)",
            "from:",
            "subject:x AND",
            "NOT",
            "received:someday",
            "hasattachments:maybe",
            "size:>lots",
            "()",
        ] {
            assert!(parse_query(q).is_err(), "{q}");
        }
    }

    #[test]
    fn operators_combine_as_expected() {
        let all = count("");
        let reports = count("subject:report");
        let not_reports = count("NOT subject:report");
        assert!(reports > 0 && not_reports > 0);
        assert_eq!(reports + not_reports, all);
        let either = count("subject:report OR subject:minutes");
        assert_eq!(either, reports + count("subject:minutes"));
        assert!(count("subject:report hasattachments:true") <= reports);
        assert_eq!(count("subject:(report OR minutes)"), either);
        assert_eq!(count("frm:ceo"), 0);
        assert!(count("from:ceo@contoso.com") > 0);
        let before = count("received:<2025-01-01");
        let after = count("received:>=2025-01-01");
        assert_eq!(before + after, all);
    }
}
