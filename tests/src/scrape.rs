//! Scraping a node's metrics endpoint the way Prometheus does: a plain
//! HTTP GET ([`get`]) and a strict parser of the Prometheus text format
//! 0.0.4 ([`parse`]) that refuses any line it does not understand, instead
//! of skipping it, and checks what a scraper relies on: every sample
//! belongs to a family whose `# TYPE` came first, no series twice, counter
//! names end in `_total`, histogram buckets are cumulative and their
//! `+Inf` bucket equals `_count`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer: status code, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header of this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from `addr` over HTTP/1.0 (so the body is neither chunked nor
/// kept alive: it ends when the server closes).
pub async fn get(addr: &str, path: &str) -> Result<Answer, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("GET {path} from {addr}: no answer in 5 s"))??;
    let text = String::from_utf8(raw).map_err(|e| format!("answer is not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').ok_or_else(|| format!("bad header {l:?}"))?;
            Ok((n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A metric family's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Each family's type, by family name.
    pub types: BTreeMap<String, Kind>,
    /// Each family's help text.
    pub help: BTreeMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// The value of the series `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The value of `name` with these labels, 0 when the series does not
    /// exist yet (a counter's series with a label may appear only once
    /// it counts).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (the braces already stripped): label pairs with escapes.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("bad label in {s:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {s:?}")),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice in {s:?}"));
        }
        let tail = &after[end + 1..];
        rest = match tail.strip_prefix(',') {
            Some(next) => next,
            None if tail.is_empty() => tail,
            None => return Err(format!("labels not separated by commas in {s:?}")),
        };
    }
    Ok(labels)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (series, rest) = match line.find('{') {
        Some(_open) => {
            let close = line
                .rfind('}')
                .ok_or_else(|| format!("no closing brace: {line:?}"))?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line
            .split_once(' ')
            .ok_or_else(|| format!("no value: {line:?}"))?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))?),
        None => (series, BTreeMap::new()),
    };
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or_else(|| format!("no value: {line:?}"))?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp in {line:?}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("trailing fields: {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, Kind>) -> Option<(&'a str, Kind)> {
    if let Some(kind) = types.get(name) {
        return Some((name, *kind));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match types.get(base) {
                Some(Kind::Histogram) => return Some((base, Kind::Histogram)),
                Some(Kind::Summary) if suffix != "_bucket" => return Some((base, Kind::Summary)),
                _ => {}
            }
        }
    }
    None
}

/// A series' labels, in order.
type Series = Vec<(String, String)>;

/// Parses and checks an exposition; the error names the first offending line.
pub fn parse(text: &str) -> Result<Metrics, String> {
    let mut m = Metrics::default();
    let mut sampled: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, Series)> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["HELP", name, help] => {
                    let first = m.help.insert(name.to_string(), help.to_string()).is_none();
                    if !(is_metric_name(name) && first) {
                        return Err(at(format!("bad or repeated HELP for {name}")));
                    }
                }
                ["TYPE", name, kind] => {
                    let kind = match *kind {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        "summary" => Kind::Summary,
                        "untyped" => Kind::Untyped,
                        other => return Err(at(format!("unknown type {other:?}"))),
                    };
                    if !is_metric_name(name) || sampled.contains(*name) {
                        return Err(at(format!("TYPE of {name} after its samples")));
                    }
                    if m.types.insert(name.to_string(), kind).is_some() {
                        return Err(at(format!("TYPE of {name} twice")));
                    }
                    if kind == Kind::Counter && !name.ends_with("_total") {
                        return Err(at(format!("counter {name} does not end in _total")));
                    }
                }
                ["HELP" | "TYPE", ..] => return Err(at(format!("malformed {line:?}"))),
                _ => {} // another comment
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let (family, kind) = family_of(&sample.name, &m.types)
            .ok_or_else(|| at(format!("{} has no TYPE before it", sample.name)))?;
        if kind == Kind::Histogram && sample.name.ends_with("_bucket") {
            let le = sample
                .labels
                .get("le")
                .ok_or_else(|| at("a bucket without le".into()))?;
            parse_value(le).map_err(at)?;
        }
        sampled.insert(family.to_string());
        let key: Vec<(String, String)> = sample.labels.clone().into_iter().collect();
        if !series.insert((sample.name.clone(), key)) {
            return Err(at(format!("series {line:?} twice")));
        }
        m.samples.push(sample);
    }
    check_histograms(&m)?;
    Ok(m)
}

/// Every histogram series: buckets cumulative, `+Inf` present and equal to `_count`.
fn check_histograms(m: &Metrics) -> Result<(), String> {
    for (family, kind) in &m.types {
        if *kind != Kind::Histogram {
            continue;
        }
        // Buckets by their labels less `le`.
        let mut buckets: BTreeMap<Series, Vec<(f64, f64)>> = BTreeMap::new();
        for s in m.samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").unwrap_or_default();
            let le = parse_value(&le)?;
            buckets
                .entry(labels.into_iter().collect())
                .or_default()
                .push((le, s.value));
        }
        for (labels, mut bs) in buckets {
            bs.sort_by(|a, b| a.0.total_cmp(&b.0));
            if bs.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{labels:?}: buckets are not cumulative: {bs:?}"));
            }
            let inf = bs
                .last()
                .filter(|b| b.0 == f64::INFINITY)
                .ok_or_else(|| format!("{family}{labels:?}: no +Inf bucket"))?;
            let label_refs: Vec<(&str, &str)> =
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let count = m
                .value(&format!("{family}_count"), &label_refs)
                .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
            if count != inf.1 {
                return Err(format!(
                    "{family}{labels:?}: _count {count} but +Inf bucket {}",
                    inf.1
                ));
            }
            if m.value(&format!("{family}_sum"), &label_refs).is_none() {
                return Err(format!("{family}{labels:?}: no _sum"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_exposition_parses() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{op=\"x\",code=\"q\\\"\"} 3\n\
                    # TYPE h histogram\nh_sum 1.5\nh_count 2\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                    # TYPE g gauge\ng -1\n";
        let m = parse(text).unwrap();
        assert_eq!(m.value("a_total", &[("op", "x"), ("code", "q\"")]), Some(3.0));
        assert_eq!(m.value("h_count", &[]), Some(2.0));
        assert_eq!(m.get("g", &[]), -1.0);
    }

    #[test]
    fn what_a_scraper_would_trip_on_is_refused() {
        for bad in [
            "a 1\n",                                                             // no TYPE
            "# TYPE a gauge\na 1\na 2\n",                                        // series twice
            "# TYPE a gauge\na{x=\"1\" 1\n",                                     // unterminated labels
            "# TYPE a gauge\na one\n",                                           // bad value
            "# TYPE a counter\na 1\n",                                           // counter without _total
            "# TYPE h histogram\nh_sum 1\nh_count 2\nh_bucket{le=\"+Inf\"} 1\n", // count != +Inf
            "# TYPE h histogram\nh_sum 1\nh_count 1\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n",
            "# TYPE a gauge\na{1x=\"1\"} 1\n", // bad label name
            "# TYPE a gauge\n# TYPE a gauge\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
