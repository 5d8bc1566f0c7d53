//! `restorectl migrate-state --from URL` (docs/ha.md): copies a whole state database (jobs,
//! versions, runs, steps, restore sessions, downloads, published files, requests, the event
//! history) into the config's `database`, typically from the SQLite file of an existing
//! installation into a new PostgreSQL database. The daemon must be stopped; the target must be
//! empty (it is migrated first); the copy is one transaction of the target.

use std::io::Write;

use anyhow::Context;

use super::context;
use super::{Outcome, UsageError};
use crate::config::Config;
use crate::store::{Location, OpenMode, Store};

/// Arguments of `restorectl migrate-state`.
#[derive(Debug, clap::Args)]
pub struct MigrateStateArgs {
    /// The database to copy from, e.g. sqlite:///var/lib/restorectl/restorectl.db (no password
    /// in the URL: a PostgreSQL source must use trust or certificate authentication).
    #[arg(long, value_name = "URL")]
    pub from: String,
}

/// Runs `migrate-state`.
pub fn run(args: MigrateStateArgs, config: &Config) -> anyhow::Result<Outcome> {
    let source = Location::parse(&args.from)
        .map_err(|e| anyhow::Error::new(UsageError(format!("--from: {e}"))))?;
    let target = context::store_location(config)?;
    if source.to_string() == target.to_string() {
        return Err(anyhow::Error::new(UsageError(format!(
            "--from names the config's own database ({target}): name the database to copy from"
        ))));
    }
    context::block_on(async {
        // The source may be older than this binary: migrate it like the daemon would.
        let from = Store::connect(&source, OpenMode::Existing)
            .await
            .with_context(|| format!("opening the database to copy from ({source})"))?;
        let to = Store::connect(&target, OpenMode::Create)
            .await
            .with_context(|| format!("opening the config's database ({target})"))?;
        let now = context::now()?;
        let report = from
            .copy_into(&to, context::LIVE_DAEMON_HEARTBEAT, now)
            .await
            .with_context(|| {
                format!("copying {source} into {target} (stop the daemon first; the target must be empty)")
            })?;
        from.close().await;
        to.close().await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "copied {source} into {target}:")?;
        for (table, rows) in &report.tables {
            writeln!(out, "  {table:<18} {rows:>10} rows")?;
        }
        writeln!(
            out,
            "start the daemon with this config; keep the old database until you have checked \
             `restorectl runs` and `restorectl jobs`"
        )?;
        Ok(Outcome::Ok)
    })
}
