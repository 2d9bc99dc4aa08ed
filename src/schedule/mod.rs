//! Scheduled runs: the `[[schedule]]` entries of function files, fired by a timer loop inside
//! `faas serve` through the same path as a request (global and per-function slots, the
//! sandbox, the REPORT, now with `trigger=schedule`).
//!
//! Why a loop of our own and not systemd timers, also under systemd: the function file is the
//! one source of truth, and the registry already follows it on every lookup; the loop looks
//! every function file up once a second (a stat each) and again just before it fires, so a
//! changed calendar takes effect within a second and a removed (or broken) file never fires
//! again. Transient timers (`systemd-run --on-calendar`) would be state outside the daemon to
//! keep in step with the directory, to clean up after a crash, and would need a way back in
//! (the admin socket) for each run. What the loop gives up: runs missed while the daemon is
//! down are not caught up (no `Persistent=`), and a daemon with schedules does not exit idle
//! (nothing would start it again in time).
//!
//! Each entry's next elapse is computed by `calendar.rs` (systemd.time(7) syntax, the system
//! time zone); elapses missed while the loop was busy or the machine suspended fire once.

mod calendar;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use calendar::Calendar;
use jiff::Timestamp;
use serde::Deserialize;
use toml::Spanned;

use crate::http::App;
use crate::invoke::{self, Call, Permits, Report, ReportSink, Trigger};
use crate::registry::{Loaded, Lookup};

/// How often the loop looks the function files up when no run is due sooner.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A `[[schedule]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    calendar: Spanned<String>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    body: Option<String>,
}

/// A checked `[[schedule]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub calendar: Calendar,
    /// Default GET.
    pub method: http::Method,
    /// What follows `/NAME`, as PATH_INFO.
    pub path_info: String,
    pub query: String,
    /// The request body on stdin.
    pub body: String,
}

/// An error in one entry: where, what, and how to fix it.
pub type DefError = (Range<usize>, String, &'static str);

impl Schedule {
    /// Checks one entry of a function whose allowed methods are `methods` (None: all).
    pub fn from_def(def: ScheduleDef, methods: Option<&[http::Method]>) -> Result<Schedule, DefError> {
        let calendar = Calendar::parse(def.calendar.get_ref()).map_err(|e| {
            (def.calendar.span(), e.to_string(), "systemd.time(7) calendar syntax, e.g. \"hourly\", \"Mon..Fri 09:00\", \"*:0/15\"; try it with systemd-analyze calendar")
        })?;
        let method_given = def.method.is_some();
        let method = match def.method {
            None => http::Method::GET,
            Some(m) => {
                let parsed = http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
                    .map_err(|_| (m.span(), format!("{:?} is not an HTTP method", m.get_ref()), ""))?;
                if methods.is_some_and(|allowed| !allowed.contains(&parsed)) {
                    return Err((
                        m.span(),
                        format!("the schedule's method {parsed} is not in the function's methods"),
                        "add it to methods, or leave method out (GET)",
                    ));
                }
                parsed
            }
        };
        if !method_given && methods.is_some_and(|allowed| !allowed.contains(&http::Method::GET)) {
            return Err((
                def.calendar.span(),
                "the schedule runs GET, which the function's methods do not allow".into(),
                "set method = \"POST\" (or another allowed method) in the [[schedule]]",
            ));
        }
        let (path_info, query) = match def.path {
            None => (String::new(), String::new()),
            Some(p) => {
                let text = p.get_ref();
                if !(text.is_empty() || text.starts_with('/')) || text.chars().any(char::is_control) {
                    return Err((
                        p.span(),
                        format!("path {text:?} must start with / and hold no control characters"),
                        "it is what follows /NAME in a URL, e.g. \"/report?period=day\"",
                    ));
                }
                match text.split_once('?') {
                    Some((path, query)) => (path.to_owned(), query.to_owned()),
                    None => (text.clone(), String::new()),
                }
            }
        };
        Ok(Schedule { calendar, method, path_info, query, body: def.body.unwrap_or_default() })
    }

    /// The path with its query, as written.
    fn path(&self) -> String {
        if self.query.is_empty() {
            self.path_info.clone()
        } else {
            format!("{}?{}", self.path_info, self.query)
        }
    }
}

/// How a scheduled run went.
#[derive(Debug, Clone)]
struct LastRun {
    at: Timestamp,
    /// None when it was skipped (no slot).
    id: Option<String>,
    /// The outcome slug, or `skipped`.
    outcome: String,
    status: Option<u16>,
}

#[derive(Debug)]
struct Entry {
    schedule: Schedule,
    next: Option<Timestamp>,
    last: Option<LastRun>,
}

/// The schedules of one function version.
#[derive(Debug)]
struct Planned {
    version: u64,
    entries: Vec<Entry>,
}

/// Every function's schedules, with next and last runs: the loop's state, and what
/// `/_/functions` shows.
#[derive(Debug, Default)]
pub struct Table {
    planned: Mutex<BTreeMap<String, Planned>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Planned>> {
        // Nothing panics while holding it: map updates and calendar arithmetic.
        self.planned.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many schedules are live.
    pub fn count(&self) -> usize {
        self.lock().values().map(|p| p.entries.len()).sum()
    }

    /// The schedules of `name` with their next and last runs, for `/_/functions`.
    pub fn describe(&self, name: &str) -> serde_json::Value {
        let planned = self.lock();
        let list: Vec<serde_json::Value> = planned
            .get(name)
            .map(|p| {
                p.entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "calendar": e.schedule.calendar.to_string(),
                            "method": e.schedule.method.as_str(),
                            "path": e.schedule.path(),
                            "next": e.next.map(|t| t.to_string()),
                            "last": e.last.as_ref().map(|l| serde_json::json!({
                                "at": l.at.to_string(),
                                "invocation_id": l.id,
                                "outcome": l.outcome,
                                "status": l.status,
                            })),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::Value::Array(list)
    }

    /// Brings the table in line with the function files: new and changed files plan their
    /// entries (an entry whose calendar is unchanged keeps its next and last run), removed
    /// and broken ones drop theirs.
    fn sync(&self, app: &App, now: Timestamp) {
        let names = app.registry.names();
        let mut current: BTreeMap<String, Arc<Loaded>> = BTreeMap::new();
        for name in &names {
            match app.registry.lookup(name) {
                Lookup::Ready(l) => {
                    current.insert(name.clone(), l);
                }
                Lookup::Invalid(_) => {
                    if self.lock().remove(name).is_some() {
                        tracing::warn!(function = %name, "the schedules of {name} are paused: its function file is invalid (the log says why)");
                    }
                }
                Lookup::NotFound => {}
            }
        }
        let mut planned = self.lock();
        let gone: Vec<String> = planned.keys().filter(|n| !current.contains_key(*n)).cloned().collect();
        for name in gone {
            planned.remove(&name);
            tracing::info!(function = %name, "the schedules of {name} ended: its function file is gone");
        }
        for (name, loaded) in current {
            let schedules = &loaded.function.schedules;
            if schedules.is_empty() {
                if planned.remove(&name).is_some() {
                    tracing::info!(function = %name, "the schedules of {name} ended: its function file has none now");
                }
                continue;
            }
            if planned.get(&name).is_some_and(|p| p.version == loaded.version) {
                continue;
            }
            let mut old = planned.remove(&name).map(|p| p.entries).unwrap_or_default();
            let mut entries = Vec::with_capacity(schedules.len());
            for (i, s) in schedules.iter().enumerate() {
                let kept = old.get_mut(i).filter(|e| e.schedule.calendar == s.calendar);
                let (next, last) = match kept {
                    Some(e) => (e.next, e.last.take()),
                    None => (s.calendar.next_after(now), None),
                };
                let when = next.map_or("never (no elapse before 2200)".to_owned(), |t| t.to_string());
                tracing::info!(function = %name, "schedule {} of {name} ({} /{name}{}): next run {when}", s.calendar, s.method, s.path());
                entries.push(Entry { schedule: s.clone(), next, last });
            }
            planned.insert(name, Planned { version: loaded.version, entries });
        }
    }

    /// The entries due at `now`, each moved on to its next elapse: (name, version, index).
    fn take_due(&self, now: Timestamp) -> Vec<(String, u64, usize, Schedule)> {
        let mut due = Vec::new();
        for (name, p) in self.lock().iter_mut() {
            for (i, e) in p.entries.iter_mut().enumerate() {
                if e.next.is_some_and(|t| t <= now) {
                    e.next = e.schedule.calendar.next_after(now);
                    due.push((name.clone(), p.version, i, e.schedule.clone()));
                }
            }
        }
        due
    }

    /// The earliest next run of any entry.
    fn earliest(&self) -> Option<Timestamp> {
        self.lock().values().flat_map(|p| p.entries.iter().filter_map(|e| e.next)).min()
    }

    /// Records how the run of `name`'s entry `index` went, if the entry is still that one.
    fn record(&self, name: &str, index: usize, calendar: &Calendar, run: LastRun) {
        if let Some(e) = self.lock().get_mut(name).and_then(|p| p.entries.get_mut(index)) {
            if e.schedule.calendar == *calendar {
                e.last = Some(run);
            }
        }
    }
}

/// Fires the schedules until `stop`; at most one tick late.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut logged_idle = false;
    loop {
        let now = Timestamp::now();
        app.schedules.sync(&app, now);
        for (name, version, index, schedule) in app.schedules.take_due(now) {
            // Looked up once more: a file removed or changed since the sync does not fire.
            match app.registry.lookup(&name) {
                Lookup::Ready(l) if l.version == version => fire(&app, l, index, &schedule, now),
                _ => {
                    tracing::info!(function = %name, "schedule {} of {name} not run: its function file changed or went away", schedule.calendar)
                }
            }
        }
        if !logged_idle && !app.host.config.idle_exit.0.is_zero() && app.schedules.count() > 0 {
            tracing::info!(
                "idle_exit is held off while functions have schedules: nothing would start the daemon for them"
            );
            logged_idle = true;
        }
        let wait = app
            .schedules
            .earliest()
            .and_then(|t| Timestamp::now().duration_until(t).try_into().ok())
            .map_or(SYNC_EVERY, |d: Duration| d.min(SYNC_EVERY));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs `loaded` for entry `index`, through the same slots and sandbox as a request.
fn fire(app: &Arc<App>, loaded: Arc<Loaded>, index: usize, schedule: &Schedule, at: Timestamp) {
    let name = loaded.function.name.clone();
    let skipped = |why: String| {
        tracing::warn!(function = %name, "schedule {} of {name} skipped: {why}", schedule.calendar);
        app.schedules.record(
            &name,
            index,
            &schedule.calendar,
            LastRun { at, id: None, outcome: "skipped".into(), status: None },
        );
    };
    let Ok(global) = app.global.clone().try_acquire_owned() else {
        return skipped("every sandbox slot is in use".into());
    };
    let Ok(local) = loaded.limiter.clone().try_acquire_owned() else {
        return skipped(format!("{name} runs at most {} requests at once", loaded.function.limits.concurrency));
    };
    let id = uuid::Uuid::new_v4().to_string();
    tracing::info!(function = %name, invocation_id = %id, "schedule {} of {name}: running it", schedule.calendar);
    let call = Call {
        id,
        method: schedule.method.clone(),
        path_info: schedule.path_info.clone(),
        query: schedule.query.clone(),
        headers: http::HeaderMap::new(),
        // The daemon itself asks, as `faas invoke` does.
        remote_addr: "127.0.0.1".into(),
        trigger: Trigger::Schedule,
        server_name: "localhost".into(),
        server_port: "0".into(),
        body: bytes::Bytes::from(schedule.body.clone()),
        received: Instant::now(),
        permits: Permits { server: Some(global), function: Some(local) },
        // The daemon itself calls: no key to check.
        caller: None,
        own_origin: false,
    };
    let sink: ReportSink = {
        let app = app.clone();
        let calendar = schedule.calendar.clone();
        Arc::new(move |r: &Report| {
            (app.sink)(r);
            let run =
                LastRun { at, id: Some(r.id.clone()), outcome: r.outcome.slug().to_owned(), status: Some(r.status) };
            app.schedules.record(&r.function, index, &calendar, run);
        })
    };
    app.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let host = app.host.clone();
    tokio::spawn(async move {
        // The output goes nowhere; the REPORT and the function's log lines say how it went.
        if let Ok(mut started) = invoke::invoke(host, loaded, call, Some(sink)).await {
            while started.body.next_chunk().await.is_some() {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> ScheduleDef {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn entries_are_checked() {
        let s = Schedule::from_def(def("calendar = \"hourly\"\npath = \"/r?x=1\"\nbody = \"hi\""), None).unwrap();
        assert_eq!(
            (s.method.as_str(), s.path_info.as_str(), s.query.as_str(), s.body.as_str()),
            ("GET", "/r", "x=1", "hi")
        );
        let post = [http::Method::POST];
        let e = Schedule::from_def(def("calendar = \"hourly\""), Some(&post)).unwrap_err();
        assert_eq!(e.1, "the schedule runs GET, which the function's methods do not allow");
        let e = Schedule::from_def(def("calendar = \"hourly\"\nmethod = \"put\""), Some(&post)).unwrap_err();
        assert_eq!(e.1, "the schedule's method PUT is not in the function's methods");
        let e = Schedule::from_def(def("calendar = \"hourly\"\npath = \"r\""), None).unwrap_err();
        assert!(e.1.starts_with("path \"r\" must start with /"), "{}", e.1);
        let e = Schedule::from_def(def("calendar = \"*:*/5\""), None).unwrap_err();
        assert_eq!(e.0, 11..18, "the calendar's span");
        assert!(toml::from_str::<ScheduleDef>("calendar = \"hourly\"\nevery = 1").is_err(), "unknown keys");
    }
}
