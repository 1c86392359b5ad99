//! The statistics of `scripts/bench-overhead` and `scripts/bench-delivery`
//! (see `e2e::bench`): the scripts run servers and wrk, this reads what they
//! measured and prints the numbers and tables.
//!
//! ```text
//! bench-report cpu-ms PID                  CPU ms of a process so far (every thread)
//! bench-report rss-kib PID                 its peak RSS (VmHWM), KiB
//! bench-report wrk FILE                    "req/s p50_us p99_us errors" of a wrk report
//! bench-report per-request SERVER_MS STATSD_MS REQ_PER_S SECONDS
//!                                          "server_cpu_ns_per_request statsd_cpu_ms_per_s"
//! bench-report overhead-table FILE VARIANTS   the overhead table of a results.tsv
//! bench-report delivery-table < ROWS       the delivery table of `key=value` rows
//! bench-report graphite-sum < JSON         the sum of a render answer's datapoints
//! ```

use std::io::Read;
use std::process::ExitCode;

use e2e::bench;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench-report: {error}");
            ExitCode::FAILURE
        }
    }
}

fn number(arg: &str) -> Result<f64, String> {
    arg.parse().map_err(|_| format!("not a number: {arg:?}"))
}

fn stdin() -> Result<String, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    Ok(input)
}

fn run(args: &[&str]) -> Result<String, String> {
    match args {
        ["cpu-ms", pid] => Ok(format!("{}\n", bench::process_cpu_ms(pid).unwrap_or(0))),
        ["rss-kib", pid] => {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("0");
            Ok(format!("{kib}\n"))
        }
        ["wrk", file] => {
            let report = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let w = bench::parse_wrk(&report).ok_or(format!("{file}: no wrk report"))?;
            Ok(format!(
                "{} {:.0} {:.0} {}\n",
                w.rps, w.p50_us, w.p99_us, w.errors
            ))
        }
        ["per-request", server_ms, statsd_ms, rps, seconds] => {
            let (server, statsd) = bench::per_request(
                number(server_ms)? as u64,
                number(statsd_ms)? as u64,
                number(rps)?,
                number(seconds)?,
            );
            Ok(format!("{server:.0} {statsd:.0}\n"))
        }
        ["overhead-table", file, variants] => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let rows: Vec<bench::OverheadRow> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| bench::OverheadRow::parse(l).ok_or(format!("{file}: bad row {l:?}")))
                .collect::<Result<_, _>>()?;
            let variants: Vec<&str> = variants.split_whitespace().collect();
            Ok(bench::overhead_table(&rows, &variants))
        }
        ["delivery-table"] => {
            let rows: Vec<bench::Delivery> = stdin()?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(bench::Delivery::parse)
                .collect();
            Ok(bench::delivery_table(&rows))
        }
        ["graphite-sum"] => {
            let render: serde_json::Value =
                serde_json::from_str(&stdin()?).map_err(|e| format!("not JSON: {e}"))?;
            Ok(format!("{}\n", bench::sum_datapoints(&render)))
        }
        _ => Err(format!(
            "unknown arguments {args:?}; see the source's usage"
        )),
    }
}
