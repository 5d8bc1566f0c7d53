//! Request (and response) validation against the vendor's OpenAPI v8 document.
//!
//! The simulator embeds the structural subset of `vb365_rest_v8.json` that restorectl uses
//! (`openapi-v8-subset.json`, copied from the vendor document with descriptions removed) and
//! checks every JSON body against the operation's request schema. The checker is deliberately
//! stricter than the real server (which binds JSON leniently, see API.md §0 and §7): an unknown
//! or mis-cased property, a wrong type, a value outside an enum, a `null` where the schema is not
//! `nullable`, a malformed uuid/date-time, an integer outside int32/int64 or a `readOnly` property
//! in a request is a [`SchemaViolation`] naming the field path. That way a client mistake shows up
//! in tests instead of being silently ignored by a forgiving server.
//!
//! One leniency is the server's own: scripts send back the objects they listed, `_links` and
//! `_actions` included, and an ASP.NET server ignores read-only properties. The simulator binds
//! requests with [`bind_request_as`], which ignores them (and reports their paths for the
//! journal); restorectl's contract test keeps using the strict [`Document::validate_request`].
//!
//! The same functions are public so the client's contract test can reuse them. The free
//! functions use the embedded document; a [`Document`] built with [`Document::from_json`] offers
//! the same checks as methods over any parsed copy (the contract test loads its fixture file
//! from disk that way).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The embedded OpenAPI document (a copy of `../shared/vb365/openapi-v8-subset.json`).
pub const OPENAPI_V8_SUBSET: &str = include_str!("openapi-v8-subset.json");

/// Maximum `$ref` nesting followed before giving up (the subset has no cycles deeper than this).
const MAX_DEPTH: usize = 32;

/// Why a request did not match the vendor schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "body" } else { path.as_str() })]
pub struct SchemaViolation {
    /// Field path inside the body, e.g. `mailboxes[0].id`; empty for the body itself.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl SchemaViolation {
    fn new(path: &str, message: impl Into<String>) -> Self {
        SchemaViolation {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// An operation of the embedded document, found by method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRef {
    /// The document's path template, e.g. `/v8/RestoreSessions/{restoreSessionId}/Stop`.
    pub template: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// The vendor's `operationId`.
    pub operation_id: String,
}

/// A parsed OpenAPI document and the checks over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    doc: Value,
}

fn embedded() -> Result<&'static Document, SchemaViolation> {
    static DOC: OnceLock<Result<Document, SchemaViolation>> = OnceLock::new();
    DOC.get_or_init(|| {
        let value: Value = serde_json::from_str(OPENAPI_V8_SUBSET).map_err(|e| {
            SchemaViolation::new("", format!("embedded OpenAPI document unreadable: {e}"))
        })?;
        Document::from_json(&value)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Whether `segment` of a path template is a `{parameter}` placeholder.
fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// Matches `path` (a template with `{placeholders}` or a concrete path) against a document
/// template: literal segments compare case-insensitively (like the real server's routing), and a
/// document placeholder matches any non-empty segment. Returns the number of literal segments
/// that matched (more literals = more specific), or `None`.
fn match_template(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut literals = 0;
    for (ts, ps) in t.iter().zip(&p) {
        if is_param(ts) {
            if ps.is_empty() {
                return None;
            }
        } else if ts.eq_ignore_ascii_case(ps) {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}

/// Finds the operation for `method` and `path` in the embedded document (see
/// [`Document::find_operation`]).
pub fn find_operation(method: &str, path: &str) -> Option<OperationRef> {
    embedded().ok()?.find_operation(method, path)
}

/// Whether the embedded document declares `method` on `path_template` (or a concrete path).
pub fn operation_exists(method: &str, path_template: &str) -> bool {
    find_operation(method, path_template).is_some()
}

/// Checks a JSON request body against the embedded document (see
/// [`Document::validate_request`]).
///
/// # Errors
///
/// A [`SchemaViolation`] naming the first offending field path.
pub fn validate_request(
    method: &str,
    path_template: &str,
    body: &Value,
) -> Result<(), SchemaViolation> {
    embedded()?.validate_request(method, path_template, body)
}

/// Like [`validate_request`] for a given request media type (see
/// [`Document::validate_request_as`]).
///
/// # Errors
///
/// A [`SchemaViolation`] naming the first offending field path.
pub fn validate_request_as(
    method: &str,
    path_template: &str,
    media: &str,
    body: &Value,
) -> Result<(), SchemaViolation> {
    embedded()?.validate_request_as(method, path_template, media, body)
}

/// How the simulated server binds a request body (see [`Document::bind_request_as`]): the paths
/// of the `readOnly` properties it ignored.
///
/// # Errors
///
/// A [`SchemaViolation`] naming the first offending field path.
pub fn bind_request_as(
    method: &str,
    path_template: &str,
    media: &str,
    body: &Value,
) -> Result<Vec<String>, SchemaViolation> {
    embedded()?.bind_request_as(method, path_template, media, body)
}

/// Checks a JSON response body against the embedded document (see
/// [`Document::validate_response`]).
///
/// # Errors
///
/// A [`SchemaViolation`] naming the first offending field path.
pub fn validate_response(
    method: &str,
    path_template: &str,
    status: u16,
    body: &Value,
) -> Result<(), SchemaViolation> {
    embedded()?.validate_response(method, path_template, status, body)
}

/// Checks `value` against a named component schema of the embedded document.
///
/// # Errors
///
/// A [`SchemaViolation`] naming the first offending field path.
pub fn validate_component(name: &str, value: &Value) -> Result<(), SchemaViolation> {
    embedded()?.validate_component(name, value)
}

/// Form fields as a JSON object, typed by the embedded document (see
/// [`Document::form_to_json`]).
pub fn form_to_json(method: &str, path_template: &str, pairs: &[(String, String)]) -> Value {
    match embedded() {
        Ok(doc) => doc.form_to_json(method, path_template, pairs),
        Err(_) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    }
}

/// Checks query parameters against the embedded document (see [`Document::validate_query`]).
///
/// # Errors
///
/// A [`SchemaViolation`] whose path is the parameter name.
pub fn validate_query(
    method: &str,
    path_template: &str,
    pairs: &[(String, String)],
) -> Result<(), SchemaViolation> {
    embedded()?.validate_query(method, path_template, pairs)
}

/// The request-body schema of an operation for a media type (falling back to
/// `application/json`), or `None` when it takes no body.
fn request_schema<'d>(op: &'d Value, media: &str) -> Option<&'d Value> {
    let content = op.get("requestBody")?.get("content")?;
    content
        .get(media)
        .or_else(|| content.get("application/json"))?
        .get("schema")
}

/// Which side of the exchange a value comes from: `readOnly` properties may only appear in
/// responses, `writeOnly` ones only in requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// A request as restorectl must send it: a `readOnly` property is a violation.
    Request,
    /// A request as the server binds it: a `readOnly` property is ignored (ASP.NET skips
    /// properties without a setter), its path noted.
    ServerRequest,
    Response,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Document {
    /// A document from a parsed OpenAPI JSON value (e.g. a copy loaded from disk). It must have
    /// a `paths` object and a `components.schemas` object.
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] naming the missing part.
    pub fn from_json(doc: &Value) -> Result<Document, SchemaViolation> {
        if !doc.get("paths").is_some_and(Value::is_object) {
            return Err(SchemaViolation::new(
                "paths",
                "an OpenAPI document needs a `paths` object",
            ));
        }
        if !doc
            .get("components")
            .and_then(|c| c.get("schemas"))
            .is_some_and(Value::is_object)
        {
            return Err(SchemaViolation::new(
                "components.schemas",
                "an OpenAPI document needs a `components.schemas` object",
            ));
        }
        Ok(Document { doc: doc.clone() })
    }

    /// The document embedded in the binary (the simulator's own copy).
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] if the embedded text does not parse (a build defect).
    pub fn embedded() -> Result<&'static Document, SchemaViolation> {
        embedded()
    }

    /// Finds the operation for `method` and `path` (template or concrete path, query ignored).
    /// When several templates match (`mailboxes/search` versus `mailboxes/{mailboxId}`), the
    /// one with more literal segments wins, as in ASP.NET routing.
    pub fn find_operation(&self, method: &str, path: &str) -> Option<OperationRef> {
        let doc = &self.doc;
        let path = path.split('?').next().unwrap_or(path);
        let method_lc = method.to_ascii_lowercase();
        let paths = doc.get("paths")?.as_object()?;
        let mut best: Option<(usize, OperationRef)> = None;
        for (template, item) in paths {
            let Some(op) = item.get(&method_lc) else {
                continue;
            };
            let Some(score) = match_template(template, path) else {
                continue;
            };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                let operation_id = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                best = Some((
                    score,
                    OperationRef {
                        template: template.clone(),
                        method: method.to_ascii_uppercase(),
                        operation_id,
                    },
                ));
            }
        }
        best.map(|(_, op)| op)
    }

    /// Whether the document declares `method` on `path_template` (or a concrete path).
    pub fn operation_exists(&self, method: &str, path_template: &str) -> bool {
        self.find_operation(method, path_template).is_some()
    }

    fn operation(&self, op: &OperationRef) -> Result<&Value, SchemaViolation> {
        self.doc
            .get("paths")
            .and_then(|p| p.get(&op.template))
            .and_then(|p| p.get(op.method.to_ascii_lowercase()))
            .ok_or_else(|| {
                SchemaViolation::new("", format!("no operation {} {}", op.method, op.template))
            })
    }

    /// Checks a JSON request body against the request schema of `method` `path_template`.
    /// `Value::Null` stands for "no body"; it passes for operations without a request body and
    /// fails for operations whose body is required.
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] naming the first offending field path.
    pub fn validate_request(
        &self,
        method: &str,
        path_template: &str,
        body: &Value,
    ) -> Result<(), SchemaViolation> {
        self.validate_request_as(method, path_template, "application/json", body)
    }

    /// Like [`validate_request`] for a given request media type (`application/json` or
    /// `application/x-www-form-urlencoded`; a form body is passed as a JSON object, see
    /// [`form_to_json`]).
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] naming the first offending field path.
    pub fn validate_request_as(
        &self,
        method: &str,
        path_template: &str,
        media: &str,
        body: &Value,
    ) -> Result<(), SchemaViolation> {
        self.check_request(method, path_template, media, body, Direction::Request)
            .map(|_| ())
    }

    /// How the server binds a request: like [`Document::validate_request_as`], except that a
    /// `readOnly` property (`_links`, `_actions` of an object sent back as it was listed) is
    /// ignored, as an ASP.NET server does. Returns the paths of the ignored properties.
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] naming the first offending field path.
    pub fn bind_request_as(
        &self,
        method: &str,
        path_template: &str,
        media: &str,
        body: &Value,
    ) -> Result<Vec<String>, SchemaViolation> {
        self.check_request(method, path_template, media, body, Direction::ServerRequest)
    }

    fn check_request(
        &self,
        method: &str,
        path_template: &str,
        media: &str,
        body: &Value,
        dir: Direction,
    ) -> Result<Vec<String>, SchemaViolation> {
        let op_ref = self.find_operation(method, path_template).ok_or_else(|| {
            SchemaViolation::new(
                "",
                format!("no operation {method} {path_template} in the v8 document"),
            )
        })?;
        let op = self.operation(&op_ref)?;
        let mut ignored = Vec::new();
        match (request_schema(op, media), body) {
            (None, Value::Null) => {}
            (None, _) => {
                return Err(SchemaViolation::new(
                    "",
                    format!("{} takes no request body", op_ref.operation_id),
                ));
            }
            (Some(_), Value::Null) => {
                return Err(SchemaViolation::new("", "a request body is required"));
            }
            (Some(schema), body) => self.check(schema, body, "", dir, 0, &mut ignored)?,
        }
        Ok(ignored)
    }

    /// Checks a JSON response body against the schema of `status` (or `default`) of an operation.
    /// Used by the simulator's own tests to keep its answers inside the vendor's shapes.
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] naming the first offending field path.
    pub fn validate_response(
        &self,
        method: &str,
        path_template: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), SchemaViolation> {
        let op_ref = self.find_operation(method, path_template).ok_or_else(|| {
            SchemaViolation::new(
                "",
                format!("no operation {method} {path_template} in the v8 document"),
            )
        })?;
        let op = self.operation(&op_ref)?;
        let responses = op
            .get("responses")
            .ok_or_else(|| SchemaViolation::new("", "operation has no responses"))?;
        let response = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .ok_or_else(|| SchemaViolation::new("", format!("status {status} not declared")))?;
        let schema = response
            .get("content")
            .and_then(Value::as_object)
            .and_then(|c| c.values().next())
            .and_then(|m| m.get("schema"));
        match schema {
            None if body.is_null() => Ok(()),
            None => Err(SchemaViolation::new(
                "",
                format!("status {status} has no body"),
            )),
            Some(schema) => self.check(schema, body, "", Direction::Response, 0, &mut Vec::new()),
        }
    }

    /// Checks `value` against the named component schema (e.g. `RESTRestoreSession`).
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] naming the first offending field path.
    pub fn validate_component(&self, name: &str, value: &Value) -> Result<(), SchemaViolation> {
        let schema = self.component(name)?;
        self.check(schema, value, "", Direction::Response, 0, &mut Vec::new())
    }

    fn component(&self, name: &str) -> Result<&Value, SchemaViolation> {
        self.doc
            .get("components")
            .and_then(|c| c.get("schemas"))
            .and_then(|s| s.get(name))
            .ok_or_else(|| SchemaViolation::new("", format!("unknown schema {name}")))
    }

    /// Turns form fields into a JSON object shaped by the operation's form schema: booleans and
    /// integers declared by the schema are parsed from their text ("true", "3600"); a value that
    /// does not parse stays a string so validation reports the wrong type.
    pub fn form_to_json(
        &self,
        method: &str,
        path_template: &str,
        pairs: &[(String, String)],
    ) -> Value {
        let props = self
            .find_operation(method, path_template)
            .and_then(|op| self.operation(&op).ok())
            .and_then(|op| request_schema(op, "application/x-www-form-urlencoded"))
            .and_then(|s| s.get("properties"));
        let mut out = Map::new();
        for (key, text) in pairs {
            let ty = props
                .and_then(|p| p.get(key))
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str);
            let value = match ty {
                Some("boolean") => match text.to_ascii_lowercase().as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::String(text.clone()),
                },
                Some("integer") => text
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::String(text.clone())),
                _ => Value::String(text.clone()),
            };
            out.insert(key.clone(), value);
        }
        Value::Object(out)
    }

    /// Checks query parameters of an operation: known parameters must parse as their declared type,
    /// format and enum; unknown parameters are ignored (as ASP.NET model binding does).
    ///
    /// # Errors
    ///
    /// A [`SchemaViolation`] whose path is the parameter name.
    pub fn validate_query(
        &self,
        method: &str,
        path_template: &str,
        pairs: &[(String, String)],
    ) -> Result<(), SchemaViolation> {
        let Some(op_ref) = self.find_operation(method, path_template) else {
            return Ok(());
        };
        let op = self.operation(&op_ref)?;
        let Some(params) = op.get("parameters").and_then(Value::as_array) else {
            return Ok(());
        };
        for (key, text) in pairs {
            let Some(param) = params.iter().find(|p| {
                p.get("in").and_then(Value::as_str) == Some("query")
                    && p.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(key))
            }) else {
                continue;
            };
            let Some(schema) = param.get("schema") else {
                continue;
            };
            let as_json = match schema.get("type").and_then(Value::as_str) {
                Some("integer") => match text.parse::<i64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        return Err(SchemaViolation::new(
                            key,
                            format!("'{text}' is not an integer"),
                        ));
                    }
                },
                Some("boolean") => match text.to_ascii_lowercase().as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        return Err(SchemaViolation::new(
                            key,
                            format!("'{text}' is not a boolean"),
                        ));
                    }
                },
                _ => Value::String(text.clone()),
            };
            self.check(
                schema,
                &as_json,
                key,
                Direction::Request,
                0,
                &mut Vec::new(),
            )?;
        }
        Ok(())
    }

    fn resolve<'d>(
        &'d self,
        schema: &'d Value,
        depth: usize,
    ) -> Result<&'d Value, SchemaViolation> {
        let mut current = schema;
        let mut hops = depth;
        while let Some(reference) = current.get("$ref").and_then(Value::as_str) {
            hops += 1;
            if hops > MAX_DEPTH {
                return Err(SchemaViolation::new(
                    "",
                    format!("$ref chain too deep at {reference}"),
                ));
            }
            let name = reference
                .strip_prefix("#/components/schemas/")
                .ok_or_else(|| SchemaViolation::new("", format!("unsupported $ref {reference}")))?;
            current = self.component(name)?;
        }
        Ok(current)
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        dir: Direction,
        depth: usize,
        ignored: &mut Vec<String>,
    ) -> Result<(), SchemaViolation> {
        if depth > MAX_DEPTH {
            return Err(SchemaViolation::new(path, "value nested too deeply"));
        }
        let schema = self.resolve(schema, depth)?;
        if value.is_null() {
            return if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
                Ok(())
            } else {
                Err(SchemaViolation::new(path, "null is not allowed here"))
            };
        }
        let ty = schema.get("type").and_then(Value::as_str).or_else(|| {
            (schema.get("properties").is_some() || schema.get("additionalProperties").is_some())
                .then_some("object")
        });
        match ty {
            Some("object") => self.check_object(schema, value, path, dir, depth, ignored)?,
            Some("array") => {
                let items = value.as_array().ok_or_else(|| {
                    SchemaViolation::new(
                        path,
                        format!("expected an array, got {}", describe(value)),
                    )
                })?;
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(
                            item_schema,
                            item,
                            &format!("{path}[{i}]"),
                            dir,
                            depth + 1,
                            ignored,
                        )?;
                    }
                }
            }
            Some("string") => {
                let text = value.as_str().ok_or_else(|| {
                    SchemaViolation::new(
                        path,
                        format!("expected a string, got {}", describe(value)),
                    )
                })?;
                check_string_format(schema, text, path)?;
            }
            Some("integer") => check_integer(schema, value, path)?,
            Some("number") if !value.is_number() => {
                return Err(SchemaViolation::new(
                    path,
                    format!("expected a number, got {}", describe(value)),
                ));
            }
            Some("boolean") if !value.is_boolean() => {
                return Err(SchemaViolation::new(
                    path,
                    format!("expected a boolean, got {}", describe(value)),
                ));
            }
            // No type: the schema does not constrain the value.
            _ => {}
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            return Err(SchemaViolation::new(
                path,
                format!("{value} is not one of {}", names.join(", ")),
            ));
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        dir: Direction,
        depth: usize,
        ignored: &mut Vec<String>,
    ) -> Result<(), SchemaViolation> {
        let object = value.as_object().ok_or_else(|| {
            SchemaViolation::new(path, format!("expected an object, got {}", describe(value)))
        })?;
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (key, item) in object {
            let field = child(path, key);
            if let Some(prop) = props.and_then(|p| p.get(key)) {
                let prop = self.resolve(prop, depth)?;
                let flag = |name: &str| prop.get(name).and_then(Value::as_bool) == Some(true);
                if dir == Direction::Request && flag("readOnly") {
                    return Err(SchemaViolation::new(
                        &field,
                        "read-only property in a request",
                    ));
                }
                if dir == Direction::ServerRequest && flag("readOnly") {
                    ignored.push(field);
                    continue;
                }
                if dir == Direction::Response && flag("writeOnly") {
                    return Err(SchemaViolation::new(
                        &field,
                        "write-only property in a response",
                    ));
                }
                self.check(prop, item, &field, dir, depth + 1, ignored)?;
            } else if let Some(extra) = additional.filter(|a| a.is_object()) {
                self.check(extra, item, &field, dir, depth + 1, ignored)?;
            } else {
                return Err(SchemaViolation::new(&field, unknown_message(key, props)));
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(SchemaViolation::new(
                        &child(path, name),
                        "required property is missing",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// "unknown property", with a hint when only the letter case differs from a declared one (the
/// real server would bind it; restorectl must send the spec's casing).
fn unknown_message(key: &str, props: Option<&Map<String, Value>>) -> String {
    let declared: BTreeSet<&str> = props
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    match declared.iter().find(|d| d.eq_ignore_ascii_case(key)) {
        Some(hint) => format!("unknown property (did you mean '{hint}'?)"),
        None => "unknown property".to_string(),
    }
}

fn check_string_format(schema: &Value, text: &str, path: &str) -> Result<(), SchemaViolation> {
    match schema.get("format").and_then(Value::as_str) {
        // Hyphenated form only: the vendor's examples and answers always use it.
        Some("uuid") if text.len() != 36 || uuid::Uuid::parse_str(text).is_err() => {
            return Err(SchemaViolation::new(
                path,
                format!("'{text}' is not a valid uuid"),
            ));
        }
        Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
            return Err(SchemaViolation::new(
                path,
                format!("'{text}' is not an RFC 3339 date-time"),
            ));
        }
        _ => {}
    }
    Ok(())
}

fn check_integer(schema: &Value, value: &Value, path: &str) -> Result<(), SchemaViolation> {
    let Some(n) = value.as_i64() else {
        return Err(if value.as_u64().is_some() {
            SchemaViolation::new(path, format!("{value} is out of range"))
        } else {
            SchemaViolation::new(
                path,
                format!("expected an integer, got {}", describe(value)),
            )
        });
    };
    if schema.get("format").and_then(Value::as_str) == Some("int32") && i32::try_from(n).is_err() {
        return Err(SchemaViolation::new(
            path,
            format!("{n} is out of the int32 range"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BULK: &str = "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/restore";
    const EXPORT: &str =
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/exportToPst";

    #[test]
    fn embedded_document_parses_and_has_the_endpoints() {
        assert!(embedded().is_ok());
        assert!(operation_exists("POST", "/v8/token"));
        assert!(operation_exists("post", BULK));
        assert!(operation_exists("POST", EXPORT));
        assert!(!operation_exists("GET", EXPORT));
        assert!(!operation_exists(
            "POST",
            "/v8/RestoreSessions/{id}/organization/mailboxes/exportToPst"
        ));
    }

    #[test]
    fn concrete_paths_match_case_insensitively_and_prefer_literals() {
        let op = find_operation(
            "POST",
            "/v8/restoresessions/9f78c7e6-2b0e-4c71-9d27-4a1d3b7a1f00/organization/mailboxes/search",
        )
        .expect("search op");
        assert_eq!(op.operation_id, "ExchangeMailbox_SearchByOptions");
        let op = find_operation("GET", "/v8/RestoreSessions/x/organization/mailboxes/y")
            .expect("get by id");
        assert_eq!(op.operation_id, "ExchangeMailbox_GetById");
    }

    #[test]
    fn a_correct_body_passes() {
        let body = json!({
            "mailboxes": [{"id": "479a1c1e-2f7b-4d51-9a1e-0b1c2d3e4f50"}],
            "casServer": "outlook.office365.com",
            "changedItems": true,
            "deletedItems": null,
            "recentItemRestorePeriod": 30,
            "applicationId": "8a4b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
            "applicationCertificate": "MIIK",
            "applicationCertificatePassword": "secret",
            "impersonationAccountName": "admin@contoso.com"
        });
        assert_eq!(validate_request("POST", BULK, &body), Ok(()));
        let export = json!({"contentKeyword": "falcon", "enablePstSizeLimit": true, "pstSizeLimitBytes": 10737418240_i64});
        assert_eq!(validate_request("POST", EXPORT, &export), Ok(()));
    }

    #[test]
    fn a_misspelt_field_fails_and_names_the_field() {
        let body = json!({"mailboxes": [{"id": "479a1c1e-2f7b-4d51-9a1e-0b1c2d3e4f50"}], "changedItem": true});
        let err = validate_request("POST", BULK, &body).expect_err("misspelt");
        assert_eq!(err.path, "changedItem");
        assert!(err.message.contains("unknown property"), "{err}");
        let body = json!({"markRestoredAsunread": true});
        let err = validate_request("POST", BULK, &body).expect_err("miscased");
        assert!(
            err.message.contains("did you mean 'markRestoredAsUnread'"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_enums_formats_and_nulls_fail() {
        let cases = [
            (json!({"changedItems": "true"}), "changedItems"),
            (
                json!({"mailboxes": [{"id": "not-a-uuid"}]}),
                "mailboxes[0].id",
            ),
            (json!({"mailboxes": {"id": "x"}}), "mailboxes"),
            (
                json!({"recentItemRestorePeriod": 3_000_000_000_i64}),
                "recentItemRestorePeriod",
            ),
            (
                json!({"recentItemRestorePeriod": 1.5}),
                "recentItemRestorePeriod",
            ),
            (json!({"casServer": null}), "casServer"),
            (
                json!({"mailboxes": [{"id": "479a1c1e-2f7b-4d51-9a1e-0b1c2d3e4f50", "_actions": {}}]}),
                "mailboxes[0]._actions",
            ),
        ];
        for (body, path) in cases {
            let err = validate_request("POST", BULK, &body).expect_err("must fail");
            assert_eq!(err.path, path, "{body}: {err}");
        }
        let to =
            "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restoreTo";
        let err =
            validate_request("POST", to, &json!({"officeRegion": "Europe"})).expect_err("enum");
        assert_eq!(err.path, "officeRegion");
        let explore = "/v8/Organizations/{organizationId}/explore";
        let err =
            validate_request("POST", explore, &json!({"dateTime": "yesterday"})).expect_err("date");
        assert_eq!(err.path, "dateTime");
        assert_eq!(
            validate_request("POST", explore, &json!({"dateTime": null, "type": "Vex"})),
            Ok(())
        );
    }

    #[test]
    fn bodies_are_required_or_forbidden_per_operation() {
        assert!(validate_request("POST", BULK, &Value::Null).is_err());
        let stop = "/v8/RestoreSessions/{restoreSessionId}/Stop";
        assert_eq!(validate_request("POST", stop, &Value::Null), Ok(()));
        assert!(validate_request("POST", stop, &json!({"stop": null})).is_err());
        let err =
            validate_request("POST", "/v8/token", &json!({"username": "u"})).expect_err("grant");
        assert_eq!(err.path, "grant_type");
    }

    #[test]
    fn form_fields_are_coerced_by_the_schema() {
        let pairs = vec![
            ("grant_type".to_string(), "password".to_string()),
            ("disable_antiforgery_token".to_string(), "true".to_string()),
        ];
        let v = form_to_json("POST", "/v8/token", &pairs);
        assert_eq!(v["disable_antiforgery_token"], json!(true));
        assert_eq!(
            validate_request_as("POST", "/v8/token", "application/x-www-form-urlencoded", &v),
            Ok(())
        );
    }

    #[test]
    fn query_parameters_are_typed() {
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let mailboxes = "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes";
        assert_eq!(
            validate_query("GET", mailboxes, &q("limit", "1000")),
            Ok(())
        );
        assert!(validate_query("GET", mailboxes, &q("limit", "many")).is_err());
        assert_eq!(
            validate_query("GET", mailboxes, &q("whatever", "x")),
            Ok(())
        );
        let sessions = "/v8/RestoreSessions";
        assert!(validate_query("GET", sessions, &q("orderBy", "Name")).is_err());
    }

    #[test]
    fn a_parsed_document_checks_like_the_embedded_one() {
        let value: Value = serde_json::from_str(OPENAPI_V8_SUBSET).expect("json");
        let doc = Document::from_json(&value).expect("document");
        assert_eq!(Some(&doc), embedded().ok());
        let good = json!({"mailboxes": [{"id": "479a1c1e-2f7b-4d51-9a1e-0b1c2d3e4f50"}], "changedItems": true});
        assert_eq!(doc.validate_request("POST", BULK, &good), Ok(()));
        let mut bad = good.clone();
        if let Some(map) = bad.as_object_mut() {
            map.remove("changedItems");
            map.insert("changedItem".into(), json!(true));
        }
        let err = doc
            .validate_request("POST", BULK, &bad)
            .expect_err("misspelt");
        assert_eq!(err.path, "changedItem");
        // A document without the operation knows nothing of it.
        let mut trimmed = value.clone();
        if let Some(paths) = trimmed.get_mut("paths").and_then(Value::as_object_mut) {
            paths.remove(BULK);
        }
        let trimmed = Document::from_json(&trimmed).expect("document");
        assert!(!trimmed.operation_exists("POST", BULK));
        assert!(trimmed.validate_request("POST", BULK, &good).is_err());
        assert!(Document::from_json(&json!({"paths": []})).is_err());
    }

    #[test]
    fn responses_can_be_checked_too() {
        let session = json!({"id": "9f78c7e6-2b0e-4c71-9d27-4a1d3b7a1f00", "type": "Vex",
            "creationTime": "2025-01-10T08:01:02.1234567Z", "state": "Working", "result": "Success"});
        assert_eq!(validate_component("RESTRestoreSession", &session), Ok(()));
        let mut broken = session.clone();
        broken["state"] = json!("Running");
        assert!(validate_component("RESTRestoreSession", &broken).is_err());
    }
}
