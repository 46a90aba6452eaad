//! A small, lock-free metrics registry and the Prometheus text format.
//!
//! Every crate keeps its metrics in `static` [`Family`]s (a metric name, its label
//! names and one child per label combination): this crate the events appended,
//! `aula-processor` the task attempts and e-mails, `aula-api` the GraphQL operations.
//! `GET /metrics` (in `aula-api`) renders them all with [`Text`], next to gauges it
//! reads from the database at scrape time.
//!
//! **Invariant:** recording is atomics only, never a lock: a child is found by a scan
//! over write-once slots (`OnceLock`), counters and histogram buckets are `AtomicU64`s,
//! a histogram's sum is an `f64` updated by compare-and-swap. Label values must come
//! from a bounded set (event types, task kinds, schema fields), never from user input:
//! a family holds at most [`CAPACITY`] children and drops what does not fit.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// How many label combinations one family holds.
pub const CAPACITY: usize = 256;

/// Buckets for durations in seconds, from 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const MAX_BUCKETS: usize = 15;

/// What a family holds per label combination.
pub trait Metric: Send + Sync + 'static {
    type Config: Copy + Send + Sync + 'static;
    const TYPE: &'static str;
    fn with_config(config: Self::Config) -> Self;
    /// Writes this child's samples; `labels` are the child's labels, already rendered.
    fn encode(&self, out: &mut Text, name: &str, labels: &[(&str, &str)]);
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metric for Counter {
    type Config = ();
    const TYPE: &'static str = "counter";

    fn with_config(_: ()) -> Self {
        Counter::default()
    }

    fn encode(&self, out: &mut Text, name: &str, labels: &[(&str, &str)]) {
        out.sample(name, "", labels, None, self.get() as f64);
    }
}

/// Observations counted into fixed buckets (upper bounds, ascending), with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative: `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`;
    /// the one after the last bound is `+Inf`.
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    count: AtomicU64,
    sum_bits: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() <= MAX_BUCKETS, "at most {MAX_BUCKETS} buckets");
        Histogram {
            bounds,
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let index = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // The closure never returns None, so fetch_update cannot fail.
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum_bits.load(Ordering::Relaxed))
    }
}

impl Metric for Histogram {
    type Config = &'static [f64];
    const TYPE: &'static str = "histogram";

    fn with_config(bounds: &'static [f64]) -> Self {
        Histogram::new(bounds)
    }

    fn encode(&self, out: &mut Text, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        let mut bound_text = String::new();
        for (index, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[index].load(Ordering::Relaxed);
            bound_text.clear();
            let _ = write!(bound_text, "{bound}");
            out.sample(
                name,
                "_bucket",
                labels,
                Some(("le", &bound_text)),
                cumulative as f64,
            );
        }
        cumulative += self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        out.sample(
            name,
            "_bucket",
            labels,
            Some(("le", "+Inf")),
            cumulative as f64,
        );
        out.sample(name, "_sum", labels, None, self.sum());
        // The buckets were read one by one: report their total as the count, so the
        // +Inf bucket and the count always agree within one scrape.
        out.sample(name, "_count", labels, None, cumulative as f64);
    }
}

type Child<const N: usize, M> = OnceLock<([Box<str>; N], M)>;

/// One metric name with `N` label names and a child per label combination.
pub struct Family<const N: usize, M: Metric> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    config: M::Config,
    children: [Child<N, M>; CAPACITY],
    overflow: OnceLock<M>,
    overflowed: AtomicBool,
}

impl<const N: usize, M: Metric> Family<N, M> {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
        config: M::Config,
    ) -> Self {
        Family {
            name,
            help,
            labels,
            config,
            children: [const { OnceLock::new() }; CAPACITY],
            overflow: OnceLock::new(),
            overflowed: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The child for these label values (created on first use).
    pub fn with(&self, values: [&str; N]) -> &M {
        let same = |labels: &[Box<str>; N]| labels.iter().zip(values).all(|(a, b)| &**a == b);
        for slot in &self.children {
            let (labels, metric) = match slot.get() {
                Some(child) => child,
                // Slots fill in order: the first empty one is where a new child goes.
                // If another thread fills it first (with other labels), keep scanning.
                None => slot.get_or_init(|| (values.map(Box::from), M::with_config(self.config))),
            };
            if same(labels) {
                return metric;
            }
        }
        if !self.overflowed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                metric = self.name,
                "metric family is full; further label combinations are not reported"
            );
        }
        self.overflow.get_or_init(|| M::with_config(self.config))
    }

    /// Every child's labels and metric, in creation order.
    pub fn children(&self) -> impl Iterator<Item = (&[Box<str>; N], &M)> {
        self.children
            .iter()
            .filter_map(|slot| slot.get().map(|(labels, metric)| (labels, metric)))
    }

    /// The value of one child without creating it (tests, reports).
    pub fn get(&self, values: [&str; N]) -> Option<&M> {
        self.children()
            .find(|(labels, _)| labels.iter().zip(values).all(|(a, b)| &**a == b))
            .map(|(_, metric)| metric)
    }

    /// HELP, TYPE and every child's samples.
    pub fn encode(&self, out: &mut Text) {
        out.header(self.name, self.help, M::TYPE);
        for (values, metric) in self.children() {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(|v| &**v))
                .collect();
            metric.encode(out, self.name, &labels);
        }
    }
}

/// Prometheus text exposition format (version 0.0.4).
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

/// The `Content-Type` of [`Text`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP` and `# TYPE` lines of a metric.
    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    /// One sample line: `name{labels} value`.
    pub fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        let all = labels.iter().copied().chain(extra);
        let mut first = true;
        for (key, value) in all {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_label_value(&mut self.out, value);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A gauge with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, "", labels, None, *value);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Events appended by the command buses of this process, by event type.
pub static EVENTS_APPENDED: Family<1, Counter> = Family::new(
    "aula_events_appended_total",
    "Events appended to the log by this process's commands, by event type.",
    ["event_type"],
    (),
);

/// This crate's metrics.
pub fn encode(out: &mut Text) {
    EVENTS_APPENDED.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUESTS: Family<2, Counter> = Family::new(
        "test_requests_total",
        "Requests.\nTwo lines \\ here.",
        ["op", "outcome"],
        (),
    );
    static DURATION: Family<1, Histogram> =
        Family::new("test_duration_seconds", "Durations.", ["op"], BOUNDS);
    const BOUNDS: &[f64] = &[0.1, 1.0];

    #[test]
    fn counters_render_with_escaped_labels_and_help() {
        REQUESTS.with(["a\"b", "ok"]).inc();
        REQUESTS.with(["a\"b", "ok"]).inc_by(2);
        REQUESTS.with(["line\nbreak\\", "ERR"]).inc();
        let mut text = Text::new();
        REQUESTS.encode(&mut text);
        let text = text.finish();
        assert_eq!(
            text,
            "# HELP test_requests_total Requests.\\nTwo lines \\\\ here.\n\
             # TYPE test_requests_total counter\n\
             test_requests_total{op=\"a\\\"b\",outcome=\"ok\"} 3\n\
             test_requests_total{op=\"line\\nbreak\\\\\",outcome=\"ERR\"} 1\n"
        );
        assert_eq!(REQUESTS.get(["a\"b", "ok"]).map(Counter::get), Some(3));
        assert!(REQUESTS.get(["nope", "ok"]).is_none());
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let h = DURATION.with(["x"]);
        for value in [0.05, 0.1, 0.5, 7.0] {
            h.observe(value);
        }
        let mut text = Text::new();
        DURATION.encode(&mut text);
        let text = text.finish();
        assert!(
            text.contains("test_duration_seconds_bucket{op=\"x\",le=\"0.1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("test_duration_seconds_bucket{op=\"x\",le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("test_duration_seconds_bucket{op=\"x\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("test_duration_seconds_sum{op=\"x\"} 7.65\n"),
            "{text}"
        );
        assert!(
            text.contains("test_duration_seconds_count{op=\"x\"} 4\n"),
            "{text}"
        );
    }

    #[test]
    fn concurrent_first_use_creates_one_child_per_label_set() {
        static FAMILY: Family<1, Counter> = Family::new("test_concurrent_total", "c", ["k"], ());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for i in 0..1000 {
                        FAMILY.with([["a", "b", "c"][i % 3]]).inc();
                    }
                });
            }
        });
        let children: Vec<_> = FAMILY
            .children()
            .map(|(l, c)| (l[0].to_string(), c.get()))
            .collect();
        assert_eq!(children.len(), 3, "{children:?}");
        assert_eq!(children.iter().map(|(_, n)| n).sum::<u64>(), 8000);
    }

    #[test]
    fn a_full_family_drops_new_label_sets_instead_of_growing() {
        static FAMILY: Family<1, Counter> = Family::new("test_full_total", "f", ["k"], ());
        for i in 0..CAPACITY + 10 {
            FAMILY.with([&i.to_string()]).inc();
        }
        assert_eq!(FAMILY.children().count(), CAPACITY);
    }
}
