//! Writes a deterministic corpus of realistic log lines to standard output (see
//! `sealtrail::loggen`).
//!
//! ```text
//! cargo run --release --example loggen -- --bytes 1G --seed 1 > lines.txt
//! cargo run --release --example loggen -- --bytes 10M --card 0.05 --url 0.02 --labels labels.jsonl
//! ```
//! Flags: `--bytes N[K|M|G]` (default 100M), `--seed N` (default 1), the per-line rates
//! `--card`, `--iban`, `--bank`, `--url` (defaults 0.01, 0.002, 0.002, 0.005; `--clean` sets
//! them all to 0), and `--labels FILE` to write one JSON array of secrets per line.

use std::io::Write;

use sealtrail::loggen::{LogGen, Rates};

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|e| format!("invalid size `{s}`: {e}"))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.contains("Broken pipe") => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loggen: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut bytes = 100u64 << 20;
    let mut seed = 1u64;
    let mut rates = Rates::default();
    let mut labels_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("`{a}` needs a value"));
        let rate = |v: String| v.parse::<f64>().map_err(|e| format!("invalid rate `{v}`: {e}"));
        match a.as_str() {
            "--bytes" => bytes = parse_size(&val()?)?,
            "--seed" => seed = val()?.parse().map_err(|e| format!("invalid seed: {e}"))?,
            "--card" => rates.card = rate(val()?)?,
            "--iban" => rates.iban = rate(val()?)?,
            "--bank" => rates.bank_account = rate(val()?)?,
            "--url" => rates.url_credentials = rate(val()?)?,
            "--clean" => rates = Rates::NONE,
            "--labels" => labels_path = Some(val()?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let mut labels = match labels_path {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(&p).map_err(|e| format!("{p}: {e}"))?)),
        None => None,
    };
    let mut g = LogGen::with_rates(seed, rates);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = String::new();
    let mut written = 0u64;
    while written < bytes {
        let secrets = g.line(&mut line);
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        written += line.len() as u64;
        if let Some(l) = labels.as_mut() {
            let v: Vec<_> = secrets
                .iter()
                .map(|s| format!("{{\"kind\":\"{}\",\"value\":{:?}}}", s.kind.detector(), s.value))
                .collect();
            writeln!(l, "[{}]", v.join(",")).map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    if let Some(mut l) = labels {
        l.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}
