//! Warm Python functions: one zygote per function version (sandbox/zygote.rs), started in the
//! background on the version's first request, replaced when it dies, stopped when idle, and
//! all of them within one memory budget (`[warm]` in faas.toml). A request that finds no ready
//! zygote starts cold, so nothing ever waits for one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::bytecode;
use crate::config::WarmConfig;
use crate::function::{Function, LandlockMode};
use crate::runtime;
use crate::sandbox::{self, Host, Launch, PreparedSandbox, Running, SpawnError, Zygote, ZygoteSpec};

/// How long after a zygote (or a spare) failed to start the next attempt waits.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Spares a warm function keeps while requests come (`BUSY_FOR`): with one, a request in a
/// steady stream at c=1 often came while the next was still being made and waited for it; with
/// two, one is ready (bench/results/LATEST.md: c=1 p50 2.1 ms with one, 1.8 ms with two).
const SPARES_BUSY: usize = 2;
/// Spares a warm function keeps once no request came for `BUSY_FOR`: each holds a process,
/// a uid lease and a dozen fds.
const SPARES_IDLE: usize = 1;
const BUSY_FOR: Duration = Duration::from_secs(10);
/// How long a request that finds no spare waits for one being made before it forks for itself.
/// A spare on its way is ahead of a fork begun now (the same steps, begun earlier, and the
/// handler's module imported meanwhile): at c=1 with one spare, waiting took the requests
/// served by a spare from ~60% to ~92%. Longer than a spare takes on a busy machine would only
/// add to a fork's time.
const SPARE_WAIT: Duration = Duration::from_millis(10);
/// How long a spare may take to apply its layers.
const SPARE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every warm function version's slot, for the budget, the idle check and the reports.
pub struct Pool {
    config: WarmConfig,
    slots: Mutex<Vec<Weak<Slot>>>,
}

/// One function version's zygote, or why it has none.
pub struct Slot {
    pool: Arc<Pool>,
    function: Function,
    version: u64,
    state: Mutex<State>,
    last_used: Mutex<Instant>,
    /// A sandbox the zygote made ahead for the next request (every layer on, waiting for its
    /// request's environment): a request that takes it skips the fork and the set-up.
    spares: Mutex<Vec<Running>>,
    /// Spares being made now.
    refilling: AtomicUsize,
    /// Wakes requests waiting for a spare (`next_spare`) when one is made or fails.
    spare_made: tokio::sync::Notify,
    /// Requests waiting now: no more than spares being made.
    waiting: AtomicUsize,
    spare_failed: Mutex<Option<Instant>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(spares) = self.spares.get_mut() {
            spares.drain(..).for_each(Running::finish_detached);
        }
    }
}

/// One request counted in `Slot::waiting` while it lives (a request dropped while it waits
/// counts no more).
struct Waiting<'a> {
    count: &'a AtomicUsize,
}

impl<'a> Waiting<'a> {
    /// Counted if fewer than `limit` wait already; else None, and the count is untouched (a
    /// request turned away must not turn away another meanwhile).
    fn enter(count: &'a AtomicUsize, limit: usize) -> Option<Waiting<'a>> {
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| (w < limit).then_some(w + 1)).ok()?;
        Some(Waiting { count })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

enum State {
    /// None yet, or the last one ended (idle, died, budget): the next request starts one.
    Cold,
    Starting,
    Ready(Arc<Zygote>),
    Failed {
        at: Instant,
        why: String,
    },
}

/// A zygote as `/_/functions` and `faas doctor` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ZygoteInfo {
    pub function: String,
    pub version: u64,
    /// `ready`, `starting`, `cold` or `failed`.
    pub state: &'static str,
    /// What a ready zygote shows, flattened into this object.
    #[serde(flatten)]
    pub ready: Option<ReadyInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A ready zygote: its pid, resident memory, age, forks (spares included), requests in its
/// children now, and how many spares wait.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadyInfo {
    pub pid: i32,
    pub rss_bytes: u64,
    pub age_seconds: u64,
    pub requests: u64,
    pub in_flight: usize,
    pub spare: bool,
    pub spares: usize,
    /// Modules of the function's own its requests import compiled, not from source.
    pub compiled_modules: usize,
    /// Of `rss_bytes`, what is in transparent huge pages: each 2 MiB of it is one page table
    /// entry to copy at a fork, not 512.
    pub huge_page_bytes: u64,
}

impl Pool {
    pub fn new(config: WarmConfig) -> Arc<Pool> {
        Arc::new(Pool { config, slots: Mutex::default() })
    }

    /// A slot for this function version if it is warm.
    pub fn slot(self: &Arc<Self>, function: &Function, version: u64) -> Option<Arc<Slot>> {
        function.warm.as_ref()?;
        let slot = Arc::new(Slot {
            pool: self.clone(),
            function: function.clone(),
            version,
            state: Mutex::new(State::Cold),
            last_used: Mutex::new(Instant::now()),
            spares: Mutex::new(Vec::new()),
            refilling: AtomicUsize::new(0),
            spare_made: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
            spare_failed: Mutex::new(None),
        });
        let mut slots = self.slots.lock().expect("never poisoned");
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        Some(slot)
    }

    fn live(&self) -> Vec<Arc<Slot>> {
        self.slots.lock().expect("never poisoned").iter().filter_map(Weak::upgrade).collect()
    }

    /// Every warm function version's zygote.
    pub fn report(&self) -> Vec<ZygoteInfo> {
        let mut out: Vec<ZygoteInfo> = self.live().iter().map(|s| s.info()).collect();
        out.sort_by(|a, b| (&a.function, a.version).cmp(&(&b.function, b.version)));
        out
    }

    /// Resident memory of every ready zygote together.
    pub fn resident(&self) -> u64 {
        self.live().iter().filter_map(|s| s.ready()).map(|z| z.rss()).sum()
    }

    /// Stops zygotes idle past `idle_exit` and forgets dead ones; runs for the daemon's life.
    pub async fn watch(self: Arc<Self>) {
        let idle = self.config.idle_exit.0;
        let tick = if idle.is_zero() {
            Duration::from_secs(1)
        } else {
            (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
        };
        loop {
            tokio::time::sleep(tick).await;
            for slot in self.live() {
                let mut state = slot.state.lock().expect("never poisoned");
                let State::Ready(z) = &*state else { continue };
                let unused_for = slot.last_used.lock().expect("never poisoned").elapsed();
                if !z.alive() {
                    tracing::warn!(function = %slot.function.name, "the zygote (pid {}) died; the next request starts another", z.pid);
                    slot.go_cold(&mut state);
                } else if !idle.is_zero() && slot.in_flight(z) == 0 && unused_for >= idle {
                    tracing::info!(function = %slot.function.name, "the zygote (pid {}) was idle for {idle:?}; stopping it", z.pid);
                    slot.go_cold(&mut state);
                } else if unused_for >= BUSY_FOR {
                    let mut spares = slot.spares.lock().expect("never poisoned");
                    let extra = spares.len().saturating_sub(SPARES_IDLE);
                    spares.drain(..extra).for_each(Running::finish_detached);
                }
            }
        }
    }

    /// Makes room for a new zygote: while the ready ones hold the budget, the least recently
    /// used one with no request in flight stops. False if that is not enough.
    fn make_room(&self, asking: &Slot) -> bool {
        loop {
            let slots = self.live();
            // A zygote still starting holds little yet, but will: it counts at its limit, or
            // zygotes started at once (a burst of first requests) would all fit, and all stay.
            let starting = slots.iter().filter(|s| !std::ptr::eq(s.as_ref(), asking) && s.starting()).count() as u64;
            let used: u64 = slots.iter().filter_map(|s| s.ready()).map(|z| z.rss()).sum::<u64>()
                + starting * self.config.zygote_memory.0;
            if used < self.config.memory.0 {
                return true;
            }
            let idle = slots
                .iter()
                .filter(|s| !std::ptr::eq(s.as_ref(), asking))
                .filter(|s| s.ready().is_some_and(|z| s.in_flight(&z) <= 1))
                .min_by_key(|s| *s.last_used.lock().expect("never poisoned"));
            let Some(victim) = idle else { return false };
            tracing::info!(function = %victim.function.name, "stopping its idle zygote: the warm memory budget is full");
            victim.go_cold(&mut victim.state.lock().expect("never poisoned"));
        }
    }
}

impl Slot {
    fn starting(&self) -> bool {
        matches!(&*self.state.lock().expect("never poisoned"), State::Starting)
    }

    /// Requests running in the zygote's children: every reference but the slot's and the
    /// spare's.
    fn in_flight(&self, zygote: &Arc<Zygote>) -> usize {
        let spares = self.spares.lock().expect("never poisoned").len() + self.refilling.load(Ordering::Acquire);
        Arc::strong_count(zygote).saturating_sub(1 + spares)
    }

    /// No zygote (and so no spare) any more; the zygote ends with its last request.
    fn go_cold(&self, state: &mut State) {
        *state = State::Cold;
        self.spares.lock().expect("never poisoned").drain(..).for_each(Running::finish_detached);
    }

    /// The spare, if one waits and still runs: the caller sends it its request (`go`) and
    /// then calls `refill`.
    pub fn take_spare(&self) -> Option<Running> {
        let mut spares = self.spares.lock().expect("never poisoned");
        while let Some(spare) = spares.pop() {
            if spare.alive() {
                return Some(spare);
            }
            spare.finish_detached();
        }
        None
    }

    /// The spare that waits, else the one being made if no other request waits for it (up to
    /// `SPARE_WAIT`), else None: the caller forks. As `take_spare`, the caller sends it its
    /// request and then calls `refill`.
    pub async fn next_spare(&self) -> Option<Running> {
        // Every warm request asks here first (invoke's start_once), spare or fork: its use, for
        // idle_exit and BUSY_FOR.
        *self.last_used.lock().expect("never poisoned") = Instant::now();
        // Before the check: a spare made between the two still wakes us. The count of those on
        // their way, before it too: one finished between the two is then taken, not missed.
        let made = self.spare_made.notified();
        let on_the_way = self.refilling.load(Ordering::Acquire);
        if let Some(spare) = self.take_spare() {
            return Some(spare);
        }
        let waiting = Waiting::enter(&self.waiting, on_the_way)?;
        let _ = tokio::time::timeout(SPARE_WAIT, made).await;
        drop(waiting);
        self.take_spare()
    }

    /// Has the zygote make spares, in the background, up to `SPARES_BUSY` waiting or being made,
    /// unless the last attempt failed just now.
    /// An egress function has none: a spare would hold its proxy's listening socket idle.
    pub fn refill(self: &Arc<Self>, host: &Arc<Host>, prepared: &Arc<PreparedSandbox>) {
        if self.function.network == crate::function::Network::Egress {
            return;
        }
        if self.spare_failed.lock().expect("never poisoned").is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return;
        }
        // Locks are taken state first, then spares, everywhere.
        let Some(zygote) = self.ready() else { return };
        // The count of spares and of those being made only changes under the spares' lock.
        let spares = self.spares.lock().expect("never poisoned");
        while spares.len() + self.refilling.load(Ordering::Acquire) < SPARES_BUSY {
            self.refilling.fetch_add(1, Ordering::AcqRel);
            self.make_spare(zygote.clone(), host, prepared);
        }
    }

    /// One spare, made in the background (`refilling` counts it until it is done).
    fn make_spare(self: &Arc<Self>, zygote: Arc<Zygote>, host: &Arc<Host>, prepared: &Arc<PreparedSandbox>) {
        let (slot, host, prepared) = (self.clone(), host.clone(), prepared.clone());
        tokio::spawn(async move {
            let f = &slot.function;
            let id = uuid::Uuid::new_v4().to_string();
            let launch = Launch {
                id: &id,
                limits: &f.limits,
                envp: crate::invoke::function_environment(f),
                landlock_required: f.landlock == LandlockMode::Required,
                spare: true,
                argv: None,
            };
            let started = sandbox::start_warm(&host, &prepared, &zygote, launch).await;
            // From here the spare holds the zygote itself: a second reference while it gets
            // ready would count as a request in flight (`in_flight`), and a zygote making its
            // spares would look busy to `make_room`.
            let zygote = Arc::downgrade(&zygote);
            let made = match started {
                Ok(mut spare) => match tokio::time::timeout(SPARE_TIMEOUT, spare.wait_exec()).await {
                    Ok(Ok(())) => Ok(spare),
                    Ok(Err(e)) => {
                        spare.finish_detached();
                        Err(e)
                    }
                    Err(_) => {
                        spare.finish_detached();
                        Err(SpawnError::Zygote(format!("a spare was not ready within {SPARE_TIMEOUT:?}")))
                    }
                },
                Err(e) => Err(e),
            };
            // Kept only if its zygote is still the one in use (a zygote replaced meanwhile
            // takes its children along, so a spare of it that slips in here is found dead).
            let current = slot.ready().is_some_and(|z| std::ptr::eq(Arc::as_ptr(&z), zygote.as_ptr()));
            let mut spares = slot.spares.lock().expect("never poisoned");
            slot.refilling.fetch_sub(1, Ordering::AcqRel);
            // Whatever came of it, a request waiting for it goes on: with it, or to fork.
            slot.spare_made.notify_waiters();
            match made {
                Ok(spare) if current => spares.push(spare),
                Ok(spare) => spare.finish_detached(),
                Err(e) => {
                    tracing::warn!(function = %f.name, "the zygote could not make a spare: {e}");
                    *slot.spare_failed.lock().expect("never poisoned") = Some(Instant::now());
                    if let (SpawnError::Zygote(_), Some(zygote)) = (&e, zygote.upgrade()) {
                        drop(spares);
                        slot.lost(&zygote);
                    }
                }
            }
        });
    }

    fn ready(&self) -> Option<Arc<Zygote>> {
        match &*self.state.lock().expect("never poisoned") {
            State::Ready(z) => Some(z.clone()),
            _ => None,
        }
    }

    /// The zygote to fork this request from, or None: then the request starts cold, and a
    /// zygote is started in the background unless one is starting or failed just now.
    pub fn zygote(self: &Arc<Self>, host: &Arc<Host>, prepared: &Arc<PreparedSandbox>) -> Option<Arc<Zygote>> {
        let mut state = self.state.lock().expect("never poisoned");
        match &*state {
            State::Ready(z) if z.alive() => return Some(z.clone()),
            State::Ready(z) => {
                tracing::warn!(function = %self.function.name, "the zygote (pid {}) died; starting another", z.pid);
                self.spares.lock().expect("never poisoned").drain(..).for_each(Running::finish_detached);
            }
            State::Starting => return None,
            State::Failed { at, .. } if at.elapsed() < RETRY_AFTER => return None,
            State::Failed { .. } | State::Cold => {}
        }
        *state = State::Starting;
        drop(state);
        if !self.pool.make_room(self) {
            let why = format!(
                "the warm memory budget ({} bytes, [warm] memory) is held by zygotes with requests in flight",
                self.pool.config.memory.0
            );
            tracing::warn!(function = %self.function.name, "serving cold: {why}");
            *self.state.lock().expect("never poisoned") = State::Failed { at: Instant::now(), why };
            return None;
        }
        let (slot, host, prepared) = (self.clone(), host.clone(), prepared.clone());
        tokio::spawn(async move {
            let f = &slot.function;
            let warm = f.warm.as_ref().expect("a slot is made for warm functions only");
            let (exe, argv) = runtime::zygote_command(&host.config.runtimes);
            let started = Instant::now();
            // Before the zygote, so that its first spare already imports compiled code.
            let bytecode = match bytecode::compile(&host, &prepared, f).await {
                Ok(c) => {
                    tracing::info!(
                        function = %f.name,
                        "compiled its code for the zygote: {} modules, {} bytes, in {} ms",
                        c.modules,
                        c.bytes,
                        c.took.as_millis()
                    );
                    Some((c.fd, c.modules))
                }
                Err(e) => {
                    tracing::warn!(function = %f.name, "the zygote starts without compiled code, so each request compiles its modules: {e}");
                    None
                }
            };
            let spec = ZygoteSpec {
                name: &f.name,
                version: slot.version,
                exe,
                argv,
                handler: &f.handler,
                preload: &warm.preload,
                preload_handler: warm.preload_handler,
                memory: slot.pool.config.zygote_memory.0,
                limits: &f.limits,
                bytecode,
            };
            let next = match Zygote::start(&host, &prepared, spec).await {
                Ok(z) => {
                    let huge = match (&z.ready_huge_pages, &z.ready_no_huge_text) {
                        (Ok(bytes), None) => format!("{} KiB in huge pages, its code among them", bytes / 1024),
                        (Ok(bytes), Some(why)) => {
                            format!("{} KiB in huge pages; its code is not: {why}", bytes / 1024)
                        }
                        (Err(why), _) => format!("no huge pages: {why}"),
                    };
                    tracing::info!(
                        function = %f.name,
                        "zygote ready: pid {}, {} KiB resident ({huge}), started in {} ms",
                        z.pid,
                        z.ready_rss / 1024,
                        started.elapsed().as_millis()
                    );
                    State::Ready(Arc::new(z))
                }
                Err(e) => {
                    tracing::error!(function = %f.name, "the zygote did not start, serving cold: {e}");
                    State::Failed { at: Instant::now(), why: e.to_string() }
                }
            };
            let ready = matches!(next, State::Ready(_));
            *slot.state.lock().expect("never poisoned") = next;
            if ready {
                slot.refill(&host, &prepared);
            }
        });
        None
    }

    /// The zygote could not fork (stuck or gone): forget it, so the next request starts another.
    pub fn lost(&self, zygote: &Arc<Zygote>) {
        let mut state = self.state.lock().expect("never poisoned");
        if matches!(&*state, State::Ready(z) if Arc::ptr_eq(z, zygote)) {
            zygote.kill();
            self.go_cold(&mut state);
        }
    }

    /// Its zygote, for `/_/functions`.
    pub fn info(&self) -> ZygoteInfo {
        let mut info = ZygoteInfo {
            function: self.function.name.clone(),
            version: self.version,
            state: "cold",
            ready: None,
            error: None,
        };
        match &*self.state.lock().expect("never poisoned") {
            State::Cold => {}
            State::Starting => info.state = "starting",
            State::Failed { why, .. } => {
                info.state = "failed";
                info.error = Some(why.clone());
            }
            State::Ready(z) => {
                info.state = "ready";
                let spares = self.spares.lock().expect("never poisoned").len();
                info.ready = Some(ReadyInfo {
                    pid: z.pid,
                    rss_bytes: z.rss(),
                    age_seconds: z.age().as_secs(),
                    requests: z.served(),
                    in_flight: self.in_flight(z),
                    spare: spares > 0,
                    spares,
                    compiled_modules: z.compiled_modules,
                    huge_page_bytes: z.huge_pages(),
                });
            }
        }
        info
    }
}

/// A zygote found in `/proc` (by `FAAS_ZYGOTE` in its environment), for `faas doctor`, which
/// runs apart from the daemon.
#[derive(Debug)]
pub struct FoundZygote {
    pub pid: u32,
    /// `NAME VERSION`.
    pub function: String,
    pub rss_bytes: u64,
    pub age: Duration,
}

/// Every zygote running on this host, of any daemon.
pub fn running_zygotes() -> Vec<FoundZygote> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let prefix = format!("{}=", crate::sandbox::ZYGOTE_ENV);
    let mut found: Vec<FoundZygote> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let function = env
                .split(|&b| b == 0)
                .find_map(|e| e.strip_prefix(prefix.as_bytes()))
                .map(|v| String::from_utf8_lossy(v).into_owned())?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let rss_kb = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
                .unwrap_or(0);
            // Field 22 of stat, after the parenthesised command: start time in clock ticks.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ticks: f64 = stat.rsplit_once(") ")?.1.split_whitespace().nth(19)?.parse().ok()?;
            let age = (uptime - ticks / 100.0).max(0.0);
            Some(FoundZygote { pid, function, rss_bytes: rss_kb * 1024, age: Duration::from_secs_f64(age) })
        })
        .collect();
    found.sort_by_key(|z| z.pid);
    found
}
