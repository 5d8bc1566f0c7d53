//! The Microsoft Teams target: a `POST` of a message with one Adaptive Card (version 1.4), the
//! format of Teams Workflows webhooks ("Post to a channel when a webhook request is received")
//! which replace the retired Office 365 connectors; the card shows the title, the facts and
//! the commands to run. Teams answers 2xx (Workflows: 202) when it accepted the message.

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::message::{Message, render};
use super::{NotifyError, parse_url, post};
use crate::config::{SecretContext, SecretRef};
use crate::store::Notification;

/// The Teams message of `m`.
pub fn card(m: &Message, delivery: &str) -> Value {
    let facts: Vec<Value> = m
        .facts
        .iter()
        .map(|(name, value)| json!({ "title": name, "value": value }))
        .collect();
    let commands: Vec<Value> = m
        .commands
        .iter()
        .map(|c| json!({ "type": "TextBlock", "text": c, "fontType": "Monospace", "wrap": true }))
        .collect();
    let mut body = vec![
        json!({ "type": "TextBlock", "text": m.title, "weight": "Bolder", "size": "Medium", "wrap": true }),
        json!({ "type": "FactSet", "facts": facts }),
        json!({ "type": "TextBlock", "text": "To see more or act:", "wrap": true }),
    ];
    body.extend(commands);
    body.push(json!({ "type": "TextBlock", "text": format!("delivery {delivery}"), "isSubtle": true, "size": "Small" }));
    json!({
        "type": "message",
        "summary": m.title,
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            }
        }]
    })
}

/// Sends `row` to a Teams target.
pub async fn send(
    http: &reqwest::Client,
    secrets: &SecretContext,
    url: &SecretRef,
    row: &Notification,
) -> Result<(), NotifyError> {
    let target = &row.target;
    let payload = row.body().map_err(|e| NotifyError::Payload {
        target: target.clone(),
        message: e.to_string(),
    })?;
    let url = url.resolve(secrets).map_err(|source| NotifyError::Secret {
        target: target.clone(),
        source,
    })?;
    let url = parse_url(target, url.expose_secret())?;
    let request = http
        .post(url)
        .header(super::webhook::DELIVERY_HEADER, &row.delivery)
        .json(&card(&render(&payload), &row.delivery));
    post(target, request).await
}
