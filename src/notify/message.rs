//! The human form of a notification (Teams card, e-mail): a title, the facts (job, run, state,
//! mailboxes, first error) and the commands to run. The webhook sends the [`Payload`] itself.

use crate::store::{NotifyEvent, Payload};

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One line: `restorectl: run failed - job weekly-legal-export` (ASCII: an e-mail subject).
    pub title: String,
    /// (name, value) pairs in display order.
    pub facts: Vec<(String, String)>,
    /// Commands the reader should run, first the one that shows more.
    pub commands: Vec<String>,
}

/// Renders `p`.
pub fn render(p: &Payload) -> Message {
    let what = match p.event {
        NotifyEvent::Failed => "run failed",
        NotifyEvent::NeedsAttention => "run needs attention",
        NotifyEvent::Missed => "scheduled run missed",
        NotifyEvent::Invalid => "job file invalid",
        NotifyEvent::Recovered => "run succeeded again (recovered)",
        NotifyEvent::Succeeded => "run succeeded",
        NotifyEvent::Stale => "run refused: backups look stale",
    };
    let title = match &p.job {
        Some(job) => format!("restorectl: {what} - job {job}"),
        None => format!("restorectl: {what}"),
    };
    let mut facts = Vec::new();
    if let Some(job) = &p.job {
        facts.push(("Job".into(), job.clone()));
    }
    if let Some(run) = &p.run {
        facts.push(("Run".into(), run.clone()));
    }
    facts.push(("State".into(), p.state.clone()));
    if let Some(reason) = &p.reason {
        let label = match p.event {
            NotifyEvent::Failed | NotifyEvent::Stale | NotifyEvent::Invalid => "First error",
            _ => "Reason",
        };
        facts.push((label.into(), reason.clone()));
    }
    if !p.mailboxes.is_empty() {
        facts.push(("Mailboxes".into(), p.mailboxes.join(", ")));
    }
    facts.push(("When".into(), p.occurred_at.clone()));
    let mut commands = vec![p.command.clone()];
    if p.event == NotifyEvent::NeedsAttention
        && let Some(run) = &p.run
    {
        commands.push(format!(
            "restorectl resolve {run} --resend | --mark-done | --mark-failed"
        ));
    }
    Message {
        title,
        facts,
        commands,
    }
}

impl Message {
    /// Plain text (the e-mail body).
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.title);
        for (name, value) in &self.facts {
            out.push_str(&format!("{name}: {value}\n"));
        }
        out.push_str("\nTo see more or act:\n");
        for c in &self.commands {
            out.push_str(&format!("    {c}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_attention_names_the_resolve_command() {
        let p = Payload {
            version: 1,
            event: NotifyEvent::NeedsAttention,
            delivery: "d".into(),
            job: Some("j".into()),
            run: Some("r1".into()),
            state: "needs_attention".into(),
            reason: Some("restore outcome unknown for a@b.c".into()),
            mailboxes: vec!["a@b.c".into()],
            occurred_at: "2026-12-03T14:00:00Z".into(),
            command: "restorectl show r1".into(),
        };
        let m = render(&p);
        let text = m.text();
        assert!(text.contains("restorectl show r1"), "{text}");
        assert!(text.contains("restorectl resolve r1 --resend"), "{text}");
        assert!(text.contains("Mailboxes: a@b.c"), "{text}");
        assert!(m.title.contains("job j"));
    }
}
