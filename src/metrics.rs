//! Prometheus metrics for `/_/metrics` on the admin listener: invocations by function and
//! outcome, duration, set-up time and peak memory histograms, in-flight, spawn failures.
//! Also the daemon's live counters (`Stats`), which the service updates and the sd-notify
//! STATUS line, the idle exit and the in-flight gauge read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::invoke::{Outcome, Report};

/// Counters shared by the service, sd-notify STATUS, the idle exit and the in-flight gauge.
#[derive(Default)]
pub struct Stats {
    /// Invocations running now.
    pub in_flight: AtomicUsize,
    /// Invocations finished since start.
    pub served: AtomicU64,
    /// Milliseconds after the service started of the last request.
    pub last_activity_ms: AtomicU64,
    /// Connections and requests refused by a cap of `http::admission` since start (logged as
    /// a count, not one line each: a flood must not flood the journal too).
    pub refused: AtomicU64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    function: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartLabels {
    function: String,
    /// `warm` (forked from the zygote) or `cold` (exec'd).
    start: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    function: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    function: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    function: String,
    direction: String,
}

type HistogramFamily = Family<FunctionLabels, Histogram, fn() -> Histogram>;

/// The metric families, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    invocations: Family<OutcomeLabels, Counter>,
    duration: HistogramFamily,
    setup: HistogramFamily,
    memory: HistogramFamily,
    spawn_failures: Family<FunctionLabels, Counter>,
    starts: Family<StartLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    egress_connections: Family<VerdictLabels, Counter>,
    egress_bytes: Family<DirectionLabels, Counter>,
    in_flight: Gauge,
    /// Where the in-flight gauge is read from when the metrics are encoded.
    stats: Arc<Stats>,
}

impl Metrics {
    /// Registers every family; the in-flight gauge follows `stats`.
    pub fn new(stats: Arc<Stats>) -> Metrics {
        let mut registry = Registry::with_prefix("faas");
        let invocations = Family::<OutcomeLabels, Counter>::default();
        let duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        let setup: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 14)));
        let memory: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(1_048_576.0, 2.0, 12)));
        let spawn_failures = Family::<FunctionLabels, Counter>::default();
        let starts = Family::<StartLabels, Counter>::default();
        let in_flight = Gauge::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let egress_connections = Family::<VerdictLabels, Counter>::default();
        let egress_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused 401 by a function's [auth] (missing, invalid or stale credentials), before any sandbox",
            auth_failures.clone(),
        );
        registry.register(
            "egress_connections",
            "Connections through the egress proxy by verdict (ok, refused, failed)",
            egress_connections.clone(),
        );
        registry.register(
            "egress_bytes",
            "Bytes relayed by the egress proxy (up: sandbox to target, down: back)",
            egress_bytes.clone(),
        );
        registry.register("invocations", "Invocations by function and outcome", invocations.clone());
        registry.register(
            "invocation_duration_seconds",
            "Whole invocation time, request to sandbox gone",
            duration.clone(),
        );
        registry.register("sandbox_setup_seconds", "Request received to wrapper exec", setup.clone());
        registry.register(
            "memory_peak_bytes",
            "Peak memory of a sandbox (memory.peak; only with cgroups)",
            memory.clone(),
        );
        registry.register("spawn_failures", "Sandboxes that could not be set up", spawn_failures.clone());
        registry.register("in_flight", "Invocations running now", in_flight.clone());
        registry.register(
            "sandbox_starts",
            "Sandboxes started, by whether the process was forked from a warm zygote or exec'd cold",
            starts.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            invocations,
            duration,
            setup,
            memory,
            spawn_failures,
            starts,
            auth_failures,
            egress_connections,
            egress_bytes,
            in_flight,
            stats,
        }
    }

    /// Records one finished invocation.
    pub fn observe(&self, r: &Report) {
        let function = FunctionLabels { function: r.function.clone() };
        self.invocations
            .get_or_create(&OutcomeLabels { function: r.function.clone(), outcome: r.outcome.slug().to_owned() })
            .inc();
        self.duration.get_or_create(&function).observe(r.duration.as_secs_f64());
        if r.timing.setup > std::time::Duration::ZERO {
            let start = StartLabels { function: r.function.clone(), start: r.timing.start.as_str().to_owned() };
            self.starts.get_or_create(&start).inc();
            self.setup.get_or_create(&function).observe(r.timing.setup.as_secs_f64());
        }
        if let Some(peak) = r.usage.as_ref().and_then(|u| u.memory_peak) {
            self.memory.get_or_create(&function).observe(peak as f64);
        }
        if matches!(r.outcome, Outcome::SetupFailed(_)) {
            self.spawn_failures.get_or_create(&function).inc();
        }
        for c in &r.egress {
            let verdict = VerdictLabels { function: r.function.clone(), verdict: c.verdict.label().to_owned() };
            self.egress_connections.get_or_create(&verdict).inc();
            for (direction, n) in [("up", c.up), ("down", c.down)] {
                let labels = DirectionLabels { function: r.function.clone(), direction: direction.to_owned() };
                self.egress_bytes.get_or_create(&labels).inc_by(n);
            }
        }
    }

    /// Records one request refused by a function's `[auth]` (`reason`: missing, invalid,
    /// stale): no sandbox ran, so no report comes.
    pub fn auth_failed(&self, function: &str, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { function: function.to_owned(), reason: reason.to_owned() })
            .inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        self.in_flight.set(self.stats.in_flight.load(Ordering::Relaxed) as i64);
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics lock is never poisoned");
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}
