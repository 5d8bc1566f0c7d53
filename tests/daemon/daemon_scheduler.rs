//! The scheduler on an injected clock against a real store (SPEC §4.3): DST transitions in
//! Europe/Berlin, downtime with `startingDeadline`, `concurrencyPolicy`, one-shot jobs,
//! schedule changes and `suspend`. Every instant is asserted in UTC.

use crate::daemon_support::*;
use chrono::{DateTime, Utc};
use restorectl::daemon::fires::{Scheduler, TickReport};
use restorectl::daemon::reconcile::Reconciler;
use restorectl::schedule::ManualClock;
use restorectl::store::{Run, RunFilter, RunState, Store, Trigger};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct Harness {
    site: Site,
    store: Store,
    reconciler: Reconciler,
    clock: ManualClock,
    scheduler: Scheduler,
}

impl Harness {
    async fn new(start: &str) -> Harness {
        let site = Site::new("http://127.0.0.1:9", "off");
        let store = store(&site).await;
        let clock = ManualClock::new(utc(start));
        let scheduler = Scheduler::new(store.clone(), clock_arc(&clock));
        Harness {
            reconciler: Reconciler::new(store.clone()),
            site,
            store,
            clock,
            scheduler,
        }
    }

    /// Applies the job directory at the clock's time, then ticks.
    async fn apply(&mut self) -> TickReport {
        reconcile(&self.site, &mut self.reconciler, self.clock.now_utc()).await;
        self.tick().await
    }

    async fn tick(&mut self) -> TickReport {
        let table = self.reconciler.table();
        self.scheduler.tick(&table).await.unwrap()
    }

    async fn at(&mut self, t: &str) -> TickReport {
        self.clock.set(utc(t));
        self.tick().await
    }

    async fn runs(&self, job: &str) -> Vec<Run> {
        let mut runs = self
            .store
            .list_runs(&RunFilter {
                job: Some(job),
                ..RunFilter::default()
            })
            .await
            .unwrap();
        runs.sort_by_key(|r| (r.scheduled_for, r.created_at));
        runs
    }
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        restorectl::schedule::Clock::now(self)
    }
}

fn fired(report: &TickReport) -> Vec<DateTime<Utc>> {
    report.queued.iter().map(|r| r.scheduled_for).collect()
}

/// Follows a job from fire to fire (the clock set exactly at each next fire) and returns the
/// queued instants. Each instant is ticked twice: a second tick at the same time never fires.
async fn follow(h: &mut Harness, fires: usize) -> Vec<DateTime<Utc>> {
    let first = h.apply().await;
    assert!(first.queued.is_empty(), "applying a schedule never fires");
    let mut next = first.earliest_next_fire;
    let mut out = Vec::new();
    for _ in 0..fires {
        let at = next.expect("a next fire");
        h.clock.set(at);
        let report = h.tick().await;
        out.extend(fired(&report));
        assert!(
            h.tick().await.queued.is_empty(),
            "second tick at {at} fired again"
        );
        next = report.earliest_next_fire;
    }
    out
}

#[tokio::test]
async fn berlin_0200_across_both_2026_transitions() {
    let schedule = "{ cron: \"0 2 * * *\", timezone: Europe/Berlin, concurrencyPolicy: Allow }";
    let mut h = Harness::new("2026-03-27T12:00:00Z").await;
    h.site
        .write_job("nightly.yaml", &export_job("nightly", Some(schedule), ""));
    let march = follow(&mut h, 3).await;
    assert_eq!(
        march,
        [
            utc("2026-03-28T01:00:00Z"), // 02:00 CET
            utc("2026-03-29T01:00:00Z"), // 02:00 does not exist: right after the jump, 03:00 CEST
            utc("2026-03-30T00:00:00Z"), // 02:00 CEST
        ]
    );

    let mut h = Harness::new("2026-10-23T12:00:00Z").await;
    h.site
        .write_job("nightly.yaml", &export_job("nightly", Some(schedule), ""));
    let october = follow(&mut h, 3).await;
    assert_eq!(
        october,
        [
            utc("2026-10-24T00:00:00Z"), // 02:00 CEST
            utc("2026-10-25T00:00:00Z"), // the repeated hour: once, at the first 02:00 (CEST)
            utc("2026-10-26T01:00:00Z"), // 02:00 CET
        ]
    );
}

#[tokio::test]
async fn berlin_0230_across_both_2026_transitions() {
    let schedule = "{ cron: \"30 2 * * *\", timezone: Europe/Berlin, concurrencyPolicy: Allow }";
    let mut h = Harness::new("2026-03-27T12:00:00Z").await;
    h.site
        .write_job("half.yaml", &export_job("half", Some(schedule), ""));
    assert_eq!(
        follow(&mut h, 3).await,
        [
            utc("2026-03-28T01:30:00Z"), // 02:30 CET
            utc("2026-03-29T01:00:00Z"), // 02:30 skipped: runs at 03:00 CEST, right after the jump
            utc("2026-03-30T00:30:00Z"), // 02:30 CEST
        ]
    );
    let mut h = Harness::new("2026-10-23T12:00:00Z").await;
    h.site
        .write_job("half.yaml", &export_job("half", Some(schedule), ""));
    assert_eq!(
        follow(&mut h, 3).await,
        [
            utc("2026-10-24T00:30:00Z"), // 02:30 CEST
            utc("2026-10-25T00:30:00Z"), // the repeated 02:30 runs once (CEST copy)
            utc("2026-10-26T01:30:00Z"), // 02:30 CET
        ]
    );
}

const DAILY_DEADLINE: &str =
    "{ cron: \"0 2 * * *\", timezone: Europe/Berlin, startingDeadline: 1h }";

#[tokio::test]
async fn downtime_over_three_fires_runs_the_latest_within_the_deadline() {
    let mut h = Harness::new("2026-03-29T12:00:00Z").await;
    h.site
        .write_job("daily.yaml", &export_job("daily", Some(DAILY_DEADLINE), ""));
    let applied = h.apply().await;
    assert_eq!(
        applied.earliest_next_fire,
        Some(utc("2026-03-30T00:00:00Z"))
    );
    // Down over 03-30, 03-31 and 04-01 02:00 CEST; back 30 minutes after the last one.
    let report = h.at("2026-04-01T00:30:00Z").await;
    assert_eq!(fired(&report), [utc("2026-04-01T00:00:00Z")]);
    assert_eq!(report.missed, 2);
    let runs = h.runs("daily").await;
    let summary: Vec<(DateTime<Utc>, RunState)> =
        runs.iter().map(|r| (r.scheduled_for, r.state)).collect();
    assert_eq!(
        summary,
        [
            (utc("2026-03-30T00:00:00Z"), RunState::Missed),
            (utc("2026-03-31T00:00:00Z"), RunState::Missed),
            (utc("2026-04-01T00:00:00Z"), RunState::Queued),
        ]
    );
    assert!(runs.iter().all(|r| r.trigger == Trigger::Schedule));
    assert_eq!(
        h.store.get_job("daily").await.unwrap().next_fire_at,
        Some(utc("2026-04-02T00:00:00Z"))
    );
}

#[tokio::test]
async fn downtime_past_the_deadline_runs_nothing_and_records_three_missed() {
    let mut h = Harness::new("2026-03-29T12:00:00Z").await;
    h.site
        .write_job("daily.yaml", &export_job("daily", Some(DAILY_DEADLINE), ""));
    h.apply().await;
    let report = h.at("2026-04-01T01:00:01Z").await; // 1 h 1 s after the latest fire
    assert!(report.queued.is_empty());
    assert_eq!(report.missed, 3);
    let runs = h.runs("daily").await;
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.state == RunState::Missed));
    let latest = runs.last().unwrap();
    assert_eq!(latest.scheduled_for, utc("2026-04-01T00:00:00Z"));
    assert!(
        latest
            .reason
            .as_deref()
            .unwrap()
            .contains("startingDeadline"),
        "{:?}",
        latest.reason
    );
}

#[tokio::test]
async fn forbid_records_a_skip_while_a_run_is_active() {
    let mut h = Harness::new("2026-05-01T00:00:30Z").await;
    let schedule = "{ cron: \"*/10 * * * *\", concurrencyPolicy: Forbid }";
    h.site
        .write_job("ten.yaml", &export_job("ten", Some(schedule), ""));
    h.apply().await;
    let first = h.at("2026-05-01T00:10:00Z").await;
    assert_eq!(fired(&first), [utc("2026-05-01T00:10:00Z")]);
    // Nothing executes the run: it is still queued at the next fire.
    let second = h.at("2026-05-01T00:20:00Z").await;
    assert!(second.queued.is_empty());
    assert_eq!(second.skipped, 1);
    let runs = h.runs("ten").await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].state, RunState::Skipped);
    assert_eq!(runs[1].scheduled_for, utc("2026-05-01T00:20:00Z"));
    let reason = runs[1].reason.clone().unwrap();
    assert!(
        reason.contains(&runs[0].id.to_string()) && reason.contains("Forbid"),
        "{reason}"
    );
}

#[tokio::test]
async fn replace_cancels_the_active_run_then_queues() {
    let mut h = Harness::new("2026-05-01T00:00:30Z").await;
    let schedule = "{ cron: \"*/10 * * * *\", concurrencyPolicy: Replace }";
    h.site
        .write_job("ten.yaml", &export_job("ten", Some(schedule), ""));
    h.apply().await;
    h.at("2026-05-01T00:10:00Z").await;
    let second = h.at("2026-05-01T00:20:00Z").await;
    assert_eq!(second.replaced, 1);
    assert_eq!(fired(&second), [utc("2026-05-01T00:20:00Z")]);
    let runs = h.runs("ten").await;
    assert_eq!(runs[0].state, RunState::Cancelled);
    assert_eq!(runs[1].state, RunState::Queued);
}

#[tokio::test]
async fn allow_queues_both() {
    let mut h = Harness::new("2026-05-01T00:00:30Z").await;
    let schedule = "{ cron: \"*/10 * * * *\", concurrencyPolicy: Allow }";
    h.site
        .write_job("ten.yaml", &export_job("ten", Some(schedule), ""));
    h.apply().await;
    h.at("2026-05-01T00:10:00Z").await;
    h.at("2026-05-01T00:20:00Z").await;
    let states: Vec<RunState> = h.runs("ten").await.iter().map(|r| r.state).collect();
    assert_eq!(states, [RunState::Queued, RunState::Queued]);
}

#[tokio::test]
async fn one_shot_runs_once_per_spec_even_after_removal_and_again_when_edited() {
    let mut h = Harness::new("2026-05-01T00:00:00Z").await;
    let text = export_job("offboard", None, "");
    h.site.write_job("offboard.yaml", &text);
    let first = h.apply().await;
    assert_eq!(first.queued.len(), 1);
    assert_eq!(first.queued[0].trigger, Trigger::OneShot);
    assert!(
        h.tick().await.queued.is_empty(),
        "a second tick does not re-run"
    );

    // Removed, then restored with the same content (a fresh scheduler: as after a restart).
    h.site.remove_job("offboard.yaml");
    h.clock.set(utc("2026-05-02T00:00:00Z"));
    let removed = reconcile(&h.site, &mut h.reconciler, h.clock.now_utc()).await;
    assert_eq!(removed.jobs_removed, ["offboard"]);
    h.site.write_job("offboard.yaml", &text);
    h.scheduler = Scheduler::new(h.store.clone(), clock_arc(&h.clock));
    assert!(
        h.apply().await.queued.is_empty(),
        "re-applied content never runs again"
    );
    assert_eq!(h.runs("offboard").await.len(), 1);

    // Labels are not part of the spec: relabelling does not re-run.
    let relabelled = text.replace(
        "  name: offboard\n",
        "  name: offboard\n  labels: { a: b }\n",
    );
    h.site.write_job("offboard.yaml", &relabelled);
    assert!(h.apply().await.queued.is_empty());

    // Editing the spec is a new intent: it runs once more.
    let edited = text.replace("alice@contoso.com", "bob@contoso.com");
    h.site.write_job("offboard.yaml", &edited);
    let report = h.apply().await;
    assert_eq!(report.queued.len(), 1);
    assert!(h.tick().await.queued.is_empty());
    let runs = h.runs("offboard").await;
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[0].spec_hash, runs[1].spec_hash);
}

#[tokio::test]
async fn changing_a_schedule_never_fires_by_itself() {
    let mut h = Harness::new("2026-05-01T01:00:00Z").await;
    h.site.write_job(
        "job.yaml",
        &export_job("job", Some("{ cron: \"0 4 * * *\" }"), ""),
    );
    let applied = h.apply().await;
    assert_eq!(
        applied.earliest_next_fire,
        Some(utc("2026-05-01T04:00:00Z"))
    );
    // At exactly 02:00 the schedule changes to 02:00: the new schedule starts at the next fire.
    h.clock.set(utc("2026-05-01T02:00:00Z"));
    h.site.write_job(
        "job.yaml",
        &export_job("job", Some("{ cron: \"0 2 * * *\" }"), ""),
    );
    let changed = h.apply().await;
    assert!(changed.queued.is_empty());
    assert_eq!(changed.missed, 0);
    assert_eq!(
        changed.earliest_next_fire,
        Some(utc("2026-05-02T02:00:00Z"))
    );
    assert!(h.runs("job").await.is_empty());
    // And it does fire then.
    assert_eq!(
        fired(&h.at("2026-05-02T02:00:00Z").await),
        [utc("2026-05-02T02:00:00Z")]
    );
}

#[tokio::test]
async fn suspend_stops_scheduled_runs_and_resume_starts_from_the_next_fire() {
    let mut h = Harness::new("2026-05-01T00:00:00Z").await;
    let schedule = Some("{ cron: \"0 * * * *\" }");
    h.site.write_job(
        "hourly.yaml",
        &export_job("hourly", schedule, "  suspend: true\n"),
    );
    let applied = h.apply().await;
    assert_eq!(applied.earliest_next_fire, None);
    assert_eq!(h.store.get_job("hourly").await.unwrap().next_fire_at, None);
    assert!(h.at("2026-05-01T03:00:00Z").await.queued.is_empty());
    // Resumed at 03:30: nothing fires for the hours it was suspended; next fire 04:00.
    h.clock.set(utc("2026-05-01T03:30:00Z"));
    h.site
        .write_job("hourly.yaml", &export_job("hourly", schedule, ""));
    let resumed = h.apply().await;
    assert!(resumed.queued.is_empty());
    assert_eq!(resumed.missed, 0);
    assert_eq!(
        resumed.earliest_next_fire,
        Some(utc("2026-05-01T04:00:00Z"))
    );
    assert_eq!(
        fired(&h.at("2026-05-01T04:00:00Z").await),
        [utc("2026-05-01T04:00:00Z")]
    );
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_previous_version_scheduled() {
    let mut h = Harness::new("2026-05-01T00:30:00Z").await;
    let schedule = Some("{ cron: \"0 * * * *\" }");
    h.site
        .write_job("hourly.yaml", &export_job("hourly", schedule, ""));
    h.apply().await;
    let version = h.store.get_job("hourly").await.unwrap().active_version_id;
    // Broken edit: an unknown key. The job is invalid, the old version stays active.
    h.site.write_job(
        "hourly.yaml",
        &export_job("hourly", schedule, "  bogusKey: 1\n"),
    );
    let report = reconcile(&h.site, &mut h.reconciler, h.clock.now_utc()).await;
    assert_eq!(report.jobs_invalid, ["hourly"]);
    let job = h.store.get_job("hourly").await.unwrap();
    assert_eq!(job.state, restorectl::store::JobState::Invalid);
    assert_eq!(job.active_version_id, version);
    let fired_runs = h.at("2026-05-01T01:00:00Z").await;
    assert_eq!(fired_runs.queued.len(), 1);
    assert_eq!(Some(fired_runs.queued[0].job_version_id), version);
    // A syntax error (nothing readable) keeps it too.
    h.site.write_job("hourly.yaml", "spec: [unclosed\n");
    let report = reconcile(&h.site, &mut h.reconciler, h.clock.now_utc()).await;
    assert!(report.jobs_removed.is_empty(), "{report:?}");
    assert!(h.reconciler.table().contains_key("hourly"));
    // Removing the file stops it.
    h.site.remove_job("hourly.yaml");
    let report = reconcile(&h.site, &mut h.reconciler, h.clock.now_utc()).await;
    assert_eq!(report.jobs_removed, ["hourly"]);
    assert!(h.at("2026-05-01T02:00:00Z").await.queued.is_empty());
}

/// The reconciler keeps a mirror of the job rows instead of reading them on every pass; after
/// each change below, a fresh reconciler (which reads the store) finds nothing to write and
/// builds the same table, so the mirror and the store agree.
#[tokio::test]
async fn the_reconcilers_view_of_the_store_stays_exact_across_changes() {
    let mut h = Harness::new("2026-05-01T00:00:00Z").await;
    let two_docs = format!(
        "{}---\n{}",
        export_job("b1", Some("{ cron: \"0 3 * * *\" }"), ""),
        export_job("b2", None, "")
    );
    type Change = Box<dyn Fn(&Site)>;
    let steps: Vec<(&str, Change)> = vec![
        (
            "add three files, one with two jobs",
            Box::new(move |s: &Site| {
                s.write_job(
                    "a.yaml",
                    &export_job("a", Some("{ cron: \"0 2 * * *\" }"), ""),
                );
                s.write_job("b.yaml", &two_docs);
                s.write_job("team/c.yaml", &export_job("c", None, ""));
            }),
        ),
        (
            "edit one",
            Box::new(|s: &Site| {
                s.write_job(
                    "a.yaml",
                    &export_job("a", Some("{ cron: \"30 2 * * *\" }"), ""),
                );
            }),
        ),
        (
            "break one (the last valid version stays)",
            Box::new(|s: &Site| {
                s.write_job("team/c.yaml", "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata: { name: c }\nspec: { bogus: 1 }\n");
            }),
        ),
        (
            "make one unreadable (its jobs are protected)",
            Box::new(|s: &Site| s.write_job("b.yaml", "key: [unclosed\n")),
        ),
        (
            "fix both",
            Box::new(|s: &Site| {
                s.write_job("team/c.yaml", &export_job("c", None, ""));
                s.write_job(
                    "b.yaml",
                    &export_job("b1", Some("{ cron: \"0 3 * * *\" }"), ""),
                );
            }),
        ),
        (
            "move a job to another file and remove one",
            Box::new(|s: &Site| {
                s.remove_job("a.yaml");
                s.write_job(
                    "team/a.yaml",
                    &export_job("a", Some("{ cron: \"30 2 * * *\" }"), ""),
                );
                s.remove_job("team/c.yaml");
            }),
        ),
    ];
    for (what, change) in steps {
        change(&h.site);
        let report = reconcile(&h.site, &mut h.reconciler, h.clock.now_utc()).await;
        println!("{what}: {report:?}");
        let mut fresh = Reconciler::new(h.store.clone());
        let again = reconcile(&h.site, &mut fresh, h.clock.now_utc()).await;
        assert!(!again.changed_anything(), "{what}: {again:?}");
        let view = |t: &restorectl::daemon::reconcile::JobTable| {
            t.iter()
                .map(|(name, a)| (name.clone(), a.version_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(view(&h.reconciler.table()), view(&fresh.table()), "{what}");
    }
    let names: Vec<String> = h.reconciler.table().keys().cloned().collect();
    assert_eq!(names, ["a", "b1"]);
}
