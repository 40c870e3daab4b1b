//! `sealtrail redact` and `sealtrail run` with the `redact` transform, as real child processes:
//! recall and false positives on the labelled loggen corpus, bounded memory on a single huge
//! line, secrets split across continued records, configuration errors.

use std::io::Write;
use std::process::{Command, Stdio};

use sealtrail::loggen::{self, Rates, SecretKind};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealtrail"))
}

/// Runs the binary with `input` on stdin; returns (exit code, stdout, stderr, peak RSS in KiB).
fn run_with_input(
    mut cmd: Command,
    input: impl FnOnce(&mut dyn Write) + Send,
) -> (i32, Vec<u8>, String, i64) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sealtrail");
    let pid = child.id() as libc::pid_t;
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (out, err) = std::thread::scope(|s| {
        let o = s.spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut v).unwrap();
            v
        });
        let e = s.spawn(move || {
            let mut v = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut v).unwrap();
            v
        });
        input(&mut stdin);
        drop(stdin);
        (o.join().unwrap(), e.join().unwrap())
    });
    // wait4 gives the child's peak resident set size.
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; both pointers are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    std::mem::forget(child); // already reaped
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, out, err, usage.ru_maxrss)
}

#[test]
fn recall_and_false_positives_on_the_labelled_corpus() {
    let rates = Rates { card: 0.05, iban: 0.02, bank_account: 0.02, url_credentials: 0.03 };
    let (corpus, labels) = loggen::corpus(42, rates, 4 << 20);
    let mut cmd = bin();
    cmd.args(["redact", "--stats"]);
    let (code, out, err, _) = run_with_input(cmd, |w| w.write_all(&corpus).unwrap());
    assert_eq!(code, 0, "{err}");
    let in_lines: Vec<&[u8]> = corpus.split(|&b| b == b'\n').collect();
    let out_lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert_eq!(in_lines.len(), out_lines.len(), "one output line per input line");

    let (mut secrets, mut caught, mut clean, mut clean_changed) = (0, 0, 0, 0);
    let mut per_kind = std::collections::BTreeMap::<&str, (u32, u32)>::new();
    for ((input, output), secrets_of_line) in in_lines.iter().zip(&out_lines).zip(&labels) {
        let output = String::from_utf8_lossy(output);
        if secrets_of_line.is_empty() {
            clean += 1;
            if input != &output.as_bytes() {
                clean_changed += 1;
                eprintln!("false positive:\n  {}\n  {output}", String::from_utf8_lossy(input));
            }
        }
        for s in secrets_of_line {
            secrets += 1;
            let e = per_kind.entry(s.kind.detector()).or_default();
            e.0 += 1;
            // A card or IBAN leaks if its digits survive in any grouping.
            let digits: String = s.value.chars().filter(char::is_ascii_alphanumeric).collect();
            let leaked = output.contains(&s.value)
                || (matches!(s.kind, SecretKind::Card | SecretKind::Iban)
                    && output
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect::<String>()
                        .contains(&digits));
            if !leaked {
                caught += 1;
                e.1 += 1;
            } else {
                eprintln!("missed {:?}: {output}", s.kind);
            }
        }
    }
    let recall = caught as f64 / secrets as f64;
    let fp_rate = clean_changed as f64 / clean as f64;
    eprintln!(
        "labelled corpus: {} lines, {secrets} secrets {per_kind:?}; recall {:.4}; clean lines changed {clean_changed}/{clean} (false-positive rate {:.5})",
        labels.len(),
        recall,
        fp_rate
    );
    eprintln!("{}", err.trim());
    assert_eq!(caught, secrets, "recall must be 100% on the corpus");
    assert_eq!(clean_changed, 0, "no line without a secret may change");
    // --stats counts exactly the labelled secrets.
    assert!(err.contains(&format!("total={secrets} ")), "{err}");
}

fn bin_redact() -> Command {
    let mut cmd = bin();
    cmd.args(["redact"]);
    cmd
}

#[test]
fn one_huge_line_in_bounded_memory() {
    // The same binary on a one-line input is the baseline: what the process maps and touches
    // to start (a debug binary alone is about 20 MiB, and grows with the code). The line may add
    // only the engine's bounded buffers on top of it. Measured first: a child's peak RSS includes
    // this test process's size when it was spawned (Linux carries it across exec), and the test
    // holds 96 MiB of output after the big run.
    let (_, _, _, base_kib) = run_with_input(bin_redact(), |w| w.write_all(b"hi\n").unwrap());
    // 96 MiB in one line, with secrets at both ends and in the middle.
    let mut cmd = bin();
    cmd.args(["redact"]);
    let filler = vec![b'7'; 1 << 20];
    let (code, out, err, rss_kib) = run_with_input(cmd, |w| {
        w.write_all(b"start 4111 1111 1111 1111 ").unwrap();
        for i in 0..96 {
            if i == 48 {
                w.write_all(b" https://u:hunter2@db/ ").unwrap();
            }
            w.write_all(&filler).unwrap();
        }
        w.write_all(b" end DE89 3704 0044 0532 0130 00\n").unwrap();
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(b"start **** 7777"));
    assert!(out.ends_with(b"7777 end ****\n"));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(" https://u:****@db/ ") && !text.contains("hunter2"));
    assert_eq!(
        out.len(),
        96 * (1 << 20) + "start **** ".len() + " https://u:****@db/ ".len() + " end ****\n".len()
    );
    eprintln!("peak RSS for a 96 MiB line: {rss_kib} KiB; for one short line: {base_kib} KiB");
    assert!(rss_kib < base_kib + 8 * 1024, "peak RSS {rss_kib} KiB against a baseline of {base_kib} KiB");
}

#[test]
fn run_redacts_across_continued_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[sources.in]\ntype = \"stdin\"\nmax_line_bytes = 16\n\
         [transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\n\
         [sinks.out]\ntype = \"console\"\ninputs = [\"scrub\"]\n",
    )
    .unwrap();
    let line =
        "pay 4111 1111 1111 1111 to https://bob:s3cr3tpass@bank.example/x?token=abcdefghijklmnop&y=1\n";
    let mut cmd = bin();
    cmd.args(["run", "--config", cfg.to_str().unwrap()]);
    let (code, out, err, _) = run_with_input(cmd, |w| {
        for _ in 0..50 {
            w.write_all(line.as_bytes()).unwrap();
        }
    });
    assert_eq!(code, 0, "{err}");
    // The console prints every record on its own line: join the pieces back.
    let joined: String = String::from_utf8_lossy(&out).lines().collect();
    for secret in ["4111", "s3cr3tpass", "abcdefghijklmnop"] {
        assert!(!joined.contains(secret), "{secret} leaked: {joined}");
    }
    assert_eq!(
        joined.matches("pay **** to https://bob:****@bank.example/x?token=****&y=1").count(),
        50,
        "{joined}"
    );
    assert!(!err.contains("4111") && !err.contains("s3cr3t"), "the agent's own log: {err}");
}

/// The embedded default (stdin → redact → sealed) seals redacted lines: read them back with
/// `sealtrail query`.
#[test]
fn embedded_default_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let mut cmd = bin();
    cmd.args(["run"]).current_dir(dir.path()).env("SEALTRAIL_DATA_DIR", &data).env("SEALTRAIL_KEYS", &keys);
    let (code, out, err, _) = run_with_input(cmd, |w| w.write_all(b"card 5555555555554444 ok\n").unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "the default prints nothing to stdout");
    let q = bin()
        .args(["query", data.to_str().unwrap(), "--keys", keys.to_str().unwrap(), "--format", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(q.status.code(), Some(0), "{}", String::from_utf8_lossy(&q.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&q.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["body"], "card **** ok");
    assert_eq!(rows[0]["redactions"], 1);
}

#[test]
fn bad_pattern_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("r.toml");
    std::fs::write(&cfg, "patterns = [\"EMP-[0-9]+\", \"(unclosed\"]\n").unwrap();
    let mut cmd = bin();
    cmd.args(["redact", "--config", cfg.to_str().unwrap()]);
    let (code, _, err, _) = run_with_input(cmd, |_| {});
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`(unclosed`"), "{err}");

    let agent = dir.path().join("a.toml");
    std::fs::write(
        &agent,
        "[sources.in]\ntype = \"stdin\"\n[transforms.scrub]\ntype = \"redact\"\ninputs = [\"in\"]\npatterns = [\"[z-a]\"]\n\
         [sinks.out]\ntype = \"console\"\ninputs = [\"scrub\"]\n",
    )
    .unwrap();
    let out = bin().args(["validate", "--config", agent.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("transforms.scrub") && err.contains("`[z-a]`"), "{err}");
}
