//! CloudWatch metrics in the embedded metric format (EMF): one JSON object on a line of
//! its own on stdout, which CloudWatch Logs turns into metrics. Lambda sends a function's
//! stdout to its log group line by line and leaves a custom runtime's lines as they are
//! (with `LogFormat: JSON` too), so the line must be the JSON object alone: never inside a
//! `tracing` line, whose message would carry it as a string CloudWatch does not read.
//! Nothing else is needed: no agent, no `cloudwatch:PutMetricData`.

use std::io::Write;

/// The namespace of keyturn's metrics.
pub const NAMESPACE: &str = "keyturn";

/// The function name the metrics carry when `AWS_LAMBDA_FUNCTION_NAME` is unset.
pub const DEFAULT_REAPER_NAME: &str = "reap-leases";

/// One EMF line (without its newline): the `Count` metrics `metrics`, in that order, with
/// the dimension `FunctionName`, at `timestamp_ms` (Unix milliseconds). Written member by
/// member, so the order is the same whatever serde_json's map keeps.
pub fn emf_line(function_name: &str, metrics: &[(&str, u64)], timestamp_ms: u64) -> String {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let definitions: Vec<String> =
        metrics.iter().map(|(name, _)| format!(r#"{{"Name":{},"Unit":"Count"}}"#, quote(name))).collect();
    let values: String = metrics.iter().map(|(name, value)| format!(",{}:{value}", quote(name))).collect();
    format!(
        r#"{{"_aws":{{"Timestamp":{timestamp_ms},"CloudWatchMetrics":[{{"Namespace":{},"Dimensions":[["FunctionName"]],"Metrics":[{}]}}]}},"FunctionName":{}{values}}}"#,
        quote(NAMESPACE),
        definitions.join(","),
        quote(function_name),
    )
}

/// Writes `line` and its newline to stdout in one write, under stdout's lock, so that no
/// log line (`tracing` writes to the same stdout) lands inside it.
pub fn print_line(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    let mut out = std::io::stdout().lock();
    // A metric that cannot be written is lost, not a failed run.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The reaper's metrics of one run, every one every run (zeros included, so that an alarm
/// always has data): `LeasesRevoked`, `RevocationsFailed`, `OrphansDropped`, `SweepErrors`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaperMetrics {
    pub leases_revoked: u64,
    pub revocations_failed: u64,
    pub orphans_dropped: u64,
    pub sweep_errors: u64,
}

impl ReaperMetrics {
    /// The EMF line of this run for the function `function_name`.
    pub fn emf_line(&self, function_name: &str, timestamp_ms: u64) -> String {
        emf_line(
            function_name,
            &[
                ("LeasesRevoked", self.leases_revoked),
                ("RevocationsFailed", self.revocations_failed),
                ("OrphansDropped", self.orphans_dropped),
                ("SweepErrors", self.sweep_errors),
            ],
            timestamp_ms,
        )
    }
}

/// The function's name as Lambda sets it, else [`DEFAULT_REAPER_NAME`].
pub fn reaper_function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_REAPER_NAME.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reapers_line_is_emf_with_every_metric_and_the_function_dimension() {
        let metrics = ReaperMetrics { leases_revoked: 3, revocations_failed: 1, orphans_dropped: 0, sweep_errors: 2 };
        let line = metrics.emf_line("keyturn-reap-leases", 1_700_000_000_123);
        assert_eq!(
            line,
            concat!(
                r#"{"_aws":{"Timestamp":1700000000123,"CloudWatchMetrics":[{"Namespace":"keyturn","#,
                r#""Dimensions":[["FunctionName"]],"Metrics":[{"Name":"LeasesRevoked","Unit":"Count"},"#,
                r#"{"Name":"RevocationsFailed","Unit":"Count"},{"Name":"OrphansDropped","Unit":"Count"},"#,
                r#"{"Name":"SweepErrors","Unit":"Count"}]}]},"FunctionName":"keyturn-reap-leases","#,
                r#""LeasesRevoked":3,"RevocationsFailed":1,"OrphansDropped":0,"SweepErrors":2}"#
            )
        );
        assert!(!line.contains('\n'), "one line");
        // What CloudWatch requires of it: every metric and dimension a top-level member,
        // metric values numbers.
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        for dimension in directive["Dimensions"][0].as_array().unwrap() {
            assert!(value[dimension.as_str().unwrap()].is_string());
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            assert!(value[metric["Name"].as_str().unwrap()].is_u64(), "{metric}");
        }
    }

    #[test]
    fn a_quiet_run_still_reports_zeros() {
        let value: serde_json::Value =
            serde_json::from_str(&ReaperMetrics::default().emf_line(DEFAULT_REAPER_NAME, 0)).unwrap();
        for name in ["LeasesRevoked", "RevocationsFailed", "OrphansDropped", "SweepErrors"] {
            assert_eq!(value[name], 0, "{name}");
        }
        assert_eq!(value["FunctionName"], "reap-leases");
    }
}
