//! `restorectl validate [PATH...] [--format text|json]` (SPEC §4.2, §6): validates job files
//! and reports every problem with its location, code and hint.
//!
//! Which daemon config the jobs are checked against (servers, default time zone, exportRoot):
//!
//! 1. `--config` / `RESTORECTL_CONFIG` when given. A missing or broken file is a configuration
//!    error (exit 78).
//! 2. Otherwise, for each directory argument that holds a `restorectl.yaml`, that file: it is
//!    validated too (its problems are reported like a job file's) and is the context of the
//!    jobs below it. This is how `restorectl validate jobs.example` works.
//! 3. Otherwise the built-in defaults, and the output says that server names were not checked.
//!
//! Without PATH the config's `jobsDir` is validated (the default config path when it exists,
//! else the built-in defaults).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::Outcome;
use crate::config::{self, CONFIG_FILE_NAMES, Config, ConfigError};
use crate::jobs::locate::Locator;
use crate::jobs::{
    ErrorCode, FileReport, Job, JobError, ScanReport, ValidationContext, scan_paths,
};

/// Output format of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Arguments of `restorectl validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Job files or directories (searched recursively for *.yaml / *.yml). Default: the
    /// config's jobsDir.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// A set of paths validated against one config.
struct Group {
    config: Config,
    /// The config file, when one was used.
    config_file: Option<PathBuf>,
    check_servers: bool,
    paths: Vec<PathBuf>,
    /// Problems of an implicit (directory) config file.
    config_errors: Vec<JobError>,
}

/// Runs `validate`.
pub fn run(args: ValidateArgs, config_flag: Option<&Path>) -> anyhow::Result<Outcome> {
    let groups = plan(&args.paths, config_flag)?;
    let mut results = Vec::new();
    for g in &groups {
        let ctx = if g.check_servers {
            ValidationContext::new(&g.config)
        } else {
            ValidationContext::without_server_check(&g.config)
        };
        results.push(scan_paths(&g.paths, &ctx));
    }
    let valid = results.iter().all(ScanReport::is_valid)
        && groups.iter().all(|g| g.config_errors.is_empty());
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => write_text(&mut out, &groups, &results),
        Format::Json => write_json(&mut out, &groups, &results),
    }
    .context("writing the report")?;
    Ok(if valid {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

/// Decides which config applies to which paths.
fn plan(paths: &[PathBuf], config_flag: Option<&Path>) -> anyhow::Result<Vec<Group>> {
    let (config_path, explicit) = config::config_path(config_flag);
    if explicit || (paths.is_empty() && config_path.exists()) {
        // A config named by the operator (or the system config) must load: exit 78 otherwise.
        let config = Config::load(&config_path)?;
        let paths = if paths.is_empty() {
            vec![config.jobs_dir.clone()]
        } else {
            paths.to_vec()
        };
        return Ok(vec![Group {
            config,
            config_file: Some(config_path),
            check_servers: true,
            paths,
            config_errors: Vec::new(),
        }]);
    }
    if paths.is_empty() {
        let config = Config::builtin_defaults();
        let paths = vec![config.jobs_dir.clone()];
        return Ok(vec![Group {
            config,
            config_file: None,
            check_servers: false,
            paths,
            config_errors: Vec::new(),
        }]);
    }
    // Paths sharing a directory config form one group, so duplicate names are found across
    // them; a file argument uses the config next to it.
    let mut groups: Vec<Group> = Vec::new();
    let mut loose: Vec<PathBuf> = Vec::new();
    for p in paths {
        let dir = if p.is_dir() {
            Some(p.as_path())
        } else {
            p.parent()
        };
        let dir_config = dir.and_then(|d| {
            let d = if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            };
            CONFIG_FILE_NAMES
                .iter()
                .map(|n| d.join(n))
                .find(|c| c.is_file())
        });
        match dir_config {
            Some(file) => match groups
                .iter_mut()
                .find(|g| g.config_file.as_ref() == Some(&file))
            {
                Some(g) => g.paths.push(p.clone()),
                None => groups.push(directory_group(p, file)),
            },
            None => loose.push(p.clone()),
        }
    }
    if !loose.is_empty() {
        groups.push(Group {
            config: Config::builtin_defaults(),
            config_file: None,
            check_servers: false,
            paths: loose,
            config_errors: Vec::new(),
        });
    }
    Ok(groups)
}

/// Paths under a directory's own `restorectl.yaml`: a broken one is reported like a job file,
/// and the jobs are then checked against the built-in defaults without server names.
fn directory_group(path: &Path, file: PathBuf) -> Group {
    let loaded = match std::fs::read_to_string(&file) {
        Err(cause) => Err(ConfigError::Read {
            path: file.clone(),
            cause,
        }),
        Ok(text) => {
            Config::from_yaml(&text, &file).map_err(|e| locate_config_error(e, &text, &file))
        }
    };
    match loaded {
        Ok(config) => Group {
            config,
            config_file: Some(file),
            check_servers: true,
            paths: vec![path.to_path_buf()],
            config_errors: Vec::new(),
        },
        Err(e) => Group {
            config: Config::builtin_defaults(),
            config_file: Some(file.clone()),
            check_servers: false,
            paths: vec![path.to_path_buf()],
            config_errors: vec![config_job_error(&e, &file)],
        },
    }
}

/// A config error with the position of its key, found in the config text.
fn locate_config_error(e: ConfigError, text: &str, file: &Path) -> ConfigError {
    // `Invalid` names a key path (`servers.sim.url`); turn it into a Syntax-style position.
    if let ConfigError::Invalid { key, message, .. } = &e
        && let Some(entry) = Locator::new(text).doc(0).map(|d| d.nearest(key))
    {
        return ConfigError::Syntax {
            path: file.to_path_buf(),
            line: entry.value.line,
            column: entry.value.column,
            message: format!("{key}: {message}"),
        };
    }
    e
}

fn config_job_error(e: &ConfigError, file: &Path) -> JobError {
    let (line, column, message) = match e {
        ConfigError::Syntax {
            line,
            column,
            message,
            ..
        } => (*line, *column, message.clone()),
        other => (1, 1, other.to_string()),
    };
    JobError {
        file: file.to_path_buf(),
        line,
        column,
        code: ErrorCode::Config,
        job: None,
        field: None,
        message,
        hint: ErrorCode::Config.default_hint().to_string(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn file_summary(f: &FileReport) -> String {
    let jobs: Vec<&Job> = f.jobs().collect();
    let errors = f.all_errors().count();
    let status = if errors == 0 {
        "ok".to_string()
    } else {
        plural(errors, "error", "errors")
    };
    let mut line = format!(
        "{}: {status}, {}",
        f.path.display(),
        plural(jobs.len(), "job", "jobs")
    );
    if !jobs.is_empty() {
        let list: Vec<String> = jobs.iter().map(|j| j.summary()).collect();
        line.push_str(&format!(" ({})", list.join("; ")));
    }
    line
}

fn write_text(
    out: &mut impl Write,
    groups: &[Group],
    results: &[ScanReport],
) -> std::io::Result<()> {
    let mut errors: Vec<&JobError> = Vec::new();
    let (mut files, mut jobs) = (0, 0);
    for (g, r) in groups.iter().zip(results) {
        if let Some(file) = &g.config_file
            && (!g.config_errors.is_empty() || g.check_servers)
        {
            files += 1;
            if g.config_errors.is_empty() {
                let names: Vec<&str> = g.config.servers.keys().map(String::as_str).collect();
                let servers = plural(names.len(), "server", "servers");
                writeln!(
                    out,
                    "{}: ok, daemon config ({servers}: {})",
                    file.display(),
                    names.join(", ")
                )?;
            } else {
                writeln!(
                    out,
                    "{}: {}, daemon config",
                    file.display(),
                    plural(g.config_errors.len(), "error", "errors")
                )?;
                errors.extend(&g.config_errors);
            }
        }
        for f in &r.files {
            files += 1;
            jobs += f.jobs().count();
            writeln!(out, "{}", file_summary(f))?;
            errors.extend(f.all_errors());
        }
    }
    for e in &errors {
        writeln!(out, "{e}")?;
        writeln!(out, "  hint: {}", e.hint)?;
    }
    if groups.iter().any(|g| !g.check_servers) {
        writeln!(
            out,
            "note: no valid daemon config was used, so server names were not checked (pass --config)"
        )?;
    }
    writeln!(
        out,
        "total: {}, {}, {}",
        plural(files, "file", "files"),
        plural(jobs, "valid job", "valid jobs"),
        plural(errors.len(), "error", "errors")
    )
}

/// `validate --format json`: the stable, documented report (docs/job-files.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    /// Format version of this object.
    version: u32,
    valid: bool,
    configs: Vec<JsonConfig<'a>>,
    files: Vec<JsonFile<'a>>,
    jobs: Vec<JsonJob<'a>>,
    errors: Vec<&'a JobError>,
    summary: JsonSummary,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonConfig<'a> {
    path: Option<&'a Path>,
    valid: bool,
    servers_checked: bool,
    servers: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonFile<'a> {
    path: &'a Path,
    valid: bool,
    jobs: Vec<&'a str>,
    errors: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonJob<'a> {
    name: &'a str,
    kind: &'a str,
    file: &'a Path,
    document: usize,
    server: Option<&'a str>,
    organization: String,
    schedule: Option<JsonSchedule<'a>>,
    suspend: bool,
    labels: &'a std::collections::BTreeMap<String, String>,
    spec_hash: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSchedule<'a> {
    cron: &'a str,
    timezone: &'a str,
    starting_deadline: Option<String>,
    concurrency_policy: &'a str,
    next_fire: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSummary {
    files: usize,
    jobs: usize,
    errors: usize,
}

fn write_json(
    out: &mut impl Write,
    groups: &[Group],
    results: &[ScanReport],
) -> std::io::Result<()> {
    let now = chrono::Utc::now();
    let mut report = JsonReport {
        version: 1,
        valid: true,
        configs: Vec::new(),
        files: Vec::new(),
        jobs: Vec::new(),
        errors: Vec::new(),
        summary: JsonSummary {
            files: 0,
            jobs: 0,
            errors: 0,
        },
    };
    for (g, r) in groups.iter().zip(results) {
        report.configs.push(JsonConfig {
            path: g.config_file.as_deref(),
            valid: g.config_errors.is_empty(),
            servers_checked: g.check_servers,
            servers: g.config.servers.keys().map(String::as_str).collect(),
        });
        report.errors.extend(&g.config_errors);
        for f in &r.files {
            report.files.push(JsonFile {
                path: &f.path,
                valid: f.is_valid(),
                jobs: f.jobs().map(Job::name).collect(),
                errors: f.all_errors().count(),
            });
            report.errors.extend(f.all_errors());
            for j in f.jobs() {
                report.jobs.push(JsonJob {
                    name: j.name(),
                    kind: j.kind().as_str(),
                    file: j.file(),
                    document: j.document(),
                    server: j.server(),
                    organization: j.organization().to_string(),
                    schedule: j.schedule().map(|s| JsonSchedule {
                        cron: s.cron(),
                        timezone: s.timezone().name(),
                        starting_deadline: s
                            .starting_deadline()
                            .map(|d| humantime::format_duration(d).to_string()),
                        concurrency_policy: s.concurrency_policy().as_str(),
                        next_fire: s.next_after(now).map(|t| t.to_rfc3339()),
                    }),
                    suspend: j.suspend(),
                    labels: j.labels(),
                    spec_hash: j.spec_hash(),
                });
            }
        }
    }
    report.summary = JsonSummary {
        files: report.files.len(),
        jobs: report.jobs.len(),
        errors: report.errors.len(),
    };
    report.valid = report.errors.is_empty();
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}
